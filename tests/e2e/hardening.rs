//! The gateway's router against abuse: answers that are always JSON errors, only the page's
//! files served, guest answers checked, abandoned work dropped, requests taking turns, the API
//! key, CORS and the body timeout, and readiness that follows the sandbox slots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use feelings_core::{Bundle, Labels, Prediction};
use feelings_runtime::{
    start, Access, AnswerCheck, AppState, Deployments, Instance, Instances, LimitCheck, Limits,
    Metrics, Pool, PoolOptions, SandboxError, SandboxOptions,
};
use serde_json::json;

use crate::gateway::{get, options, post_json, send, test_limits};
use crate::tiny_bundle;

/// A gateway on the misbehaving test guest (`tests/fault-guest`).
fn fault_gateway(pool: PoolOptions, limits: Limits) -> Arc<AppState> {
    let mut options = options(SandboxOptions::default(), limits);
    options.component = options
        .component
        .with_file_name("feelings_fault_guest.wasm");
    options.pool = pool;
    start(&options).unwrap()
}

fn texts(text: &str, n: usize) -> String {
    json!({ "texts": vec![text; n] }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_json_with_the_request_id_and_only_page_files_are_served() {
    let state = crate::gateway::gateway();
    let wrong_method = send(&state, get("/v1/classify")).await;
    wrong_method.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(String::from_utf8_lossy(&wrong_method.body).contains("GET is not allowed"));
    send(&state, get("/no/such/path"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for source in [
        "/build.sh",
        "/package.json",
        "/node_modules/.package-lock.json",
        "/bench/browser.mjs",
        "/tests/harness.mjs",
        "/README.md",
        "/pkg/../build.sh",
    ] {
        send(&state, get(source))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    for asset in [
        "/",
        "/app.js",
        "/worker.js",
        "/style.css",
        "/pkg/feelings_core.js",
        "/pkg/feelings_core_bg.wasm",
    ] {
        assert_eq!(
            send(&state, get(asset)).await.status,
            StatusCode::OK,
            "{asset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_guest_answers_are_sandbox_failures_and_the_sandbox_is_replaced() {
    let pool = PoolOptions {
        instances: 1,
        queue: 64,
        max_batch: 16,
        ..PoolOptions::default()
    };
    let state = fault_gateway(pool, test_limits());
    for fault in ["short", "nan", "liar"] {
        for body in [
            json!({ "text": fault }).to_string(),
            json!({ "texts": [fault, "fine", "fine"] }).to_string(),
        ] {
            let answer = send(&state, post_json(body.clone())).await;
            answer.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
            assert!(
                String::from_utf8_lossy(&answer.body).contains("impossible"),
                "{body}"
            );
            let next = send(&state, post_json(texts("fine", 3))).await;
            assert_eq!(
                next.json().as_array().unwrap().len(),
                3,
                "served after {body}"
            );
        }
    }
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    // Per fault: one fresh sandbox after the single review; two after the batch (the shared
    // call, then the faulty review alone).
    assert!(
        metrics.contains("feelings_sandbox_traps_total{deployment=\"e2e-tiny-bundle\"} 9"),
        "{metrics}"
    );
}

#[test]
fn work_nobody_waits_for_is_dropped_and_the_next_request_is_served_at_once() {
    let _alone = crate::alone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(work_nobody_waits_for_is_dropped_and_the_next_request_is_served_at_once_alone());
}

async fn work_nobody_waits_for_is_dropped_and_the_next_request_is_served_at_once_alone() {
    let limits = Limits {
        timeout: Duration::from_millis(1500),
        max_texts: 16,
        ..test_limits()
    };
    let state = fault_gateway(
        PoolOptions {
            instances: 2,
            queue: 64,
            max_batch: 1,
            ..PoolOptions::default()
        },
        limits,
    );
    // Two requests of 16 reviews × 200 ms: 3.2 s of work each, past the timeout.
    let slow = texts("slow 200", 16);
    let (a, b) = tokio::join!(
        send(&state, post_json(slow.clone())),
        send(&state, post_json(slow))
    );
    for answer in [a, b] {
        answer.assert_error(StatusCode::GATEWAY_TIMEOUT, "timeout");
    }
    let started = Instant::now();
    assert_eq!(
        send(&state, post_json(r#"{"text": "fine"}"#)).await.status,
        StatusCode::OK
    );
    let after_timeout = started.elapsed();

    // Two clients that leave after 100 ms, each with 800 ms of work.
    let leaving: Vec<_> = (0..2)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move { send(&state, post_json(texts("slow 200", 4))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    leaving.iter().for_each(|task| task.abort());
    let started = Instant::now();
    assert_eq!(
        send(&state, post_json(r#"{"text": "fine"}"#)).await.status,
        StatusCode::OK
    );
    let after_disconnect = started.elapsed();
    println!(
        "next request after timeouts: {after_timeout:?}, after disconnects: {after_disconnect:?}"
    );
    // At most the one review in progress on a sandbox (200 ms) is finished first.
    assert!(
        after_timeout < Duration::from_millis(450),
        "{after_timeout:?}"
    );
    assert!(
        after_disconnect < Duration::from_millis(450),
        "{after_disconnect:?}"
    );
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("feelings_abandoned_total{deployment=\"e2e-tiny-bundle\"} 4"),
        "{metrics}"
    );
}

#[test]
fn single_reviews_are_served_promptly_while_big_batches_flood() {
    let _alone = crate::alone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(single_reviews_are_served_promptly_while_big_batches_flood_alone());
}

async fn single_reviews_are_served_promptly_while_big_batches_flood_alone() {
    let limits = Limits {
        max_texts: 64,
        max_body_bytes: 64 << 10,
        ..test_limits()
    };
    let state = fault_gateway(
        PoolOptions {
            instances: 2,
            queue: 1024,
            max_batch: 1,
            ..PoolOptions::default()
        },
        limits,
    );
    let flooding = Arc::new(AtomicBool::new(true));
    let floods: Vec<_> = (0..3)
        .map(|_| {
            let (state, flooding) = (state.clone(), flooding.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while flooding.load(Ordering::SeqCst) {
                    statuses.push(send(&state, post_json(texts("slow 10", 64))).await.status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let answer = send(&state, post_json(r#"{"text": "slow 10"}"#)).await;
        latencies.push(started.elapsed());
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "a single review while others flood"
        );
    }
    flooding.store(false, Ordering::SeqCst);
    for flood in floods {
        let statuses = flood.await.unwrap();
        assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    }
    latencies.sort();
    let (p50, worst) = (latencies[10], latencies[19]);
    println!(
        "single reviews while 3 clients flood with 64-review batches: p50 {p50:?}, worst {worst:?}"
    );
    // Taking turns: one 10 ms review of each of 4 requests on 2 sandboxes. First come, first
    // served, it would wait for up to three batches of 640 ms of work.
    assert!(worst < Duration::from_millis(300), "{latencies:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_cors_and_the_body_timeout() {
    let mut options = options(
        SandboxOptions::default(),
        Limits {
            body_timeout: Duration::from_millis(300),
            ..test_limits()
        },
    );
    options.access = Access {
        api_key: Some("a-key-of-twenty-chars".into()),
        admin_key: None,
        cors_origins: vec!["https://reviews.example".parse().unwrap()],
    };
    let state = start(&options).unwrap();
    let keyless = send(&state, post_json(r#"{"text": "fine"}"#)).await;
    keyless.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = Request::post("/v1/classify")
        .header("content-type", "application/json")
        .header("authorization", "Bearer a-key-of-twenty-chaRs")
        .body(Body::from(r#"{"text": "fine"}"#))
        .unwrap();
    send(&state, wrong)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(&state, get("/metrics"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(send(&state, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(send(&state, get("/readyz")).await.status, StatusCode::OK);

    let keyed = |body: Body| {
        Request::post("/v1/classify")
            .header("content-type", "application/json")
            .header("authorization", "Bearer a-key-of-twenty-chars")
            .header("origin", "https://reviews.example")
            .body(body)
            .unwrap()
    };
    let answer = send(&state, keyed(Body::from(r#"{"text": "fine"}"#))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let preflight = Request::options("/v1/classify")
        .header("origin", "https://reviews.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(feelings_runtime::app(state.clone()), preflight)
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://reviews.example"
    );
    let stranger = Request::options("/v1/classify")
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(feelings_runtime::app(state.clone()), stranger)
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // A body that starts and never ends.
    let stalled = futures_stream(Bytes::from_static(b"{\"text\": \"fi"));
    let started = Instant::now();
    let answer = send(&state, keyed(Body::from_stream(stalled))).await;
    answer.assert_error(StatusCode::REQUEST_TIMEOUT, "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// One chunk, then nothing, ever.
fn futures_stream(first: Bytes) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    struct Stalled(Option<Bytes>);
    impl futures_core::Stream for Stalled {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            match self.0.take() {
                Some(chunk) => std::task::Poll::Ready(Some(Ok(chunk))),
                None => std::task::Poll::Pending,
            }
        }
    }
    Stalled(Some(first))
}

/// Sandboxes that answer at once, and cannot be made while `broken` is set.
#[derive(Default)]
struct Flaky {
    broken: AtomicBool,
}

struct Answering;

impl Instance for Answering {
    fn classify(
        &mut self,
        texts: &[String],
        _: Option<Duration>,
    ) -> Result<Vec<Prediction>, SandboxError> {
        if texts[0] == "panic" {
            panic!("a host bug");
        }
        let negative = Prediction {
            label: "negative".into(),
            score: 0.25,
            threshold: 0.5,
            truncated: false,
        };
        Ok(vec![negative; texts.len()])
    }
}

impl Instances for Flaky {
    fn instance(&self) -> Result<Box<dyn Instance>, SandboxError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(SandboxError::Component("cannot map the snapshot".into()));
        }
        Ok(Box::new(Answering))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_false_while_a_dead_sandbox_cannot_be_replaced_then_true() {
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let flaky = Arc::new(Flaky::default());
    let check = AnswerCheck {
        labels: Labels::default(),
        threshold: 0.5,
        probe: "probe".into(),
    };
    let metrics = Arc::new(Metrics::new());
    let gateway = options(SandboxOptions::default(), test_limits());
    // Reusing sandboxes, so the slot that did not fail needs no fresh one to keep serving.
    let options = PoolOptions {
        reuse_sandboxes: true,
        ..PoolOptions::default()
    };
    let pool = Pool::start(
        flaky.clone(),
        &options,
        check,
        metrics.deployment("fake"),
        None,
    )
    .unwrap();
    let state = Arc::new(AppState {
        deployments: Arc::new(Deployments::pinned("fake", bundle.manifest, pool, &metrics)),
        checks: LimitCheck {
            instances: 2,
            max_batch: 1,
            deadline: gateway.sandbox.deadline,
            limits: test_limits(),
        },
        web_dir: None,
        limits: test_limits(),
        access: Access::default(),
        metrics,
    });
    assert_eq!(send(&state, get("/readyz")).await.status, StatusCode::OK);
    flaky.broken.store(true, Ordering::SeqCst);
    let died = send(&state, post_json(r#"{"text": "panic"}"#)).await;
    died.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
    let not_ready = send(&state, get("/readyz")).await;
    not_ready.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(
        send(&state, post_json(r#"{"text": "fine"}"#)).await.status,
        StatusCode::OK,
        "the other slot serves"
    );
    flaky.broken.store(false, Ordering::SeqCst);
    let started = Instant::now();
    while send(&state, get("/readyz")).await.status != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
