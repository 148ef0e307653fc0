//! Prometheus metrics, served as text on a side port at `/metrics`.
//!
//! Labels stay bounded: `method` is one of the RPCs served (anything else
//! is `other`), `code` one of gRPC's seventeen, and the per-tenant gauges
//! cover the `MAX_TENANT_SERIES` largest tenants, with the rest summed
//! under `tenant="(others)"`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Tenants given series of their own; the rest share one.
pub const MAX_TENANT_SERIES: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Histograms<MethodLabels>,
    in_flight: Gauge,
    shed: Counter,
    commits: Counter,
    commit_latency: Histogram,
    customers: Family<TenantLabels, Gauge>,
    bitmaps: Family<TenantLabels, Gauge>,
    /// Held while the tenant gauges are refilled and the page written, so
    /// that two scrapes at once do not see each other's half-filled gauges.
    rendering: std::sync::Mutex<()>,
}

/// Shared by the gate, the service and the scrape endpoint.
pub type SharedMetrics = Arc<Metrics>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `segmentd_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("segmentd");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "grpc_calls",
            "Finished gRPC calls by method and status code",
            calls.clone(),
        );
        let latency: Histograms<MethodLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_call_seconds",
            "Time from a call's arrival to its answer (for streams, to their end)",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "grpc_calls_in_flight",
            "Calls of the segment and admin services being served",
            in_flight.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "grpc_calls_shed",
            "Calls refused with RESOURCE_EXHAUSTED because --max-concurrent-calls were in flight",
            shed.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "store_commits",
            "Write batches committed to disk",
            commits.clone(),
        );
        let commit_latency = latency_histogram();
        registry.register(
            "store_commit_seconds",
            "Time to apply a write batch and flush it to disk",
            commit_latency.clone(),
        );
        let customers = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenant_customers",
            "Live customers per tenant",
            customers.clone(),
        );
        let bitmaps = Family::<TenantLabels, Gauge>::default();
        registry.register("tenant_bitmaps", "Bitmaps held per tenant", bitmaps.clone());
        Metrics {
            registry,
            calls,
            latency,
            in_flight,
            shed,
            commits,
            commit_latency,
            customers,
            bitmaps,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// Records a call refused before it was served; its (tiny) time stays
    /// out of the latency histogram.
    pub fn refused(&self, method: &'static str, code: tonic::Code) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// Records a finished call.
    pub fn call(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// One more call in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts a call refused because every slot was taken.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// Records a commit of a write batch.
    pub fn commit(&self, elapsed: Duration) {
        self.commits.inc();
        self.commit_latency.observe(elapsed.as_secs_f64());
    }

    /// The metrics as Prometheus text, with the tenant gauges read now.
    pub fn render(&self, engine: &Engine) -> String {
        let _rendering = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.customers.clear();
        self.bitmaps.clear();
        let sizes = engine.tenant_sizes();
        let (named, others) = sizes.split_at(sizes.len().min(MAX_TENANT_SERIES));
        for (tenant, customers, bitmaps) in named {
            let labels = TenantLabels {
                tenant: tenant.clone(),
            };
            self.customers.get_or_create(&labels).set(*customers as i64);
            self.bitmaps.get_or_create(&labels).set(*bitmaps as i64);
        }
        if !others.is_empty() {
            let labels = TenantLabels {
                tenant: "(others)".to_owned(),
            };
            let (customers, bitmaps) = others
                .iter()
                .fold((0, 0), |(c, b), (_, customers, bitmaps)| {
                    (c + customers, b + bitmaps)
                });
            self.customers.get_or_create(&labels).set(customers as i64);
            self.bitmaps.get_or_create(&labels).set(bitmaps as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A call in flight; counted down when dropped.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// gRPC's name of a status code, as metrics and logs show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: SharedMetrics,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, engine) = (metrics.clone(), engine.clone());
            async move {
                let rendered = tokio::task::spawn_blocking(move || metrics.render(&engine)).await;
                let Ok(text) = rendered else {
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "rendering the metrics failed; the server log has the details".to_owned(),
                    );
                };
                (
                    axum::http::StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
