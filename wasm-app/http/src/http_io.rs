//! Reading a request's body and writing an answer with the `wasi:http` types.

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// Bytes asked of the body stream per read.
const READ_CHUNK: u64 = 64 * 1024;
/// The most bytes `blocking-write-and-flush` takes at once.
const WRITE_CHUNK: usize = 4096;

/// An answer: its status, content type and body.
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    /// The gateway's JSON error answer.
    pub fn error(status: u16, code: &str, message: &str, request_id: &str) -> Self {
        let body = feelings_core::contract::error_json(code, message, request_id);
        Self::json(status, body)
    }
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// The stream failed (the client left, or the host refused).
    Read(String),
}

/// The first value of header `name`, if it is text.
pub(crate) fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    let first = values.into_iter().next()?;
    String::from_utf8(first).ok()
}

/// How many times the limit a body over it is read (and dropped) before the refusal is sent:
/// clients that send the whole body before they read the answer get it instead of a reset.
const DRAIN_FACTOR: usize = 8;

/// The whole body of `request`, at most `limit` bytes.
pub(crate) fn read_body(request: &IncomingRequest, limit: usize) -> Result<Vec<u8>, BodyError> {
    let declared = header(request, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|length| length > drain_limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = request
        .consume()
        .map_err(|()| BodyError::Read("the body was already taken".into()))?;
    let stream = body
        .stream()
        .map_err(|()| BodyError::Read("the body has no stream".into()))?;
    let (mut bytes, mut received) = (Vec::new(), 0usize);
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                received += chunk.len();
                if received > drain_limit {
                    return Err(BodyError::TooLarge);
                }
                if received <= limit {
                    bytes.extend_from_slice(&chunk);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(BodyError::Read(error.to_debug_string()))
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    if received > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(bytes)
}

/// Sends `answer`, with the request's id; a client that left is not an error.
pub(crate) fn send(out: ResponseOutparam, answer: Answer, request_id: &str) {
    let content_type = ("content-type".to_string(), answer.content_type.into());
    let id = ("x-request-id".to_string(), request_id.as_bytes().to_vec());
    let headers = Fields::from_list(&[content_type.clone(), id])
        .or_else(|_| Fields::from_list(&[content_type]))
        .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    // Every status this component answers is a valid one.
    let _ = response.set_status_code(answer.status);
    let Ok(body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = body.write() else {
        return;
    };
    for chunk in answer.body.chunks(WRITE_CHUNK) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}
