//! Test helpers: the tiny models of `feelings_trainer::fixtures`, the shared real model and
//! data, and ONNX Runtime as a reference.

use std::path::{Path, PathBuf};

pub use feelings_trainer::fixtures::{reviews, TinyShape, WORDS};

/// Writes a tiny random BERT into `dir`.
pub fn tiny_bert(dir: &Path, shape: &TinyShape) -> PathBuf {
    feelings_trainer::fixtures::tiny_bert(dir, shape).unwrap()
}

/// Writes `rows` as a review,sentiment CSV.
pub fn write_csv(path: &Path, rows: &[(String, &str)]) {
    feelings_trainer::fixtures::write_csv(path, rows).unwrap();
}

/// Gives up a check whose tool is missing. With the environment variable `CI` set (to anything
/// but nothing) that is a failure: on CI every check must run. Elsewhere the test goes on
/// without it and says so on standard error, written past the test harness's capture (which
/// takes only `print!` and `eprint!`), so the skip shows in a plain `cargo test`.
pub fn missing_tool(what: &str, install: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what}, and CI is set: every check must run there; install it ({install})");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nSKIPPED CHECK: {what} ({install}); with CI=1 this fails instead\n"
    );
}

/// `ids` padded with `pad` to the longest, and the attention mask (1 on tokens, 0 on padding).
fn padded_with_mask(ids: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
    let padded = ids
        .iter()
        .map(|r| {
            r.iter()
                .copied()
                .chain(std::iter::repeat(pad))
                .take(longest)
                .collect()
        })
        .collect();
    let mask = ids
        .iter()
        .map(|r| (0..longest).map(|i| u32::from(i < r.len())).collect())
        .collect();
    (padded, mask)
}

/// Logits from Python's onnxruntime for token sequences padded with `pad`, or None when it is
/// not installed (see [`missing_tool`]). Graph optimisation stays at the basic level: at
/// `ORT_ENABLE_ALL` ONNX Runtime fuses `DequantizeLinear` + `MatMul` into integer arithmetic,
/// which computes something else than the file says (0.015 apart on int8 logits).
pub fn onnxruntime_logits(model: &Path, ids: &[Vec<u32>], pad: u32) -> Option<Vec<Vec<f32>>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let installed = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|probe| probe.status.success());
    if !installed {
        missing_tool(
            "the ONNX Runtime parity check did not run: python3 with onnxruntime and numpy is missing",
            "python3 -m pip install onnxruntime numpy",
        );
        return None;
    }
    let (padded, mask) = padded_with_mask(ids, pad);
    let script = "import json, sys, numpy as np, onnxruntime as ort\n\
         o = ort.SessionOptions()\n\
         o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC\n\
         s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n\
         ids, mask = json.load(sys.stdin)\n\
         feed = {'input_ids': np.array(ids, dtype=np.int64), 'attention_mask': np.array(mask, dtype=np.int64)}\n\
         print(json.dumps(s.run(['logits'], feed)[0].tolist()))";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&(padded, mask)).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "onnxruntime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The Python of the peer venv (`../shared/bench/peers/setup.sh`, made by tests/run.sh with
/// `PEERS_DIR=~/.cache/feelings-tools/peers`): `FEELINGS_PEERS_PYTHON`, else that venv's.
fn peers_python() -> PathBuf {
    std::env::var_os("FEELINGS_PEERS_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/feelings-tools/peers/venv/bin/python")
        },
        PathBuf::from,
    )
}

/// The peer venv's python, if it has torch and transformers (see [`missing_tool`]).
fn transformers_python() -> Option<PathBuf> {
    let python = peers_python();
    let installed = std::process::Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|probe| probe.status.success());
    if !installed {
        missing_tool(
            &format!("the transformers parity check did not run: {} cannot import torch and transformers", python.display()),
            "PEERS_DIR=~/.cache/feelings-tools/peers bash ../shared/bench/peers/setup.sh",
        );
        return None;
    }
    Some(python)
}

