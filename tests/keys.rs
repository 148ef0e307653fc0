//! API keys through a real server and client: every RPC the server
//! describes is called with no key, bad keys, a revoked key, another
//! tenant's key and the admin key, and must refuse each before it looks
//! at the tenant; keys are stored only as hashes and survive a restart.

mod common;

use std::path::Path;

use common::{Raw, TestServer};
use prost_reflect::prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use segmentd::proto;
use segmentd::proto::admin_service_client::AdminServiceClient;
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::server::ServeOptions;
use tonic::Code;
use tonic::transport::Channel;

const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// Calls `method` with an otherwise empty request naming `tenant`; the
/// code of the answer (of its first message, for a stream).
async fn call(
    channel: &Channel,
    method: &MethodDescriptor,
    tenant: &str,
    key: Option<&str>,
) -> Code {
    let mut message = DynamicMessage::new(method.input());
    if method.input().get_field_by_name("tenant").is_some() {
        message.set_field_by_name("tenant", Value::String(tenant.to_owned()));
    }
    let request = with_key(message.encode_to_vec(), key);
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    if method.is_server_streaming() {
        match grpc.server_streaming(request, path, Raw).await {
            Ok(mut stream) => match stream.get_mut().message().await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            },
            Err(status) => status.code(),
        }
    } else {
        match grpc.unary(request, path, Raw).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

fn methods(service: &str) -> Vec<MethodDescriptor> {
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    pool.get_service_by_name(service)
        .unwrap()
        .methods()
        .collect()
}

async fn start_with_keys(data: &Path) -> TestServer {
    TestServer::start_configured(
        data,
        ServeOptions {
            admin_key: Some(ADMIN_KEY.to_owned()),
            ..Default::default()
        },
    )
    .await
}

fn admin(channel: &Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel.clone())
}

async fn create_tenant(channel: &Channel, tenant: &str) {
    let request = proto::CreateTenantRequest {
        tenant: tenant.to_owned(),
        time_zone: String::new(),
    };
    admin(channel)
        .create_tenant(with_key(request, Some(ADMIN_KEY)))
        .await
        .unwrap();
}

/// A new key of `tenant`: (key id, the key).
async fn create_key(channel: &Channel, tenant: &str) -> (String, String) {
    let request = proto::CreateApiKeyRequest {
        tenant: tenant.to_owned(),
        label: "tests".to_owned(),
    };
    let made = admin(channel)
        .create_api_key(with_key(request, Some(ADMIN_KEY)))
        .await
        .unwrap()
        .into_inner();
    (made.api_key.unwrap().key_id, made.secret)
}

async fn revoke(channel: &Channel, key_id: &str) -> proto::ApiKey {
    let request = proto::RevokeApiKeyRequest {
        key_id: key_id.to_owned(),
    };
    admin(channel)
        .revoke_api_key(with_key(request, Some(ADMIN_KEY)))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
}

fn customer(id: &str, opted_in: bool) -> proto::Customer {
    proto::Customer {
        customer_id: id.to_owned(),
        opted_in: Some(opted_in),
        ..Default::default()
    }
}

async fn upsert(
    channel: &Channel,
    tenant: &str,
    key: &str,
    customers: Vec<proto::Customer>,
) -> Result<(), tonic::Status> {
    let request = proto::UpsertCustomersRequest {
        tenant: tenant.to_owned(),
        customers,
    };
    SegmentServiceClient::new(channel.clone())
        .upsert_customers(with_key(request, Some(key)))
        .await
        .map(|_| ())
}

async fn count(
    channel: &Channel,
    tenant: &str,
    key: Option<&str>,
    rule: &str,
) -> Result<u64, tonic::Status> {
    let request = proto::CountAudienceRequest {
        tenant: tenant.to_owned(),
        audience: Some(proto::count_audience_request::Audience::RuleText(
            rule.to_owned(),
        )),
        ..Default::default()
    };
    SegmentServiceClient::new(channel.clone())
        .count_audience(with_key(request, key))
        .await
        .map(|answer| answer.into_inner().count)
}

