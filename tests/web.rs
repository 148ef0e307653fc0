//! gRPC-Web and the editor page over plain HTTP/1.1, as a browser sends
//! them, against a real server: the page's files, keys on every RPC over
//! gRPC-Web, CORS for configured origins, and the editor switched off.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::TestServer;
use prost::Message;
use prost_reflect::DescriptorPool;
use segmentd::proto;
use segmentd::server::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_KEY: &str = "web-test-admin-key-0123456789";
const ORIGIN: &str = "https://dashboard.example.com";

/// An HTTP/1.1 answer: status code, headers (names lower-case), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The gRPC status: from the headers (a refusal without a message) or
    /// from the trailer frame of a gRPC-Web body.
    fn grpc_status(&self) -> Option<u32> {
        if let Some(status) = self.header("grpc-status") {
            return status.parse().ok();
        }
        self.frames()
            .into_iter()
            .find(|(flags, _)| flags & 0x80 != 0)
            .and_then(|(_, trailers)| {
                String::from_utf8(trailers)
                    .ok()?
                    .lines()
                    .find_map(|line| line.strip_prefix("grpc-status:"))
                    .and_then(|code| code.trim().parse().ok())
            })
    }

    /// The gRPC-Web frames of the body: (flags, payload).
    fn frames(&self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut rest = self.body.as_slice();
        while rest.len() >= 5 {
            let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            frames.push((rest[0], rest[5..5 + length].to_vec()));
            rest = &rest[5 + length..];
        }
        frames
    }
}

/// Sends one HTTP/1.1 request and reads the whole answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| *name == "host") {
        request.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();

    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A gRPC-Web call of the segment service with `message` as its request.
async fn grpc_web(addr: SocketAddr, rpc: &str, message: &[u8], key: Option<&str>) -> Answer {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let authorization = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    let path = format!("/segmentd.v1.SegmentService/{rpc}");
    http(addr, "POST", &path, &headers, &body).await
}

