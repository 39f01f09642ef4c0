//! The `feelings` binary: exit codes and messages a user sees.

use std::path::Path;
use std::process::Command;

use crate::fixtures::{reviews, tiny_bert, write_csv, TinyShape};

pub(crate) fn feelings() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feelings"))
}

/// `feelings train` of `data` on `model` into `out`, at sequence length 24 on one thread.
fn train(data: &Path, model: &Path, out: &Path) -> Command {
    let mut command = feelings();
    command
        .args(["train", "--data"])
        .arg(data)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(["--seq-len", "24", "--threads", "1"]);
    command
}

#[test]
fn train_runs_end_to_end_and_refuses_a_bad_column_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    write_csv(&data, &reviews(64, 2));
    let out = dir.path().join("run");
    let run = |extra: &[&str]| {
        train(&data, &model, &out)
            .args(["--epochs", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let bad = run(&["--text-column", "body"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("data.csv") && stderr.contains("no column 'body'"),
        "{stderr}"
    );
    assert!(!out.exists());

    let bad_minutes = run(&["--save-minutes", "soon"]);
    assert!(String::from_utf8_lossy(&bad_minutes.stderr).contains("must be a number of minutes"));

    // Stopped on purpose after two steps: the epoch in progress is saved, then resumed.
    let stopped = run(&["--stop-after-steps", "2"]);
    assert_success(&stopped);
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("status: Running"));
    assert!(out.join("partial-epoch/progress.json").is_file());

    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds another run"));

    let resumed = feelings()
        .args(["train", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&resumed);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        stdout.contains("*1") && stdout.contains("test (6 reviews"),
        "{stdout}"
    );
    assert!(!out.join("partial-epoch").exists());
    let conflicting = feelings()
        .args(["train", "--resume"])
        .arg(&out)
        .args(["--lr", "1"])
        .output()
        .unwrap();
    assert!(!conflicting.status.success());

    // A bundle keeps no path to its data: continuing one needs --data.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("feelings.json"), "{}").unwrap();
    let no_data = feelings()
        .args(["train", "--from"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(!no_data.status.success());
    let stderr = String::from_utf8_lossy(&no_data.stderr);
    assert!(stderr.contains("--from a bundle needs --data"), "{stderr}");
}

/// A child process killed when dropped, so a failed assertion leaves no training behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ctrl_c_stops_training_with_the_run_saved_for_resume() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    write_csv(&data, &reviews(64, 4));
    let out = dir.path().join("run");
    // Far more epochs than the test waits for: the signal lands while training.
    let mut child = KillOnDrop(
        train(&data, &model, &out)
            .args(["--epochs", "500", "--no-early-stopping"])
            .args(["--save-minutes", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("epoch 1 step") {
        assert!(
            stderr.read_line(&mut seen).unwrap() > 0,
            "training ended early: {seen}"
        );
    }
    let signalled = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -INT {}", child.0.id()))
        .status()
        .unwrap();
    assert!(signalled.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a clear error, not a kill: {rest}");
    assert!(
        rest.contains("stopped by a signal") && rest.contains("--resume"),
        "{rest}"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["status"], "running");
    assert!(out.join("partial-epoch/progress.json").is_file(), "{rest}");

    let resumed = feelings()
        .args(["train", "--stop-after", "1", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&resumed);
}

/// Runs `feelings ARGS` and returns its exit code and standard error.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = feelings().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flags, each with values it must refuse.
type Refusals = &'static [(&'static str, &'static [&'static str])];

/// Command lines complete but for a number, and the numbers each of their flags must refuse:
/// negative, NaN, infinite, zero where it means nothing, too large.
const OUT_OF_RANGE: [(&[&str], Refusals); 4] = [
    (
        &["train", "--data", "x.csv", "--model", "m"],
        &[
            ("save-minutes", &["1e300", "inf", "nan", "-1", "20000"]),
            ("patience", &["0", "-1"]),
            ("epochs", &["0", "1e3", "18446744073709551615"]),
            ("batch-size", &["0", "99999999999999999999"]),
            ("seq-len", &["0"]),
            ("lr", &["0", "-1e-5", "nan", "inf", "1e400"]),
            ("weight-decay", &["-0.1", "nan"]),
            ("warmup", &["1", "-0.1", "nan"]),
            ("max-grad-norm", &["0", "nan", "-inf"]),
            ("val-fraction", &["1", "-0.5", "nan"]),
            ("test-fraction", &["1.5"]),
            ("max-train", &["0"]),
            ("max-eval", &["0"]),
            ("stop-after", &["0"]),
            ("stop-after-steps", &["0"]),
            ("threads", &["0", "100000"]),
            ("seed", &["-1", "1.5"]),
        ],
    ),
    (
        &["bench", "--data", "x.csv", "--model", "m"],
        &[
            ("steps", &["0", "1000000"]),
            ("runs", &["0"]),
            ("warmup", &["-1", "1000000"]),
            ("batch-size", &["0"]),
            ("seq", &["0"]),
            ("infer-batch", &["0"]),
            ("threads", &["0"]),
        ],
    ),
    (
        &["export", "run", "--out", "bundle"],
        &[
            ("threshold", &["1.5", "-0.1", "nan"]),
            ("epoch", &["0"]),
            ("seq-len", &["0"]),
        ],
    ),
    (
        &["evaluate", "run"],
        &[
            ("threshold", &["nan", "2"]),
            ("batch-size", &["0"]),
            ("max", &["0"]),
            ("checkpoint", &["0"]),
            ("val-fraction", &["1"]),
            ("threads", &["0"]),
        ],
    ),
];

#[test]
fn numeric_flags_out_of_range_are_refused_when_parsed() {
    // The bad number is given as --flag=VALUE, so that "-1" is read as a value.
    for (command, flags) in OUT_OF_RANGE {
        for (flag, values) in flags {
            for value in *values {
                let mut args = command.to_vec();
                let given = format!("--{flag}={value}");
                args.push(&given);
                let (code, stderr) = refused(&args);
                assert_eq!(code, Some(2), "{args:?}: {stderr}");
                assert!(
                    stderr.contains(&format!("invalid value '{value}' for '--{flag}")),
                    "{args:?}: {stderr}"
                );
            }
        }
    }
    // Each of a list is checked.
    let (_, stderr) = refused(&["bench", "--data", "x", "--model", "m", "--seq", "128,0"]);
    assert!(stderr.contains("invalid value '0' for '--seq"), "{stderr}");
    let (_, stderr) = refused(&[
        "train",
        "--data",
        "x",
        "--model",
        "m",
        "--save-minutes=1e300",
    ]);
    assert!(
        stderr.contains("must be a number of minutes from 0 to 10080"),
        "{stderr}"
    );
    let (_, stderr) = refused(&["train", "--data", "x", "--model", "m", "--patience=0"]);
    assert!(stderr.contains("1 or more"), "{stderr}");
    // Never stopping early and a patience contradict each other.
    let (code, _) = refused(&[
        "train",
        "--data",
        "x",
        "--model",
        "m",
        "--patience",
        "2",
        "--no-early-stopping",
    ]);
    assert_eq!(code, Some(2));
    // A Hugging Face layout holds both precisions, and no threshold or name of a bundle.
    for (flag, value, says) in [
        ("--quantize", "int8", "--layout hf writes both"),
        ("--threshold", "0.7", "the larger probability"),
        ("--name", "x", "the folder's name"),
    ] {
        let (code, stderr) = refused(&[
            "export", "run", "--out", "hf", "--layout", "hf", flag, value,
        ]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}

#[test]
fn resume_refuses_every_option_that_would_change_the_run() {
    let run = "runs/nowhere";
    let with_resume = |extra: &[&str]| {
        let mut args = vec!["train", "--resume", run];
        args.extend_from_slice(extra);
        refused(&args)
    };
    // The options the issue found ignored, those refused before, and defaults given explicitly.
    let changing: [&[&str]; 26] = [
        &["--monitor", "accuracy"],
        &["--monitor", "loss"],
        &["--text-column", "body"],
        &["--label-column", "stars"],
        &["--positive", "good"],
        &["--val-fraction", "0.2"],
        &["--test-fraction", "0.1"],
        &["--split-column", "split"],
        &["--strict"],
        &["--data", "x.csv"],
        &["--model", "m"],
        &["--out", "elsewhere"],
        &["--max-train", "10"],
        &["--max-eval", "10"],
        &["--seq-len", "128"],
        &["--truncate", "head+tail"],
        &["--batch-size", "8"],
        &["--epochs", "3"],
        &["--lr", "1e-4"],
        &["--weight-decay", "0"],
        &["--warmup", "0.2"],
        &["--max-grad-norm", "2"],
        &["--patience", "2"],
        &["--seed", "42"],
        &["--no-early-stopping"],
        &["--overwrite"],
    ];
    for extra in changing {
        let (code, stderr) = with_resume(extra);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        let expected = format!(
            "--resume continues {run} with its own settings; {} was given: drop it",
            extra[0]
        );
        assert!(stderr.contains(&expected), "{extra:?}: {stderr}");
    }
    let (code, stderr) = with_resume(&["--monitor", "accuracy", "--lr", "1", "--positive", "y"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--positive, --lr, --monitor were given: drop them"),
        "{stderr}"
    );
    // How to train may change: these pass the command line and reach the (missing) run folder.
    let (code, stderr) = with_resume(&[
        "--threads",
        "1",
        "--device",
        "cpu",
        "--save-minutes",
        "0",
        "--stop-after",
        "1",
        "--stop-after-steps",
        "5",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(run) && !stderr.contains("its own settings"),
        "{stderr}"
    );
}

#[test]
fn tokens_reports_the_length_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    write_csv(&data, &reviews(10, 2));
    let out = feelings()
        .args(["tokens", "--json", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["count"], 10);
    assert_eq!(report["truncated_share"][0], serde_json::json!([128, 0.0]));
}

#[test]
fn asking_for_a_gpu_in_a_cpu_build_fails_clearly() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = feelings()
        .args([
            "train", "--data", "x.csv", "--model", "m", "--device", "cuda:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--features cuda"));
}

#[test]
fn bench_times_training_steps_at_each_sequence_length() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    write_csv(&data, &reviews(200, 4));
    let out = feelings()
        .args([
            "bench",
            "--json",
            "--seq",
            "6,8",
            "--batch-size",
            "4",
            "--steps",
            "3",
            "--threads",
            "1",
            "--data",
        ])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 2);
    for (row, seq) in rows.iter().zip([6, 8]) {
        assert_eq!(row["what"], "train_step");
        assert_eq!(row["seq_len"], seq);
        assert_eq!(row["all_steps_s"].as_array().unwrap().len(), 3);
        let step = row["step_s"].as_f64().unwrap();
        let parts = ["forward_s", "backward_s", "optimizer_s"].map(|k| row[k].as_f64().unwrap());
        assert!(
            step > 0.0 && parts.iter().all(|p| *p > 0.0 && *p <= step),
            "{row}"
        );
        assert!(row["peak_rss_mib"].as_f64().unwrap() > 1.0);
    }
    // Asking for longer reviews than the data has is an error, not a hang.
    let too_long = feelings()
        .args(["bench", "--seq", "60", "--steps", "50", "--data"])
        .arg(&data)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("reach 60 tokens"));
}

#[test]
fn export_then_predict_texts_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    write_csv(&data, &reviews(64, 2));
    let run = train_one_epoch(dir.path(), &data, &model);
    let bundle = dir.path().join("bundle");
    let exported = feelings()
        .arg("export")
        .arg(&run)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success(&exported);
    assert!(String::from_utf8_lossy(&exported.stdout).contains("largest logit difference"));

    let one = feelings()
        .arg("predict")
        .arg(&bundle)
        .args([
            "--json",
            "the movie was great",
            "the plot was awful and boring",
        ])
        .output()
        .unwrap();
    assert_success(&one);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for p in &lines {
        let score = p["score"].as_f64().unwrap();
        let expected = if score >= 0.5 { "positive" } else { "negative" };
        assert_eq!(p["label"], expected);
        assert_eq!(p["threshold"], 0.5);
    }

    // --explain: each word's weight is the score without it subtracted from the score.
    let explained = feelings()
        .arg("predict")
        .arg(&bundle)
        .args(["--explain", "--json", "the movie was great"])
        .output()
        .unwrap();
    assert_success(&explained);
    let explanation: serde_json::Value = serde_json::from_slice(&explained.stdout).unwrap();
    let units = explanation["units"].as_array().unwrap();
    assert_eq!(units.len(), 4);
    assert_eq!(explanation["score"], lines[0]["score"]);
    let without_great = feelings()
        .arg("predict")
        .arg(&bundle)
        .args(["--json", "the movie was"])
        .output()
        .unwrap();
    let without: serde_json::Value = serde_json::from_slice(&without_great.stdout).unwrap();
    let weight = lines[0]["score"].as_f64().unwrap() - without["score"].as_f64().unwrap();
    assert_eq!(units[3]["text"], "great");
    assert!((units[3]["weight"].as_f64().unwrap() - weight).abs() < 1e-6);
    let (code, stderr) = refused(&["predict", "b", "--max-units", "4", "x"]);
    assert_eq!(code, Some(2), "--max-units needs --explain: {stderr}");

    let predictions = dir.path().join("predictions.csv");
    let file = feelings()
        .arg("predict")
        .arg(&bundle)
        .arg("--file")
        .arg(&data)
        .arg("--out")
        .arg(&predictions)
        .output()
        .unwrap();
    assert_success(&file);
    let stderr = String::from_utf8_lossy(&file.stderr);
    assert!(
        stderr.contains("64 reviews classified") && stderr.contains("accuracy against 'sentiment'"),
        "{stderr}"
    );
    let mut reader = csv::Reader::from_path(&predictions).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["review", "sentiment", "label", "score"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 64);
    assert_eq!(&rows[0][0], reviews(64, 2)[0].0.as_str());

    let missing = feelings()
        .arg("predict")
        .arg(dir.path().join("nope"))
        .arg("hi")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("feelings.json"));
}

#[test]
fn evaluate_writes_a_report_and_compare_wants_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = feelings_trainer::fixtures::tiny_bundle(dir.path(), 96, 4, |s| {
        s.seq_len = 24;
        s.epochs = 1;
    })
    .unwrap();
    let run = dir.path().join("run");
    let evaluated = feelings()
        .args(["evaluate", "--json", "--threads", "1"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&evaluated);
    let summary: serde_json::Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(summary["engine"], "candle");
    assert_eq!(summary["metrics"]["count"], 10);
    assert!(run.join("report.html").is_file());

    let no_data = feelings().arg("evaluate").arg(&bundle).output().unwrap();
    assert_eq!(no_data.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_data.stderr).contains("give --data"));

    let one_run = feelings().arg("compare").arg(&run).output().unwrap();
    assert!(!one_run.status.success());
    let out = dir.path().join("compare.html");
    let two = feelings()
        .arg("compare")
        .args([&run, &run])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&two);
    assert!(String::from_utf8_lossy(&two.stdout).contains("best accuracy: run"));
    assert!(out.is_file());
}

/// Fails the test with the command's stderr unless it succeeded.
pub(crate) fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `feelings train` of `model` on `data` for one epoch at 24 tokens, into `dir/run`.
fn train_one_epoch(
    dir: &std::path::Path,
    data: &std::path::Path,
    model: &std::path::Path,
) -> std::path::PathBuf {
    let run = dir.join("run");
    let trained = feelings()
        .args(["train", "--seq-len", "24", "--epochs", "1", "--data"])
        .arg(data)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&trained);
    run
}

