//! `/v1/deployments`: list, show, create (a multipart upload of a bundle), enable, disable and
//! delete deployments; and the deployments page at `/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use feelings_core::manifest::{MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{request_id, AppState};
use crate::deployments::{BundleFiles, DeployError, Deployment, DeploymentInfo, NewDeployment};
use crate::error::{ApiError, ErrorBody, ErrorKind};

/// `GET /v1/deployments`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    /// Every deployment, by name.
    pub deployments: Vec<DeploymentInfo>,
}

/// The deployment `name`, or a JSON 404.
pub(super) fn find(state: &AppState, name: &str, id: &str) -> Result<Arc<Deployment>, ApiError> {
    state.deployments.get(name).ok_or_else(|| {
        let message = format!("no deployment is named {name:?} (GET /v1/deployments lists them)");
        ApiError::new(ErrorKind::NotFound, message, id)
    })
}

/// The default deployment, or a 404 naming the routes that name one.
pub(super) fn default_deployment(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Deployment>, ApiError> {
    state.deployments.default_deployment().ok_or_else(|| {
        let message = "there is no default deployment: use /v1/deployments/NAME/...";
        ApiError::new(ErrorKind::NotFound, message, &request_id(headers))
    })
}

/// The deployment `name`, if the request may use it (see [`super::classify::authorize`]).
pub(super) fn named_deployment(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<Deployment>, ApiError> {
    let id = request_id(headers);
    let deployment = find(state, name, &id)?;
    super::classify::authorize(state, &deployment, headers, &id)?;
    Ok(deployment)
}

fn deploy_error(e: DeployError, id: &str) -> ApiError {
    let kind = match &e {
        DeployError::NotFound(_) => ErrorKind::NotFound,
        DeployError::Exists(_) => ErrorKind::Exists,
        DeployError::Invalid(_) | DeployError::Limits(_) | DeployError::Broken(_) => {
            ErrorKind::InvalidBundle
        }
        DeployError::Registry(_) => ErrorKind::RegistryFailed,
    };
    ApiError::new(kind, e.to_string(), id)
}

fn info(state: &AppState, deployment: &Deployment) -> DeploymentInfo {
    deployment.info(state.deployments.default_name() == Some(deployment.name.as_str()))
}

/// Every deployment: name, model, bundle sha256, created, enabled, warm, requests, test metrics.
#[utoipa::path(get, path = "/v1/deployments", responses(
    (status = 200, description = "The deployments", body = DeploymentList),
    (status = 401, description = "API key missing or wrong", body = ErrorBody),
))]
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<DeploymentList> {
    Json(DeploymentList {
        deployments: state.deployments.infos(),
    })
}

/// One deployment.
#[utoipa::path(get, path = "/v1/deployments/{name}", params(("name" = String, Path, description = "The deployment")),
    responses((status = 200, description = "The deployment", body = DeploymentInfo), (status = 404, description = "No such deployment", body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<DeploymentInfo>, ApiError> {
    let deployment = find(&state, &name, &request_id(&headers))?;
    Ok(Json(info(&state, &deployment)))
}

/// Creates a deployment from an uploaded bundle: `multipart/form-data` with the text parts
/// `name`, `enabled` (`true` unless `false`), `sha256` (of `feelings.json`, checked),
/// optionally `api_key`, `instances`, `queue`, and the files `feelings.json`, `model.onnx`,
/// `tokenizer.json`. The bundle is checked, run in a sandbox and timed before it is kept.
#[utoipa::path(post, path = "/v1/deployments", responses(
    (status = 201, description = "Created (and enabled unless `enabled` was false)", body = DeploymentInfo),
    (status = 401, description = "Admin key missing or wrong", body = ErrorBody),
    (status = 409, description = "A deployment of that name exists", body = ErrorBody),
    (status = 413, description = "The upload is over the limit", body = ErrorBody),
    (status = 422, description = "Not a deployment: a part missing, a bad bundle, a wrong sha256, or it does not run", body = ErrorBody),
))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<Response, ApiError> {
    let id = request_id(&headers);
    let upload = tokio::time::timeout(state.limits.upload_timeout, read_upload(multipart));
    let new = match upload.await {
        Err(_) => {
            let message = format!(
                "the upload did not arrive within {:?}",
                state.limits.upload_timeout
            );
            return Err(ApiError::new(ErrorKind::RequestTimeout, message, &id));
        }
        Ok(parts) => parts.map_err(|(kind, message)| ApiError::new(kind, message, &id))?,
    };
    let checks = state.checks.clone();
    let deployment = state
        .deployments
        .create(new, move |review| checks.check(review))
        .await
        .map_err(|e| deploy_error(e, &id))?;
    tracing::info!(deployment = %deployment.name, model = %deployment.manifest.name, "deployment created");
    Ok((StatusCode::CREATED, Json(info(&state, &deployment))).into_response())
}