/// A key with its last character changed: the right id, a wrong secret.
fn forged(key: &str) -> String {
    let mut forged = key.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_segment_rpc_refuses_missing_wrong_revoked_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_keys(dir.path()).await;
    let channel = server.channel().await;
    create_tenant(&channel, "alpha").await;
    create_tenant(&channel, "beta").await;
    let (_, alpha_key) = create_key(&channel, "alpha").await;
    let (_, beta_key) = create_key(&channel, "beta").await;
    let (revoked_id, revoked_key) = create_key(&channel, "alpha").await;
    revoke(&channel, &revoked_id).await;
    upsert(&channel, "alpha", &alpha_key, vec![customer("a1", true)])
        .await
        .unwrap();

    let forged_key = forged(&alpha_key);
    let cases: [(&str, &str, Option<&str>, Code); 8] = [
        ("no key", "alpha", None, Code::Unauthenticated),
        (
            "a key that is not one",
            "alpha",
            Some("nonsense"),
            Code::Unauthenticated,
        ),
        (
            "a forged secret",
            "alpha",
            Some(&forged_key),
            Code::Unauthenticated,
        ),
        (
            "a revoked key",
            "alpha",
            Some(&revoked_key),
            Code::Unauthenticated,
        ),
        (
            "another tenant's key",
            "alpha",
            Some(&beta_key),
            Code::PermissionDenied,
        ),
        (
            "a key, on a tenant that does not exist",
            "ghost",
            Some(&beta_key),
            Code::PermissionDenied,
        ),
        (
            "a key, on a tenant that is not valid",
            "no such tenant!",
            Some(&beta_key),
            Code::PermissionDenied,
        ),
        (
            "the admin key",
            "alpha",
            Some(ADMIN_KEY),
            Code::PermissionDenied,
        ),
    ];

    let segment_methods = methods(proto::SERVICE_NAME);
    assert!(
        segment_methods.len() >= 20,
        "{} methods",
        segment_methods.len()
    );
    let mut wrong = Vec::new();
    for method in &segment_methods {
        for (case, tenant, key, expected) in &cases {
            let code = call(&channel, method, tenant, *key).await;
            if code != *expected {
                wrong.push(format!(
                    "{} with {case}: {code:?}, not {expected:?}",
                    method.name()
                ));
            }
        }
        // The tenant's own key gets past the gate: whatever the answer,
        // it is not about the key.
        let code = call(&channel, method, "alpha", Some(&alpha_key)).await;
        if matches!(code, Code::Unauthenticated | Code::PermissionDenied) {
            wrong.push(format!(
                "{} with the tenant's own key: {code:?}",
                method.name()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The scheme's name is case-insensitive.
    let mut request = tonic::Request::new(proto::CountAudienceRequest {
        tenant: "alpha".to_owned(),
        audience: Some(proto::count_audience_request::Audience::RuleText(
            "opted_in".to_owned(),
        )),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("bearer {alpha_key}").parse().unwrap(),
    );
    let counted = SegmentServiceClient::new(channel.clone())
        .count_audience(request)
        .await
        .unwrap();
    assert_eq!(counted.into_inner().count, 1);

    // A write with another tenant's key changes nothing.
    let refused = upsert(&channel, "alpha", &beta_key, vec![customer("b1", true)]).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(
        count(&channel, "alpha", Some(&alpha_key), "opted_in")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        count(&channel, "beta", Some(&beta_key), "opted_in")
            .await
            .unwrap(),
        0
    );

    // The admin service takes the admin key only.
    for method in methods(proto::ADMIN_SERVICE_NAME) {
        for (key, expected) in [
            (None, Code::Unauthenticated),
            (Some("nonsense"), Code::Unauthenticated),
            (Some(alpha_key.as_str()), Code::PermissionDenied),
        ] {
            let code = call(&channel, &method, "alpha", key).await;
            assert_eq!(code, expected, "{} with {key:?}", method.name());
        }
        let code = call(&channel, &method, "alpha", Some(ADMIN_KEY)).await;
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{} with the admin key: {code:?}",
            method.name()
        );
    }

    // Health needs no key, so that probes work.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: proto::SERVICE_NAME.to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(std::fs::read(&path).unwrap());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_stored_as_hashes_and_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_keys(dir.path()).await;
    let channel = server.channel().await;
    create_tenant(&channel, "shop").await;

    // Creating it again, or a key for a tenant that is not there, is refused.
    let again = admin(&channel)
        .create_tenant(with_key(
            proto::CreateTenantRequest {
                tenant: "shop".to_owned(),
                time_zone: String::new(),
            },
            Some(ADMIN_KEY),
        ))
        .await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    let missing = admin(&channel)
        .create_api_key(with_key(
            proto::CreateApiKeyRequest {
                tenant: "nowhere".to_owned(),
                label: String::new(),
            },
            Some(ADMIN_KEY),
        ))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let (key_id, key) = create_key(&channel, "shop").await;
    let customers = [("c1", true), ("c2", false), ("c3", true)];
    let opted_in = customers.iter().filter(|(_, opted)| *opted).count() as u64;
    upsert(
        &channel,
        "shop",
        &key,
        customers
            .iter()
            .map(|(id, opted)| customer(id, *opted))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(
        count(&channel, "shop", Some(&key), "opted_in")
            .await
            .unwrap(),
        opted_in
    );
    server.stop().await;

    // Neither the secret nor the admin key is anywhere on disk.
    // `sgd_`, the key id, `_`, then the secret (whose base64url may hold `_`).
    let secret = key.splitn(3, '_').nth(2).unwrap();
    assert_eq!(secret.len(), 43, "{key}");
    for bytes in files_under(dir.path()) {
        for needle in [secret.as_bytes(), ADMIN_KEY.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "a secret is stored in the clear"
            );
        }
    }

    let server = start_with_keys(dir.path()).await;
    let channel = server.channel().await;
    assert_eq!(
        count(&channel, "shop", Some(&key), "opted_in")
            .await
            .unwrap(),
        opted_in
    );
    let revoked = revoke(&channel, &key_id).await;
    assert!(revoked.revoke_time.is_some());
    let refused = count(&channel, "shop", Some(&key), "opted_in").await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    server.stop().await;

    let server = start_with_keys(dir.path()).await;
    let channel = server.channel().await;
    let refused = count(&channel, "shop", Some(&key), "opted_in").await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let listed = admin(&channel)
        .list_api_keys(with_key(
            proto::ListApiKeysRequest {
                tenant: "shop".to_owned(),
            },
            Some(ADMIN_KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, key_id);
    assert!(listed[0].revoke_time.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_key_only_loopback_is_served_and_admin_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused =
        segmentd::server::serve_configured(listener, dir.path(), ServeOptions::default(), async {})
            .await;
    let error = refused.unwrap_err().to_string();
    assert!(
        error.contains("admin key") && error.contains("loopback"),
        "{error}"
    );

    let short = ServeOptions {
        admin_key: Some("short".to_owned()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = segmentd::server::serve_configured(listener, dir.path(), short, async {}).await;
    assert!(refused.unwrap_err().to_string().contains("--admin-key"));

    let server = TestServer::start(dir.path()).await;
    let channel = server.channel().await;
    for method in methods(proto::ADMIN_SERVICE_NAME) {
        let code = call(&channel, &method, "alpha", Some(ADMIN_KEY)).await;
        assert_eq!(code, Code::FailedPrecondition, "{}", method.name());
    }
    // Keyless, a first write creates the tenant, with or without a header.
    upsert(&channel, "open", "anything", vec![customer("x", true)])
        .await
        .unwrap();
    assert_eq!(count(&channel, "open", None, "opted_in").await.unwrap(), 1);
    server.stop().await;
}
