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

/// Logits from Python's onnxruntime for token sequences padded with `pad`, or None when it is
/// not installed. Graph optimisation stays at the basic level: at `ORT_ENABLE_ALL` ONNX Runtime
/// fuses `DequantizeLinear` + `MatMul` into integer arithmetic, which computes something else
/// than the file says (0.015 apart on int8 logits).
pub fn onnxruntime_logits(model: &Path, ids: &[Vec<u32>], pad: u32) -> Option<Vec<Vec<f32>>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let probe = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "skipped: Python onnxruntime is not installed (python3 -m pip install onnxruntime)"
        );
        return None;
    }
    let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
    let padded: Vec<Vec<u32>> = ids
        .iter()
        .map(|r| {
            r.iter()
                .copied()
                .chain(std::iter::repeat(pad))
                .take(longest)
                .collect()
        })
        .collect();
    let mask: Vec<Vec<u32>> = ids
        .iter()
        .map(|r| (0..longest).map(|i| u32::from(i < r.len())).collect())
        .collect();
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

/// The real MiniLM-L6 shipped beside the project.
pub fn minilm_l6() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/minilm-l6")
}

/// The IMDB reviews shipped beside the project.
pub fn imdb() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/imdb/imdb.csv.gz")
}
