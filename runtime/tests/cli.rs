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

#[test]
fn numeric_flags_are_checked_before_anything_starts() {
    for (flag, value) in [
        ("--timeout", "-1"),
        ("--timeout", "inf"),
        ("--timeout", "nan"),
        ("--timeout", "0"),
        ("--idle-timeout", "1e-12"),
        ("--deadline", "1e300"),
        ("--body-timeout", "soon"),
        ("--header-timeout", "-0.5"),
        ("--idle-timeout", "NaN"),
        ("--instances", "0"),
        ("--queue", "0"),
        ("--max-batch", "0"),
        ("--max-texts", "-3"),
        ("--memory-mib", "99999999999"),
        ("--max-connections", "0"),
        ("--api-key", "short"),
        ("--cors-allow-origin", "example.com/path"),
    ] {
        let (code, text) = serve(&[flag, value, "--no-web"]);
        assert_eq!(code, 2, "{flag} {value}: {text}");
        assert!(
            text.contains(flag) && !text.contains("panicked"),
            "{flag} {value}: {text}"
        );
    }
}

#[test]
fn limits_that_contradict_each_other_stop_the_start() {
    let (code, text) = serve(&["--queue", "8", "--max-texts", "64", "--no-web"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("--queue") && text.contains("--max-texts"),
        "{text}"
    );
}

#[test]
fn no_cache_folder_without_home_is_an_error_not_a_shared_tmp() {
    let out = Command::new(env!("CARGO_BIN_EXE_feelings-serve"))
        .args(["--no-web"])
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("--cache"), "{text}");
}
