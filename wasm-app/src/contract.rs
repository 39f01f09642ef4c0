//! The HTTP classify contract (`POST /v1/classify`): the request body, its limits, how a long
//! text is cut, the answer and the error body. The gateway and the `wasi:http` component both
//! answer through this module, so a client cannot tell them apart.

use serde::{Deserialize, Serialize};

use crate::{Prediction, Truncation};

/// Largest request body, in bytes, unless the server is told otherwise (413 beyond).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Most texts in one request, unless the server is told otherwise (422 beyond).
pub const DEFAULT_MAX_TEXTS: usize = 64;
/// Characters of a text that reach the classifier, unless the server is told otherwise.
pub const DEFAULT_MAX_CHARS: usize = 20_000;

/// `POST /v1/classify` body: one text or a list (exactly one of the two).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// One review.
    pub text: Option<String>,
    /// Several reviews, answered in order.
    pub texts: Option<Vec<String>>,
}

/// One answer of `POST /v1/classify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The JSON body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable code: `malformed_json`, `invalid_request`, `too_many_texts`, `body_too_large`,
    /// `request_timeout`, `unsupported_media_type`, `unauthorized`, `method_not_allowed`,
    /// `not_found`, `overloaded`, `not_ready`, `timeout`, `sandbox_failed`, `classifier_error`,
    /// `deployment_disabled`, `deployment_exists`, `invalid_bundle`, `registry_failed` (and
    /// `bad_request` or `server_error` for any other status).
    #[serde(default)]
    pub code: String,
    /// What the problem is.
    pub message: String,
    /// The request's `x-request-id`, also in the answer's headers and the server's logs.
    #[serde(default)]
    pub request_id: String,
}

/// Why a classify body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not UTF-8 (400 `malformed_json`).
    #[error("{0}")]
    Malformed(String),
    /// JSON of the wrong shape (422 `invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// More texts than a request may carry (422 `too_many_texts`).
    #[error("{0}")]
    TooManyTexts(String),
}

impl RequestError {
    /// The HTTP status and stable code this refusal answers with.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::Malformed(_) => (400, "malformed_json"),
            Self::Invalid(_) => (422, "invalid_request"),
            Self::TooManyTexts(_) => (422, "too_many_texts"),
        }
    }
}

/// Whether a `content-type` header value is JSON (parameters such as `charset` allowed).
pub fn is_json_content_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The texts of a request body, and whether it asked for one (`text`) or a list.
pub fn parse_request(body: &[u8], max_texts: usize) -> Result<(Vec<String>, bool), RequestError> {
    let request: ClassifyRequest = serde_json::from_slice(body).map_err(|e| {
        let message = format!("the body: {e}");
        match e.classify() {
            serde_json::error::Category::Data => RequestError::Invalid(message),
            _ => RequestError::Malformed(message),
        }
    })?;
    let (texts, single) = match (request.text, request.texts) {
        (Some(text), None) => (vec![text], true),
        (None, Some(texts)) if !texts.is_empty() => (texts, false),
        (None, Some(_)) => return Err(RequestError::Invalid("`texts` is empty".into())),
        _ => {
            return Err(RequestError::Invalid(
                "give either `text` (a string) or `texts` (a list of strings)".into(),
            ))
        }
    };
    if texts.len() > max_texts {
        return Err(RequestError::TooManyTexts(format!(
            "{} texts; at most {max_texts} per request",
            texts.len()
        )));
    }
    Ok((texts, single))
}

/// Cuts `text` to `max_chars` characters, keeping what the model's truncation keeps (the start;
/// or the start and the end for head+tail); says whether it cut.
pub fn cut_text(text: String, max_chars: usize, truncation: Truncation) -> (String, bool) {
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

/// The answers for `predictions` of model `model`, marking those whose text was cut before
/// the classifier saw it (`cut`, in the same order).
pub fn answers(predictions: Vec<Prediction>, cut: &[bool], model: &str) -> Vec<Classified> {
    predictions
        .into_iter()
        .zip(cut)
        .map(|(p, &cut)| Classified {
            label: p.label,
            score: p.score,
            threshold: p.threshold,
            model: model.to_string(),
            truncated: p.truncated || cut,
        })
        .collect()
}

/// The JSON answer body: one object for a `text` request, a list for `texts`.
pub fn answer_json(answers: &[Classified], single: bool) -> Vec<u8> {
    let json = if single {
        serde_json::to_vec(&answers[0])
    } else {
        serde_json::to_vec(answers)
    };
    json.expect("answers are plain data")
}

/// The JSON error body.
pub fn error_json(code: &str, message: &str, request_id: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
            request_id: request_id.to_string(),
        },
    };
    serde_json::to_vec(&body).expect("an error body is plain data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_text_or_a_list_within_the_limit() {
        assert_eq!(
            parse_request(br#"{"text":"Loved it"}"#, 2),
            Ok((vec!["Loved it".to_string()], true))
        );
        assert_eq!(
            parse_request(br#"{"texts":["a","b"]}"#, 2),
            Ok((vec!["a".to_string(), "b".to_string()], false))
        );
        let refusals = [
            (&br#"{"text":"#[..], 400, "malformed_json"),
            (br#"{"texts":[]}"#, 422, "invalid_request"),
            (br#"{"text":"a","texts":["b"]}"#, 422, "invalid_request"),
            (br#"{"txt":"a"}"#, 422, "invalid_request"),
            (br#"{"texts":["a","b","c"]}"#, 422, "too_many_texts"),
        ];
        for (body, status, code) in refusals {
            let error = parse_request(body, 2).unwrap_err();
            assert_eq!(error.status_and_code(), (status, code), "{error}");
        }
    }

    #[test]
    fn a_long_text_keeps_what_the_truncation_keeps() {
        let text = "abcdefghij".to_string();
        assert_eq!(
            cut_text(text.clone(), 10, Truncation::Tail),
            (text.clone(), false)
        );
        assert_eq!(
            cut_text(text.clone(), 4, Truncation::Tail),
            ("abcd".into(), true)
        );
        assert_eq!(
            cut_text(text, 4, Truncation::HeadTail),
            ("ab ij".into(), true)
        );
    }

    #[test]
    fn json_content_types_are_recognised_with_parameters() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_content_type("text/plain"));
    }
}
