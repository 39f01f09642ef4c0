//! Deployments through the router with real sandboxes: upload, list, enable, disable, delete,
//! a restart that keeps them, refused uploads, isolation between deployments and scale to zero.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use feelings_core::deployment::bundle_digest;
use feelings_runtime::{start, AppState, GatewayOptions, Limits, SandboxOptions};
use serde_json::{json, Value};

use crate::gateway::{get, options, send, test_limits, Answer};
use crate::tiny_bundle;

const ADMIN: &str = "an-admin-key-of-24-chars";

/// A bundle's three files, with its manifest's `name` changed (so its sha256 differs).
fn bundle_files(model_name: Option<&str>) -> [(String, Vec<u8>); 3] {
    let dir = tiny_bundle();
    let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
    let mut manifest = read("feelings.json");
    if let Some(name) = model_name {
        let mut json: Value = serde_json::from_slice(&manifest).unwrap();
        json["name"] = json!(name);
        manifest = serde_json::to_vec_pretty(&json).unwrap();
    }
    [
        ("feelings.json".into(), manifest),
        ("model.onnx".into(), read("model.onnx")),
        ("tokenizer.json".into(), read("tokenizer.json")),
    ]
}

/// A `multipart/form-data` upload of `fields` (text) and `files`.
fn upload(
    fields: &[(&str, &str)],
    files: &[(String, Vec<u8>)],
    key: Option<&str>,
) -> Request<Body> {
    let boundary = "feelings-test-boundary-7d1c";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
    }
    for (name, bytes) in files {
        body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\ncontent-type: application/octet-stream\r\n\r\n").bytes());
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    let mut request = Request::post("/v1/deployments").header(
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    );
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::from(body)).unwrap()
}

/// Uploads the tiny bundle (its model renamed `model`) as deployment `name`.
async fn deploy(state: &Arc<AppState>, name: &str, model: &str) -> Answer {
    let files = bundle_files(Some(model));
    let sha = bundle_digest(&files[0].1);
    send(
        state,
        upload(&[("name", name), ("sha256", &sha)], &files, Some(ADMIN)),
    )
    .await
}

