//! Shared test support: a real segmentd server on a free loopback port with
//! a temporary data directory, and a generated gRPC client for it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut};
use segmentd::proto::segment_service_client::SegmentServiceClient;
use segmentd::proto::{ResolveSegmentRequest, resolve_segment_request};
use segmentd::store::StoreOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<segmentd::error::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` over the data directory `data`.
    pub async fn start(data: &Path) -> TestServer {
        TestServer::start_with(data, StoreOptions::default()).await
    }

    /// Starts a server whose storage is opened with `options`.
    pub async fn start_with(data: &Path, options: StoreOptions) -> TestServer {
        let options = segmentd::server::ServeOptions {
            store: options,
            ..Default::default()
        };
        TestServer::start_configured(data, options).await
    }

    /// Starts a server with every setting given.
    pub async fn start_configured(
        data: &Path,
        options: segmentd::server::ServeOptions,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let path = data.to_owned();
        let task = tokio::spawn(async move {
            segmentd::server::serve_configured(listener, &path, options, async {
                let _ = stopped.await;
            })
            .await
        });
        let server = TestServer {
            addr,
            data: data.to_owned(),
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_until_serving().await;
        server
    }

    /// A new client of the segment service.
    pub async fn client(&self) -> SegmentServiceClient<Channel> {
        SegmentServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The members of `rule` in `tenant`: one page, of at most 10,000.
    pub async fn members(&self, tenant: &str, rule: &str) -> BTreeSet<String> {
        let request = ResolveSegmentRequest {
            tenant: tenant.into(),
            audience: Some(resolve_segment_request::Audience::RuleText(rule.into())),
            page_size: 10_000,
            ..Default::default()
        };
        let page = self.client().await.resolve_segment(request).await;
        let page = page.unwrap_or_else(|status| panic!("{rule}: {status}"));
        page.into_inner().customer_ids.into_iter().collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_until_serving(&self) {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        for _ in 0..200 {
            if let Ok(channel) = Channel::from_shared(self.url()).unwrap().connect().await {
                let mut health = HealthClient::new(channel);
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(response) = health.check(request).await
                    && response.into_inner().status == ServingStatus::Serving as i32
                {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server at {} never became SERVING", self.addr);
    }

    /// Stops the server gracefully and waits until storage is flushed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A timestamp from an RFC 3339 string.
pub fn ts(text: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// Sends and receives messages as the bytes they are, so that any method
/// of the descriptor set can be called.
#[derive(Clone, Copy, Default)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}
