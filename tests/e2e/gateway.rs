//! The gateway's router with real sandboxes (a tiny trained bundle), driven without a socket:
//! every endpoint, every error code, faults, and 2,000 malformed bodies.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use feelings_runtime::{
    app, start, Access, AppState, GatewayOptions, Limits, PoolOptions, SandboxOptions, EPOCH_TICK,
};
use feelings_trainer::fixtures;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{root, tiny_bundle};

pub(crate) fn options(sandbox: SandboxOptions, limits: Limits) -> GatewayOptions {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    GatewayOptions {
        model: tiny_bundle().to_path_buf(),
        default_name: "e2e-tiny-bundle".into(),
        more_models: Vec::new(),
        registry: crate::scratch_dir("registry"),
        cores: 2,
        max_sandboxes: 64,
        budget_bytes: 4 << 30,
        component: target.join("wasm32-wasip2/release/feelings_core.wasm"),
        web_dir: Some(root().join("web")),
        sandbox: SandboxOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-cache")),
            ..sandbox
        },
        pool: PoolOptions {
            instances: 2,
            queue: 32,
            max_batch: 16,
            ..PoolOptions::default()
        },
        limits,
        access: Access::default(),
    }
}

pub(crate) fn test_limits() -> Limits {
    Limits {
        max_body_bytes: 16 << 10,
        max_texts: 8,
        max_chars: 2_000,
        timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(10),
        max_upload_bytes: 64 << 20,
        ..Limits::default()
    }
}

/// One gateway for the tests that do not break it.
pub(crate) fn gateway() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| start(&options(SandboxOptions::default(), test_limits())).unwrap())
        .clone()
}

pub(crate) struct Answer {
    pub status: StatusCode,
    pub request_id: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Checks the answer is the error `status` with `code`.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.error_code().as_str()), (status, code));
    }

    /// The error code, after checking the error body carries this request's id.
    pub fn error_code(&self) -> String {
        let body = self.json();
        assert_eq!(body["error"]["request_id"], self.request_id.as_str());
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        body["error"]["code"].as_str().unwrap().to_string()
    }
}