/// The JSON lines of a `--json` run that succeeded.
fn json_rows(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert_success(out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A stand-in for the peers' Python: `-c SCRIPT F32 OUT` (the quantisation) copies the f32
/// model to OUT; `ort_infer.py MODEL ...` answers 40 ms for OUT's folder `own`, 20 ms for
/// anything else, as ONNX Runtime's JSON line.
fn fake_python(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    let script = r#"#!/bin/sh
if [ "$1" = "-c" ]; then cp "$3" "$4"; exit $?; fi
case "$2" in
  */model.onnx) [ -f "$(dirname "$2")/feelings.json" ] && ms=20 || ms=40 ;;
  *) ms=20 ;;
esac
echo "{\"median_ms\": $ms, \"version\": \"fake\"}"
"#;
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn bench_meets_an_int8_dynamic_bundle_with_onnxruntimes_own_quantisation_too() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_bert(&dir.path().join("model"), &TinyShape::default());
    let data = dir.path().join("data.csv");
    let long: Vec<(String, &str)> = reviews(64, 2)
        .into_iter()
        .map(|(text, label)| (format!("{text}{}", " and very great".repeat(8)), label))
        .collect();
    write_csv(&data, &long);
    let run = train_one_epoch(dir.path(), &data, &model);
    let bench = |bundle: &std::path::Path| {
        let out = feelings()
            .args([
                "bench",
                "--json",
                "--infer-batch",
                "1",
                "--runs",
                "2",
                "--threads",
                "1",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--bundle")
            .arg(bundle)
            .arg("--peers")
            .arg(dir.path())
            .arg("--python")
            .arg(fake_python(dir.path()))
            .output()
            .unwrap();
        json_rows(&out)
    };
    for (quantize, own) in [("int8", false), ("int8-dynamic", true)] {
        let bundle = dir.path().join(quantize);
        let exported = feelings()
            .arg("export")
            .arg(&run)
            .args(["--quantize", quantize, "--out"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert_success(&exported);
        let rows = bench(&bundle);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        let ours = row["ours_ms"].as_f64().unwrap();
        assert_eq!(row["peer_ms"], 20.0, "{row}");
        assert!(
            (row["ratio"].as_f64().unwrap() - ours / 20.0).abs() < 1e-9,
            "{row}"
        );
        if own {
            // The peer's own quantisation ran on the bundle's f32 export, in its own folder.
            assert_eq!(row["peer_quantize_dynamic_ms"], 40.0, "{row}");
            let ratio = row["ratio_quantize_dynamic"].as_f64().unwrap();
            assert!((ratio - ours / 40.0).abs() < 1e-9, "{row}");
        } else {
            assert!(row.get("peer_quantize_dynamic_ms").is_none(), "{row}");
        }
    }
}
