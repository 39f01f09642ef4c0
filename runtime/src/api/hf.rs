//! Hugging Face's contracts beside ours, for the default deployment and for each one (the same
//! routes under `/v1/deployments/NAME/`):
//! - text-embeddings-inference's classification routes: `POST /predict` (`inputs`: a review or
//!   a batch `[["a"], ["b"]]`; `truncate`, `truncation_direction`, `raw_scores`), `GET /info`
//!   and `POST /tokenize`;
//! - the Inference API's text-classification task, `POST /` (`POST /v1/deployments/NAME`) with
//!   `{"inputs", "parameters": {"top_k", "function_to_apply"}}`: what `huggingface_hub`'s
//!   `InferenceClient(base_url=...).text_classification` sends.
//!
//! They run in the same sandboxes, with the same limits and metrics, as `/v1/classify`; their
//! errors have the status `/v1/classify` would give and TEI's body, `{"error", "error_type"}`.
//! What differs from TEI: sentence pairs are refused (the model reads one review); a review is
//! cut only as its model was trained to cut it (`truncation_direction` must agree); the
//! sandbox answers probabilities, so `raw_scores` are the logits centred on zero (their softmax
//! gives the scores back); token offsets count bytes of the review after `<br />` tags became
//! spaces.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use feelings_core::{Prediction, Token, Truncation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::classify::{classify_texts, json_body};
use super::deployments::{default_deployment, named_deployment};
use super::{request_id, AppState};
use crate::deployments::Deployment;
use crate::error::{ApiError, ErrorKind};

/// TEI's answer for one label.
#[derive(Debug, Clone, Serialize)]
struct LabelScore {
    score: f32,
    label: String,
}

/// TEI's `POST /predict` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    inputs: Value,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    raw_scores: bool,
}

/// The Inference API's text-classification body.
#[derive(Debug, Deserialize)]
struct TaskRequest {
    inputs: Value,
    #[serde(default)]
    parameters: TaskParameters,
}

#[derive(Debug, Default, Deserialize)]
struct TaskParameters {
    top_k: Option<usize>,
    function_to_apply: Option<String>,
}

/// TEI's `POST /tokenize` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    inputs: Value,
    #[serde(default = "yes")]
    add_special_tokens: bool,
}

fn yes() -> bool {
    true
}

/// An error in TEI's shape, with the status the gateway gives its kind.
fn tei_error(e: ApiError) -> Response {
    let (status, _) = e.kind.status_and_code();
    let error_type = match e.kind {
        ErrorKind::Overloaded => "Overloaded",
        ErrorKind::NotReady => "Unhealthy",
        ErrorKind::ClassifierError => "Tokenizer",
        _ if status.is_server_error() => "Backend",
        _ => "Validation",
    };
    let body = json!({ "error": e.message, "error_type": error_type, "request_id": e.request_id });
    let mut response = (status, Json(body)).into_response();
    if matches!(e.kind, ErrorKind::Overloaded | ErrorKind::NotReady) {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

fn invalid(message: impl Into<String>, id: &str) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message, id)
}

/// TEI's `inputs`: one review (`"a"` or `["a"]`), or a batch (`[["a"], ["b"]]`); a pair
/// (`["a", "b"]` or `[["a", "b"]]`) is refused. Returns the reviews and whether it was one.
fn tei_inputs(inputs: &Value, max_texts: usize, id: &str) -> Result<(Vec<String>, bool), ApiError> {
    let pair = || {
        invalid(
            "`inputs` holds a pair of texts (TEI reads [\"a\", \"b\"] as one pair): this model \
             classifies one review at a time; send a batch as [[\"a\"], [\"b\"]]",
            id,
        )
    };
    let one = |value: &Value| -> Result<String, ApiError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Array(items) if items.len() == 1 && items[0].is_string() => {
                Ok(items[0].as_str().unwrap_or_default().to_string())
            }
            Value::Array(items) if items.len() == 2 => Err(pair()),
            _ => Err(invalid("each of `inputs` is a string or [string]", id)),
        }
    };
    let (texts, single) = match inputs {
        Value::String(s) => (vec![s.clone()], true),
        Value::Array(items) if items.first().is_some_and(Value::is_string) => {
            (vec![one(inputs)?], true)
        }
        Value::Array(items) if !items.is_empty() => {
            (items.iter().map(one).collect::<Result<_, _>>()?, false)
        }
        _ => {
            return Err(invalid(
                "`inputs` is a string, [string] or [[string], ...]",
                id,
            ))
        }
    };
    if texts.len() > max_texts {
        let message = format!("{} inputs: at most {max_texts} per request", texts.len());
        return Err(ApiError::new(ErrorKind::TooManyTexts, message, id));
    }
    Ok((texts, single))
}

