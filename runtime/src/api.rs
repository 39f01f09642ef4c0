//! The HTTP API: `fn app() -> Router` over a pool of sandboxes, the bundle and the web page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feelings_core::manifest::{MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use feelings_core::{Manifest, Truncation};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
use crate::metrics::{Metrics, RequestLabels};
use crate::pool::Pool;
use crate::SandboxError;

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
    /// Longest wait for an answer (504 beyond).
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_texts: 64,
            max_chars: 20_000,
            timeout: Duration::from_secs(30),
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
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The gateway's routes: the API, `/model/` (the bundle) and `/` (the page, when there is one).
pub fn app(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/model", get(model))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/model/{file}", get(bundle_file))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    let api = match &state.web_dir {
        Some(dir) => api.fallback_service(ServeDir::new(dir)),
        None => api.fallback(not_found),
    };
    api.layer(middleware::from_fn_with_state(state.clone(), record))
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

/// The API's OpenAPI description, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Movie review feelings",
        description = "Positive or negative: movie reviews classified by a fine-tuned BERT in WebAssembly sandboxes."
    ),
    paths(classify, model, healthz, readyz, metrics, bundle_file, openapi),
    components(schemas(ClassifyRequest, Classified, ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

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

/// `POST /v1/classify` body: one text or a list (exactly one of the two).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassifyRequest {
    /// One review.
    text: Option<String>,
    /// Several reviews, answered in order.
    texts: Option<Vec<String>>,
}

/// One answer of `POST /v1/classify`.
#[derive(Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Classified {
    /// The decided label.
    pub label: String,
    /// The probability of the positive label.
    pub score: f32,
    /// The threshold the label was decided at.
    pub threshold: f32,
    /// The deployed model's name.
    pub model: String,
    /// Whether the text was cut to what the model reads.
    pub truncated: bool,
}

/// Classifies one review (`text`, one answer) or several (`texts`, a list in order).
#[utoipa::path(post, path = "/v1/classify", request_body = ClassifyRequest, responses(
    (status = 200, description = "The answer for `text`; for `texts`, a list of them", body = Classified),
    (status = 400, description = "Not JSON, or not UTF-8", body = ErrorBody),
    (status = 413, description = "Body over the limit", body = ErrorBody),
    (status = 415, description = "Not application/json", body = ErrorBody),
    (status = 422, description = "Wrong shape, or too many texts", body = ErrorBody),
    (status = 500, description = "The sandbox failed (and was replaced)", body = ErrorBody),
    (status = 503, description = "Queue full: retry later", body = ErrorBody),
    (status = 504, description = "No answer in time", body = ErrorBody),
))]
pub(crate) async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = request_id(&headers);
    let fail = |kind, message: String| ApiError::new(kind, message, &id);
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(fail(
            ErrorKind::UnsupportedMediaType,
            "send the body as JSON with content-type: application/json".into(),
        ));
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => fail(
            ErrorKind::BodyTooLarge,
            format!(
                "the body is larger than {} bytes",
                state.limits.max_body_bytes
            ),
        ),
        _ => fail(ErrorKind::MalformedJson, e.body_text()),
    })?;
    let request: ClassifyRequest = serde_json::from_slice(&body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => ErrorKind::InvalidRequest,
            _ => ErrorKind::MalformedJson,
        };
        fail(kind, format!("the body: {e}"))
    })?;
    let (texts, single) = match (request.text, request.texts) {
        (Some(text), None) => (vec![text], true),
        (None, Some(texts)) if !texts.is_empty() => (texts, false),
        (None, Some(_)) => return Err(fail(ErrorKind::InvalidRequest, "`texts` is empty".into())),
        _ => {
            return Err(fail(
                ErrorKind::InvalidRequest,
                "give either `text` (a string) or `texts` (a list of strings)".into(),
            ))
        }
    };
    if texts.len() > state.limits.max_texts {
        return Err(fail(
            ErrorKind::TooManyTexts,
            format!(
                "{} texts; at most {} per request",
                texts.len(),
                state.limits.max_texts
            ),
        ));
    }
    let (texts, cut): (Vec<String>, Vec<bool>) = texts
        .into_iter()
        .map(|t| cut_text(t, state.limits.max_chars, state.manifest.truncation))
        .unzip();
    let answer = state
        .pool
        .submit(texts)
        .map_err(|e| fail(ErrorKind::Overloaded, e.to_string()))?;
    let predictions = match tokio::time::timeout(state.limits.timeout, answer).await {
        Err(_) => {
            let message = format!("no answer within {:?}", state.limits.timeout);
            return Err(fail(ErrorKind::Timeout, message));
        }
        Ok(Err(_)) => return Err(fail(ErrorKind::SandboxFailed, "the sandbox stopped".into())),
        Ok(Ok(Err(e @ SandboxError::Refused(_)))) => {
            return Err(fail(ErrorKind::ClassifierError, e.to_string()))
        }
        Ok(Ok(Err(e))) => return Err(fail(ErrorKind::SandboxFailed, e.to_string())),
        Ok(Ok(Ok(predictions))) => predictions,
    };
    let answers: Vec<Classified> = predictions
        .into_iter()
        .zip(cut)
        .map(|(p, cut)| Classified {
            label: p.label,
            score: p.score,
            threshold: p.threshold,
            model: state.manifest.name.clone(),
            truncated: p.truncated || cut,
        })
        .collect();
    Ok(if single {
        Json(answers.into_iter().next()).into_response()
    } else {
        Json(answers).into_response()
    })
}

