//! The classifier component in wasmtime against the native inference core.

use std::path::{Path, PathBuf};

use feelings_core::{Bundle, Classifier};
use feelings_runtime::Sandboxes;
use feelings_trainer::fixtures::{self, reviews};

/// The server build made by `web/build.sh`.
fn component() -> Vec<u8> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let path = target.join("wasm32-wasip2/release/feelings_core.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `bash web/build.sh` first", path.display()))
}

fn tiny_bundle(dir: &Path) -> PathBuf {
    fixtures::tiny_bundle(dir, 96, 5, |s| {
        s.seq_len = 24;
        s.epochs = 1;
    })
    .unwrap()
}

#[test]
fn the_sandboxed_component_answers_as_the_native_core_and_never_traps_on_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = Bundle::read_dir(&tiny_bundle(dir.path())).unwrap();
    let native = Classifier::new(&bundle).unwrap();
    let sandboxes = Sandboxes::new(&component(), bundle).unwrap();
    let (mut sandbox, instantiate, load) = sandboxes.instance().unwrap();
    println!("instantiate {instantiate:?}, guest model load {load:?}");

    let mut texts: Vec<String> = reviews(50, 9).into_iter().map(|(t, _)| t).collect();
    texts.extend(
        [
            "",
            " \t ",
            "\0",
            "שלום great مرحبا",
            "😀🎬 great 👍🏽",
            "<br /><br />",
            "\u{1b}[31m\u{7f}",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    texts.push("great ".repeat(100_000));
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = native.classify_batch(&refs).unwrap();
    let got = sandbox.classify(&texts).unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.label, e.label);
        assert_eq!(g.truncated, e.truncated);
        assert!(
            (g.score - e.score).abs() <= 1e-4,
            "{} vs {}",
            g.score,
            e.score
        );
    }
    // The instance keeps serving after a batch.
    assert_eq!(sandbox.classify(&texts[..1]).unwrap()[0], expected[0]);
}

#[test]
fn a_bundle_the_guest_cannot_use_is_refused_not_trapped() {
    let dir = tempfile::tempdir().unwrap();
    let good = Bundle::read_dir(&tiny_bundle(dir.path())).unwrap();
    let broken = Bundle::new(
        good.manifest.clone(),
        b"not onnx".to_vec(),
        good.tokenizer.clone(),
    );
    let sandboxes = Sandboxes::new(&component(), broken).unwrap();
    let err = sandboxes.instance().err().unwrap().to_string();
    assert!(
        err.contains("refused") && err.contains("model.onnx"),
        "{err}"
    );
}
