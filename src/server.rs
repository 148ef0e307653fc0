//! Runs the gRPC server: the segment service, the standard health service
//! and server reflection (v1 and v1alpha), until asked to stop.
//!
//! Health turns SERVING only once storage is open, and NOT_SERVING as soon
//! as shutdown begins; in-flight calls finish, then storage is flushed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::proto::segment_service_server::SegmentServiceServer;
use crate::proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::service::Segments;

/// Largest request message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Refuses to serve without keys on anything but a loopback address.
pub fn check_listen_address(addr: &SocketAddr) -> Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "refusing to serve without API keys on {addr}: without an admin key segmentd listens \
         on a loopback address only (such as 127.0.0.1:50051)"
    )))
}

/// Opens storage at `data` and serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    data: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener: {e}")))?;
    check_listen_address(&local)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;

    let started = std::time::Instant::now();
    let path = data.to_owned();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&path))
        .await
        .map_err(|e| Error::Internal(format!("opening storage: {e}")))??;
    let engine = Arc::new(engine);
    tracing::info!(
        data = %data.display(),
        tenants = engine.tenant_count(),
        millis = started.elapsed().as_millis() as u64,
        "storage open"
    );

    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let segments = SegmentServiceServer::new(Segments::new(engine.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    tracing::info!(listen = %local, "serving without API keys (loopback only)");

    let stopping = health.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight calls");
        stopping
            .set_service_status("", ServingStatus::NotServing)
            .await;
        stopping
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(segments)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::Internal(format!("server: {e}")))?;

    let flushing = engine.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .map_err(|e| Error::Internal(format!("flushing storage: {e}")))??;
    tracing::info!("storage flushed; stopped");
    Ok(())
}

/// A reflection builder that describes every service served: ours, health,
/// and both reflection versions, so either version lists all of them.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