/// The Inference API's `inputs`: a review or a list of them.
fn task_inputs(inputs: &Value, max_texts: usize, id: &str) -> Result<Vec<String>, ApiError> {
    let texts: Vec<String> = match inputs {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return Err(invalid(
                "`inputs` is a string or a non-empty list of strings",
                id,
            ))
        }
    };
    if texts.len() > max_texts {
        let message = format!("{} inputs: at most {max_texts} per request", texts.len());
        return Err(ApiError::new(ErrorKind::TooManyTexts, message, id));
    }
    Ok(texts)
}

/// Checks TEI's truncation options against how the deployment's model cuts a review: without
/// `truncate`, a review longer than the model reads is refused (413, as TEI does).
fn check_truncation(
    deployment: &Deployment,
    request: &PredictRequest,
    texts: &[String],
    id: &str,
) -> Result<(), ApiError> {
    let trained = deployment.manifest.truncation;
    match (request.truncation_direction.as_deref(), trained) {
        (None, _) => {}
        (Some(d), Truncation::Tail) if d.eq_ignore_ascii_case("right") => {}
        (Some(d), _) => {
            let message = format!(
                "truncation_direction {d:?}: this model cuts a long review as it was trained to \
                 ({trained}: {}); leave truncation_direction out",
                match trained {
                    Truncation::Tail => "it keeps the beginning, i.e. \"Right\"",
                    Truncation::HeadTail => "a quarter from the beginning, the rest from the end",
                }
            );
            return Err(invalid(message, id));
        }
    }
    if request.truncate.unwrap_or(false) {
        return Ok(());
    }
    let encoder = deployment
        .encoder()
        .map_err(|e| ApiError::new(ErrorKind::ClassifierError, e, id))?;
    for text in texts {
        let tokens = encoder
            .encode(text)
            .map_err(|e| ApiError::new(ErrorKind::ClassifierError, e.to_string(), id))?
            .full_len;
        if tokens > encoder.seq_len() {
            let message = format!(
                "Input validation error: `inputs` must have less than {} tokens. Given: {tokens} \
                 (send \"truncate\": true to have it cut)",
                encoder.seq_len() + 1
            );
            let kind = ErrorKind::Other(StatusCode::PAYLOAD_TOO_LARGE);
            return Err(ApiError::new(kind, message, id));
        }
    }
    Ok(())
}

/// The two labels' scores, highest first: probabilities, or (`raw`) the logits centred on
/// zero, which is all a probability tells of them.
fn label_scores(p: &Prediction, deployment: &Deployment, raw: bool) -> Vec<LabelScore> {
    let labels = &deployment.manifest.labels;
    let positive = f64::from(p.score).clamp(1e-12, 1.0 - 1e-12);
    let (pos, neg) = if raw {
        let half = (positive / (1.0 - positive)).ln() / 2.0;
        (half, -half)
    } else {
        (positive, 1.0 - positive)
    };
    let mut scores = vec![
        LabelScore {
            score: pos as f32,
            label: labels.positive.clone(),
        },
        LabelScore {
            score: neg as f32,
            label: labels.negative.clone(),
        },
    ];
    scores.sort_by(|a, b| b.score.total_cmp(&a.score));
    scores
}