pub(crate) async fn send(state: &Arc<AppState>, request: Request<Body>) -> Answer {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string())
    };
    let (request_id, content_type) = (header("x-request-id"), header("content-type"));
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        request_id,
        content_type,
        body,
    }
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub(crate) fn post_json(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/classify")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers() {
    let state = gateway();
    let health = send(&state, get("/healthz")).await;
    assert_eq!(
        (health.status, health.body.as_slice()),
        (StatusCode::OK, &b"ok"[..])
    );
    assert!(
        !health.request_id.is_empty(),
        "every answer carries x-request-id"
    );
    assert_eq!(send(&state, get("/readyz")).await.status, StatusCode::OK);

    let model = send(&state, get("/v1/model")).await;
    assert_eq!(model.status, StatusCode::OK);
    let manifest = model.json();
    assert_eq!(manifest["max_seq_len"], 24);
    assert_eq!(manifest["labels"]["positive"], "positive");

    let bundle_manifest = send(&state, get("/model/feelings.json")).await;
    assert_eq!(bundle_manifest.json(), manifest);
    let onnx = send(&state, get("/model/model.onnx")).await;
    assert_eq!(
        onnx.body,
        std::fs::read(tiny_bundle().join("model.onnx")).unwrap()
    );
    let missing = send(&state, get("/model/secrets.txt")).await;
    missing.assert_error(StatusCode::NOT_FOUND, "not_found");

    let page = send(&state, get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    let listed = String::from_utf8_lossy(&page.body).to_string();
    assert!(listed.contains("href=\"/d/e2e-tiny-bundle/\""), "{listed}");
    let app = send(&state, get("/d/e2e-tiny-bundle/")).await;
    assert!(String::from_utf8_lossy(&app.body).contains("id=\"review\""));

    let one = send(
        &state,
        post_json(r#"{"text": "the movie was great and wonderful"}"#),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["model"], manifest["name"]);
    assert_eq!(one["truncated"], false);
    assert!((0.0..=1.0).contains(&one["score"].as_f64().unwrap()));
    let many = send(
        &state,
        post_json(r#"{"texts": ["the plot was awful", "the acting was fine"]}"#),
    )
    .await;
    assert_eq!(many.json().as_array().unwrap().len(), 2);
    let long = json!({"text": "the movie was great ".repeat(500)}).to_string();
    assert_eq!(
        send(&state, post_json(long)).await.json()["truncated"],
        true
    );

    let openapi = send(&state, get("/openapi.json")).await.json();
    for path in [
        "/v1/classify",
        "/v1/model",
        "/healthz",
        "/readyz",
        "/metrics",
        "/model/{file}",
        "/v1/deployments",
        "/v1/deployments/{name}/classify",
        "/v1/explain",
        "/v1/deployments/{name}/explain",
        "/predict",
        "/info",
        "/tokenize",
        "/",
        "/v1/deployments/{name}/predict",
        "/v1/deployments/{name}/info",
        "/v1/deployments/{name}/tokenize",
        "/v1/deployments/{name}",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
    assert!(openapi["components"]["schemas"]["Classified"].is_object());
    // Methods of one path are merged, not replaced.
    for method in ["get", "post", "delete"] {
        assert!(
            openapi["paths"]["/v1/deployments/{name}"][method].is_object(),
            "{method} /v1/deployments/{{name}} missing from /openapi.json"
        );
    }

    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    for name in [
        "feelings_http_requests_total",
        "feelings_sandbox_instantiations_total",
        "feelings_http_request_duration_seconds_bucket",
        "feelings_queue_depth",
        "feelings_rejected_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_documented_codes() {
    let state = gateway();
    let plain = Request::post("/v1/classify")
        .body(Body::from(r#"{"text":"hi"}"#))
        .unwrap();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            plain,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post_json("{\"text\": "),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post_json(&b"{\"text\": \"\xff\xfe\"}"[..]),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post_json(r#"{"text": 3}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post_json(r#"{"text": "a", "texts": ["b"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post_json(r#"{"texts": []}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post_json(r#"{"txt": "a"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            post_json(r#"{"texts": ["a","a","a","a","a","a","a","a","a"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_texts",
        ),
        (
            post_json(json!({"text": "x".repeat(20 << 10)}).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let answer = send(&state, request).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (status, code)
        );
    }
}

/// 2,000 bodies: valid ones, cut ones, random bytes, random JSON, wrong content types.
#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_malformed_bodies_never_get_a_server_error() {
    let state = gateway();
    let mut rng = StdRng::seed_from_u64(7);
    let valid = [
        r#"{"text": "the movie was great"}"#,
        r#"{"texts": ["awful", "fine", ""]}"#,
    ];
    let values = [
        "null",
        "true",
        "-1e400",
        "\"\\ud800\"",
        "[[[[[]]]]]",
        "{}",
        "\"\u{0}\"",
        "1.5",
    ];
    for i in 0..2_000 {
        let base = valid[i % 2].as_bytes().to_vec();
        let body: Vec<u8> = match rng.random_range(0..5) {
            0 => base[..rng.random_range(0..base.len())].to_vec(),
            1 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            2 => {
                let mut b = base.clone();
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
                b
            }
            3 => format!(
                r#"{{"text": {}}}"#,
                values[rng.random_range(0..values.len())]
            )
            .into_bytes(),
            _ => format!(
                r#"{{"texts": [{}]}}"#,
                values[rng.random_range(0..values.len())]
            )
            .into_bytes(),
        };
        let content_type = [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
        ][rng.random_range(0..3)];
        let request = Request::post("/v1/classify")
            .header("content-type", content_type)
            .body(Body::from(body.clone()))
            .unwrap();
        let answer = send(&state, request).await;
        assert!(
            [200, 400, 413, 415, 422].contains(&answer.status.as_u16()),
            "{} for {content_type} {:?}",
            answer.status,
            String::from_utf8_lossy(&body)
        );
    }
    let after = send(&state, post_json(r#"{"text": "the plot was boring"}"#)).await;
    assert_eq!(after.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_past_its_deadline_is_stopped_and_replaced() {
    // Epochs tick in wall-clock time: leave a loaded CI machine room for the small requests.
    let deadline = Duration::from_millis(250);
    let sandbox = SandboxOptions {
        deadline,
        ..SandboxOptions::default()
    };
    let limits = Limits {
        max_body_bytes: 8 << 20,
        max_chars: 4_000_000,
        ..test_limits()
    };
    let state = start(&options(sandbox, limits)).unwrap();
    for _ in 0..5 {
        // Tokenising 600,000 words takes the guest far longer than 250 ms.
        let huge =
            json!({"text": "the movie was great and wonderful ".repeat(100_000)}).to_string();
        let started = Instant::now();
        let answer = send(&state, post_json(huge)).await;
        answer.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
        assert!(String::from_utf8_lossy(&answer.body).contains("deadline"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped late: {:?}",
            started.elapsed()
        );
        let next = send(&state, post_json(r#"{"text": "the acting was fine"}"#)).await;
        assert_eq!(next.status, StatusCode::OK, "the next request is served");
    }
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("feelings_sandbox_traps_total{deployment=\"e2e-tiny-bundle\"} 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_out_of_memory_traps_and_is_replaced() {
    let sandbox = SandboxOptions {
        memory_limit: 64 << 20,
        ..SandboxOptions::default()
    };
    let limits = Limits {
        max_body_bytes: 32 << 20,
        max_chars: 8_000_000,
        ..test_limits()
    };
    let state = start(&options(sandbox, limits)).unwrap();
    let texts = vec!["the movie was great and wonderful ".repeat(200_000); 4];
    let answer = send(&state, post_json(json!({ "texts": texts }).to_string())).await;
    answer.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
    let next = send(&state, post_json(r#"{"text": "the acting was fine"}"#)).await;
    assert_eq!(next.status, StatusCode::OK, "the next request is served");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_batched_together_get_their_own_answers() {
    let state = gateway();
    let texts: Vec<String> = fixtures::reviews(24, 3)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut alone = Vec::new();
    for text in &texts {
        let body = json!({ "text": text }).to_string();
        alone.push(send(&state, post_json(body)).await.json());
    }
    let together = futures_join(texts.iter().map(|text| {
        let state = state.clone();
        let body = json!({ "text": text }).to_string();
        tokio::spawn(async move { send(&state, post_json(body)).await.json() })
    }))
    .await;
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a["label"], t["label"]);
        let (a, t) = (a["score"].as_f64().unwrap(), t["score"].as_f64().unwrap());
        assert!((a - t).abs() <= 1e-4, "{a} vs {t}");
    }
}

async fn futures_join(handles: impl Iterator<Item = tokio::task::JoinHandle<Value>>) -> Vec<Value> {
    let mut answers = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        answers.push(handle.await.unwrap());
    }
    answers
}

/// Each call in a fresh sandbox: the test guest counts its calls ("count"), and every request
/// sees its first; with `reuse_sandboxes` the count goes on (the probe's calls included).
#[tokio::test(flavor = "multi_thread")]
async fn no_guest_state_outlives_a_request_unless_sandboxes_are_reused() {
    for reuse in [false, true] {
        let mut options = options(SandboxOptions::default(), test_limits());
        options.component = options
            .component
            .with_file_name("feelings_fault_guest.wasm");
        options.pool.instances = 1;
        options.pool.reuse_sandboxes = reuse;
        let state = start(&options).unwrap();
        let mut scores = Vec::new();
        for _ in 0..3 {
            let answer = send(&state, post_json(r#"{"text": "count"}"#)).await;
            scores.push(answer.json()["score"].as_f64().unwrap());
        }
        let calls: Vec<u32> = scores.iter().map(|s| (s * 100.0).round() as u32).collect();
        if reuse {
            let after_the_probe = calls[0];
            assert!(
                after_the_probe > 2,
                "{calls:?}: the probe's calls are counted"
            );
            assert_eq!(
                calls,
                [0, 1, 2].map(|i| after_the_probe + i),
                "a reused sandbox remembers"
            );
        } else {
            assert_eq!(calls, [1, 1, 1], "each request in a fresh sandbox");
            let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
            let made: u32 = metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "feelings_sandbox_instantiations_total{deployment=\"e2e-tiny-bundle\"} ",
                    )
                })
                .and_then(|n| n.trim().parse().ok())
                .expect("the instantiation counter");
            // The probed one and one per request, then (perhaps not yet) the next one.
            assert!((4..=5).contains(&made), "{made} sandboxes made");
        }
    }
}

/// The gateway on the misbehaving test guest (`tests/fault-guest`): "loop" never returns,
/// "eat" allocates until the memory cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_loops_forever_or_eats_memory_is_stopped_and_replaced() {
    // Long enough for the eater to reach the cap on a loaded machine.
    let deadline = Duration::from_millis(600);
    let sandbox = SandboxOptions {
        deadline,
        memory_limit: 64 << 20,
        ..SandboxOptions::default()
    };
    let mut options = options(sandbox, test_limits());
    options.component = options
        .component
        .with_file_name("feelings_fault_guest.wasm");
    let state = start(&options).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = send(&state, post_json(r#"{"text": "loop"}"#)).await;
        let took = started.elapsed();
        answer.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
        println!("a guest looping forever answered 500 after {took:?} (deadline {deadline:?})");
        assert!(
            took < deadline + EPOCH_TICK + Duration::from_millis(700),
            "stopped after {took:?}"
        );
        let next = send(&state, post_json(r#"{"text": "fine"}"#)).await;
        assert_eq!(next.json()["score"], 0.25, "the next request is served");

        let answer = send(&state, post_json(r#"{"text": "eat"}"#)).await;
        assert_eq!(answer.error_code(), "sandbox_failed");
        assert!(
            !String::from_utf8_lossy(&answer.body).contains("deadline"),
            "a memory trap, not the deadline"
        );
        let next = send(&state, post_json(r#"{"texts": ["fine", "too"]}"#)).await;
        assert_eq!(next.status, StatusCode::OK, "the next request is served");
    }
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("feelings_sandbox_traps_total{deployment=\"e2e-tiny-bundle\"} 6"),
        "{metrics}"
    );
}