async fn start(data: &Path, admin_key: Option<&str>, editor: bool) -> TestServer {
    let options = ServeOptions {
        admin_key: admin_key.map(str::to_owned),
        editor,
        cors_origins: vec![ORIGIN.to_owned()],
        ..Default::default()
    };
    TestServer::start_configured(data, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_proto_are_served_and_other_paths_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None, true).await;

    let page = http(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("segment editor"), "{html}");
    assert!(html.contains("/app.js"));

    let proto_file = http(server.addr, "GET", "/segmentd.proto", &[], b"").await;
    assert_eq!(proto_file.status, 200);
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/segmentd/v1/segmentd.proto"
    ))
    .unwrap();
    assert_eq!(proto_file.body, on_disk);
    for path in ["/app.js", "/style.css", "/vendor/protobuf.min.js"] {
        assert_eq!(
            http(server.addr, "GET", path, &[], b"").await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(
        http(server.addr, "GET", "/favicon.ico", &[], b"")
            .await
            .status,
        404
    );
    let local = [("host", "localhost")];
    assert_eq!(http(server.addr, "GET", "/", &local, b"").await.status, 200);

    // Keys off: a page whose own name was made to point here (DNS
    // rebinding) asks for its own host, and is refused.
    let rebound = [("host", "attacker.example:50051")];
    assert_eq!(
        http(server.addr, "GET", "/", &rebound, b"").await.status,
        403
    );
    let call = http(
        server.addr,
        "POST",
        "/segmentd.v1.SegmentService/GetTenant",
        &[
            rebound[0],
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        &[0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(call.status, 403);
    server.stop().await;

    // Switched off, the page is not there; gRPC-Web still is.
    let server = start(dir.path(), None, false).await;
    assert_ne!(http(server.addr, "GET", "/", &[], b"").await.status, 200);
    let request = proto::GetTenantRequest {
        tenant: "nobody".to_owned(),
    };
    let answer = grpc_web(server.addr, "GetTenant", &request.encode_to_vec(), None).await;
    assert_eq!(answer.grpc_status(), Some(tonic::Code::NotFound as u32));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_counts_and_every_rpc_takes_keys_as_grpc_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ADMIN_KEY), true).await;
    let channel = server.channel().await;
    let mut admin = proto::admin_service_client::AdminServiceClient::new(channel);
    fn bearer<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_KEY}").parse().unwrap(),
        );
        request
    }
    let mut keys = Vec::new();
    for tenant in ["shop", "other"] {
        admin
            .create_tenant(bearer(proto::CreateTenantRequest {
                tenant: tenant.to_owned(),
                time_zone: String::new(),
            }))
            .await
            .unwrap();
        let made = admin
            .create_api_key(bearer(proto::CreateApiKeyRequest {
                tenant: tenant.to_owned(),
                label: "web".to_owned(),
            }))
            .await
            .unwrap()
            .into_inner();
        keys.push(made.secret);
    }
    let (shop_key, other_key) = (keys[0].as_str(), keys[1].as_str());

    // Two customers, one opted in, written over gRPC-Web with shop's key.
    let upsert = proto::UpsertCustomersRequest {
        tenant: "shop".to_owned(),
        customers: ["a", "b"]
            .iter()
            .enumerate()
            .map(|(n, id)| proto::Customer {
                customer_id: (*id).to_owned(),
                opted_in: Some(n == 0),
                ..Default::default()
            })
            .collect(),
    };
    let answer = grpc_web(
        server.addr,
        "UpsertCustomers",
        &upsert.encode_to_vec(),
        Some(shop_key),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.grpc_status(), Some(0));
    let count = proto::CountAudienceRequest {
        tenant: "shop".to_owned(),
        audience: Some(proto::count_audience_request::Audience::RuleText(
            "opted_in".to_owned(),
        )),
        ..Default::default()
    };
    let answer = grpc_web(
        server.addr,
        "CountAudience",
        &count.encode_to_vec(),
        Some(shop_key),
    )
    .await;
    assert_eq!(answer.grpc_status(), Some(0));
    let (_, message) = answer
        .frames()
        .into_iter()
        .find(|(flags, _)| *flags == 0)
        .unwrap();
    assert_eq!(
        proto::CountAudienceResponse::decode(&*message)
            .unwrap()
            .count,
        1
    );

    // Every RPC of the service: no key, a forged key, another tenant's key.
    let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = pool
        .get_service_by_name("segmentd.v1.SegmentService")
        .unwrap();
    // Field 1 of every request is the tenant.
    let tenant_only = [&[0x0a, 4][..], b"shop"].concat();
    let forged = format!("{}x", &shop_key[..shop_key.len() - 1]);
    let cases = [
        (None, tonic::Code::Unauthenticated),
        (Some(forged.as_str()), tonic::Code::Unauthenticated),
        (Some(other_key), tonic::Code::PermissionDenied),
    ];
    for method in service.methods() {
        for (key, expected) in &cases {
            let answer = grpc_web(server.addr, method.name(), &tenant_only, *key).await;
            assert_eq!(
                answer.grpc_status(),
                Some(*expected as u32),
                "{} with key {key:?}",
                method.name()
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_configured_origins_read_grpc_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None, true).await;
    let preflight = |origin: &'static str| {
        let addr = server.addr;
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,x-grpc-web,authorization",
                ),
            ];
            http(
                addr,
                "OPTIONS",
                "/segmentd.v1.SegmentService/CountAudience",
                &headers,
                b"",
            )
            .await
        }
    };
    let allowed = preflight(ORIGIN).await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = allowed.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = allowed.header("access-control-allow-headers").unwrap();
    for name in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    let refused = preflight("https://evil.example.com").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);

    // The call itself: the page of that origin may read the status headers.
    let request = proto::GetTenantRequest {
        tenant: "nobody".to_owned(),
    };
    let mut body = vec![0u8];
    body.extend_from_slice(&(request.encoded_len() as u32).to_be_bytes());
    body.extend_from_slice(&request.encode_to_vec());
    let headers = [
        ("origin", ORIGIN),
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    let answer = http(
        server.addr,
        "POST",
        "/segmentd.v1.SegmentService/GetTenant",
        &headers,
        &body,
    )
    .await;
    assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = answer.header("access-control-expose-headers").unwrap();
    for name in ["grpc-status", "grpc-message"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert_eq!(answer.grpc_status(), Some(tonic::Code::NotFound as u32));
    server.stop().await;
}
