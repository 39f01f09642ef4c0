//! The browser page, driven in Chromium, against the native inference core.

use std::path::{Path, PathBuf};

use feelings_core::{Bundle, TractClassifier};
use feelings_trainer::fixtures;

use crate::node_test;

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
    let _alone = crate::alone();
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let core = TractClassifier::new(&Bundle::read_dir(&bundle).unwrap()).unwrap();
    let texts = [
        "the movie was great and very wonderful",
        "the plot was awful and very boring",
    ];
    let expected: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| {
            let p = core.classify(t).unwrap();
            let explanation = core
                .explain(t, feelings_core::explain::DEFAULT_MAX_UNITS)
                .unwrap();
            serde_json::json!({"text": t, "label": p.label, "score": p.score, "explanation": explanation})
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

    let expected_file = dir.path().join("expected.json");
    node_test(
        "tests/page.test.mjs",
        &[
            ("FEELINGS_BUNDLE", &bundle),
            ("FEELINGS_EXPECTED", &expected_file),
            ("FEELINGS_SCREENSHOT", &screenshot),
        ],
    );
    assert!(screenshot.is_file());
    println!("screenshot: {}", screenshot.display());
}
