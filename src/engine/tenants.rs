//! Tenant settings: the time zone that a tenant's calendar days follow.
//!
//! Day bitmaps hold local days, so a new time zone re-buckets every event of
//! the tenant from the time index, in one atomic batch.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use chrono_tz::Tz;
use roaring::RoaringBitmap;

use super::write::{checkpoint, remove_whole, write_whole};
use super::{Engine, TenantInfo, read};
use crate::error::{Error, Result};
use crate::rule::EventKind;
use crate::store::keys::{self, BitmapKey};
use crate::store::{Batch, encode_json};
use crate::time::{self, Seconds};

impl Engine {
    /// Creates a tenant with a time zone; `ALREADY_EXISTS` if it is stored.
    pub fn create_tenant(&self, name: &str, time_zone: Tz, now: Seconds) -> Result<TenantInfo> {
        let _creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        if self.tenant_info(name).is_ok() {
            return Err(Error::AlreadyExists(format!("tenant `{name}` exists")));
        }
        self.set_time_zone(name, time_zone, now)
    }

    /// Whether a tenant is stored.
    pub fn has_tenant(&self, name: &str) -> bool {
        self.tenant_info(name).is_ok()
    }

    /// Each tenant's live customers and bitmaps, largest first, for metrics.
    pub fn tenant_sizes(&self) -> Vec<(String, u64, u64)> {
        let tenants: Vec<_> = read(&self.tenants).values().cloned().collect();
        let mut sizes: Vec<_> = tenants
            .iter()
            .filter(|tenant| tenant.stored.load(Ordering::Acquire))
            .map(|tenant| {
                let index = read(&tenant.index);
                (
                    index.tenant.clone(),
                    index.live().len(),
                    index.bitmaps.len() as u64,
                )
            })
            .collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sizes
    }

    /// Every tenant's API keys.
    pub fn api_keys(&self) -> Result<Vec<crate::store::records::ApiKeyRecord>> {
        self.store.api_keys()
    }

    /// Stores an API key durably.
    pub fn put_api_key(&self, record: &crate::store::records::ApiKeyRecord) -> Result<()> {
        self.store.put_api_key(record)
    }

    /// Sets a tenant's time zone (an IANA name), creating the tenant if need
    /// be, and re-buckets its events into the new zone's local days.
    pub fn set_time_zone(&self, name: &str, time_zone: Tz, now: Seconds) -> Result<TenantInfo> {
        let tenant = self.tenant_or_create(name, now)?;
        let writer = tenant.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let new_tenant = !tenant.stored.load(Ordering::Acquire);
        let rebuilt = {
            let index = read(&tenant.index);
            if !new_tenant && index.time_zone == time_zone {
                None
            } else {
                let mut meta = index.meta.clone();
                meta.time_zone = time_zone.name().to_owned();
                let live = index.live();
                let mut days: HashMap<BitmapKey, RoaringBitmap> = HashMap::new();
                self.store.each_event(name, |kind, t, dense, payload| {
                    // Rows of deleted customers stay in the index but count for no one.
                    if !live.contains(dense) {
                        return;
                    }
                    let day = time::day_of(time_zone, t);
                    days.entry(BitmapKey::EventDay(kind, day))
                        .or_default()
                        .insert(dense);
                    if kind == EventKind::Clicked
                        && let Ok(broadcast) = std::str::from_utf8(payload)
                    {
                        let key = BitmapKey::ClickedBroadcastDay(broadcast.to_owned(), day);
                        days.entry(key).or_default().insert(dense);
                    }
                })?;

                // Base rows are rewritten below, so the delta log goes first.
                let mut batch = Batch::default();
                checkpoint(&mut batch, &index, &HashMap::new())?;
                for (key, bitmap) in index.bitmaps.iter().filter(|(key, _)| key.is_day()) {
                    remove_whole(&mut batch, name, key, bitmap);
                }
                for (key, bitmap) in &days {
                    write_whole(&mut batch, name, key, bitmap)?;
                }
                batch.insert(keys::meta_key(name), encode_json(&meta)?);
                Some((batch, days, meta))
            }
        };

        if let Some((batch, days, meta)) = rebuilt {
            if let Err(error) = self.store.commit(batch) {
                self.recover(name, &tenant, new_tenant, &error);
                return Err(error);
            }
            let mut index = tenant.index.write().unwrap_or_else(PoisonError::into_inner);
            index.bitmaps.retain(|key, _| !key.is_day());
            index.bitmaps.extend(days);
            index.meta = meta;
            index.time_zone = time_zone;
            index.delta_log = Default::default();
            drop(index);
            tenant.stored.store(true, Ordering::Release);
            // Every event moved to another local day: everyone, everywhere.
            let everything = super::feed::Touched {
                everything: true,
                ..Default::default()
            };
            let head = self.feed_after_write(&tenant, &everything, now);
            self.feed_publish_after(&tenant, writer, head);
            tracing::info!(
                tenant = name,
                time_zone = time_zone.name(),
                "time zone changed"
            );
        }
        self.tenant_info(name)
    }
}

/// Parses an IANA time zone name, case-insensitively.
pub fn time_zone(name: &str, field: &str) -> Result<Tz> {
    crate::rule::values::normalize_time_zone(name)
        .and_then(|name| name.parse().ok())
        .ok_or_else(|| Error::invalid(field, format!("unknown time zone `{name}`")))
}
