//! `POST /v1/classify` (the default deployment) and `POST /v1/deployments/NAME/classify`: one
//! review or a list, answered in order.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
pub use feelings_core::contract::Classified;
use feelings_core::contract::{self, ClassifyRequest, RequestError};
use feelings_core::Prediction;

use super::{request_id, AppState, Limits};
use crate::deployments::Deployment;
use crate::error::{ApiError, ErrorBody, ErrorKind};
use crate::pool::{JobError, Pool};
use crate::SandboxError;

/// Classifies one review (`text`, one answer) or several (`texts`, a list in order) with the
/// default deployment.
#[utoipa::path(post, path = "/v1/classify", request_body = ClassifyRequest, responses(
    (status = 200, description = "The answer for `text`; for `texts`, a list of them", body = Classified),
    (status = 400, description = "Not JSON, or not UTF-8", body = ErrorBody),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
    (status = 404, description = "No default deployment (it was deleted)", body = ErrorBody),
    (status = 408, description = "The body did not arrive in time", body = ErrorBody),
    (status = 409, description = "The deployment is disabled", body = ErrorBody),
    (status = 413, description = "Body over the limit", body = ErrorBody),
    (status = 415, description = "Not application/json", body = ErrorBody),
    (status = 422, description = "Wrong shape, or too many texts", body = ErrorBody),
    (status = 500, description = "The sandbox failed (and was replaced)", body = ErrorBody),
    (status = 503, description = "Overloaded: retry later", body = ErrorBody),
    (status = 504, description = "No answer in time", body = ErrorBody),
))]
pub(crate) async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = super::deployments::default_deployment(&state, &headers)?;
    classify_with(&state, &deployment, &headers, body).await
}

/// Classifies with deployment `name`: the same request and answers as `POST /v1/classify`.
#[utoipa::path(post, path = "/v1/deployments/{name}/classify", request_body = ClassifyRequest,
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "The answer for `text`; for `texts`, a list of them", body = Classified),
    (status = 401, description = "Neither the API key nor the deployment's own key", body = ErrorBody),
    (status = 404, description = "No such deployment", body = ErrorBody),
    (status = 409, description = "The deployment is disabled", body = ErrorBody),
    (status = 503, description = "Overloaded: retry later", body = ErrorBody),
))]
pub(crate) async fn classify_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = super::deployments::named_deployment(&state, &name, &headers)?;
    classify_with(&state, &deployment, &headers, body).await
}

/// Refuses a request to `deployment` that has neither the API key nor the deployment's own
/// key, when either is set.
pub(super) fn authorize(
    state: &AppState,
    deployment: &Deployment,
    headers: &HeaderMap,
    id: &str,
) -> Result<(), ApiError> {
    let own_key = super::access::bearer(headers).is_some_and(|key| deployment.accepts_key(key));
    let open = state.access.api_key.is_none() && deployment.record().api_key_sha256.is_none();
    if open || own_key || state.access.allows(headers) {
        return Ok(());
    }
    let message =
        "this deployment needs the API key or its own key, as `Authorization: Bearer <key>`";
    Err(ApiError::new(ErrorKind::Unauthorized, message, id))
}

/// The classify contract, for one deployment.
async fn classify_with(
    state: &AppState,
    deployment: &Arc<Deployment>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = request_id(headers);
    let started = Instant::now();
    let body = json_body(state, deployment, headers, body).await?;
    let (texts, single) = contract::parse_request(&body, state.limits.max_texts)
        .map_err(|e| ApiError::new(request_error_kind(&e), e.to_string(), &id))?;
    let (predictions, cut) = classify_texts(state, deployment, texts, &id).await?;
    let answers = contract::answers(predictions, &cut, &deployment.manifest.name);
    deployment
        .metrics
        .classify_latency
        .observe(started.elapsed().as_secs_f64());
    Ok(if single {
        Json(answers.into_iter().next()).into_response()
    } else {
        Json(answers).into_response()
    })
}

