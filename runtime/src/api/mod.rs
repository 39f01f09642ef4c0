//! The HTTP API: `fn app() -> Router` over a pool of sandboxes, the bundle and the web page.
//!
//! Routes by module: [`classify`] (`POST /v1/classify`), [`site`] (the page's files and the
//! bundle at `/model/`), [`access`] (the API key, CORS, and JSON for every error, whoever
//! produced it); the small endpoints are here.

mod access;
mod classify;
mod site;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feelings_core::Manifest;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use access::Access;
pub use classify::Classified;

use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
use crate::metrics::{Metrics, RequestLabels};
use crate::pool::Pool;

/// Request limits, with the defaults `feelings-serve` documents.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most texts in one request (422 beyond).
    pub max_texts: usize,
    /// Characters of a text that reach the classifier; longer texts are cut (keeping the part
    /// the model's truncation keeps) and answered with `truncated: true`.
    pub max_chars: usize,
    /// Longest wait for an answer, the time in the queue included (504 beyond).
    pub timeout: Duration,
    /// Longest time to receive a request's body (408 beyond).
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_texts: 64,
            max_chars: 20_000,
            timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    /// The sandboxes.
    pub pool: Pool,
    /// The deployed bundle's manifest.
    pub manifest: Manifest,
    /// The bundle's files as served at `/model/`: feelings.json, model.onnx, tokenizer.json.
    pub files: [Bytes; 3],
    /// The page served at `/` (none: only the API).
    pub web_dir: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
    /// Who may call the API, and from which web origins.
    pub access: Access,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The gateway's routes: the API (behind the API key when one is set), the health checks,
/// and, when there is a page, its own files and the bundle at `/model/`.
pub fn app(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/classify", post(classify::classify))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::require_api_key,
        ));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi));
    let mut router = api.merge(open);
    if let Some(dir) = &state.web_dir {
        router = router.merge(site::page(dir));
    }
    router
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(middleware::from_fn(access::json_errors))
        .layer(state.access.cors())
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request_id(request.headers());
                    tracing::info_span!("request", method = %request.method(), uri = %request.uri(), id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// This description.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The API's OpenAPI description, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Movie review feelings",
        description = "Positive or negative: movie reviews classified by a fine-tuned BERT in WebAssembly sandboxes."
    ),
    paths(
        classify::classify,
        model,
        healthz,
        readyz,
        metrics,
        site::bundle_file,
        openapi
    ),
    components(schemas(classify::ClassifyRequest, Classified, ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// The request's `x-request-id` (set on every request before the handlers run).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// Counts every answer by route and status, and times it.
async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    let labels = RequestLabels {
        route,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

/// The deployed bundle's manifest: name, labels, sequence length, threshold, metrics.
#[utoipa::path(get, path = "/v1/model", responses(
    (status = 200, description = "feelings.json", body = Object),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
))]
pub(crate) async fn model(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.files[0].clone(),
    )
        .into_response()
}

/// Whether every sandbox slot has a live sandbox.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = String),
    (status = 503, description = "not ready: a sandbox slot is being replaced or cannot be", body = ErrorBody),
))]
pub(crate) async fn readyz(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<&'static str, ApiError> {
    if state.pool.is_ready() {
        Ok("ready")
    } else {
        Err(ApiError::new(
            ErrorKind::NotReady,
            "not every sandbox slot has a live sandbox",
            &request_id(&headers),
        ))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "OpenMetrics text", body = String),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
