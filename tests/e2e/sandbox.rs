//! The classifier component in wasmtime against the native inference core.

use feelings_core::{Bundle, Classifier, Prediction};
use feelings_runtime::{SandboxOptions, Sandboxes};
use feelings_trainer::fixtures::reviews;

use crate::{component, tiny_bundle};

#[test]
fn the_sandboxed_component_answers_as_the_native_core_and_never_traps_on_hostile_text() {
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let native = Classifier::new(&bundle).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let options = SandboxOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxOptions::default()
    };
    let (sandboxes, made) = Sandboxes::new(&component(), &bundle, &options).unwrap();
    assert!(!made.from_cache);
    assert!(made.cache_file.as_ref().unwrap().is_file());
    let (_, read) = Sandboxes::new(&component(), &bundle, &options).unwrap();
    assert!(
        read.from_cache,
        "the second start reads the compiled snapshot"
    );
    println!(
        "snapshot + compile {:?}, from cache {:?}",
        made.duration, read.duration
    );
    let (mut sandbox, instantiate) = sandboxes.instance().unwrap();
    println!("instantiate with the model loaded: {instantiate:?}");

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
    assert_close(&sandbox.classify(&texts).unwrap(), &expected);
    // The instance keeps serving after a batch, and a fresh one starts from the snapshot.
    assert_close(&sandbox.classify(&texts[..1]).unwrap(), &expected[..1]);
    let (mut fresh, _) = sandboxes.instance().unwrap();
    assert_close(&fresh.classify(&texts[..3]).unwrap(), &expected[..3]);
}

fn assert_close(got: &[Prediction], expected: &[Prediction]) {
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert_eq!((&g.label, g.truncated), (&e.label, e.truncated));
        assert!(
            (g.score - e.score).abs() <= 1e-4,
            "{} vs {}",
            g.score,
            e.score
        );
    }
}

#[test]
fn a_bundle_the_guest_cannot_use_is_refused_not_trapped() {
    let good = Bundle::read_dir(tiny_bundle()).unwrap();
    let broken = Bundle::new(
        good.manifest.clone(),
        b"not onnx".to_vec(),
        good.tokenizer.clone(),
    );
    let err = Sandboxes::new(&component(), &broken, &SandboxOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("refused") && err.contains("model.onnx"),
        "{err}"
    );
}

#[test]
fn gateways_starting_together_on_a_cold_cache_make_the_snapshot_once() {
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let options = SandboxOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxOptions::default()
    };
    let wasm = component();
    let made: Vec<bool> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| Sandboxes::new(&wasm, &bundle, &options).unwrap().1))
            .collect();
        starts
            .into_iter()
            .map(|s| !s.join().unwrap().from_cache)
            .collect()
    });
    assert_eq!(made.iter().filter(|&&m| m).count(), 1, "{made:?}");
}
