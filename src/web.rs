//! The segment editor page, served at `/` on the service's own port: a
//! static page whose script calls the segment service over gRPC-Web, as any
//! other client could, with protobuf.js reading `segmentd.proto` itself.
//!
//! Every file is compiled into the binary, so the page needs no build step
//! and no network. `serve --no-editor` leaves it out.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Every file of the page: path, content type, contents.
const FILES: [(&str, &str, &str); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "/vendor/protobuf.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/protobuf.min.js"),
    ),
    (
        "/segmentd.proto",
        "text/plain; charset=utf-8",
        include_str!("../proto/segmentd/v1/segmentd.proto"),
    ),
];

/// The page's routes: the page, its script and style, protobuf.js, and
/// the service's `.proto`.
pub fn routes() -> Router {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || file(content_type, body)))
        })
}

async fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary: always ask again.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // No other site may frame it; protobuf.js compiles its codecs
            // with `Function`, hence 'unsafe-eval'.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-eval'; img-src 'self' data:; \
                 frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

/// The outermost layer: refuses requests for another host when keys are
/// off, then serves the page's files ahead of gRPC-Web's translation (which
/// answers any other HTTP/1.1 request with 400).
///
/// Keys off is safe only because just this host can connect; a web page
/// elsewhere could still reach a loopback port through DNS rebinding (its
/// own name made to point at 127.0.0.1), and its requests then name its
/// own host. So without keys only loopback names are served.
#[derive(Clone)]
pub struct PageLayer {
    page: Option<Router>,
    loopback_only: bool,
}

impl PageLayer {
    /// The page's routes when `editor` is on; `keys_on` lifts the check of
    /// the host asked for.
    pub fn new(editor: bool, keys_on: bool) -> PageLayer {
        PageLayer {
            page: editor.then(routes),
            loopback_only: !keys_on,
        }
    }
}

impl<S> tower::Layer<S> for PageLayer {
    type Service = PageService<S>;

    fn layer(&self, inner: S) -> PageService<S> {
        PageService {
            inner,
            page: self.page.clone(),
            loopback_only: self.loopback_only,
        }
    }
}

/// The service of [`PageLayer`].
#[derive(Clone)]
pub struct PageService<S> {
    inner: S,
    page: Option<Router>,
    loopback_only: bool,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for PageService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.loopback_only && !asks_for_loopback(&request) {
            tracing::info!(host = ?host_of(&request), "refused: keys are off and the host asked for is not loopback");
            let mut refused = http::Response::new(tonic::body::Body::empty());
            *refused.status_mut() = http::StatusCode::FORBIDDEN;
            return Box::pin(async move { Ok(refused) });
        }
        if let Some(page) = &self.page
            && is_page_request(&request)
        {
            let mut page = page.clone();
            return Box::pin(async move {
                let response = match tower::Service::call(&mut page, request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok(response.map(tonic::body::Body::new))
            });
        }
        Box::pin(self.inner.call(request))
    }
}

/// The host a request asks for: the URI's authority (HTTP/2), else the
/// `Host` header (HTTP/1.1).
fn host_of<B>(request: &http::Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
}

/// Whether a request asks for a loopback name: `localhost`, 127.0.0.0/8 or
/// `[::1]`, with any port. A request naming no host is let through (it did
/// not come from a browser, which always names one).
fn asks_for_loopback<B>(request: &http::Request<B>) -> bool {
    let Some(host) = host_of(request) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// A GET or HEAD: the page's, as gRPC and gRPC-Web only ever POST. Paths
/// that are not the page's files get 404 from its router.
fn is_page_request<B>(request: &http::Request<B>) -> bool {
    let method = request.method();
    method == http::Method::GET || method == http::Method::HEAD
}
