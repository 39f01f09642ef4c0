//! Exporting to ONNX and running the bundle in the inference core (tract), against candle and,
//! where Python's onnxruntime is installed, against ONNX Runtime.

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::{Bundle, BundleError, Classifier as Core, ClassifyError};
use feelings_trainer::batch::make_batch;
use feelings_trainer::export::{export_bundle, ExportOptions};
use feelings_trainer::model::{Classifier, Head, ModelFiles};
use feelings_trainer::onnx::Precision;
use feelings_trainer::settings::TrainSettings;
use feelings_trainer::train::{train, TrainOptions};
use rand::{Rng, SeedableRng};

use crate::fixtures::{onnxruntime_logits, reviews, tiny_bert, write_csv, TinyShape, WORDS};

fn options() -> TrainOptions {
    TrainOptions {
        device: Device::Cpu,
        threads: 2,
        progress: false,
        stop_after: None,
        stop_after_steps: None,
        save_every: None,
    }
}

fn export_options(precision: Precision) -> ExportOptions {
    ExportOptions {
        epoch: None,
        precision,
        threshold: 0.5,
        name: Some("tiny".into()),
        seq_len: None,
    }
}

/// A one-epoch run of the tiny model in `dir/run`.
fn tiny_run(dir: &Path) -> PathBuf {
    let model = tiny_bert(&dir.join("model"), &TinyShape::default());
    write_csv(&dir.join("data.csv"), &reviews(64, 8));
    let mut s = TrainSettings::new(dir.join("data.csv"), model);
    s.seq_len = 32;
    s.epochs = 1;
    s.optimizer.lr = 1e-3;
    train(s, &dir.join("run"), false, &options()).unwrap();
    dir.join("run")
}

/// Candle's logits for token sequences, from the checkpoint the bundle came from.
fn candle_logits(checkpoint: &Path, ids: &[Vec<u32>], pad: u32) -> Vec<Vec<f32>> {
    let model = Classifier::load(
        &ModelFiles::locate(checkpoint).unwrap(),
        &Device::Cpu,
        Head::FromFile,
    )
    .unwrap();
    let mut out = Vec::new();
    for chunk in (0..ids.len()).collect::<Vec<_>>().chunks(16) {
        let batch = make_batch(ids, &vec![0; ids.len()], chunk, pad, &Device::Cpu).unwrap();
        out.extend(
            model
                .forward(&batch.input_ids, &batch.attention_mask, None)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
        );
    }
    out
}

fn max_gap(a: &[Vec<f32>], b: &[[f32; 2]]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn tiny_model_round_trips_through_onnx_in_tract_and_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let out = dir.path().join("bundle");
    let exported = export_bundle(&run, &out, false, &export_options(Precision::F32)).unwrap();
    assert!(exported.max_logit_difference < 1e-4);
    let bundle = Bundle::read_dir(&out).unwrap();
    assert_eq!(bundle.manifest.max_seq_len, 32);
    assert_eq!(bundle.manifest.labels.positive, "positive");
    assert!(bundle.manifest.test_metrics.is_some());
    let base = &bundle.manifest.training.base_model;
    assert!(!base.is_empty() && !base.contains('/'), "{base}");
    let core = Core::new(&bundle).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // Every fourth review fills the model's 32 tokens: the plan built for exactly that length.
    let ids: Vec<Vec<u32>> = (0..40)
        .map(|i| {
            let n = if i % 4 == 0 {
                30
            } else {
                rng.random_range(0..30)
            };
            let mut seq = vec![2u32];
            seq.extend((0..n).map(|_| rng.random_range(4..4 + WORDS.len() as u32)));
            seq.push(3);
            seq
        })
        .collect();
    let tract = core.logits(&ids).unwrap();
    let candle = candle_logits(&exported.checkpoint, &ids, 0);
    assert!(
        max_gap(&candle, &tract) < 1e-4,
        "tract vs candle: {}",
        max_gap(&candle, &tract)
    );
    // Reviews side by side on two threads, and one review inside the two threads' pool: the
    // same logits, in order.
    feelings_core::set_inference_threads(2);
    let side_by_side = core.logits(&ids).unwrap();
    let alone = core.logits(&ids[..1]).unwrap();
    feelings_core::set_inference_threads(1);
    assert!(max_gap(&[tract[0].to_vec()], &alone) < 1e-6);
    assert!(
        max_gap(
            &side_by_side.iter().map(|l| l.to_vec()).collect::<Vec<_>>(),
            &tract
        ) < 1e-6
    );
    // tract reads one unpadded review per call: what it cannot read is refused, not run.
    for (tokens, what) in [(0, "0 tokens"), (33, "33 tokens")] {
        let error = core.logits(&[vec![2u32; tokens]]).unwrap_err().to_string();
        assert!(error.contains(what) && error.contains("1 to 32"), "{error}");
    }
    if let Some(ort) = onnxruntime_logits(&out.join("model.onnx"), &ids, 0) {
        assert!(
            max_gap(&ort, &tract) < 1e-4,
            "onnxruntime vs tract: {}",
            max_gap(&ort, &tract)
        );
    }

    // int8: a quarter of the weights' bytes, close logits.
    let out8 = dir.path().join("bundle-int8");
    let exported8 = export_bundle(&run, &out8, false, &export_options(Precision::Int8)).unwrap();
    let core8 = Core::new(&Bundle::read_dir(&out8).unwrap()).unwrap();
    let gap8 = max_gap(&candle, &core8.logits(&ids).unwrap());
    assert!(gap8 < 0.1, "int8 logits moved by {gap8}");
    assert!(exported8.bundle.model.len() < exported.bundle.model.len());
    assert!(
        exported8.bundle.manifest.test_metrics.is_none(),
        "f32 test figures do not describe int8"
    );
    if let Some(ort) = onnxruntime_logits(&out8.join("model.onnx"), &ids, 0) {
        let gap = max_gap(&ort, &core8.logits(&ids).unwrap());
        assert!(gap < 1e-4, "int8: onnxruntime vs tract: {gap}");
    }
}

