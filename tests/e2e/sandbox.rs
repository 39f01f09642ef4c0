//! The classifier component in wasmtime against the native inference core.

use feelings_core::{Bundle, Prediction, TractClassifier};
use std::sync::Arc;

use feelings_runtime::{Instances, LoadingSandboxes, SandboxOptions, Sandboxes};
use feelings_trainer::fixtures::{reviews, write_csv};
use serde_json::Value;

use crate::{component, component_path, debug_binary, tiny_bundle};

#[test]
fn the_sandboxed_component_answers_as_the_native_core_and_never_traps_on_hostile_text() {
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let native = TractClassifier::new(&bundle).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let options = SandboxOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxOptions::default()
    };
    let (sandboxes, made) =
        Sandboxes::new(crate::engine(), &component(), &bundle, &options).unwrap();
    assert!(!made.from_cache);
    assert!(made.cache_file.as_ref().unwrap().is_file());
    let (_, read) = Sandboxes::new(crate::engine(), &component(), &bundle, &options).unwrap();
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
    // What a new deployment serves with while its snapshot is made: sandboxes that load the
    // bundle themselves answer the same.
    let loading =
        LoadingSandboxes::new(crate::engine(), &component(), Arc::new(bundle), &options).unwrap();
    let mut loaded = loading.instance().unwrap();
    assert_close(&loaded.classify(&texts[..3], None).unwrap(), &expected[..3]);
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
    let err = Sandboxes::new(
        crate::engine(),
        &component(),
        &broken,
        &SandboxOptions::default(),
    )
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
            .map(|_| {
                scope.spawn(|| {
                    Sandboxes::new(crate::engine(), &wasm, &bundle, &options)
                        .unwrap()
                        .1
                })
            })
            .collect();
        starts
            .into_iter()
            .map(|s| !s.join().unwrap().from_cache)
            .collect()
    });
    assert_eq!(made.iter().filter(|&&m| m).count(), 1, "{made:?}");
}

#[test]
fn feelings_bench_times_the_guest_against_native_with_the_runtimes_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    // Reviews long enough to fill the tiny bundle's 24 tokens, as the benchmark needs.
    let rows: Vec<(String, &str)> = reviews(12, 3)
        .into_iter()
        .map(|(text, label)| (format!("{text}{}", " and very great".repeat(8)), label))
        .collect();
    let data = dir.path().join("long.csv");
    write_csv(&data, &rows).unwrap();
    let bench = |extra: &[&str]| {
        std::process::Command::new(debug_binary("feelings"))
            .arg("bench")
            .arg("--data")
            .arg(&data)
            .arg("--bundle")
            .arg(tiny_bundle())
            .arg("--wasm")
            .arg(component_path())
            .arg("--wasm-cache")
            .arg(dir.path().join("cache"))
            .args([
                "--infer-batch",
                "1,2",
                "--runs",
                "2",
                "--threads",
                "1",
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guest: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|row| row["what"] == "infer_wasm")
        .collect();
    assert_eq!(guest.len(), 2, "{stdout}");
    for (row, batch) in guest.iter().zip([1, 2]) {
        assert_eq!(
            (row["batch"].as_u64(), row["seq"].as_u64()),
            (Some(batch), Some(24))
        );
        let (ours, native) = (
            row["ours_ms"].as_f64().unwrap(),
            row["peer_ms"].as_f64().unwrap(),
        );
        assert!(ours > 0.0 && native > 0.0, "{row}");
        assert!(
            (row["ratio"].as_f64().unwrap() - ours / native).abs() < 1e-9,
            "{row}"
        );
        assert!(row["instantiate_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            row["max_score_difference"].as_f64().unwrap() <= 1e-4,
            "{row}"
        );
        assert_eq!(row["peer"], "tract native");
        // The sandboxes' memory is the guest benchmark's, counted in the row's peak.
        let guest_peak = row["guest_peak_rss_mib"].as_f64().unwrap();
        assert!(guest_peak > 0.0 && row["peak_rss_mib"].as_f64().unwrap() >= guest_peak);
    }

    let missing = dir.path().join("no-such-bench");
    let out = bench(&["--guest-bench", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no-such-bench") && stderr.contains("was not found"),
        "{stderr}"
    );
}
