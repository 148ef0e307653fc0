//! API keys: who a call comes from, and what it may touch.
//!
//! With an admin key configured, every call of the segment API carries a
//! tenant's key and the admin service the admin key, as
//! `authorization: Bearer <key>`. A key reads `sgd_<key id>_<secret>`: the
//! key id (16 hex digits) finds the stored record, and the SHA-256 of the
//! secret (32 random bytes, base64url) is compared in constant time with
//! the stored hash. Neither the secret nor its hash is ever logged.
//!
//! Without an admin key, keys are off: anyone on the loopback address may
//! call anything, and the admin service refuses every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::records::ApiKeyRecord;

/// The shortest admin key accepted.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;
/// The most live keys a tenant may hold.
pub const MAX_KEYS_PER_TENANT: usize = 100;

const KEY_PREFIX: &str = "sgd_";
const KEY_ID_HEX: usize = 16;
const SECRET_BYTES: usize = 32;

/// Who a call comes from, as the gate found it; handlers read it from the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Keys are off.
    Anyone,
    /// The admin key.
    Admin,
    /// A live key of this tenant.
    Tenant(String),
}

impl Caller {
    /// Whether this caller may call the segment API for `tenant`; decided
    /// before the tenant's existence, so that a stranger learns nothing.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Tenant(own) if own == tenant => Ok(()),
            Caller::Tenant(_) => Err(Status::permission_denied(format!(
                "tenant: this API key is not a key of tenant `{}`",
                shown(tenant)
            ))),
            Caller::Admin => Err(Status::permission_denied(
                "the admin key manages tenants and keys only; call the segment API with a key \
                 of the tenant (segmentd admin create-key)",
            )),
        }
    }
}

/// The keys a server knows: the admin key's hash and every tenant key.
pub struct Keys {
    admin_sha256: Option<[u8; 32]>,
    by_id: RwLock<HashMap<String, ApiKeyRecord>>,
    /// Held by whoever creates or revokes a key, across its commit, so
    /// that `by_id` is never locked while the disk is flushed: calls are
    /// authenticated on the async threads.
    writing: Mutex<()>,
}

impl Keys {
    /// Keys off: every call is let through.
    pub fn off() -> Keys {
        Keys {
            admin_sha256: None,
            by_id: RwLock::default(),
            writing: Mutex::default(),
        }
    }

    /// Keys on, with `admin_key` and the tenant keys stored in `engine`.
    pub fn with_admin_key(admin_key: &str, engine: &Engine) -> Result<Keys> {
        check_admin_key(admin_key)?;
        let by_id = engine
            .api_keys()?
            .into_iter()
            .map(|record| (record.key_id.clone(), record))
            .collect();
        Ok(Keys {
            admin_sha256: Some(sha256(admin_key.as_bytes())),
            by_id: RwLock::new(by_id),
            writing: Mutex::default(),
        })
    }

    /// Whether keys are required.
    pub fn enabled(&self) -> bool {
        self.admin_sha256.is_some()
    }