async fn predict_with(
    state: &AppState,
    found: Result<Arc<Deployment>, ApiError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = &found?;
    let id = request_id(headers);
    let body = json_body(state, deployment, headers, body).await?;
    let request: PredictRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.to_string(), &id))?;
    let (texts, single) = tei_inputs(&request.inputs, state.limits.max_texts, &id)?;
    check_truncation(deployment, &request, &texts, &id)?;
    let (predictions, _) = classify_texts(state, deployment, texts, &id).await?;
    let mut answers: Vec<Vec<LabelScore>> = predictions
        .iter()
        .map(|p| label_scores(p, deployment, request.raw_scores))
        .collect();
    Ok(match single {
        true => Json(answers.remove(0)).into_response(),
        false => Json(answers).into_response(),
    })
}

async fn task_with(
    state: &AppState,
    found: Result<Arc<Deployment>, ApiError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = &found?;
    let id = request_id(headers);
    let body = json_body(state, deployment, headers, body).await?;
    let request: TaskRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.to_string(), &id))?;
    let texts = task_inputs(&request.inputs, state.limits.max_texts, &id)?;
    let raw = match request.parameters.function_to_apply.as_deref() {
        None | Some("softmax") => false,
        Some("none") => true,
        Some(other) => {
            let message = format!(
                "function_to_apply {other:?}: use \"softmax\" (probabilities) or \"none\" (the \
                 logits, centred on zero)"
            );
            return Err(invalid(message, &id));
        }
    };
    let top_k = request.parameters.top_k.unwrap_or(2).max(1);
    let (predictions, _) = classify_texts(state, deployment, texts, &id).await?;
    let answers: Vec<Vec<LabelScore>> = predictions
        .iter()
        .map(|p| {
            let mut scores = label_scores(p, deployment, raw);
            scores.truncate(top_k);
            scores
        })
        .collect();
    Ok(Json(answers).into_response())
}

async fn tokenize_with(
    state: &AppState,
    found: Result<Arc<Deployment>, ApiError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = &found?;
    let id = request_id(headers);
    let body = json_body(state, deployment, headers, body).await?;
    let request: TokenizeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, e.to_string(), &id))?;
    let texts = task_inputs(&request.inputs, state.limits.max_texts, &id)?;
    let encoder = deployment
        .encoder()
        .map_err(|e| ApiError::new(ErrorKind::ClassifierError, e, &id))?;
    let mut answers: Vec<Vec<Token>> = Vec::with_capacity(texts.len());
    for text in texts {
        let (text, _) = feelings_core::contract::cut_text(
            text,
            state.limits.max_chars,
            deployment.manifest.truncation,
        );
        let (mut tokens, _) = encoder
            .tokens(&text)
            .map_err(|e| ApiError::new(ErrorKind::ClassifierError, e.to_string(), &id))?;
        if !request.add_special_tokens {
            tokens.retain(|t| !t.special);
        }
        answers.push(tokens);
    }
    Ok(Json(answers).into_response())
}

/// TEI's `/info` for `deployment`.
fn info_of(state: &AppState, deployment: &Deployment) -> Value {
    let manifest = &deployment.manifest;
    let labels = &manifest.labels;
    json!({
        "model_id": manifest.name,
        "model_sha": deployment.record().bundle_sha256,
        "model_dtype": manifest.weights,
        "model_type": {"classifier": {
            "id2label": {"0": labels.negative, "1": labels.positive},
            "label2id": {labels.negative.as_str(): 0, labels.positive.as_str(): 1},
        }},
        "max_concurrent_requests": state.limits.max_texts,
        "max_input_length": manifest.max_seq_len,
        "max_batch_tokens": manifest.max_seq_len * state.limits.max_texts,
        "max_batch_requests": null,
        "max_client_batch_size": state.limits.max_texts,
        "auto_truncate": false,
        "tokenization_workers": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
        "max_chars": state.limits.max_chars,
        "timeout_seconds": state.limits.timeout.as_secs_f64(),
        "threshold": manifest.threshold,
        "truncation": manifest.truncation,
    })
}

