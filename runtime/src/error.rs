//! The gateway's errors: one place maps each kind to its HTTP status and stable code, and every
//! error answers as JSON `{"error": {"code", "message", "request_id"}}`, whoever produced it.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
pub use feelings_core::contract::{ErrorBody, ErrorDetail};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is not JSON (or not UTF-8).
    MalformedJson,
    /// The JSON does not have the expected shape or values.
    InvalidRequest,
    /// More texts than a request may carry.
    TooManyTexts,
    /// The body is larger than the limit.
    BodyTooLarge,
    /// The body did not arrive within the body timeout.
    RequestTimeout,
    /// An API key is required and this request has none, or a wrong one.
    Unauthorized,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// No such resource.
    NotFound,
    /// The queue is full, or the request could not be answered in time: try again later.
    Overloaded,
    /// Not every sandbox slot is live (`/readyz`).
    NotReady,
    /// No answer within the request timeout.
    Timeout,
    /// The sandbox trapped, ran past its deadline or gave an impossible answer; it was replaced.
    SandboxFailed,
    /// The classifier refused the texts.
    ClassifierError,
    /// The deployment exists and is disabled.
    Disabled,
    /// A deployment of that name exists.
    Exists,
    /// The uploaded bundle is refused: not a bundle, a wrong sha256, or it does not run.
    InvalidBundle,
    /// The registry folder cannot be written.
    RegistryFailed,
    /// Any other status (produced below the API, e.g. by the static file server).
    Other(StatusCode),
}

impl ErrorKind {
    /// The HTTP status and the stable code of this kind.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidRequest => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            Self::TooManyTexts => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_texts"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::SandboxFailed => (StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed"),
            Self::ClassifierError => (StatusCode::INTERNAL_SERVER_ERROR, "classifier_error"),
            Self::Disabled => (StatusCode::CONFLICT, "deployment_disabled"),
            Self::Exists => (StatusCode::CONFLICT, "deployment_exists"),
            Self::InvalidBundle => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle"),
            Self::RegistryFailed => (StatusCode::INTERNAL_SERVER_ERROR, "registry_failed"),
            Self::Other(status) if status.is_server_error() => (*status, "server_error"),
            Self::Other(status) => (*status, "bad_request"),
        }
    }

    /// The kind an error status has when something other than a handler produced it.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => Self::BodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            other => Self::Other(other),
        }
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A message naming the problem, for people.
    pub message: String,
    /// The request's `x-request-id`.
    pub request_id: String,
}

impl ApiError {
    /// An error of `kind` for the request `request_id`.
    pub fn new(kind: ErrorKind, message: impl Into<String>, request_id: &str) -> Self {
        Self {
            kind,
            message: message.into(),
            request_id: request_id.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.kind.status_and_code();
        if status.is_server_error() {
            tracing::warn!(request_id = %self.request_id, code, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.message,
                request_id: self.request_id,
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.kind {
            ErrorKind::Overloaded | ErrorKind::NotReady => {
                headers.insert("retry-after", HeaderValue::from_static("1"));
            }
            ErrorKind::Unauthorized => {
                headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
