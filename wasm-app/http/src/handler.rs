//! `wasi:http/incoming-handler`: the gateway's routes and answers, with the classifier loaded
//! in this component's memory.

use feelings_core::contract::{self, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CHARS, DEFAULT_MAX_TEXTS};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

use crate::http_io::{header, read_body, send, Answer, BodyError};

wasip2::http::proxy::export!(Handler);

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request_id = header(&request, "x-request-id").unwrap_or_else(new_request_id);
        let answer = route(&request, &request_id);
        send(out, answer, &request_id);
    }
}

/// The routes of the gateway that a single deployment has.
fn route(request: &IncomingRequest, id: &str) -> Answer {
    let target = request.path_with_query().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let method = request.method();
    match path {
        "/v1/classify" if matches!(method, Method::Post) => classify(request, id),
        "/v1/model" if matches!(method, Method::Get) => model(id),
        "/healthz" if matches!(method, Method::Get) => Answer::text(200, "ok"),
        "/v1/classify" | "/v1/model" | "/healthz" => {
            let message = format!("{path} does not answer {method:?}");
            Answer::error(405, "method_not_allowed", &message, id)
        }
        _ => {
            let message = format!(
                "no route {path:?}: this component answers POST /v1/classify, GET /v1/model and GET /healthz"
            );
            Answer::error(404, "not_found", &message, id)
        }
    }
}

/// `POST /v1/classify`: the gateway's contract, with its default limits.
fn classify(request: &IncomingRequest, id: &str) -> Answer {
    let is_json =
        header(request, "content-type").is_some_and(|v| contract::is_json_content_type(&v));
    if !is_json {
        let message = "send the body as JSON with content-type: application/json";
        return Answer::error(415, "unsupported_media_type", message, id);
    }
    let body = match read_body(request, DEFAULT_MAX_BODY_BYTES) {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let message = format!("the body is larger than {DEFAULT_MAX_BODY_BYTES} bytes");
            return Answer::error(413, "body_too_large", &message, id);
        }
        Err(BodyError::Read(why)) => {
            let message = format!("cannot read the body: {why}");
            return Answer::error(400, "malformed_json", &message, id);
        }
    };
    let (texts, single) = match contract::parse_request(&body, DEFAULT_MAX_TEXTS) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (status, code) = e.status_and_code();
            return Answer::error(status, code, &e.to_string(), id);
        }
    };
    feelings_core::wasi::with_loaded(|classifier| {
        let Some(classifier) = classifier else {
            return not_loaded(id);
        };
        let manifest = classifier.manifest();
        let (texts, cut): (Vec<String>, Vec<bool>) = texts
            .into_iter()
            .map(|t| contract::cut_text(t, DEFAULT_MAX_CHARS, manifest.truncation))
            .unzip();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        match classifier.classify_batch(&refs) {
            Ok(predictions) => {
                let answers = contract::answers(predictions, &cut, &manifest.name);
                Answer::json(200, contract::answer_json(&answers, single))
            }
            Err(e) => Answer::error(500, "classifier_error", &e.to_string(), id),
        }
    })
}

/// `GET /v1/model`: the loaded bundle's manifest.
fn model(id: &str) -> Answer {
    feelings_core::wasi::with_loaded(|classifier| match classifier {
        Some(classifier) => {
            Answer::json(200, feelings_core::manifest::to_json(classifier.manifest()))
        }
        None => not_loaded(id),
    })
}

fn not_loaded(id: &str) -> Answer {
    let message = "no model bundle is loaded in this component: write it with `feelings-serve --write-http-component FILE`";
    Answer::error(500, "classifier_error", message, id)
}

/// A random UUID (version 4), as the gateway gives a request that came without an id.
fn new_request_id() -> String {
    let [high, low] = [0; 2].map(|_| wasip2::random::random::get_random_u64());
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}
