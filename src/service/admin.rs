//! The admin service: tenants and their API keys. The gate lets only the
//! admin key through, and only when keys are on.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert;
use crate::auth::{Caller, SharedKeys};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::admin_service_server::AdminService;
use crate::store::records::ApiKeyRecord;

/// The longest label of a key, in characters.
pub const MAX_LABEL_CHARS: usize = 200;
/// The largest admin request message, in bytes.
pub const MAX_ADMIN_MESSAGE_BYTES: usize = 1 << 20;

/// The admin service over an engine and the server's keys.
pub struct Admin {
    engine: Arc<Engine>,
    keys: SharedKeys,
}

impl Admin {
    pub fn new(engine: Arc<Engine>, keys: SharedKeys) -> Admin {
        Admin { engine, keys }
    }

    /// Runs `work` off the async threads, and logs the call.
    async fn call<T, F>(&self, rpc: &'static str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, &SharedKeys) -> Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let (engine, keys) = (self.engine.clone(), self.keys.clone());
        let outcome = tokio::task::spawn_blocking(move || work(&engine, &keys))
            .await
            .unwrap_or_else(|join| Err(Error::Internal(format!("admin call panicked: {join}"))));
        let micros = started.elapsed().as_micros() as u64;
        match outcome {
            Ok(value) => {
                tracing::debug!(rpc, code = "OK", micros, "admin call");
                Ok(value)
            }
            Err(error) => {
                if error.is_internal() {
                    tracing::error!(rpc, %error, "internal error");
                } else {
                    tracing::info!(rpc, %error, micros, "admin call refused");
                }
                Err(Status::from(error))
            }
        }
    }
}

fn api_key(record: &ApiKeyRecord) -> proto::ApiKey {
    proto::ApiKey {
        key_id: record.key_id.clone(),
        tenant: record.tenant.clone(),
        label: record.label.clone(),
        create_time: Some(timestamp(record.create_time)),
        revoke_time: record.revoke_time.map(timestamp),
    }
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The request's message if the gate found the admin key on it. The gate
/// lets nothing else through; this holds should the service ever be
/// mounted without it.
fn admin_only<T>(request: Request<T>) -> Result<T, Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Admin) => Ok(request.into_inner()),
        _ => Err(Status::permission_denied(
            "the admin service takes the admin key only",
        )),
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::CreateTenantResponse>, Status> {
        let proto::CreateTenantRequest { tenant, time_zone } = admin_only(request)?;
        let tenant = convert::tenant(&tenant).map_err(Status::from)?;
        let time_zone = if time_zone.is_empty() {
            crate::engine::DEFAULT_TIME_ZONE.to_owned()
        } else {
            time_zone
        };
        let zone =
            crate::engine::tenants::time_zone(&time_zone, "time_zone").map_err(Status::from)?;
        let (tenant, info) = self
            .call("CreateTenant", move |engine, _| {
                let info = engine.create_tenant(&tenant, zone, now_micros() / 1_000_000)?;
                Ok((tenant, info))
            })
            .await?;
        Ok(Response::new(proto::CreateTenantResponse {
            tenant,
            time_zone: info.time_zone,
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        let proto::CreateApiKeyRequest { tenant, label } = admin_only(request)?;
        let tenant = convert::tenant(&tenant).map_err(Status::from)?;
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(Status::invalid_argument(format!(
                "label: longer than {MAX_LABEL_CHARS} characters"
            )));
        }
        if label.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "label: must not contain control characters",
            ));
        }
        let (record, secret) = self
            .call("CreateApiKey", move |engine, keys| {
                if !engine.has_tenant(&tenant) {
                    return Err(Error::NotFound(format!(
                        "tenant `{tenant}` not found; create it first (CreateTenant)"
                    )));
                }
                keys.create(engine, &tenant, &label, now_micros())
            })
            .await?;
        tracing::info!(
            tenant = record.tenant,
            key_id = record.key_id,
            "API key issued"
        );
        Ok(Response::new(proto::CreateApiKeyResponse {
            api_key: Some(api_key(&record)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        let proto::ListApiKeysRequest { tenant } = admin_only(request)?;
        let tenant = if tenant.is_empty() {
            None
        } else {
            Some(convert::tenant(&tenant).map_err(Status::from)?)
        };
        let records = self
            .call("ListApiKeys", move |_, keys| {
                Ok(keys.list(tenant.as_deref()))
            })
            .await?;
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: records.iter().map(api_key).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::RevokeApiKeyResponse>, Status> {
        let proto::RevokeApiKeyRequest { key_id } = admin_only(request)?;
        let key_id = convert::id(&key_id, "key_id").map_err(Status::from)?;
        let record = self
            .call("RevokeApiKey", move |engine, keys| {
                keys.revoke(engine, &key_id, now_micros())
            })
            .await?;
        tracing::info!(
            tenant = record.tenant,
            key_id = record.key_id,
            "API key revoked"
        );
        Ok(Response::new(proto::RevokeApiKeyResponse {
            api_key: Some(api_key(&record)),
        }))
    }
}