/// `POST /predict`: TEI's classification, with the default deployment.
#[utoipa::path(post, path = "/predict", request_body(content = Object, description = "`inputs`: a review or a batch `[[\"a\"], [\"b\"]]`; `truncate`, `truncation_direction`, `raw_scores` (TEI)"),
    responses(
    (status = 200, description = "Per review, a score for each label", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No default deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = default_deployment(&state, &headers);
    predict_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `POST /v1/deployments/NAME/predict`.
#[utoipa::path(post, path = "/v1/deployments/{name}/predict", request_body(content = Object, description = "`inputs`: a review or a batch `[[\"a\"], [\"b\"]]`; `truncate`, `truncation_direction`, `raw_scores` (TEI)"),
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "Per review, a score for each label", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No such deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn predict_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = named_deployment(&state, &name, &headers);
    predict_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `POST /`: the Inference API's text classification, with the default deployment.
#[utoipa::path(post, path = "/", request_body(content = Object, description = "`inputs` and `parameters` (`top_k`, `function_to_apply`), as huggingface_hub sends them"),
    responses(
    (status = 200, description = "A score for each label, best first", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No default deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = default_deployment(&state, &headers);
    task_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `POST /v1/deployments/NAME`.
#[utoipa::path(post, path = "/v1/deployments/{name}", request_body(content = Object, description = "`inputs` and `parameters` (`top_k`, `function_to_apply`), as huggingface_hub sends them"),
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "A score for each label, best first", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No such deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn task_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = named_deployment(&state, &name, &headers);
    task_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `POST /tokenize`: the tokens the default deployment's model reads.
#[utoipa::path(post, path = "/tokenize", request_body(content = Object, description = "`inputs` and `add_special_tokens` (TEI)"),
    responses(
    (status = 200, description = "Per review, its tokens (id, text, special, start, stop)", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No default deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = default_deployment(&state, &headers);
    tokenize_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `POST /v1/deployments/NAME/tokenize`.
#[utoipa::path(post, path = "/v1/deployments/{name}/tokenize", request_body(content = Object, description = "`inputs` and `add_special_tokens` (TEI)"),
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "Per review, its tokens (id, text, special, start, stop)", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No such deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
    (status = 422, description = "Wrong shape or a limit exceeded; TEI's error body", body = Object),
    (status = 503, description = "Overloaded: retry later; TEI's error body", body = Object),
))]
pub(crate) async fn tokenize_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let found = named_deployment(&state, &name, &headers);
    tokenize_with(&state, found, &headers, body)
        .await
        .unwrap_or_else(tei_error)
}

/// `GET /info`: TEI's description of the default deployment.
#[utoipa::path(get, path = "/info",
    responses(
    (status = 200, description = "TEI's description: model id, labels, max input length, limits", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No default deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
))]
pub(crate) async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match default_deployment(&state, &headers) {
        Ok(d) => Json(info_of(&state, &d)).into_response(),
        Err(e) => tei_error(e),
    }
}

/// `GET /v1/deployments/NAME/info`.
#[utoipa::path(get, path = "/v1/deployments/{name}/info",
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "TEI's description: model id, labels, max input length, limits", body = Object),
    (status = 401, description = "API key missing or wrong; TEI's error body", body = Object),
    (status = 404, description = "No such deployment; TEI's error body", body = Object),
    (status = 409, description = "The deployment is disabled; TEI's error body", body = Object),
))]
pub(crate) async fn info_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match named_deployment(&state, &name, &headers) {
        Ok(d) => Json(info_of(&state, &d)).into_response(),
        Err(e) => tei_error(e),
    }
}