/// The JSON body of a request to `deployment`: refused when the deployment is disabled, or
/// the body is not JSON, is over the size limit or arrives late.
pub(super) async fn json_body(
    state: &AppState,
    deployment: &Deployment,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let id = request_id(headers);
    let fail = |kind, message: String| ApiError::new(kind, message, &id);
    if !deployment.is_enabled() {
        let message = format!(
            "deployment {:?} is disabled: POST /v1/deployments/{}/enable",
            deployment.name, deployment.name
        );
        return Err(fail(ErrorKind::Disabled, message));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(contract::is_json_content_type);
    if !is_json {
        return Err(fail(
            ErrorKind::UnsupportedMediaType,
            "send the body as JSON with content-type: application/json".into(),
        ));
    }
    read_body(body, &state.limits)
        .await
        .map_err(|(k, m)| fail(k, m))
}

/// Classifies `texts` with `deployment`, each cut to the character limit first (counted as
/// one of its requests): the predictions, in order, and which texts were cut.
pub(super) async fn classify_texts(
    state: &AppState,
    deployment: &Arc<Deployment>,
    texts: Vec<String>,
    id: &str,
) -> Result<(Vec<Prediction>, Vec<bool>), ApiError> {
    let fail = |kind, message: String| ApiError::new(kind, message, id);
    deployment.count_request();
    let (texts, cut): (Vec<String>, Vec<bool>) = texts
        .into_iter()
        .map(|t| contract::cut_text(t, state.limits.max_chars, deployment.manifest.truncation))
        .unzip();
    let warm = state
        .deployments
        .warm(deployment)
        .await
        .map_err(|e| fail(ErrorKind::SandboxFailed, e.to_string()))?;
    let predictions = answer(&warm.pool, texts, &state.limits)
        .await
        .map_err(|(k, m)| fail(k, m))?;
    Ok((predictions, cut))
}

/// Queues `texts` on `pool` and waits for their predictions, within the request timeout.
async fn answer(
    pool: &Pool,
    texts: Vec<String>,
    limits: &Limits,
) -> Result<Vec<Prediction>, (ErrorKind, String)> {
    let answer = pool
        .submit(texts, limits.timeout)
        .map_err(|e| (ErrorKind::Overloaded, e.to_string()))?;
    let timeout = || {
        let message = format!("no answer within {:?}", limits.timeout);
        (ErrorKind::Timeout, message)
    };
    match tokio::time::timeout(limits.timeout, answer).await {
        Err(_) | Ok(Ok(Err(JobError::Expired))) => Err(timeout()),
        Ok(Err(_)) => Err((ErrorKind::SandboxFailed, "the pool stopped".into())),
        Ok(Ok(Err(JobError::Sandbox(e @ SandboxError::Refused(_))))) => {
            Err((ErrorKind::ClassifierError, e.to_string()))
        }
        Ok(Ok(Err(e))) => Err((ErrorKind::SandboxFailed, e.to_string())),
        Ok(Ok(Ok(predictions))) => Ok(predictions),
    }
}

/// The whole body, within the size limit and the body timeout.
async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, (ErrorKind, String)> {
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => Err((
            ErrorKind::RequestTimeout,
            format!("the body did not arrive within {:?}", limits.body_timeout),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err((
            ErrorKind::BodyTooLarge,
            format!("the body is larger than {} bytes", limits.max_body_bytes),
        )),
        Ok(Err(e)) => Err((
            ErrorKind::MalformedJson,
            format!("cannot read the body: {e}"),
        )),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The gateway's kind for a refused body.
fn request_error_kind(error: &RequestError) -> ErrorKind {
    match error {
        RequestError::Malformed(_) => ErrorKind::MalformedJson,
        RequestError::Invalid(_) => ErrorKind::InvalidRequest,
        RequestError::TooManyTexts(_) => ErrorKind::TooManyTexts,
    }
}
