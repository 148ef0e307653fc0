//! The gate every call passes before it reaches a service: it checks the
//! API key, sheds load past the concurrency limit, notes the caller's
//! deadline, and counts the call in the metrics when its answer ends.
//!
//! Health and reflection pass untouched, so that probes and grpcurl work
//! without a key.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

use crate::auth::{Caller, SharedKeys};
use crate::metrics::{InFlight, SharedMetrics};

/// The longest deadline honoured as given; longer ones are cut to this.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// How much before the caller's deadline the gate answers it. tonic's own
/// timer, started a moment before the gate's, answers CANCELLED; ours must
/// come first to answer DEADLINE_EXCEEDED.
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// What a call carries from the gate to the handler's blocking work.
#[derive(Clone)]
pub struct CallContext {
    /// When the caller stops waiting, as its `grpc-timeout` header says.
    pub deadline: Option<Instant>,
    /// The call's slot of `--max-concurrent-calls`; work that outlives the
    /// answer (an evaluation past the deadline) keeps a clone, so that the
    /// slot is free only when the work is done.
    pub slot: Option<Arc<Slot>>,
}

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// The context of the call this task serves; empty outside a gated call.
pub fn current() -> CallContext {
    CONTEXT.try_with(CallContext::clone).unwrap_or(CallContext {
        deadline: None,
        slot: None,
    })
}

/// Paths of the gated RPCs, to their service and method name (metric
/// labels), read once from the compiled-in descriptors.
static METHODS: std::sync::LazyLock<HashMap<String, (Service, &'static str)>> =
    std::sync::LazyLock::new(|| {
        let pool = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into the binary decodes");
        let mut methods = HashMap::new();
        for service in pool.services() {
            let kind = match service.full_name() {
                crate::proto::SERVICE_NAME => Service::Segments,
                crate::proto::ADMIN_SERVICE_NAME => Service::Admin,
                _ => continue,
            };
            for method in service.methods() {
                // A few dozen names, made `'static` once per process.
                let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                methods.insert(format!("/{}/{}", service.full_name(), name), (kind, name));
            }
        }
        methods
    });

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Segments,
    Admin,
}

/// What the gate knows and holds, shared by every connection.
pub struct GateState {
    keys: SharedKeys,
    metrics: SharedMetrics,
    permits: Arc<Semaphore>,
    max_calls: usize,
    /// With keys on, each tenant's own share of the slots, so that one
    /// tenant cannot take them all; made on a tenant's first call.
    tenant_permits: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    max_tenant_calls: usize,
}

/// The slots a call holds: one of the server's, and with keys on one of
/// its tenant's.
pub struct Slot {
    _server: OwnedSemaphorePermit,
    _tenant: Option<OwnedSemaphorePermit>,
}

impl GateState {
    /// A gate over `keys` that serves at most `max_calls` segment calls at
    /// once, and at most `max_tenant_calls` of one tenant when keys are on
    /// (admin calls are not limited, so that a key can be revoked under
    /// load).
    pub fn new(
        keys: SharedKeys,
        metrics: SharedMetrics,
        max_calls: usize,
        max_tenant_calls: usize,
    ) -> GateState {
        GateState {
            keys,
            metrics,
            permits: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            tenant_permits: std::sync::Mutex::default(),
            max_tenant_calls,
        }
    }

    /// A slot of `tenant`'s share, or none left.
    fn tenant_slot(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .tenant_permits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_tenant_calls)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }
}

/// The layer that puts a [`Gate`] in front of the server's routes.
#[derive(Clone)]
pub struct GateLayer(pub Arc<GateState>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    state: Arc<GateState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Gate<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Default + Unpin + Send + 'static,
{
    type Response = Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let state = self.state.clone();
        let path = request.uri().path();
        let gated = METHODS.get(path).copied().or_else(|| {
            // An unknown method of a gated service is still a call to it.
            let service = path.trim_start_matches('/').split('/').next()?;
            match service {
                crate::proto::SERVICE_NAME => Some((Service::Segments, "other")),
                crate::proto::ADMIN_SERVICE_NAME => Some((Service::Admin, "other")),
                _ => None,
            }
        });
        let Some((service, method)) = gated else {
            // Health, reflection, and paths no service knows.
            let future = self.inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(Observed::untracked)) });
        };

        let admitted = admit(&state, service, request.headers());
        let (caller, permit) = match admitted {
            Ok(admitted) => admitted,
            Err(status) => {
                let code = status.code();
                // Debug, not info: a flood of refusals must not cost a
                // line each when the server is already short of time.
                tracing::debug!(
                    rpc = method,
                    code = crate::metrics::code_name(code),
                    message = status.message(),
                    "call refused at the gate"
                );
                state.metrics.refused(method, code);
                let response = status.into_http::<ResBody>().map(Observed::untracked);
                return Box::pin(async move { Ok(response) });
            }
        };
        let deadline = grpc_timeout(request.headers())
            .map(|t| started + t.min(MAX_DEADLINE).saturating_sub(DEADLINE_MARGIN));
        request.extensions_mut().insert(caller);
        let slot = permit.map(Arc::new);
        let context = CallContext {
            deadline,
            slot: slot.clone(),
        };

        let held = Held {
            metrics: state.metrics.clone(),
            method,
            started,
            code: None,
            _slot: slot,
            _in_flight: state.metrics.enter(),
        };
        // The service was readied for this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let answer = CONTEXT.scope(context, inner.call(request));
            let answered = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), answer).await.ok(),
                None => Some(answer.await),
            };
            let mut response = match answered {
                Some(response) => response?,
                None => Status::deadline_exceeded("the call's deadline (grpc-timeout) passed")
                    .into_http::<ResBody>(),
            };
            caller_codes(response.headers_mut());
            let code = header_code(response.headers());
            Ok(response.map(|body| Observed {
                body,
                held: Some(held),
                code,
            }))
        })
    }
}

