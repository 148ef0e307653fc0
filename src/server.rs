//! Runs the gRPC server: the segment service, the standard health service
//! and server reflection (v1 and v1alpha), until asked to stop.
//!
//! Health turns SERVING only once storage is open, and NOT_SERVING as soon
//! as shutdown begins; in-flight calls finish, then storage is flushed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{Keys, SharedKeys};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gate::{GateLayer, GateState};
use crate::metrics::{Metrics, SharedMetrics};
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::segment_service_server::SegmentServiceServer;
use crate::proto::{FILE_DESCRIPTOR_SET, SERVICE_NAME};
use crate::service::Segments;
use crate::service::admin::Admin;
use crate::store::StoreOptions;

/// Largest request message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Calls served at once unless told otherwise; more are refused with
/// `RESOURCE_EXHAUSTED` rather than queued.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 256;
/// Calls of one tenant served at once unless told otherwise (with keys
/// on): half the server's, so that two tenants at most fill it.
pub const DEFAULT_MAX_CALLS_PER_TENANT: usize = DEFAULT_MAX_CONCURRENT_CALLS / 2;

/// Everything `serve` can be told besides where to listen and what to serve.
pub struct ServeOptions {
    pub store: StoreOptions,
    /// With one, keys are on (and any address may be listened on).
    pub admin_key: Option<String>,
    /// A PEM certificate chain and private key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<TcpListener>,
    /// How long health says NOT_SERVING before a graceful stop begins.
    pub drain: Duration,
    pub max_concurrent_calls: usize,
    /// With keys on, the most calls of one tenant at once.
    pub max_calls_per_tenant: usize,
    /// How often the change feed moves relative windows.
    pub watch_tick: Duration,
    /// How long the change feed keeps its entries.
    pub watch_retention: Duration,
    /// Serve the segment editor page at `/`.
    pub editor: bool,
    /// Origins whose pages may call the service over gRPC-Web (CORS).
    pub cors_origins: Vec<String>,
}

/// How often the change feed moves relative windows unless told otherwise.
pub const DEFAULT_WATCH_TICK: Duration = Duration::from_secs(10);
/// How long the change feed keeps entries unless told otherwise: a week.
pub const DEFAULT_WATCH_RETENTION: Duration = Duration::from_secs(7 * 86_400);

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            store: StoreOptions::default(),
            admin_key: None,
            tls: None,
            metrics: None,
            drain: Duration::ZERO,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_calls_per_tenant: DEFAULT_MAX_CALLS_PER_TENANT,
            watch_tick: DEFAULT_WATCH_TICK,
            watch_retention: DEFAULT_WATCH_RETENTION,
            editor: true,
            cors_origins: Vec::new(),
        }
    }
}

/// Refuses to serve without keys on anything but a loopback address.
pub fn check_listen_address(addr: &SocketAddr, keys_on: bool) -> Result<()> {
    if keys_on || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "refusing to listen on {addr} without API keys: give an admin key (--admin-key or \
         SEGMENTD_ADMIN_KEY) to serve on other addresses, or listen on a loopback address \
         (127.0.0.1, ::1 or localhost, such as 127.0.0.1:50051)"
    )))
}

/// Opens storage at `data` and serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    data: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, data, StoreOptions::default(), shutdown).await
}

/// As `serve`, with storage opened with `options`.
pub async fn serve_with(
    listener: TcpListener,
    data: &Path,
    options: StoreOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let options = ServeOptions {
        store: options,
        ..ServeOptions::default()
    };
    serve_configured(listener, data, options, shutdown).await
}

