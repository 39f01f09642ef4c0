//! `POST /v1/explain`: the gateway's explanations, from its sandboxes, against the native core's.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use feelings_core::{Bundle, TractClassifier};
use serde_json::{json, Value};

use crate::gateway::{gateway, send, test_limits};
use crate::tiny_bundle;

fn explain_request(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Checks the gateway's answer against the native core's explanation of `text` in `max_units`.
fn assert_native(answer: &Value, text: &str, max_units: usize) {
    let core = TractClassifier::new(&Bundle::read_dir(tiny_bundle()).unwrap()).unwrap();
    let native = core.explain(text, max_units).unwrap();
    assert_eq!(answer["granularity"], json!(native.granularity));
    assert!((answer["score"].as_f64().unwrap() as f32 - native.score).abs() < 1e-5);
    let units = answer["units"].as_array().unwrap();
    assert_eq!(units.len(), native.units.len());
    for (got, want) in units.iter().zip(&native.units) {
        assert_eq!(got["text"], want.text.as_str());
        assert_eq!(got["start"], want.start);
        assert_eq!(got["end"], want.end);
        let weight = got["weight"].as_f64().unwrap() as f32;
        assert!(
            (weight - want.weight).abs() < 1e-5,
            "{got} against {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_explains_a_review_as_the_native_core_does() {
    let state = gateway();
    // The server's --max-texts (8) caps the units at 7: one text is the review itself.
    let most = test_limits().max_texts - 1;
    let text = "the movie was great and very wonderful";
    let answer = send(
        &state,
        explain_request("/v1/explain", json!({"text": text})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    let body = answer.json();
    assert_eq!(body["granularity"], "word");
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    assert_eq!(body["model"], bundle.manifest.name.as_str());
    let core = TractClassifier::new(&bundle).unwrap();
    assert_eq!(body["label"], core.classify(text).unwrap().label.as_str());
    assert_native(&body, text, most);

    let longer =
        "the plot was awful. the acting was boring! the movie was great and very wonderful.";
    let uri = "/v1/deployments/e2e-tiny-bundle/explain";
    let answer = send(&state, explain_request(uri, json!({"text": longer}))).await;
    let body = answer.json();
    assert_eq!(body["granularity"], "sentence", "{body}");
    assert_native(&body, longer, most);
    let answer = send(
        &state,
        explain_request(uri, json!({"text": longer, "max_units": 2})),
    )
    .await;
    let body = answer.json();
    assert_eq!(body["granularity"], "passage", "{body}");
    assert_native(&body, longer, 2);
    assert!(body.get("explained_text").is_none(), "{body}");

    // Longer than the server's --max-chars: explained as it is cut for /v1/classify, and the
    // text explained comes back (the units' offsets are in it).
    let long = "the movie was great. ".repeat(120);
    let answer = send(&state, explain_request(uri, json!({"text": long}))).await;
    let body = answer.json();
    assert_eq!(body["truncated"], true, "{body}");
    let explained = body["explained_text"].as_str().expect("the cut text");
    assert!(explained.chars().count() <= test_limits().max_chars + 1);
    assert!(explained.len() < long.len());
    assert_native(&body, explained, most);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_taking_one_text_per_request_refuses_explanations_plainly() {
    let limits = feelings_runtime::Limits {
        max_texts: 1,
        ..test_limits()
    };
    let options = crate::gateway::options(feelings_runtime::SandboxOptions::default(), limits);
    let state = feelings_runtime::start(&options).unwrap();
    let answer = send(&state, explain_request("/v1/explain", json!({"text": "a"}))).await;
    answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let body = answer.json();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-texts is 1"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_explain_requests_get_their_codes() {
    let state = gateway();
    for (body, status, code) in [
        (
            json!({"text": "a", "max_units": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"text": "a", "max_units": 8}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"texts": ["a"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!(["a"]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ] {
        let answer = send(&state, explain_request("/v1/explain", body.clone())).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.json());
        answer.assert_error(status, code);
    }
    let malformed = Request::post("/v1/explain")
        .header("content-type", "application/json")
        .body(Body::from("{\"text\": "))
        .unwrap();
    send(&state, malformed)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed_json");
    let unknown = explain_request("/v1/deployments/nobody/explain", json!({"text": "a"}));
    send(&state, unknown)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}
