//! `POST /v1/explain` (the default deployment) and `POST /v1/deployments/NAME/explain`: why a
//! review gets its score, by occlusion (see [`feelings_core::explain`]). The plan is made here,
//! the review and its variants are classified in the deployment's sandboxes as one request of
//! as many texts, and the weights are computed here: the numbers `feelings predict --explain`
//! and the page give.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use feelings_core::contract;
use feelings_core::explain::{Explanation, OcclusionPlan, DEFAULT_MAX_UNITS, MAX_UNITS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::classify::{classify_texts, json_body};
use super::deployments::{default_deployment, named_deployment};
use super::{request_id, AppState};
use crate::deployments::Deployment;
use crate::error::{ApiError, ErrorBody, ErrorKind};

/// The body of an explain request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The review.
    pub text: String,
    /// The most units (classifications) to spend, 1 up to one less than the server's
    /// `--max-texts` and at most 1,000 [default: 48].
    #[serde(default)]
    pub max_units: Option<usize>,
}

/// The answer: the review's prediction and the weight of each unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Explained {
    /// The label decided at the threshold.
    pub label: String,
    /// The deployment's model.
    pub model: String,
    /// Whether the review was longer than the model reads and was cut.
    pub truncated: bool,
    /// The text explained, when the review was longer than the server's `--max-chars` and cut
    /// to it (as `/v1/classify` cuts it): the units' offsets are in this text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_text: Option<String>,
    /// The probability of positive, the unit kind and the units with their weights.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub explanation: Explanation,
}

/// Explains one review with the default deployment.
#[utoipa::path(post, path = "/v1/explain", request_body = ExplainRequest, responses(
    (status = 200, description = "The review's score and each unit's weight (positive: it pushed toward positive)", body = Explained),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
    (status = 404, description = "No default deployment", body = ErrorBody),
    (status = 409, description = "The deployment is disabled", body = ErrorBody),
    (status = 422, description = "Wrong shape, or max_units out of range", body = ErrorBody),
    (status = 503, description = "Overloaded: retry later", body = ErrorBody),
    (status = 504, description = "No answer in time", body = ErrorBody),
))]
pub(crate) async fn explain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = default_deployment(&state, &headers)?;
    explain_with(&state, &deployment, &headers, body).await
}

/// Explains one review with deployment `name`.
#[utoipa::path(post, path = "/v1/deployments/{name}/explain", request_body = ExplainRequest,
    params(("name" = String, Path, description = "The deployment")),
    responses(
    (status = 200, description = "The review's score and each unit's weight", body = Explained),
    (status = 401, description = "Neither the API key nor the deployment's own key", body = ErrorBody),
    (status = 404, description = "No such deployment", body = ErrorBody),
    (status = 409, description = "The deployment is disabled", body = ErrorBody),
    (status = 422, description = "Wrong shape, or max_units out of range", body = ErrorBody),
    (status = 503, description = "Overloaded: retry later", body = ErrorBody),
))]
pub(crate) async fn explain_deployment(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deployment = named_deployment(&state, &name, &headers)?;
    explain_with(&state, &deployment, &headers, body).await
}

/// The request in `body`: malformed JSON is a 400, anything but `{"text", "max_units"}` a 422.
fn parse_request(body: &[u8], id: &str) -> Result<ExplainRequest, ApiError> {
    const SHAPE: &str = "expected {\"text\": \"...\"} (and \"max_units\", optional)";
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::MalformedJson, format!("{SHAPE}: {e}"), id))?;
    if !value.is_object() {
        return Err(ApiError::new(ErrorKind::InvalidRequest, SHAPE, id));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(ErrorKind::InvalidRequest, format!("{SHAPE}: {e}"), id))
}

/// The explain contract, for one deployment.
async fn explain_with(
    state: &AppState,
    deployment: &Arc<Deployment>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = request_id(headers);
    let body = json_body(state, deployment, headers, body).await?;
    let request = parse_request(&body, &id)?;
    // The review and its variants go to the sandboxes as one request of texts.
    let most = state.limits.max_texts.saturating_sub(1).min(MAX_UNITS);
    if most == 0 {
        let message = "explanations need requests of 2 texts: this server's --max-texts is 1";
        return Err(ApiError::new(ErrorKind::InvalidRequest, message, &id));
    }
    let max_units = request.max_units.unwrap_or(DEFAULT_MAX_UNITS.min(most));
    if !(1..=most).contains(&max_units) {
        let message = format!(
            "max_units must be from 1 to {most} (at most {MAX_UNITS}, and one text fewer than --max-texts)"
        );
        return Err(ApiError::new(ErrorKind::InvalidRequest, message, &id));
    }
    // The explanation is of the text the model is given.
    let (text, cut) = contract::cut_text(
        request.text,
        state.limits.max_chars,
        deployment.manifest.truncation,
    );
    let plan = OcclusionPlan::new(&text, max_units);
    let mut texts = vec![text.clone()];
    texts.extend(plan.variants(&text));
    let (predictions, _) = classify_texts(state, deployment, texts, &id).await?;
    let scores: Vec<f32> = predictions.iter().map(|p| p.score).collect();
    let explanation = plan
        .explain(&text, scores[0], &scores[1..])
        .map_err(|e| ApiError::new(ErrorKind::SandboxFailed, e.to_string(), &id))?;
    let whole = &predictions[0];
    Ok(Json(Explained {
        label: whole.label.clone(),
        model: deployment.manifest.name.clone(),
        truncated: whole.truncated || cut,
        explained_text: cut.then_some(text),
        explanation,
    })
    .into_response())
}
