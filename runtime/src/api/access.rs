//! Who may call the API (an optional key, as `Authorization: Bearer`), from which web origins
//! (opt-in CORS), and the one shape of every error answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{request_id, AppState};
use crate::error::{ApiError, ErrorKind};

/// Access control of the API routes.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The key the API routes require as `Authorization: Bearer <key>`; `None`: open.
    pub api_key: Option<String>,
    /// The key creating, enabling, disabling and deleting deployments require; `None`: the
    /// API key does.
    pub admin_key: Option<String>,
    /// Web origins allowed to call the API from a browser (`*`: any); empty: none but the
    /// page's own.
    pub cors_origins: Vec<HeaderValue>,
}

impl Access {
    /// The CORS layer for the allowed origins (one that adds nothing when there are none).
    pub(super) fn cors(&self) -> CorsLayer {
        let origins = if self.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(self.cors_origins.clone())
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .expose_headers([header::HeaderName::from_static("x-request-id")])
    }

    /// Whether the request carries the API key (or none is needed).
    pub(super) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        key_matches(headers, key)
    }

    /// Whether the request may create, enable, disable or delete deployments: it carries the
    /// admin key; without one, the API key; without either, anyone may.
    fn allows_admin(&self, headers: &HeaderMap) -> bool {
        match &self.admin_key {
            Some(key) => key_matches(headers, key),
            None => self.allows(headers),
        }
    }
}

/// The key of `Authorization: Bearer <key>`, if the request has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn key_matches(headers: &HeaderMap, key: &str) -> bool {
    let given = bearer(headers).unwrap_or("");
    constant_time_eq::constant_time_eq(given.as_bytes(), key.as_bytes())
}

/// Lets a request through to the admin routes only with the admin key (or, without one, the
/// API key), when one is set.
pub(super) async fn require_admin_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.access.allows_admin(request.headers()) {
        return next.run(request).await;
    }
    let message = if state.access.admin_key.is_some() {
        "creating, enabling, disabling and deleting deployments needs the admin key, as `Authorization: Bearer <key>`"
    } else {
        "creating, enabling, disabling and deleting deployments needs the API key, as `Authorization: Bearer <key>`"
    };
    ApiError::new(
        ErrorKind::Unauthorized,
        message,
        &request_id(request.headers()),
    )
    .into_response()
}

/// Lets a request through to the API routes only with the key, when one is set.
pub(super) async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.access.allows(request.headers()) {
        return next.run(request).await;
    }
    let message = "this route needs the API key, as `Authorization: Bearer <key>`";
    ApiError::new(
        ErrorKind::Unauthorized,
        message,
        &request_id(request.headers()),
    )
    .into_response()
}

/// Gives every error answer the JSON error body, whoever produced it (the router's 404 and
/// 405, the static file server, a rejected extractor), keeping its status and headers.
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let kind = ErrorKind::from_status(status);
    let message = match kind {
        ErrorKind::NotFound => format!("no such resource: {path}"),
        ErrorKind::MethodNotAllowed => {
            format!(
                "{method} is not allowed on {path} (the `allow` header lists the methods that are)"
            )
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let (parts, _) = response.into_parts();
    let mut answer = ApiError::new(kind, message, &id).into_response();
    *answer.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}