/// Runs the Python `script` with `folder` as its argument and `input` as JSON on its standard
/// input, offline, and reads its standard output as JSON.
fn run_transformers(
    python: &Path,
    script: &str,
    folder: &Path,
    input: &impl serde::Serialize,
) -> serde_json::Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(folder)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(input).unwrap();
    // A script that fails early closes its input: its error says why, below.
    let _ = child.stdin.take().unwrap().write_all(&input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "transformers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Logits of Hugging Face transformers' `AutoModelForSequenceClassification` loaded from the
/// checkpoint folder `checkpoint`, for token sequences padded with `pad`; None when the peer
/// venv with torch and transformers is missing (see [`missing_tool`]).
pub fn transformers_logits(checkpoint: &Path, ids: &[Vec<u32>], pad: u32) -> Option<Vec<Vec<f32>>> {
    let python = transformers_python()?;
    let script = r#"
import json, sys, torch
from transformers import AutoModelForSequenceClassification
torch.set_num_threads(2)
m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
assert type(m).__name__ == "BertForSequenceClassification", type(m).__name__
ids, mask = json.load(sys.stdin)
out = []
with torch.no_grad():
    for i in range(0, len(ids), 16):
        r = m(input_ids=torch.tensor(ids[i:i+16]), attention_mask=torch.tensor(mask[i:i+16]))
        out += r.logits.tolist()
print(json.dumps({"logits": out, "id2label": m.config.id2label}))
"#;
    let answer = run_transformers(&python, script, checkpoint, &padded_with_mask(ids, pad));
    assert_eq!(
        answer["id2label"],
        serde_json::json!({"0": "negative", "1": "positive"}),
        "transformers reads the classes' names"
    );
    Some(serde_json::from_value(answer["logits"].clone()).unwrap())
}

/// The token ids transformers' `AutoTokenizer`, loaded from `folder`, gives `texts` (special
/// tokens added, not truncated); None when the peer venv is missing (see [`missing_tool`]).
pub fn transformers_token_ids(folder: &Path, texts: &[&str]) -> Option<Vec<Vec<u32>>> {
    let python = transformers_python()?;
    let script = r#"
import json, sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps(t(json.load(sys.stdin))["input_ids"]))
"#;
    Some(serde_json::from_value(run_transformers(&python, script, folder, &texts)).unwrap())
}

/// The real MiniLM-L6 shipped beside the project.
pub fn minilm_l6() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/minilm-l6")
}

/// The IMDB reviews shipped beside the project.
pub fn imdb() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/imdb/imdb.csv.gz")
}

/// The IMDB reviews with their official split.
pub fn imdb_reviews() -> Vec<feelings_trainer::data::Example> {
    let columns = feelings_trainer::data::DataOptions {
        split_column: Some("split".into()),
        ..Default::default()
    };
    feelings_trainer::data::load_dataset(&imdb(), &columns)
        .unwrap()
        .examples
}

/// Set in the child process of the test below, which then only asks for ONNX Runtime's logits.
const PROBE: &str = "FEELINGS_PROBE_MISSING_ONNXRUNTIME";

#[test]
fn a_missing_onnxruntime_fails_on_ci_and_shows_elsewhere() {
    if std::env::var_os(PROBE).is_some() {
        assert!(onnxruntime_logits(Path::new("model.onnx"), &[vec![2, 3]], 0).is_none());
        return;
    }
    // This test binary again, running only this test, with no python3 on its PATH.
    let no_tools = tempfile::tempdir().unwrap();
    let probe = |ci: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fixtures::a_missing_onnxruntime_fails_on_ci_and_shows_elsewhere",
            ])
            .env(PROBE, "1")
            .env("PATH", no_tools.path())
            .env("CI", ci)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let (passed, stdout, stderr) = probe("true");
    assert!(
        !passed && stdout.contains("CI is set") && stdout.contains("pip install onnxruntime"),
        "with CI set a missing onnxruntime must fail:\n{stdout}\n{stderr}"
    );
    // Without CI the check is skipped, and says so even though the harness captures output.
    let (passed, stdout, stderr) = probe("");
    assert!(
        passed && stderr.contains("SKIPPED CHECK") && stderr.contains("ONNX Runtime"),
        "without CI a missing onnxruntime is a visible skip:\n{stdout}\n{stderr}"
    );
}