/// Cuts `text` to `max_chars` characters, keeping what the model's truncation keeps (the start;
/// or the start and the end for head+tail); says whether it cut.
fn cut_text(text: String, max_chars: usize, truncation: Truncation) -> (String, bool) {
    let count = text.chars().count();
    if count <= max_chars {
        return (text, false);
    }
    let cut = match truncation {
        Truncation::Tail => text.chars().take(max_chars).collect(),
        Truncation::HeadTail => {
            let head: String = text.chars().take(max_chars / 2).collect();
            let tail: String = text
                .chars()
                .skip(count - (max_chars - max_chars / 2))
                .collect();
            format!("{head} {tail}")
        }
    };
    (cut, true)
}

/// The deployed bundle's manifest: name, labels, sequence length, threshold, metrics.
#[utoipa::path(get, path = "/v1/model", responses((status = 200, description = "feelings.json", body = Object)))]
pub(crate) async fn model(State(state): State<Arc<AppState>>) -> Response {
    json_bytes(state.files[0].clone())
}

fn json_bytes(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Whether the sandboxes started and answered.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = String),
    (status = 503, description = "not ready", body = ErrorBody),
))]
pub(crate) async fn readyz(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<&'static str, ApiError> {
    if state.pool.is_ready() {
        Ok("ready")
    } else {
        Err(ApiError::new(
            ErrorKind::Overloaded,
            "the sandboxes are not ready",
            &request_id(&headers),
        ))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text", body = String)))]
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

/// The deployed bundle's files, where the page loads them from.
#[utoipa::path(get, path = "/model/{file}", params(("file" = String, Path, description = "feelings.json, model.onnx or tokenizer.json")),
    responses((status = 200, description = "the file"), (status = 404, description = "no such file", body = ErrorBody)))]
pub(crate) async fn bundle_file(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (bytes, content_type) = match file.as_str() {
        MANIFEST_FILE => (state.files[0].clone(), "application/json"),
        MODEL_FILE => (state.files[1].clone(), "application/octet-stream"),
        TOKENIZER_FILE => (state.files[2].clone(), "application/json"),
        _ => return Err(not_found_error(&headers)),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

fn not_found_error(headers: &HeaderMap) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "no such resource",
        &request_id(headers),
    )
}

async fn not_found(headers: HeaderMap) -> ApiError {
    not_found_error(&headers)
}