/// The caller, and (for a segment call) a slot of the concurrency limit,
/// or why not.
fn admit(
    state: &GateState,
    service: Service,
    headers: &HeaderMap,
) -> Result<(Caller, Option<Slot>), Status> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let caller = match service {
        Service::Segments => state.keys.authenticate(authorization)?,
        Service::Admin if !state.keys.enabled() => {
            return Err(Status::failed_precondition(
                "keys are off: this server was started without --admin-key, so it has no \
                 tenants or keys to manage",
            ));
        }
        Service::Admin => {
            return match state.keys.authenticate(authorization)? {
                Caller::Admin => Ok((Caller::Admin, None)),
                _ => Err(Status::permission_denied(
                    "the admin service takes the admin key only",
                )),
            };
        }
    };
    let tenant = match &caller {
        Caller::Tenant(tenant) => match state.tenant_slot(tenant) {
            Some(slot) => Some(slot),
            None => {
                state.metrics.shed();
                return Err(Status::resource_exhausted(format!(
                    "{} calls of this tenant are in flight, the most one tenant may have \
                     (--max-calls-per-tenant); retry with backoff",
                    state.max_tenant_calls
                )));
            }
        },
        _ => None,
    };
    let server = state.permits.clone().try_acquire_owned().map_err(|_| {
        state.metrics.shed();
        Status::resource_exhausted(format!(
            "{} calls are in flight, the most this server takes (--max-concurrent-calls); \
             retry with backoff",
            state.max_calls
        ))
    })?;
    Ok((
        caller,
        Some(Slot {
            _server: server,
            _tenant: tenant,
        }),
    ))
}

/// The `grpc-timeout` header: digits, then H, M, S, m, u or n.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Puts right two codes tonic gives for the caller's faults. A request
/// that does not decode (a string that is not UTF-8, a field of the wrong
/// wire type) is bad input, not INTERNAL: INVALID_ARGUMENT, keeping tonic's
/// message, which names the message and field
/// (`CountAudienceRequest.rule_text: invalid string value`). A message over
/// the size limit is a limit, not OUT_OF_RANGE: RESOURCE_EXHAUSTED.
fn caller_codes(headers: &mut HeaderMap) {
    let Some(message) = headers.get("grpc-message").map(|m| m.as_bytes()) else {
        return;
    };
    let code = match headers.get("grpc-status").map(|c| c.as_bytes()) {
        Some(b"13") if message.starts_with(b"failed%20to%20decode%20Protobuf") => "3",
        Some(b"11")
            if message.starts_with(b"Error,%20decoded%20message%20length%20too%20large") =>
        {
            "8"
        }
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
}

fn header_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// What a tracked call holds until its answer ends; dropped, it counts
/// the call with its code (CANCELLED if none was seen: the caller went
/// away, or the server's own timeout dropped the call).
struct Held {
    metrics: SharedMetrics,
    method: &'static str,
    started: Instant,
    code: Option<Code>,
    _slot: Option<Arc<Slot>>,
    _in_flight: InFlight,
}

impl Drop for Held {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.metrics.call(self.method, code, self.started.elapsed());
    }
}

/// A response body that records the call's code and duration when the
/// body ends (or is dropped, when the caller goes away), and releases its
/// permit then: a stream holds one for as long as it runs.
pub struct Observed<B> {
    body: B,
    held: Option<Held>,
    /// The code of a trailers-only answer, from its headers.
    code: Option<Code>,
}

impl<B> Observed<B> {
    fn untracked(body: B) -> Observed<B> {
        Observed {
            body,
            held: None,
            code: None,
        }
    }

    fn finish(&mut self, code: Code) {
        if let Some(mut held) = self.held.take() {
            held.code = Some(code);
        }
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        // Dropped before its end: a trailers-only answer, or the caller
        // went away.
        if let Some(code) = self.code {
            self.finish(code);
        }
    }
}

impl<B> http_body::Body for Observed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let polled = match polled {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    caller_codes(&mut trailers);
                    if let Some(code) = header_code(&trailers) {
                        self.finish(code);
                    }
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        };
        match &polled {
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
            Poll::Ready(Some(Err(_))) => self.finish(Code::Internal),
            Poll::Ready(None) => {
                let code = self.code.unwrap_or(Code::Unknown);
                self.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B: Default> Default for Observed<B> {
    fn default() -> Self {
        Observed::untracked(B::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("5n"), Some(Duration::from_nanos(5)));
        // At most eight digits, and a known unit.
        assert_eq!(timeout_of("123456789S"), None);
        assert_eq!(timeout_of("10s"), None);
        assert_eq!(timeout_of("S"), None);
        assert_eq!(timeout_of("-1S"), None);
    }
}
