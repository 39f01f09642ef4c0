//! `feelings deploy` against a running `feelings-serve`, then that deployment's web app at
//! `/d/NAME/` in Chromium, classifying with its own model.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::serve::{binary, Server};
use crate::{debug_binary, node_test, root, tiny_bundle};

/// The tiny bundle with its model renamed, so its sha256 is its own.
fn renamed_bundle(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for file in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(tiny_bundle().join(file), dir.join(file)).unwrap();
    }
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(tiny_bundle().join("feelings.json")).unwrap())
            .unwrap();
    manifest["name"] = json!(name);
    std::fs::write(
        dir.join("feelings.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn classify(server: &Server, name: &str, text: &str) -> Value {
    let body = json!({ "text": text }).to_string();
    let answer = ureq::post(&format!("{}/v1/deployments/{name}/classify", server.base))
        .header("content-type", "application/json")
        .send(&body)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn a_deployment_made_with_feelings_deploy_has_its_own_web_app() {
    let _alone = crate::alone();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let mut command = Command::new(binary());
    command
        .arg("--model")
        .arg(tiny_bundle())
        .arg("--component")
        .arg(target.join("wasm32-wasip2/release/feelings_core.wasm"))
        .arg("--web")
        .arg(root().join("web"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--admin-key",
            "an-admin-key-of-24-chars",
        ]);
    let server = Server::launch(command);

    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("second-bundle");
    renamed_bundle(&bundle, "tiny-second");
    let deploy = Command::new(debug_binary("feelings"))
        .arg("deploy")
        .arg(&bundle)
        .args(["--name", "second", "--server", &server.base])
        .env("FEELINGS_ADMIN_KEY", "an-admin-key-of-24-chars")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&deploy.stdout).to_string()
        + &String::from_utf8_lossy(&deploy.stderr);
    assert!(deploy.status.success(), "feelings deploy: {said}");
    assert!(said.contains("/d/second/"), "{said}");

    let page = server.get("/");
    assert!(
        page.contains("href=\"/d/second/\"") && page.contains("tiny-second"),
        "{page}"
    );
    let texts = [
        "the movie was great and very wonderful",
        "the plot was awful and very boring",
    ];
    let expected: Vec<Value> = texts
        .iter()
        .map(|text| {
            let answer = classify(&server, "second", text);
            assert_eq!(answer["model"], "tiny-second");
            json!({"text": text, "label": answer["label"], "score": answer["score"]})
        })
        .collect();
    let expected_file = work.path().join("expected.json");
    std::fs::write(&expected_file, serde_json::to_vec(&expected).unwrap()).unwrap();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deployment-page.png");
    let url = format!("{}/d/second/", server.base);
    node_test(
        "tests/deployment.test.mjs",
        &[
            ("FEELINGS_PAGE", Path::new(&url)),
            ("FEELINGS_EXPECTED", &expected_file),
            ("FEELINGS_SCREENSHOT", &screenshot),
        ],
    );
    assert!(screenshot.is_file());
}