/// As `serve`, with every setting.
pub async fn serve_configured(
    listener: TcpListener,
    data: &Path,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener: {e}")))?;
    check_listen_address(&local, options.admin_key.is_some())?;
    if let Some(admin_key) = &options.admin_key {
        crate::auth::check_admin_key(admin_key)?;
    }
    if options.max_concurrent_calls == 0 {
        return Err(Error::invalid(
            "--max-concurrent-calls",
            "must be at least 1",
        ));
    }
    // Keepalive pings find callers that vanished without closing their
    // connection, so that their streams stop.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some((cert, key)) = &options.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::invalid("--tls-cert", format!("cannot use it: {e}")))?;
    }

    let cors = cors_layer(&options.cors_origins)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;

    let started = std::time::Instant::now();
    let path = data.to_owned();
    let store_options = options.store;
    let opening =
        tokio::task::spawn_blocking(move || Engine::open_with(&path, store_options)).await;
    let engine = match opening {
        Ok(engine) => engine?,
        // sled can panic on a damaged directory; report it rather than crash.
        Err(join) => {
            let detail = join
                .try_into_panic()
                .ok()
                .and_then(|panic| {
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_default();
            return Err(Error::Corrupt(format!(
                "{} is damaged: the storage engine failed while reading it ({detail})",
                data.display()
            )));
        }
    };
    let engine = Arc::new(engine);
    tracing::info!(
        data = %data.display(),
        tenants = engine.tenant_count(),
        millis = started.elapsed().as_millis() as u64,
        "storage open"
    );

    let keys: SharedKeys = Arc::new(match &options.admin_key {
        Some(admin_key) => Keys::with_admin_key(admin_key, &engine)?,
        None => Keys::off(),
    });
    let metrics: SharedMetrics = Arc::new(Metrics::new());
    let observed = metrics.clone();
    engine.observe_commits(Box::new(move |elapsed| observed.commit(elapsed)));
    let gate = GateLayer(Arc::new(GateState::new(
        keys.clone(),
        metrics.clone(),
        options.max_concurrent_calls,
        options.max_calls_per_tenant,
    )));

    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    // Set once the server stops taking calls: watches end then, so that the
    // graceful stop does not wait for them forever.
    let (watches_stop_tx, watches_stop) = tokio::sync::watch::channel(false);
    let segments = SegmentServiceServer::new(Segments::new(engine.clone()).with_stop(watches_stop))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(Admin::new(engine.clone(), keys.clone()))
        .max_decoding_message_size(crate::service::admin::MAX_ADMIN_MESSAGE_BYTES);

    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);
    let metrics_task = options.metrics.map(|listener| {
        let address = listener.local_addr().ok();
        tracing::info!(listen = ?address, "metrics at /metrics");
        let mut stopped = stopped_rx.clone();
        let engine = engine.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            };
            if let Err(error) = crate::metrics::serve(listener, metrics, engine, stop).await {
                tracing::warn!(%error, "metrics server failed");
            }
        })
    });

    let ticking = {
        let engine = engine.clone();
        let mut stopped = stopped_rx.clone();
        // A zero period would make tokio's interval panic.
        let tick = options.watch_tick.max(Duration::from_millis(10));
        let retention = options.watch_retention;
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                }
                let engine = engine.clone();
                let now = chrono::Utc::now().timestamp();
                let _ = tokio::task::spawn_blocking(move || engine.feed_tick(now, retention)).await;
            }
        })
    };

    set_health(&health, ServingStatus::Serving).await;
    let scheme = if options.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    if keys.enabled() {
        tracing::info!(listen = %local, scheme, "serving with API keys");
    } else {
        tracing::warn!(
            listen = %local,
            scheme,
            "serving without API keys (loopback only): anyone on this host can read and \
             write every tenant"
        );
    }
    if options.tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "plaintext on a non-loopback address: keys travel in the clear; give --tls-cert \
             and --tls-key, or terminate TLS in front"
        );
    }

    let stopping = health.clone();
    let drain = options.drain;
    let shutdown = async move {
        shutdown.await;
        set_health(&stopping, ServingStatus::NotServing).await;
        if !drain.is_zero() {
            tracing::info!(
                seconds = drain.as_secs_f64(),
                "shutting down: draining (health NOT_SERVING)"
            );
            tokio::time::sleep(drain).await;
        }
        let _ = watches_stop_tx.send(true);
        tracing::info!("shutting down: finishing in-flight calls");
    };
    // Without TCP_NODELAY a response written in two parts waited for the
    // client's delayed ACK: 40 ms on a count whose answer echoes a long rule.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(segments)
        .add_service(admin);
    // The page's files are served first; gRPC-Web calls are translated
    // before the gate, so keys, limits and metrics apply to them as to any
    // call; CORS answers browsers of other origins before that.
    builder
        .accept_http1(true)
        .layer(crate::web::PageLayer::new(options.editor, keys.enabled()))
        .layer(tower::util::option_layer(cors))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(gate)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("server: {e}")))?;
    let _ = stopped_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let _ = ticking.await;

    let flushing = engine.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        match flushing.checkpoint_all(chrono::Utc::now().timestamp()) {
            Ok(tenants) => tracing::info!(
                tenants,
                millis = started.elapsed().as_millis() as u64,
                "delta logs folded into the stored bitmaps"
            ),
            // The logs stay and are replayed at the next start.
            Err(error) => tracing::warn!(%error, "cannot fold the delta logs"),
        }
        flushing.flush()
    })
    .await
    .map_err(|e| Error::Internal(format!("flushing storage: {e}")))??;
    tracing::info!("storage flushed; stopped");
    Ok(())
}

/// Sets the health of the server as a whole and of the segment service.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Lets pages of `origins` call the service from a browser: gRPC-Web's
/// headers allowed in, the gRPC status headers shown to the page. `None`
/// without origins: only the service's own page (same origin) may.
fn cors_layer(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>> {
    use http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|origin| {
            let origin = origin.trim().trim_end_matches('/');
            let refused = || {
                Error::invalid(
                    "--cors-origin",
                    format!("`{origin}` is not an origin like `https://dashboard.example.com`"),
                )
            };
            let (scheme, host) = origin.split_once("://").ok_or_else(refused)?;
            if !matches!(scheme, "http" | "https")
                || host.is_empty()
                || host.contains(['/', '*', ' ', '?', '#'])
            {
                return Err(refused());
            }
            HeaderValue::from_str(origin).map_err(|_| refused())
        })
        .collect::<Result<Vec<_>>>()?;
    let allowed = [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "authorization",
        "grpc-timeout",
    ];
    let exposed = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(allowed.map(HeaderName::from_static))
            .expose_headers(exposed.map(HeaderName::from_static))
            .max_age(Duration::from_secs(3600)),
    ))
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

/// Listens for SIGINT and SIGTERM from now on, and returns a future that
/// resolves on the first of them. Call it before anything slow, so that a
/// signal sent during start-up is not lost.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
