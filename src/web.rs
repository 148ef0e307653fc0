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
        ],
        body,
    )
}

/// Serves the page's files ahead of every other layer: gRPC-Web's
/// translation answers any other HTTP/1.1 request with 400.
#[derive(Clone)]
pub struct PageLayer {
    page: Option<Router>,
}

impl PageLayer {
    /// The page's routes when `editor` is on; otherwise a layer that passes
    /// everything through.
    pub fn new(editor: bool) -> PageLayer {
        PageLayer {
            page: editor.then(routes),
        }
    }
}

impl<S> tower::Layer<S> for PageLayer {
    type Service = PageService<S>;

    fn layer(&self, inner: S) -> PageService<S> {
        PageService {
            inner,
            page: self.page.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PageService<S> {
    inner: S,
    page: Option<Router>,
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

/// A GET or HEAD: the page's, as gRPC and gRPC-Web only ever POST. Paths
/// that are not the page's files get 404 from its router.
fn is_page_request<B>(request: &http::Request<B>) -> bool {
    let method = request.method();
    method == http::Method::GET || method == http::Method::HEAD
}
