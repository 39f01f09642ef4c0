//! The browser page, driven in Chromium, against the native inference core.

use std::path::{Path, PathBuf};
use std::process::Command;

use feelings_core::{Bundle, Classifier};
use feelings_trainer::fixtures;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tiny model trained until it tells the fixture's good words from its bad ones.
fn tiny_bundle(dir: &Path) -> PathBuf {
    fixtures::tiny_bundle(dir, 200, 11, |s| {
        s.seq_len = 32;
        s.epochs = 4;
        s.patience = None;
        s.optimizer.lr = 3e-3;
    })
    .unwrap()
}

#[test]
fn the_page_in_chromium_classifies_as_the_native_core_does() {
    let web = root().join("web");
    assert!(
        web.join("pkg/feelings_core_bg.wasm").is_file(),
        "web/pkg is missing: run `bash web/build.sh` first"
    );
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run `npm ci` in web/ (web/build.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let core = Classifier::new(&Bundle::read_dir(&bundle).unwrap()).unwrap();
    let texts = [
        "the movie was great and very wonderful",
        "the plot was awful and very boring",
    ];
    let expected: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| {
            let p = core.classify(t).unwrap();
            serde_json::json!({"text": t, "label": p.label, "score": p.score})
        })
        .collect();
    assert_eq!(
        expected[0]["label"], "positive",
        "the tiny model did not learn: {expected:?}"
    );
    assert_eq!(
        expected[1]["label"], "negative",
        "the tiny model did not learn: {expected:?}"
    );
    std::fs::write(
        dir.path().join("expected.json"),
        serde_json::to_vec(&expected).unwrap(),
    )
    .unwrap();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");

    let out = Command::new("node")
        .args(["--test", "tests/"])
        .current_dir(&web)
        .env("FEELINGS_BUNDLE", &bundle)
        .env("FEELINGS_EXPECTED", dir.path().join("expected.json"))
        .env("FEELINGS_SCREENSHOT", &screenshot)
        .output()
        .expect("node is needed for the page test");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the page test failed:\n{report}");
    assert!(screenshot.is_file());
    println!("screenshot: {}", screenshot.display());
}
