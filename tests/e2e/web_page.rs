//! The browser page, driven in Chromium, against the native inference core.

use std::path::{Path, PathBuf};

use feelings_core::{Bundle, TractClassifier};
use feelings_trainer::fixtures;

use crate::node_test;

/// A tiny model trained until it tells the fixture's good words from its bad ones; `seed` picks
/// its reviews, so two seeds give two different models.
fn tiny_bundle(dir: &Path, seed: u64) -> PathBuf {
    fixtures::tiny_bundle(dir, 200, seed, |s| {
        s.seq_len = 32;
        s.epochs = 4;
        s.patience = None;
        s.optimizer.lr = 3e-3;
    })
    .unwrap()
}

/// What the page must show for `texts`: the native core's label, score and explanation.
fn native_answers(core: &TractClassifier, texts: &[&str]) -> Vec<serde_json::Value> {
    texts
        .iter()
        .map(|t| {
            let p = core.classify(t).unwrap();
            let explanation = core
                .explain(t, feelings_core::explain::DEFAULT_MAX_UNITS)
                .unwrap();
            serde_json::json!({"text": t, "label": p.label, "score": p.score, "explanation": explanation})
        })
        .collect()
}

#[test]
fn the_page_in_chromium_classifies_explains_and_works_offline_as_the_native_core_does() {
    let _alone = crate::alone();
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(&dir.path().join("a"), 11);
    let other = tiny_bundle(&dir.path().join("b"), 12);
    let core = TractClassifier::new(&Bundle::read_dir(&bundle).unwrap()).unwrap();
    let reviews = native_answers(
        &core,
        &[
            "the movie was great and very wonderful",
            "the plot was awful and very boring",
        ],
    );
    assert_eq!(
        reviews[0]["label"], "positive",
        "the tiny model did not learn: {reviews:?}"
    );
    assert_eq!(
        reviews[1]["label"], "negative",
        "the tiny model did not learn: {reviews:?}"
    );
    // Longer than the 32 tokens the model reads, with a line break (offsets in the review as
    // typed) and two-byte characters (UTF-16 offsets in the page).
    let long =
        "the movie was great<br />and very wonderful. ".repeat(6) + "the café plot was awful";
    let read: Vec<&str> = core
        .encoder()
        .read_parts(&long)
        .unwrap()
        .into_iter()
        .map(|r| &long[r])
        .collect();
    assert!(core.classify(&long).unwrap().truncated);
    let other_core = TractClassifier::new(&Bundle::read_dir(&other).unwrap()).unwrap();
    let other_score = other_core
        .classify(reviews[0]["text"].as_str().unwrap())
        .unwrap()
        .score;
    assert_ne!(
        other_score,
        reviews[0]["score"].as_f64().unwrap() as f32,
        "two different models"
    );
    let expected = serde_json::json!({
        "reviews": reviews,
        "long": {"text": long, "read": read},
        "other_score": other_score,
    });
    let expected_file = dir.path().join("expected.json");
    std::fs::write(&expected_file, serde_json::to_vec(&expected).unwrap()).unwrap();
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page");
    std::fs::create_dir_all(&screenshots).unwrap();

    node_test(
        "tests/page.test.mjs",
        &[
            ("FEELINGS_BUNDLE", &bundle),
            ("FEELINGS_OTHER_BUNDLE", &other),
            ("FEELINGS_EXPECTED", &expected_file),
            ("FEELINGS_SCREENSHOTS", &screenshots),
        ],
    );
    for state in [
        "result",
        "explanation",
        "batch",
        "error",
        "offline",
        "models",
    ] {
        let file = screenshots.join(format!("{state}.png"));
        assert!(file.is_file(), "no screenshot {}", file.display());
    }
    println!("screenshots: {}", screenshots.display());
}
