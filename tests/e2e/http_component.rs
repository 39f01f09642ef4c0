//! The `wasi:http` component that `feelings-serve --write-http-component` writes, run by
//! `wasmtime serve` (wasmtime-cli at the runtime's wasmtime version; `tests/run.sh` installs
//! it and names it in `FEELINGS_WASMTIME`): the gateway's answers and refusals, and the scores
//! of native inference.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use feelings_core::{Bundle, TractClassifier};
use serde_json::{json, Value};

use crate::serve::binary;
use crate::{scratch_dir, target_dir, tiny_bundle};

/// `wasmtime serve` of one component on a free loopback port, killed when dropped.
struct WasmtimeServe {
    child: Child,
    base: String,
}

impl WasmtimeServe {
    fn start(wasmtime: &Path, component: &Path) -> Self {
        let mut child = Command::new(wasmtime)
            .args(["serve", "--addr", "127.0.0.1:0", "-S", "cli"])
            .arg(component)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", wasmtime.display()));
        let (found, listening) = mpsc::channel();
        let logs = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in logs.lines().map_while(Result::ok) {
                eprintln!("wasmtime serve: {line}");
                if let Some(at) = line.find("Serving HTTP on ") {
                    let url = line[at + "Serving HTTP on ".len()..].trim();
                    let _ = found.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        // wasmtime compiles the component (no cache) before it listens.
        let base = listening
            .recv_timeout(Duration::from_secs(300))
            .expect("wasmtime serve did not start listening");
        Self { child, base }
    }

    /// Sends a request; the status and the body as JSON (or as a JSON string when it is not).
    fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let answer = if method == "GET" {
            ureq::get(&url)
                .header("x-request-id", "test-request-7")
                .config()
                .http_status_as_error(false)
                .build()
                .call()
        } else {
            ureq::post(&url)
                .header("content-type", content_type)
                .header("x-request-id", "test-request-7")
                .config()
                .http_status_as_error(false)
                .build()
                .send(body)
        };
        let mut response = answer.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// wasmtime-cli: `FEELINGS_WASMTIME`, else `wasmtime` on the PATH.
fn wasmtime() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FEELINGS_WASMTIME") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("wasmtime"))
        .find(|path| path.is_file())
}

/// The component written for the tiny bundle.
fn write_http_component() -> PathBuf {
    let out = scratch_dir("http-component").join("classifier-http.wasm");
    let status = Command::new(binary())
        .arg("--model")
        .arg(tiny_bundle())
        .arg("--http-component")
        .arg(target_dir().join("wasm32-wasip2/release/feelings_http_component.wasm"))
        .arg("--cache")
        .arg(target_dir().join("tmp/sandbox-cache"))
        .arg("--write-http-component")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "--write-http-component failed");
    out
}

#[test]
fn the_written_http_component_answers_the_gateway_contract_under_wasmtime_serve() {
    let Some(wasmtime) = wasmtime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "wasmtime-cli is missing (tests/run.sh installs it): set FEELINGS_WASMTIME"
        );
        eprintln!("SKIPPED: no wasmtime-cli (set FEELINGS_WASMTIME, or run tests/run.sh)");
        return;
    };
    let component = write_http_component();
    let _alone = crate::alone();
    let server = WasmtimeServe::start(&wasmtime, &component);
    let answer = answers_as_native_inference_does(&server);
    refuses_as_the_gateway_does(&server);
    // The component still answers after every refusal (a fresh instance per request).
    let body = json!({ "text": REVIEW }).to_string();
    let (status, again) = server.send("POST", "/v1/classify", "application/json", &body);
    assert_eq!((status, again), (200, answer));
}

const REVIEW: &str = "A wonderful film, moving and funny.";

/// One text, a list with a long one, and the model; returns the answer for [`REVIEW`].
fn answers_as_native_inference_does(server: &WasmtimeServe) -> Value {
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let native = TractClassifier::new(&bundle).unwrap();
    let body = json!({ "text": REVIEW }).to_string();
    let (status, answer) = server.send("POST", "/v1/classify", "application/json", &body);
    assert_eq!(status, 200, "{answer}");
    let expected = native.classify(REVIEW).unwrap();
    assert_eq!(answer["label"], json!(expected.label));
    let score = answer["score"].as_f64().unwrap() as f32;
    assert!(
        (score - expected.score).abs() <= 1e-6,
        "{score} in wasmtime serve, {} natively",
        expected.score
    );
    assert_eq!(answer["model"], json!(bundle.manifest.name));
    assert_eq!(answer["truncated"], json!(false));

    // A text longer than the gateway's 20,000 characters: cut, and marked.
    let long = "a long and tedious film ".repeat(1_000);
    let body = json!({ "texts": [REVIEW, long] }).to_string();
    let (status, answers) = server.send("POST", "/v1/classify", "application/json", &body);
    assert_eq!(status, 200, "{answers}");
    assert_eq!(answers.as_array().map(Vec::len), Some(2), "{answers}");
    assert_eq!(answers[0], answer);
    assert_eq!(answers[1]["truncated"], json!(true));

    let (status, model) = server.send("GET", "/v1/model", "application/json", "");
    assert_eq!(
        (status, &model["name"]),
        (200, &json!(bundle.manifest.name))
    );
    answer
}

/// The gateway's refusals, with its codes and the request's id.
fn refuses_as_the_gateway_does(server: &WasmtimeServe) {
    let json = "application/json";
    let too_many = json!({ "texts": vec!["fine"; 65] }).to_string();
    let too_large = "x".repeat((1 << 20) + 1);
    let refusals = [
        (
            "POST",
            "/v1/classify",
            json,
            "{\"text\": \"unfinished",
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/v1/classify",
            json,
            "{\"texts\": []}",
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/classify",
            json,
            &too_many,
            422,
            "too_many_texts",
        ),
        (
            "POST",
            "/v1/classify",
            json,
            &too_large,
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/v1/classify",
            "text/plain",
            "{\"text\": \"fine\"}",
            415,
            "unsupported_media_type",
        ),
        ("GET", "/v1/classify", json, "", 405, "method_not_allowed"),
        ("GET", "/v1/nothing", json, "", 404, "not_found"),
    ];
    for (method, path, content_type, body, status, code) in refusals {
        let (got, error) = server.send(method, path, content_type, body);
        let what = format!("{method} {path} {body:.40}: {error}");
        assert_eq!(
            (got, &error["error"]["code"]),
            (status, &json!(code)),
            "{what}"
        );
        assert_eq!(
            error["error"]["request_id"],
            json!("test-request-7"),
            "{what}"
        );
    }
    // A request without an id gets one, in the answer's header and its body.
    let mut response = ureq::get(&format!("{}/v1/nothing", server.base))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let error: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!((id.len(), &error["error"]["request_id"]), (36, &json!(id)));
}
