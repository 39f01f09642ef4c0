//! The HTTP API: `fn app() -> Router` over a pool of sandboxes, the bundle and the web page.
//!
//! Routes by module: [`classify`] (`POST /v1/classify`), [`deployments`] (`/v1/deployments`),
//! [`explain`] (`POST /v1/explain`: why a review got its score), [`hf`] (text-embeddings-inference's `/predict`, `/info`, `/tokenize` and the Inference API's
//! `POST /`), [`site`] (the page's files and the bundle at `/model/`), [`access`] (the API
//! key, CORS, and JSON for every error, whoever produced it); the small endpoints are here.

mod access;
mod classify;
mod deployments;
mod explain;
mod hf;
mod site;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use feelings_core::contract;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use access::Access;
pub use classify::Classified;
pub use deployments::DeploymentList;

use crate::deployments::{DeploymentInfo, Deployments};
use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
use crate::gateway::LimitCheck;
use crate::metrics::{Metrics, RequestLabels};

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
    /// Largest bundle upload (`POST /v1/deployments`), in bytes (413 beyond).
    pub max_upload_bytes: usize,
    /// Longest time to receive an upload (408 beyond).
    pub upload_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: contract::DEFAULT_MAX_BODY_BYTES,
            max_texts: contract::DEFAULT_MAX_TEXTS,
            max_chars: contract::DEFAULT_MAX_CHARS,
            timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_upload_bytes: 512 << 20,
            upload_timeout: Duration::from_secs(300),
        }
    }
}

/// What the handlers share.
pub struct AppState {
    /// The deployments.
    pub deployments: Arc<Deployments>,
    /// What a new deployment's measured cost is checked against.
    pub checks: LimitCheck,
    /// The web page's folder, served at `/d/NAME/` (none: only the API).
    pub web_dir: Option<PathBuf>,
    /// Request limits.
    pub limits: Limits,
    /// Who may call the API, and from which web origins.
    pub access: Access,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The gateway's routes: the API (behind the API key when one is set; creating, enabling,
/// disabling and deleting deployments behind the admin key), the health checks, and, when
/// there is a page, the deployments page at `/`, each deployment's web app at `/d/NAME/` and
/// the default deployment's bundle at `/model/`.
pub fn app(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/classify", post(classify::classify))
        .route("/v1/explain", post(explain::explain))
        .route("/predict", post(hf::predict))
        .route("/tokenize", post(hf::tokenize))
        .route("/info", get(hf::info))
        .route("/", post(hf::task))
        .route("/v1/model", get(model))
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/deployments/{name}", get(deployments::show))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::require_api_key,
        ));
    let admin = Router::new()
        .route(
            "/v1/deployments",
            post(deployments::create).layer(DefaultBodyLimit::max(state.limits.max_upload_bytes)),
        )
        .route("/v1/deployments/{name}", delete(deployments::delete))
        .route("/v1/deployments/{name}/enable", post(deployments::enable))
        .route("/v1/deployments/{name}/disable", post(deployments::disable))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::require_admin_key,
        ));
    let open = Router::new()
        // Checks the API key or the deployment's own key itself.
        .route(
            "/v1/deployments/{name}/classify",
            post(classify::classify_deployment),
        )
        .route(
            "/v1/deployments/{name}/explain",
            post(explain::explain_deployment),
        )
        .route(
            "/v1/deployments/{name}/predict",
            post(hf::predict_deployment),
        )
        .route(
            "/v1/deployments/{name}/tokenize",
            post(hf::tokenize_deployment),
        )
        .route("/v1/deployments/{name}/info", get(hf::info_deployment))
        .route("/v1/deployments/{name}", post(hf::task_deployment))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi));
    let mut router = api.merge(admin).merge(open);
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
        classify::classify_deployment,
        explain::explain,
        explain::explain_deployment,
        hf::predict,
        hf::predict_deployment,
        hf::task,
        hf::task_deployment,
        hf::tokenize,
        hf::tokenize_deployment,
        hf::info,
        hf::info_deployment,
        deployments::list,
        deployments::show,
        deployments::create,
        deployments::enable,
        deployments::disable,
        deployments::delete,
        model,
        healthz,
        readyz,
        metrics,
        site::default_bundle_file,
        openapi
    ),
    components(schemas(
        feelings_core::contract::ClassifyRequest,
        Classified,
        ErrorBody,
        ErrorDetail,
        explain::ExplainRequest,
        explain::Explained,
        DeploymentInfo,
        DeploymentList
    ))
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

/// The default deployment's manifest: name, labels, sequence length, threshold, metrics.
#[utoipa::path(get, path = "/v1/model", responses(
    (status = 200, description = "feelings.json", body = Object),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
    (status = 404, description = "No default deployment", body = ErrorBody),
))]
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let deployment = state.deployments.default_deployment().ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "there is no default deployment",
            &request_id(&headers),
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        deployment.manifest_json.clone(),
    )
        .into_response())
}

/// Whether the default deployment exists and every warm deployment's slots can serve.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = String),
    (status = 503, description = "not ready: a sandbox slot cannot get a sandbox", body = ErrorBody),
))]
pub(crate) async fn readyz(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<&'static str, ApiError> {
    let slots_ready = state
        .deployments
        .list()
        .iter()
        .filter_map(|d| d.warm_now())
        .all(|warm| warm.pool.is_ready());
    if slots_ready {
        Ok("ready")
    } else {
        Err(ApiError::new(
            ErrorKind::NotReady,
            "a sandbox slot cannot get a sandbox",
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