/// The upload's parts.
async fn read_upload(mut multipart: Multipart) -> Result<NewDeployment, (ErrorKind, String)> {
    let invalid = |message: String| (ErrorKind::InvalidRequest, message);
    let mut text = std::collections::BTreeMap::<String, String>::new();
    let mut files = std::collections::BTreeMap::<String, Bytes>::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e)),
        };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "name" | "enabled" | "sha256" | "api_key" | "instances" | "queue" => {
                let value = field.text().await.map_err(|e| multipart_error(&e))?;
                text.insert(name, value.trim().to_string());
            }
            MANIFEST_FILE | MODEL_FILE | TOKENIZER_FILE => {
                let bytes = field.bytes().await.map_err(|e| multipart_error(&e))?;
                files.insert(name, bytes);
            }
            other => return Err(invalid(format!(
                "unknown part {other:?}: give name, enabled, sha256, api_key, instances, queue and the files feelings.json, model.onnx, tokenizer.json"
            ))),
        }
    }
    let mut take = |file: &str| {
        files
            .remove(file)
            .map(|b| b.to_vec())
            .ok_or_else(|| invalid(format!("the upload has no {file} part")))
    };
    let bundle = BundleFiles {
        manifest: take(MANIFEST_FILE)?,
        model: take(MODEL_FILE)?,
        tokenizer: take(TOKENIZER_FILE)?,
    };
    let name = text
        .remove("name")
        .ok_or_else(|| invalid("the upload has no name part".into()))?;
    let enabled = match text.remove("enabled").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(invalid(format!("enabled is {other:?}: give true or false"))),
    };
    let number = |part: &str, value: Option<String>, most: u32| -> Result<Option<u32>, _> {
        value
            .map(|v| match v.parse::<u32>() {
                Ok(n) if (1..=most).contains(&n) => Ok(n),
                _ => Err(invalid(format!(
                    "{part} is {v:?}: give a whole number from 1 to {most}"
                ))),
            })
            .transpose()
    };
    let instances = number("instances", text.remove("instances"), 256)?.map(|n| n as u16);
    let queue = number("queue", text.remove("queue"), 1_000_000)?;
    let api_key = text.remove("api_key");
    if api_key.as_ref().is_some_and(|k| k.len() < 16) {
        return Err(invalid("api_key: give at least 16 characters".into()));
    }
    Ok(NewDeployment {
        name,
        files: bundle,
        sha256: text.remove("sha256"),
        enabled,
        api_key,
        instances,
        queue,
    })
}

fn multipart_error(e: &axum::extract::multipart::MultipartError) -> (ErrorKind, String) {
    let kind = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorKind::BodyTooLarge
    } else {
        ErrorKind::InvalidRequest
    };
    (kind, format!("the upload: {}", e.body_text()))
}

/// Enables a deployment.
#[utoipa::path(post, path = "/v1/deployments/{name}/enable", params(("name" = String, Path, description = "The deployment")),
    responses((status = 200, description = "Enabled", body = DeploymentInfo), (status = 401, description = "Admin key missing or wrong", body = ErrorBody), (status = 404, description = "No such deployment", body = ErrorBody)))]
pub(crate) async fn enable(
    state: State<Arc<AppState>>,
    name: UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<DeploymentInfo>, ApiError> {
    set_enabled(state, name, headers, true).await
}

/// Disables a deployment: its classify route answers 409 until it is enabled again.
#[utoipa::path(post, path = "/v1/deployments/{name}/disable", params(("name" = String, Path, description = "The deployment")),
    responses((status = 200, description = "Disabled", body = DeploymentInfo), (status = 401, description = "Admin key missing or wrong", body = ErrorBody), (status = 404, description = "No such deployment", body = ErrorBody)))]
pub(crate) async fn disable(
    state: State<Arc<AppState>>,
    name: UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<DeploymentInfo>, ApiError> {
    set_enabled(state, name, headers, false).await
}

async fn set_enabled(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    enabled: bool,
) -> Result<Json<DeploymentInfo>, ApiError> {
    let id = request_id(&headers);
    let deployment = state
        .deployments
        .set_enabled(&name, enabled)
        .await
        .map_err(|e| deploy_error(e, &id))?;
    tracing::info!(deployment = %name, enabled, "deployment changed");
    Ok(Json(info(&state, &deployment)))
}

/// Deletes a deployment (and its bundle, unless another deployment serves it).
#[utoipa::path(delete, path = "/v1/deployments/{name}", params(("name" = String, Path, description = "The deployment")),
    responses((status = 204, description = "Deleted"), (status = 401, description = "Admin key missing or wrong", body = ErrorBody), (status = 404, description = "No such deployment", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = request_id(&headers);
    state
        .deployments
        .delete(&name)
        .await
        .map_err(|e| deploy_error(e, &id))?;
    tracing::info!(deployment = %name, "deployment deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The deployments page: each deployment with its model, state, figures and its web app.
pub(super) async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    let rows: String = state
        .deployments
        .infos()
        .iter()
        .map(|d| {
            let accuracy = d.test_metrics.as_ref().map_or("–".to_string(), |m| {
                format!("{:.2} %", m.accuracy * 100.0)
            });
            let review = d.review_ms.map_or("–".to_string(), |ms| format!("{ms:.0} ms"));
            format!(
                "<tr><td>{name}{default}</td><td>{model}</td><td>{state}</td><td>{accuracy}</td><td>{review}</td><td>{requests}</td><td><code>{sha}</code></td><td><a href=\"/d/{name}/\">Open web app</a></td></tr>\n",
                name = d.name,
                default = if d.default { " (default)" } else { "" },
                model = escape(&d.model),
                state = match (d.enabled, d.warm, d.loading) {
                    (false, _, _) => "disabled",
                    (true, true, true) => "enabled, warm (snapshot being made)",
                    (true, true, false) => "enabled, warm",
                    (true, false, _) => "enabled, cold",
                },
                requests = d.requests,
                sha = &d.bundle_sha256[..12.min(d.bundle_sha256.len())],
            )
        })
        .collect();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Movie review feelings: deployments</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\n<body><main><h1>Deployments</h1>\n<table><caption>Every deployment of this gateway; a cold one maps its model on its next request.</caption>\n<thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Model</th><th scope=\"col\">State</th><th scope=\"col\">Test accuracy</th><th scope=\"col\">Review (seq 256)</th><th scope=\"col\">Requests</th><th scope=\"col\">Bundle sha256</th><th scope=\"col\">Web app</th></tr></thead>\n<tbody>\n{rows}</tbody></table></main></body></html>\n"
    ))
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