/// Waits until deployment `name` serves from its snapshot: a new one serves from sandboxes
/// that load its bundle while the snapshot is made in the background.
async fn until_snapshot_serves(state: &Arc<AppState>, name: &str) -> Value {
    let started = Instant::now();
    loop {
        let shown = send(state, get(&format!("/v1/deployments/{name}")))
            .await
            .json();
        if shown["loading"] == false && shown["preparing"] == false {
            return shown;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{name} has no snapshot after 300 s: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn admin(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap()
}

fn classify(name: &str, text: &str) -> Request<Body> {
    Request::post(format!("/v1/deployments/{name}/classify"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "text": text }).to_string()))
        .unwrap()
}

fn gateway_options(registry: &Path) -> GatewayOptions {
    let mut options = options(SandboxOptions::default(), test_limits());
    options.registry = registry.to_path_buf();
    options.access.admin_key = Some(ADMIN.into());
    options
}

fn names(list: &Value) -> Vec<String> {
    list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_are_created_listed_disabled_deleted_and_survive_a_restart() {
    let registry = crate::scratch_dir("registry");
    let state = start(&gateway_options(&registry)).unwrap();
    let created = deploy(&state, "second", "tiny-second").await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let created = created.json();
    assert_eq!(
        (created["name"].as_str(), created["model"].as_str()),
        (Some("second"), Some("tiny-second"))
    );
    assert_eq!(created["enabled"], true);
    assert!(created["review_ms"].as_f64().unwrap() > 0.0);
    // It answers at once, from sandboxes that load its bundle, while its snapshot is made.
    assert_eq!(
        (&created["warm"], &created["loading"], &created["preparing"]),
        (&json!(true), &json!(true), &json!(true))
    );
    let early = send(&state, classify("second", "a fine film")).await;
    assert_eq!(early.status, StatusCode::OK);
    let shown = until_snapshot_serves(&state, "second").await;
    assert_eq!(
        shown["warm"], true,
        "the snapshot's pool took the loading one's place"
    );

    let list = send(&state, get("/v1/deployments")).await.json();
    assert_eq!(names(&list), ["e2e-tiny-bundle", "second"]);
    assert_eq!(list["deployments"][0]["default"], true);

    let answer = send(&state, classify("second", "a fine film")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(
        answer["model"], "tiny-second",
        "answered by that deployment's bundle"
    );
    assert_eq!(
        early.json()["score"],
        answer["score"],
        "a loading sandbox and the snapshot's answer alike"
    );
    let shown = send(&state, get("/v1/deployments/second")).await.json();
    assert_eq!(shown["requests"], 2);

    // Disabled: its classify route says so; enabled again: it answers.
    let disabled = send(&state, admin("POST", "/v1/deployments/second/disable")).await;
    assert_eq!(disabled.json()["enabled"], false);
    send(&state, classify("second", "a film"))
        .await
        .assert_error(StatusCode::CONFLICT, "deployment_disabled");

    // A restart on the same registry keeps both deployments and the disabled state.
    drop(state);
    let state = start(&gateway_options(&registry)).unwrap();
    let list = send(&state, get("/v1/deployments")).await.json();
    assert_eq!(names(&list), ["e2e-tiny-bundle", "second"]);
    assert_eq!(list["deployments"][1]["enabled"], false);
    assert_eq!(
        list["deployments"][1]["warm"], false,
        "cold until its first request"
    );
    send(&state, admin("POST", "/v1/deployments/second/enable")).await;
    assert_eq!(
        send(&state, classify("second", "a film")).await.status,
        StatusCode::OK
    );

    // Deleted: gone from the list, its routes 404, its bundle folder removed.
    let sha = list["deployments"][1]["bundle_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(registry.join("bundles").join(&sha).is_dir());
    let deleted = send(&state, admin("DELETE", "/v1/deployments/second")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        names(&send(&state, get("/v1/deployments")).await.json()),
        ["e2e-tiny-bundle"]
    );
    send(&state, classify("second", "a film"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&state, get("/d/second/"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(!registry.join("bundles").join(&sha).exists());
    assert!(!registry.join("deployments/second.json").exists());
}

/// A bundle given at start whose measured cost the limits cannot take stops the start and
/// leaves the registry as it was: the deployment it would replace keeps its record and bundle.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_refused_by_the_limits_leaves_the_registry_as_it_was() {
    let registry = crate::scratch_dir("registry");
    let folder = crate::scratch_dir("default").join("tiny-mine");
    std::fs::create_dir_all(&folder).unwrap();
    let put = |name: &str| {
        for (file, bytes) in bundle_files(Some(name)) {
            std::fs::write(folder.join(file), bytes).unwrap();
        }
    };
    put("tiny-mine");
    let mut options = gateway_options(&registry);
    (options.model, options.default_name) = (folder.clone(), "tiny-mine".into());
    drop(start(&options).unwrap());
    let record_file = registry.join("deployments/tiny-mine.json");
    let before = std::fs::read(&record_file).unwrap();
    let bundles = || std::fs::read_dir(registry.join("bundles")).unwrap().count();
    assert_eq!(bundles(), 1);

    put("tiny-mine-2");
    // Two thirds of 1 ms, over 8 texts on 2 sandboxes: 0.17 ms a review, less than any costs.
    options.limits.timeout = Duration::from_millis(1);
    let refused = start(&options).err().expect("refused").to_string();
    assert!(refused.contains("the limits cannot all hold"), "{refused}");
    assert!(refused.contains("tiny-mine"), "{refused}");
    assert_eq!(std::fs::read(&record_file).unwrap(), before);
    assert_eq!(bundles(), 1, "the refused bundle is not kept");
}

/// A folder given at start never replaces a deployment uploaded with its own API key, slots or
/// queue, which the folder has none of: the start is refused and names the way out.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_never_replaces_a_deployment_uploaded_with_its_own_slots() {
    let registry = crate::scratch_dir("registry");
    let mut options = gateway_options(&registry);
    let state = start(&options).unwrap();
    let files = bundle_files(Some("tiny-uploaded"));
    let sha = bundle_digest(&files[0].1);
    let fields = [
        ("name", "tiny-other"),
        ("sha256", sha.as_str()),
        ("instances", "1"),
    ];
    let uploaded = send(&state, upload(&fields, &files, Some(ADMIN))).await;
    assert_eq!(uploaded.status, StatusCode::CREATED);
    drop(state);
    let record_file = registry.join("deployments/tiny-other.json");
    let before = std::fs::read(&record_file).unwrap();

    let folder = crate::scratch_dir("more-models").join("tiny-other");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, bytes) in bundle_files(Some("tiny-other")) {
        std::fs::write(folder.join(file), bytes).unwrap();
    }
    options.more_models = vec![("tiny-other".into(), folder)];
    let refused = start(&options).err().expect("refused").to_string();
    assert!(
        refused.contains("with its own API key, slots or queue"),
        "{refused}"
    );
    assert_eq!(std::fs::read(&record_file).unwrap(), before);
}

/// A cost recorded while the machine was busy, more than the limits take, is not trusted when
/// the deployment next warms up (its requests would be shed as too slow) but measured again
/// and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_cost_recorded_on_a_busy_machine_is_measured_again_when_it_warms_up() {
    let registry = crate::scratch_dir("registry");
    let options = gateway_options(&registry);
    let state = start(&options).unwrap();
    let created = deploy(&state, "second", "tiny-second").await;
    assert_eq!(created.status, StatusCode::CREATED);
    until_snapshot_serves(&state, "second").await;
    drop(state);
    let record_file = registry.join("deployments/second.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    let quiet = record["review_ms"].as_f64().unwrap();
    record["review_ms"] = json!(60_000.0);
    std::fs::write(&record_file, record.to_string()).unwrap();

    let state = start(&options).unwrap();
    let answer = send(&state, classify("second", "a film")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    let shown = send(&state, get("/v1/deployments/second")).await.json();
    let measured = shown["review_ms"].as_f64().unwrap();
    assert!(
        measured > 0.0 && measured < 1_000.0,
        "{measured} ms (first {quiet} ms)"
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    assert_eq!(kept["review_ms"].as_f64(), Some(measured), "recorded anew");
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_given_at_start_are_deployed_beside_the_default_each_under_one_name() {
    let registry = crate::scratch_dir("registry");
    let folder = crate::scratch_dir("more-models").join("tiny-other");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, bytes) in bundle_files(Some("tiny-other")) {
        std::fs::write(folder.join(file), bytes).unwrap();
    }
    let mut options = gateway_options(&registry);
    options.more_models = vec![("tiny-other".into(), folder.clone())];
    let state = start(&options).unwrap();
    let list = send(&state, get("/v1/deployments")).await.json();
    assert_eq!(names(&list), ["e2e-tiny-bundle", "tiny-other"]);
    assert_eq!(
        (
            &list["deployments"][0]["default"],
            &list["deployments"][1]["default"]
        ),
        (&json!(true), &json!(false))
    );
    let answer = send(&state, classify("tiny-other", "a fine film")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["model"], "tiny-other");
    assert_eq!(
        send(&state, get("/d/tiny-other/")).await.status,
        StatusCode::OK
    );
    let first_bundle = list["deployments"][1]["bundle_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let disabled = send(&state, admin("POST", "/v1/deployments/tiny-other/disable")).await;
    assert_eq!(disabled.json()["enabled"], false);
    drop(state);
    for name in ["e2e-tiny-bundle", "tiny-other"] {
        let record = registry.join(format!("deployments/{name}.json"));
        assert!(record.is_file(), "{name} kept in the registry");
    }
    // A figure no sandbox reaches, to see the restart measure it again.
    let default_record = registry.join("deployments/e2e-tiny-bundle.json");
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(&default_record).unwrap()).unwrap();
    record["review_ms"] = json!(1e-6);
    std::fs::write(&default_record, record.to_string()).unwrap();

    // Its folder's bundle changed: the restart replaces the deployment and drops the old bundle.
    for (file, bytes) in bundle_files(Some("tiny-other-2")) {
        std::fs::write(folder.join(file), bytes).unwrap();
    }
    let state = start(&options).unwrap();
    let list = send(&state, get("/v1/deployments")).await.json();
    assert_eq!(
        list["deployments"][0]["warm"], true,
        "the kept default is warmed at start"
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&default_record).unwrap()).unwrap();
    assert!(
        kept["review_ms"].as_f64().unwrap() > 1e-6,
        "probed and recorded: {kept}"
    );
    assert_eq!(
        list["deployments"][1]["enabled"], false,
        "the replacement keeps it disabled"
    );
    send(&state, admin("POST", "/v1/deployments/tiny-other/enable")).await;
    let answer = send(&state, classify("tiny-other", "a fine film")).await;
    assert_eq!(answer.json()["model"], "tiny-other-2");
    assert!(!registry.join("bundles").join(&first_bundle).exists());
    drop(state);

    // A name or a folder given twice is refused before anything is deployed.
    let refused = |more: (&str, &Path)| {
        let mut options = gateway_options(&crate::scratch_dir("registry"));
        options.more_models = vec![("tiny-other".into(), folder.clone())];
        options
            .more_models
            .push((more.0.into(), more.1.to_path_buf()));
        let registry = options.registry.clone();
        let err = start(&options).err().expect("refused").to_string();
        let deployed = std::fs::read_dir(registry.join("deployments")).map_or(0, |d| d.count());
        assert_eq!(deployed, 0, "nothing deployed before the refusal");
        err
    };
    let err = refused(("e2e-tiny-bundle", &folder));
    assert!(
        err.contains("two bundles would be deployed as e2e-tiny-bundle"),
        "{err}"
    );
    let err = refused(("a-third", &folder));
    assert!(
        err.contains("given twice (also as the deployment tiny-other)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_uploads_change_nothing() {
    let registry = crate::scratch_dir("registry");
    let mut options = gateway_options(&registry);
    options.limits = Limits {
        max_upload_bytes: 1 << 20,
        ..test_limits()
    };
    let state = start(&options).unwrap();
    let files = bundle_files(Some("tiny-refused"));
    let sha = bundle_digest(&files[0].1);
    let fields = [("name", "refused"), ("sha256", sha.as_str())];

    // No admin key, a wrong one.
    for key in [None, Some("a-wrong-key-of-24-chars!")] {
        send(&state, upload(&fields, &files, key))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A sha256 that is not the bundle's.
    let wrong = [("name", "refused"), ("sha256", &"0".repeat(64) as &str)];
    let answer = send(&state, upload(&wrong, &files, Some(ADMIN))).await;
    answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle");
    assert!(String::from_utf8_lossy(&answer.body).contains("sha256"));
    // A model file that is not the one the manifest names.
    let mut damaged = files.clone();
    damaged[1].1[100] ^= 1;
    let answer = send(&state, upload(&fields, &damaged, Some(ADMIN))).await;
    answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle");
    assert!(String::from_utf8_lossy(&answer.body).contains("model.onnx"));
    // A part missing, a bad name.
    send(&state, upload(&fields, &files[..2], Some(ADMIN)))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let bad_name = [("name", "Not/A/Name"), ("sha256", sha.as_str())];
    send(&state, upload(&bad_name, &files, Some(ADMIN)))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle");
    // Over the upload limit.
    let mut huge = files.clone();
    huge[2].1 = vec![b' '; 2 << 20];
    send(&state, upload(&fields, &huge, Some(ADMIN)))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // A name taken.
    let taken = [("name", "e2e-tiny-bundle"), ("sha256", sha.as_str())];
    send(&state, upload(&taken, &files, Some(ADMIN)))
        .await
        .assert_error(StatusCode::CONFLICT, "deployment_exists");

    assert_eq!(
        names(&send(&state, get("/v1/deployments")).await.json()),
        ["e2e-tiny-bundle"]
    );
    let bundles = std::fs::read_dir(registry.join("bundles")).unwrap().count();
    assert_eq!(bundles, 1, "only the default deployment's bundle is kept");
    send(&state, get("/v1/deployments/nope"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&state, classify("nope", "a film"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// Scale to zero: an idle deployment holds no sandbox, and once cooled no snapshot either; its
/// next request maps it again.
#[tokio::test(flavor = "multi_thread")]
async fn idle_deployments_hold_no_sandbox_and_cooled_ones_map_again_on_demand() {
    let state = start(&gateway_options(&crate::scratch_dir("registry"))).unwrap();
    assert_eq!(
        deploy(&state, "idle", "tiny-idle").await.status,
        StatusCode::CREATED
    );
    until_snapshot_serves(&state, "idle").await;
    for _ in 0..3 {
        assert_eq!(
            send(&state, classify("idle", "a film")).await.status,
            StatusCode::OK
        );
    }
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("feelings_live_sandboxes{deployment=\"idle\"} 0"),
        "{metrics}"
    );
    assert!(
        // The probe of the loading sandboxes, the snapshot's probe, a sandbox per request.
        metrics.contains("feelings_sandbox_instantiations_total{deployment=\"idle\"} 5"),
        "{metrics}"
    );

    assert_eq!(
        state.deployments.cool_idle(Duration::ZERO),
        2,
        "both deployments were idle"
    );
    let shown = send(&state, get("/v1/deployments/idle")).await.json();
    assert_eq!(
        (shown["warm"].as_bool(), shown["sandboxes"].as_u64()),
        (Some(false), Some(0))
    );
    let started = Instant::now();
    assert_eq!(
        send(&state, classify("idle", "a film")).await.status,
        StatusCode::OK
    );
    eprintln!("cold deployment's first answer: {:?}", started.elapsed());
    let metrics = String::from_utf8(send(&state, get("/metrics")).await.body).unwrap();
    assert!(
        metrics.contains("feelings_snapshot_loads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("feelings_snapshot_unloads_total 2"),
        "{metrics}"
    );
    assert_eq!(
        send(&state, get("/v1/deployments/idle")).await.json()["warm"],
        true
    );
}

/// One deployment's guest running past its deadline, and a flood of requests to it, leave
/// another deployment answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_flooded_deployment_does_not_touch_another() {
    let sandbox = SandboxOptions {
        deadline: Duration::from_millis(250),
        ..SandboxOptions::default()
    };
    let limits = Limits {
        max_body_bytes: 8 << 20,
        max_chars: 4_000_000,
        ..test_limits()
    };
    let mut options = gateway_options(&crate::scratch_dir("registry"));
    options.sandbox = SandboxOptions {
        cache_dir: options.sandbox.cache_dir.clone(),
        ..sandbox
    };
    options.limits = limits;
    let state = start(&options).unwrap();
    assert_eq!(
        deploy(&state, "quiet", "tiny-quiet").await.status,
        StatusCode::CREATED
    );
    until_snapshot_serves(&state, "quiet").await;
    let alone = latencies(&state, "quiet", 40).await;

    let huge = "the movie was great and wonderful ".repeat(100_000);
    let failing = send(&state, classify("e2e-tiny-bundle", &huge)).await;
    failing.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed");
    assert_eq!(
        send(&state, classify("quiet", "a film")).await.status,
        StatusCode::OK
    );

    // Four clients (as in the flood bench) send 8-review requests to the default deployment,
    // filling its queue, for as long as the quiet deployment's 40 requests take: every one of
    // those is timed beside the flood (a burst of requests, as before, was over after ~11).
    let flooding = Arc::new(AtomicBool::new(true));
    let flooders: Vec<_> = (0..4)
        .map(|_| tokio::spawn(flood(state.clone(), flooding.clone())))
        .collect();
    let flooded = latencies(&state, "quiet", 40).await;
    flooding.store(false, Ordering::Relaxed);
    let mut answered = 0;
    for flooder in flooders {
        answered += flooder.await.unwrap();
    }
    assert!(answered > 0, "the flood reached the sandboxes");
    // The 95th percentile of 40: the second slowest, so one hiccup of a machine shared with
    // the other tests does not decide it, while a starved deployment still fails.
    let p95 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() * 95 / 100]
    };
    let (alone, flooded) = (p95(alone), p95(flooded));
    eprintln!("quiet deployment p95: alone {alone:?}, beside a flood {flooded:?}");
    // The stated bound: at most three times its p95 alone plus 50 ms (a guest call of the
    // flooded deployment on each core, and the machine's two cores shared).
    assert!(
        flooded <= alone * 3 + Duration::from_millis(50),
        "alone {alone:?}, flooded {flooded:?}"
    );
}

/// Sends 8-review requests to the default deployment until `flooding` is cleared; each must be
/// answered or shed (503). Returns how many were answered.
async fn flood(state: Arc<AppState>, flooding: Arc<AtomicBool>) -> usize {
    let texts = vec!["a long and winding review of a film ".repeat(20); 8];
    let mut answered = 0;
    while flooding.load(Ordering::Relaxed) {
        let request = Request::post("/v1/classify")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "texts": texts }).to_string()))
            .unwrap();
        let status = send(&state, request).await.status;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
        answered += usize::from(status == StatusCode::OK);
        if status != StatusCode::OK {
            // Shed at once: a client would back off, not spin on the runtime's two threads.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    answered
}

async fn latencies(state: &Arc<AppState>, name: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = send(state, classify(name, "a quiet, lovely film")).await;
        assert_eq!(answer.status, StatusCode::OK);
        times.push(started.elapsed());
    }
    times
}