#[test]
fn the_core_never_panics_on_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let out = dir.path().join("bundle");
    export_bundle(&run, &out, false, &export_options(Precision::F32)).unwrap();
    let core = Core::new(&Bundle::read_dir(&out).unwrap()).unwrap();
    let mut texts: Vec<String> = vec![
        String::new(),
        " \t\n ".into(),
        "\0\0\0".into(),
        "great ".repeat(170_000),
        "שלום עולם مرحبا بالعالم \u{202e}great\u{202c}".into(),
        "😀🎬🍿 great 👍🏽 \u{200d}\u{fe0f}".into(),
        "<br /><br /><br />".into(),
        "\u{1b}[31mred\u{7f}\u{8}".into(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..3000 {
        let len = rng.random_range(0..40);
        let text: String = (0..len)
            .map(|_| match rng.random_range(0..4) {
                0 => char::from(rng.random_range(0u8..128)),
                1 => char::from_u32(rng.random_range(0x80..0x3000)).unwrap_or('?'),
                2 => char::from_u32(rng.random_range(0x1F300..0x1FAFF)).unwrap_or('?'),
                _ => ' ',
            })
            .collect();
        texts.push(text);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = core.classify_batch(&refs).unwrap();
    assert_eq!(predictions.len(), texts.len());
    for p in &predictions {
        assert!((0.0..=1.0).contains(&p.score) && (p.label == "positive" || p.label == "negative"));
    }
    assert!(predictions[3].truncated && !predictions[1].truncated);
    assert_eq!(core.classify(&texts[3]).unwrap(), predictions[3]);
}

#[test]
fn broken_bundles_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let good = dir.path().join("bundle");
    export_bundle(&run, &good, false, &export_options(Precision::F32)).unwrap();
    let err = export_bundle(&run, &good, false, &export_options(Precision::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--overwrite"), "{err}");
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["feelings.json", "model.onnx", "tokenizer.json"] {
            std::fs::copy(good.join(f), to.join(f)).unwrap();
        }
        to
    };

    let missing = copy("missing");
    std::fs::remove_file(missing.join("tokenizer.json")).unwrap();
    let err = Bundle::read_dir(&missing).unwrap_err();
    assert!(
        matches!(err, BundleError::Unreadable { .. }) && err.to_string().contains("tokenizer.json"),
        "{err}"
    );

    let damaged = copy("damaged");
    let mut onnx = std::fs::read(damaged.join("model.onnx")).unwrap();
    let middle = onnx.len() / 2;
    onnx[middle] ^= 0xff;
    std::fs::write(damaged.join("model.onnx"), onnx).unwrap();
    let err = Bundle::read_dir(&damaged).unwrap_err();
    assert!(
        matches!(err, BundleError::Checksum { .. }) && err.to_string().contains("model.onnx"),
        "{err}"
    );

    let garbled = copy("garbled");
    std::fs::write(garbled.join("feelings.json"), "{\"format_version\": 1").unwrap();
    let err = Bundle::read_dir(&garbled).unwrap_err().to_string();
    assert!(err.contains("feelings.json"), "{err}");

    // A valid ONNX file from elsewhere, with a manifest that vouches for it.
    let bundle = Bundle::read_dir(&good).unwrap();
    let foreign = {
        use prost::Message;
        let mut proto = tract_onnx::pb::ModelProto::decode(&bundle.model[..]).unwrap();
        proto.producer_name = "pytorch".into();
        proto.encode_to_vec()
    };
    let theirs = Bundle::new(bundle.manifest.clone(), foreign, bundle.tokenizer.clone());
    let err = Core::new(&theirs).err().unwrap();
    assert!(
        matches!(err, ClassifyError::Bundle(BundleError::NotOurs { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("model.onnx") && err.to_string().contains("pytorch"),
        "{err}"
    );

    let not_onnx = Bundle::new(
        bundle.manifest.clone(),
        b"hello".to_vec(),
        bundle.tokenizer.clone(),
    );
    let err = Core::new(&not_onnx).err().unwrap().to_string();
    assert!(
        err.contains("model.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    let mut small = bundle.manifest.clone();
    small.vocab_size = 10;
    let mismatched = Bundle::new(small, bundle.model.clone(), bundle.tokenizer.clone());
    let err = Core::new(&mismatched).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("do not belong together"),
        "{err}"
    );
}
