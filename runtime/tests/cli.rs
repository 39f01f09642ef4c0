//! `feelings-serve` refuses to start on a bad bundle or component, naming the file.

use std::process::Command;

fn serve(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_feelings-serve"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_explains_the_options() {
    let (code, text) = serve(&["--help"]);
    assert_eq!(code, 0);
    for option in [
        "--model",
        "--instances",
        "--queue",
        "--deadline",
        "--memory-mib",
        "/v1/classify",
    ] {
        assert!(
            text.contains(option),
            "{option} missing from --help:\n{text}"
        );
    }
}

#[test]
fn a_missing_or_damaged_bundle_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle");
    let (code, text) = serve(&["--model", missing.to_str().unwrap(), "--no-web"]);
    assert_ne!(code, 0);
    assert!(text.contains("feelings.json"), "{text}");

    std::fs::write(dir.path().join("feelings.json"), "{not json").unwrap();
    std::fs::write(dir.path().join("model.onnx"), "onnx").unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let (code, text) = serve(&["--model", dir.path().to_str().unwrap(), "--no-web"]);
    assert_ne!(code, 0);
    assert!(text.contains("feelings.json"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
