//! Customers by e-mail and phone: how imports that carry no customer id
//! (a Klaviyo list, an old Shopify export) find the customers they mean.
//!
//! Every write keeps one storage row per (normalised contact, customer), so
//! a lookup is a prefix scan and nothing about contacts is held in memory.

use std::collections::BTreeSet;

use super::{Engine, read};
use crate::error::Result;
use crate::store::keys::{self, ContactKind};
use crate::store::records::CustomerRecord;

/// What an import row knows of a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerKey {
    pub customer_id: String,
    pub email: String,
    pub phone: String,
}

/// An e-mail address as compared: trimmed and lower-case.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    (!email.is_empty()).then_some(email)
}

/// A phone number as compared: its digits, with a North American country
/// code added to a ten-digit number. Fewer than seven digits is no number.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0..=6 => None,
        10 => Some(format!("1{digits}")),
        _ => Some(digits),
    }
}

/// The normalised contacts of a customer record.
pub fn contacts_of(record: Option<&CustomerRecord>) -> BTreeSet<(ContactKind, String)> {
    let mut contacts = BTreeSet::new();
    if let Some(record) = record {
        if let Some(email) = record.email.as_deref().and_then(normalize_email) {
            contacts.insert((ContactKind::Email, email));
        }
        if let Some(phone) = record.phone.as_deref().and_then(normalize_phone) {
            contacts.insert((ContactKind::Phone, phone));
        }
    }
    contacts
}

impl Engine {
    /// For each key, the live customer it names: by id, else by e-mail,
    /// else by phone (the earliest customer when several share one).
    pub fn match_customers(
        &self,
        tenant: &str,
        wanted: &[CustomerKey],
    ) -> Result<Vec<Option<String>>> {
        let tenant = self.tenant(tenant)?;
        let index = read(&tenant.index);
        let by_contact = |kind: ContactKind, value: Option<String>| -> Result<Option<String>> {
            let Some(value) = value else { return Ok(None) };
            Ok(self
                .store
                .contact_matches(&index.tenant, kind, &value)?
                .into_iter()
                .find_map(|dense| index.customer_id(dense).map(str::to_owned)))
        };
        wanted
            .iter()
            .map(|key| {
                if !key.customer_id.is_empty() && index.ids.contains(&key.customer_id) {
                    return Ok(Some(key.customer_id.clone()));
                }
                if let Some(found) = by_contact(ContactKind::Email, normalize_email(&key.email))? {
                    return Ok(Some(found));
                }
                by_contact(ContactKind::Phone, normalize_phone(&key.phone))
            })
            .collect()
    }
}

/// Writes the contact rows of every customer of a tenant stored before
/// contacts were indexed, in one batch, and marks the tenant done.
pub(super) fn backfill(
    store: &crate::store::Store,
    meta: &mut crate::store::records::TenantMeta,
    tenant: &str,
) -> Result<()> {
    let mut batch = crate::store::Batch::default();
    let mut customers = 0u64;
    store.each_customer(tenant, |dense, record| {
        customers += 1;
        write_contacts(&mut batch, tenant, dense, None, Some(record));
    })?;
    meta.contacts_indexed = true;
    batch.insert(keys::meta_key(tenant), crate::store::encode_json(meta)?);
    store.commit(batch)?;
    tracing::info!(tenant, customers, "indexed customers' e-mails and phones");
    Ok(())
}

/// Adds the contact rows a record gained and removes those it lost.
pub(super) fn write_contacts(
    batch: &mut crate::store::Batch,
    tenant: &str,
    dense: u32,
    before: Option<&CustomerRecord>,
    after: Option<&CustomerRecord>,
) {
    let old = contacts_of(before);
    let new = contacts_of(after);
    for (kind, value) in old.difference(&new) {
        batch.remove(keys::contact_key(tenant, *kind, value, dense));
    }
    for (kind, value) in new.difference(&old) {
        batch.insert(keys::contact_key(tenant, *kind, value, dense), []);
    }
}