    /// Who the `authorization` header value (if any) belongs to.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Status> {
        let Some(admin) = &self.admin_sha256 else {
            return Ok(Caller::Anyone);
        };
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(
                "no API key: send `authorization: Bearer <key>`",
            ));
        };
        // The scheme's name is case-insensitive (RFC 9110).
        let key = std::str::from_utf8(header)
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must read `Bearer <key>`")
            })?;

        if let Some((key_id, secret)) = split_key(key) {
            let keys = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
            let record = keys.get(key_id);
            let presented = sha256(secret.as_bytes());
            let stored = record
                .and_then(|record| decode_hex(&record.secret_sha256))
                .unwrap_or([0; 32]);
            let matches = bool::from(presented.ct_eq(&stored));
            return match record {
                Some(record) if matches && record.revoke_time.is_none() => {
                    Ok(Caller::Tenant(record.tenant.clone()))
                }
                Some(record) if matches => Err(Status::unauthenticated(format!(
                    "API key {} was revoked",
                    record.key_id
                ))),
                _ => Err(unknown_key()),
            };
        }
        if bool::from(sha256(key.as_bytes()).ct_eq(admin)) {
            return Ok(Caller::Admin);
        }
        Err(unknown_key())
    }

    /// Issues a key for `tenant`: the record stored, and the key to show once.
    pub fn create(
        &self,
        engine: &Engine,
        tenant: &str,
        label: &str,
        now_micros: i64,
    ) -> Result<(ApiKeyRecord, String)> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let live = self
            .list(Some(tenant))
            .iter()
            .filter(|record| record.revoke_time.is_none())
            .count();
        if live >= MAX_KEYS_PER_TENANT {
            return Err(Error::ResourceExhausted(format!(
                "tenant `{tenant}` holds {live} live keys, the most it may; revoke one first"
            )));
        }
        let mut random = [0u8; 8 + SECRET_BYTES];
        getrandom::fill(&mut random)
            .map_err(|error| Error::Internal(format!("no randomness for a key: {error}")))?;
        let key_id = encode_hex(&random[..8]);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..]);
        let record = ApiKeyRecord {
            key_id: key_id.clone(),
            tenant: tenant.to_owned(),
            label: label.to_owned(),
            secret_sha256: encode_hex(&sha256(secret.as_bytes())),
            create_time: now_micros,
            revoke_time: None,
        };
        // On disk before it is known, and known before it is shown.
        engine.put_api_key(&record)?;
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.clone(), record.clone());
        Ok((record, format!("{KEY_PREFIX}{key_id}_{secret}")))
    }

    /// Revokes a key, durably; revoking a revoked key changes nothing.
    pub fn revoke(&self, engine: &Engine, key_id: &str, now_micros: i64) -> Result<ApiKeyRecord> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let record = self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .cloned();
        let Some(record) = record else {
            return Err(Error::NotFound(format!(
                "API key `{}` not found",
                shown(key_id)
            )));
        };
        if record.revoke_time.is_some() {
            return Ok(record);
        }
        let mut revoked = record;
        revoked.revoke_time = Some(now_micros);
        // Refused from the moment it is on disk, so from before the answer.
        engine.put_api_key(&revoked)?;
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.to_owned(), revoked.clone());
        Ok(revoked)
    }

    /// The keys of `tenant` (or of all tenants), by tenant then creation.
    pub fn list(&self, tenant: Option<&str>) -> Vec<ApiKeyRecord> {
        let keys = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<_> = keys
            .values()
            .filter(|record| tenant.is_none_or(|tenant| record.tenant == tenant))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (&a.tenant, a.create_time, &a.key_id).cmp(&(&b.tenant, b.create_time, &b.key_id))
        });
        found
    }
}

/// Refuses an admin key too short to be random, or shaped like a tenant
/// key; checked before storage opens, which can take seconds.
pub fn check_admin_key(admin_key: &str) -> Result<()> {
    if admin_key.chars().count() < MIN_ADMIN_KEY_CHARS {
        return Err(Error::invalid(
            "--admin-key",
            format!(
                "shorter than {MIN_ADMIN_KEY_CHARS} characters; use a random one, such as \
                 the output of `openssl rand -base64 32`"
            ),
        ));
    }
    if admin_key.starts_with(KEY_PREFIX) {
        return Err(Error::invalid(
            "--admin-key",
            format!("starts with `{KEY_PREFIX}`, as tenant keys do; choose another"),
        ));
    }
    Ok(())
}

/// A key from the command line or the environment; `Debug` shows none of it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

/// Shared by the gate and the admin service.
pub type SharedKeys = Arc<Keys>;

fn unknown_key() -> Status {
    Status::unauthenticated("unknown API key")
}

/// The key id and secret of a key that has the shape of a tenant key.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    if rest.len() <= KEY_ID_HEX + 1 || !rest.is_char_boundary(KEY_ID_HEX) {
        return None;
    }
    let (key_id, secret) = rest.split_at(KEY_ID_HEX);
    let secret = secret.strip_prefix('_')?;
    key_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some((key_id, secret))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A name from a request, cut short for a message or a log line.
pub fn shown(name: &str) -> String {
    name.chars()
        .take(crate::service::convert::MAX_TENANT_BYTES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..32).map(|i| i * 7 + 3).collect();
        let text = encode_hex(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(decode_hex(&text).map(|b| b.to_vec()), Some(bytes));
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn keys_split_only_in_their_shape() {
        assert_eq!(
            split_key("sgd_0123456789abcdef_secret"),
            Some(("0123456789abcdef", "secret"))
        );
        assert_eq!(split_key("sgd_0123456789abcdeg_secret"), None);
        assert_eq!(split_key("sgd_0123456789abcdef"), None);
        assert_eq!(split_key("sgd_0123456789abcdefXsecret"), None);
        assert_eq!(split_key("sgd_ééééééééé_x"), None);
        assert_eq!(split_key("admin-key"), None);
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            encode_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
