//! Exporting to ONNX and running the bundle in the inference core (tract), against candle and,
//! where Python's onnxruntime is installed, against ONNX Runtime.

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::{Bundle, BundleError, ClassifyError, TractClassifier};
use feelings_trainer::data::batch::make_batch;
use feelings_trainer::export::hf_layout::export_hf_layout;
use feelings_trainer::export::onnx::{EmbeddingFormat, Precision};
use feelings_trainer::export::{
    check_bundle, check_logits, export_bundle, logit_tolerance, CheckFailure, ExportOptions,
    Exported,
};
use feelings_trainer::fixtures::quiet_cpu;
use feelings_trainer::model::{CandleClassifier, Head, ModelFiles};
use feelings_trainer::train::settings::TrainSettings;
use feelings_trainer::train::train;
use feelings_trainer::Error;
use rand::{Rng, SeedableRng};

use crate::fixtures::{onnxruntime_logits, reviews, tiny_bert, write_csv, TinyShape, WORDS};

pub(crate) fn export_options(precision: Precision) -> ExportOptions {
    ExportOptions {
        precision,
        name: Some("tiny".into()),
        ..ExportOptions::default()
    }
}

/// A one-epoch run of the tiny model in `dir/run`.
pub(crate) fn tiny_run(dir: &Path) -> PathBuf {
    tiny_run_shaped(dir, &TinyShape::default())
}

/// A one-epoch run of a tiny model of `shape` in `dir/run`.
fn tiny_run_shaped(dir: &Path, shape: &TinyShape) -> PathBuf {
    let model = tiny_bert(&dir.join("model"), shape);
    write_csv(&dir.join("data.csv"), &reviews(64, 8));
    let mut s = TrainSettings::new(dir.join("data.csv"), model);
    s.seq_len = 32;
    s.epochs = 1;
    s.optimizer.lr = 1e-3;
    train(s, &dir.join("run"), false, &quiet_cpu()).unwrap();
    dir.join("run")
}

/// Candle's logits for token sequences, from the checkpoint the bundle came from.
fn candle_logits(checkpoint: &Path, ids: &[Vec<u32>], pad: u32) -> Vec<Vec<f32>> {
    let model = CandleClassifier::load(
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

/// The candle model of the checkpoint a bundle was exported from.
fn checkpoint_model(exported: &Exported) -> CandleClassifier {
    let files = ModelFiles::locate(&exported.checkpoint).unwrap();
    CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap()
}

/// `bundle` with `edit` applied to every initializer of its ONNX graph (and the manifest's
/// checksums updated to vouch for the result).
fn edited(bundle: &Bundle, edit: impl Fn(&mut tract_onnx::pb::TensorProto)) -> Bundle {
    use prost::Message;
    let mut proto = tract_onnx::pb::ModelProto::decode(&bundle.model[..]).unwrap();
    proto
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .for_each(edit);
    Bundle::new(
        bundle.manifest.clone(),
        proto.encode_to_vec(),
        bundle.tokenizer.clone(),
    )
}

/// The largest difference between two sets of logits; NaN if any difference is (`f32::max`
/// alone would pass over it).
fn max_gap(a: &[Vec<f32>], b: &[[f32; 2]]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, |worst, d| if d.is_nan() { d } else { worst.max(d) })
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
    let core = TractClassifier::new(&bundle).unwrap();

    // Every fourth review fills the model's 32 tokens: the plan built for exactly that length.
    let ids = tiny_ids(40, 1);
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
    let core8 = TractClassifier::new(&Bundle::read_dir(&out8).unwrap()).unwrap();
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
fn an_int8_export_is_checked_and_a_damaged_one_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let exported = export_bundle(
        &run,
        &dir.path().join("int8"),
        false,
        &export_options(Precision::Int8),
    )
    .unwrap();
    let limit = logit_tolerance(Precision::Int8);
    // Rounding to int8 shows in the logits, within the tolerance.
    let gap = exported.max_logit_difference;
    assert!(gap > 1e-5 && gap <= limit, "int8 gap {gap}");
    let model = checkpoint_model(&exported);
    assert_eq!(check_bundle(&model, &exported.bundle).unwrap(), gap);

    // A quantizer that wrote each channel's largest |weight| as its scale, not that / 127.
    let err = check_bundle(&model, &times_127(&exported.bundle)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Check(
                CheckFailure::TooFar {
                    precision: Precision::Int8,
                    ..
                } | CheckFailure::Decision { .. }
            )
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("fails its check against candle"),
        "{err}"
    );
}

/// `bundle` with every int8 scale 127 times too large.
fn times_127(bundle: &Bundle) -> Bundle {
    edited(bundle, |t| {
        if t.name.ends_with(".scale") {
            t.raw_data = f32s(&t.raw_data)
                .iter()
                .flat_map(|s| (127.0 * s).to_le_bytes())
                .collect();
        }
    })
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The f32 matrix `int8` holds (candle's layout), each weight moved by up to half its
/// quantisation step. The file holds `[rows, columns]` with one scale per row for the word
/// embeddings, and the linear layers transposed with one scale per column (output).
fn dequantised(
    name: &str,
    int8: &tract_onnx::pb::TensorProto,
    scales: &[f32],
    rng: &mut impl Rng,
) -> (Vec<f32>, Vec<usize>) {
    let (rows, columns) = (int8.dims[0] as usize, int8.dims[1] as usize);
    let per_row = name == "embeddings.word_embeddings.weight";
    let mut w = vec![0f32; rows * columns];
    for r in 0..rows {
        for c in 0..columns {
            let s = scales[if per_row { r } else { c }];
            let q = f32::from(int8.raw_data[r * columns + c] as i8);
            let at = if per_row {
                r * columns + c
            } else {
                c * rows + r
            };
            w[at] = (q + rng.random_range(-0.5..0.5)) * s;
        }
    }
    let shape = if per_row {
        vec![rows, columns]
    } else {
        vec![columns, rows]
    };
    (w, shape)
}

/// MiniLM-L6 with the trained weights of the shipped int8 model (`models/imdb-minilm`), as the
/// f32 weights they were rounded from would be: each dequantised, plus uniform noise of half a
/// quantisation step, written as a model folder in `dir`: the model loaded from it, and the
/// shipped bundle.
fn trained_minilm(dir: &Path) -> (CandleClassifier, Bundle) {
    use prost::Message;
    let shipped =
        Bundle::read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/imdb-minilm"))
            .unwrap();
    let proto = tract_onnx::pb::ModelProto::decode(&shipped.model[..]).unwrap();
    let initializers = &proto.graph.as_ref().unwrap().initializer;
    let by_name = |name: &str| initializers.iter().find(|t| t.name == name).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut tensors = std::collections::HashMap::new();
    let f32_type = tract_onnx::pb::tensor_proto::DataType::Float as i32;
    for t in initializers {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let (name, values, shape) = if let Some(base) = t.name.strip_suffix(".int8") {
            let scales = f32s(&by_name(&format!("{base}.scale")).raw_data);
            let (values, shape) = dequantised(base, t, &scales, &mut rng);
            (base.to_string(), values, shape)
        } else if t.name == "embeddings.token_type_0" {
            let mut v = f32s(&t.raw_data);
            let h = v.len();
            v.resize(2 * h, 0.0);
            (
                "embeddings.token_type_embeddings.weight".into(),
                v,
                vec![2, h],
            )
        } else if t.data_type == f32_type
            && !t.name.starts_with("const.")
            && !t.name.ends_with(".scale")
        {
            (t.name.clone(), f32s(&t.raw_data), dims)
        } else {
            continue;
        };
        tensors.insert(
            name,
            candle_core::Tensor::from_vec(values, shape, &Device::Cpu).unwrap(),
        );
    }
    std::fs::copy(
        crate::fixtures::minilm_l6().join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), &shipped.tokenizer).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let files = ModelFiles::locate(dir).unwrap();
    (
        CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap(),
        shipped,
    )
}

#[test]
fn trained_weights_pass_the_int8_check_and_fail_it_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let (model, shipped) = trained_minilm(dir.path());
    let onnx = feelings_trainer::export::onnx::export(
        &model,
        Precision::Int8,
        EmbeddingFormat::AsWeights,
        &[],
    )
    .unwrap();
    let bundle = Bundle::new(shipped.manifest.clone(), onnx, shipped.tokenizer.clone());
    let gap = check_bundle(&model, &bundle).unwrap();
    println!("trained MiniLM-L6, int8: largest logit difference on the check reviews {gap:.3e}");
    assert!(
        gap > 1e-4 && gap <= logit_tolerance(Precision::Int8),
        "{gap}"
    );
    // The head's signs flipped: every review called the other way, logits units apart.
    let flipped = edited(&bundle, |t| {
        if t.name == "classifier.weight.int8" {
            t.raw_data
                .iter_mut()
                .for_each(|b| *b = (*b as i8).wrapping_neg() as u8);
        }
    });
    let err = check_bundle(&model, &flipped).unwrap_err();
    assert!(
        matches!(err, Error::Check(CheckFailure::TooFar { .. })),
        "{err}"
    );
    let err = check_bundle(&model, &times_127(&bundle)).unwrap_err();
    assert!(matches!(err, Error::Check(_)), "{err}");
}

#[test]
fn nan_or_infinite_logits_fail_the_check() {
    // Given directly, from either side.
    let candle = [[0.5, -0.5], [-1.0, 1.0]];
    for precision in [Precision::F32, Precision::Int8] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err =
                check_logits(&candle, &[[0.5, -0.5], [bad, 1.0]], precision, 0.5).unwrap_err();
            assert!(
                matches!(
                    err,
                    CheckFailure::NotFinite {
                        review: 1,
                        engine: "the exported model",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("NaN or infinite"), "{err}");
            let err = check_logits(&[[bad, 0.0]], &[[0.0, 0.0]], precision, 0.5).unwrap_err();
            assert!(
                matches!(
                    err,
                    CheckFailure::NotFinite {
                        engine: "candle",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn nan_weights_in_a_bundle_or_a_checkpoint_fail_the_check() {
    // A bundle whose head adds NaN, checked through tract.
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let exported = export_bundle(
        &run,
        &dir.path().join("f32"),
        false,
        &export_options(Precision::F32),
    )
    .unwrap();
    let poisoned = edited(&exported.bundle, |t| {
        if t.name == "classifier.bias" {
            t.raw_data = [f32::NAN, 0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
        }
    });
    let err = check_bundle(&checkpoint_model(&exported), &poisoned).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Check(CheckFailure::NotFinite {
                engine: "the exported model",
                ..
            })
        ),
        "{err}"
    );

    // A checkpoint with a NaN weight is not exported.
    let weights = exported.checkpoint.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    tensors.insert(
        "classifier.bias".into(),
        candle_core::Tensor::new(&[f32::NAN, 0.0], &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let out = dir.path().join("nan");
    let err = export_bundle(&run, &out, false, &export_options(Precision::Int8))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checkpoint-epoch-1")
            && err.contains("NaN or infinite")
            && err.contains("not written"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn the_check_wants_the_same_decisions_unless_candle_sits_on_the_threshold() {
    let t = logit_tolerance(Precision::Int8);
    // Every logit within the tolerance, yet called negative where candle is clearly positive.
    let err = check_logits(
        &[[0.0, 1.2 * t]],
        &[[0.6 * t, 0.55 * t]],
        Precision::Int8,
        0.5,
    )
    .unwrap_err();
    assert!(
        matches!(err, CheckFailure::Decision { review: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("called negative"), "{err}");
    // The same at another threshold: 0.9 is a logit margin of ln 9.
    let m = 9f32.ln();
    let err = check_logits(
        &[[0.0, m + 1.2 * t]],
        &[[0.6 * t, m + 0.55 * t]],
        Precision::Int8,
        0.9,
    )
    .unwrap_err();
    assert!(matches!(err, CheckFailure::Decision { .. }), "{err}");
    // Candle within the tolerance of the threshold: either call is right.
    let gap = check_logits(
        &[[0.0, 0.5 * t]],
        &[[0.3 * t, 0.2 * t]],
        Precision::Int8,
        0.5,
    )
    .unwrap();
    assert!((gap - 0.3 * t).abs() < 1e-6, "{gap}");
    // Beyond the tolerance, whatever the decisions.
    let err = check_logits(
        &[[3.0, 0.0]],
        &[[3.0 + 1.01 * t, 0.0]],
        Precision::Int8,
        0.5,
    )
    .unwrap_err();
    assert!(matches!(err, CheckFailure::TooFar { .. }), "{err}");
    let err = check_logits(&[[3.0, 0.0]], &[[3.0 + 2e-3, 0.0]], Precision::F32, 0.5).unwrap_err();
    assert!(
        matches!(
            err,
            CheckFailure::TooFar {
                precision: Precision::F32,
                ..
            }
        ),
        "{err}"
    );
    let err = check_logits(&[[0.0, 0.0]; 2], &[[0.0, 0.0]], Precision::F32, 0.5).unwrap_err();
    assert!(
        matches!(
            err,
            CheckFailure::Count {
                candle: 2,
                exported: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn the_core_never_panics_on_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let out = dir.path().join("bundle");
    export_bundle(&run, &out, false, &export_options(Precision::F32)).unwrap();
    let core = TractClassifier::new(&Bundle::read_dir(&out).unwrap()).unwrap();
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
    let err = TractClassifier::new(&theirs).err().unwrap();
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
    let err = TractClassifier::new(&not_onnx).err().unwrap().to_string();
    assert!(
        err.contains("model.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );

    let mut small = bundle.manifest.clone();
    small.vocab_size = 10;
    let mismatched = Bundle::new(small, bundle.model.clone(), bundle.tokenizer.clone());
    let err = TractClassifier::new(&mismatched).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("do not belong together"),
        "{err}"
    );
}

/// The operator names of a bundle's ONNX graph, with how often each occurs.
fn op_counts(bundle: &Bundle) -> std::collections::BTreeMap<String, usize> {
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(&bundle.model[..]).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for node in &proto.graph.unwrap().node {
        *counts.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    counts
}

/// Random token sequences of the tiny vocabulary; every fourth fills the model's 32 tokens.
fn tiny_ids(count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let n = if i % 4 == 0 {
                30
            } else {
                rng.random_range(1..30)
            };
            let mut seq = vec![2u32];
            seq.extend((0..n).map(|_| rng.random_range(4..4 + WORDS.len() as u32)));
            seq.push(3);
            seq
        })
        .collect()
}

#[test]
fn an_int8_dynamic_export_multiplies_in_integers_as_onnxruntime_does() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let out = dir.path().join("bundle-q8");
    let exported =
        export_bundle(&run, &out, false, &export_options(Precision::Int8Dynamic)).unwrap();
    let bundle = Bundle::read_dir(&out).unwrap();
    assert_eq!(bundle.manifest.weights, Precision::Int8Dynamic);
    assert!(bundle.manifest.test_metrics.is_none());
    // Every encoder product in integers: 6 per layer (Q, K, V, attention output, the two
    // feed-forward ones) and the pooler's, the inputs quantised 4 times per layer (Q, K and V
    // share one) and once for the pooler; the classifier stays a float product on int8
    // weights.
    let layers = TinyShape::default().layers;
    let ops = op_counts(&bundle);
    assert_eq!(ops["MatMulInteger"], 6 * layers + 1, "{ops:?}");
    assert_eq!(ops["DynamicQuantizeLinear"], 4 * layers + 1, "{ops:?}");
    assert_eq!(ops["DequantizeLinear"], 1, "{ops:?}");
    // Same size as the weight-only int8 bundle, checked against candle at int8's tolerance.
    let limit = logit_tolerance(Precision::Int8Dynamic);
    assert!(exported.max_logit_difference > 1e-6 && exported.max_logit_difference <= limit);

    let ids = tiny_ids(40, 3);
    let tract = TractClassifier::new(&bundle).unwrap().logits(&ids).unwrap();
    let candle = candle_logits(&exported.checkpoint, &ids, 0);
    let gap = max_gap(&candle, &tract);
    assert!(gap > 1e-6 && gap < 0.1, "int8-dynamic vs candle: {gap}");
    // ONNX Runtime quantises the activations the same way and multiplies the same integers,
    // given one review per call as tract runs them: one scale per tensor, so in a batch the
    // other reviews' (and the padding's) activations would widen each range. The weights are
    // u8: with i8 weights ONNX Runtime's products saturate on x86-64 CPUs without VNNI, and
    // this check failed there (by 0.0097 on this model, on an AVX2-only AMD EPYC).
    for (row, logits) in ids.iter().zip(&tract).take(5) {
        if let Some(ort) = onnxruntime_logits(&out.join("model.onnx"), std::slice::from_ref(row), 0)
        {
            let gap = max_gap(&ort, &[*logits]);
            assert!(gap < 1e-4, "int8-dynamic: onnxruntime vs tract: {gap}");
        }
    }
}

#[test]
fn a_bundle_exports_again_at_another_precision_from_its_own_weights() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let int8 = dir.path().join("int8");
    export_bundle(&run, &int8, false, &export_options(Precision::Int8)).unwrap();
    let original = Bundle::read_dir(&int8).unwrap();
    let ids = tiny_ids(20, 4);
    let original_logits = TractClassifier::new(&original)
        .unwrap()
        .logits(&ids)
        .unwrap();
    let int8_values = |bundle: &Bundle| -> Vec<(String, Vec<u8>)> {
        let proto = tract_onnx::pb::ModelProto::decode(&bundle.model[..]).unwrap();
        let mut v: Vec<_> = proto
            .graph
            .unwrap()
            .initializer
            .into_iter()
            .filter_map(|t| {
                // The integer products' u8 weights are the int8 values plus 128.
                if let Some(base) = t.name.strip_suffix(".uint8") {
                    let signed = t.raw_data.iter().map(|&q| q.wrapping_sub(128)).collect();
                    Some((base.to_string(), signed))
                } else {
                    let base = t.name.strip_suffix(".int8")?;
                    Some((base.to_string(), t.raw_data))
                }
            })
            .collect();
        v.sort();
        v
    };
    for precision in [Precision::F32, Precision::Int8, Precision::Int8Dynamic] {
        let out = dir.path().join(format!("{precision:?}"));
        let options = ExportOptions {
            precision,
            ..ExportOptions::default()
        };
        let again = export_bundle(&int8, &out, false, &options).unwrap();
        assert_eq!(again.checkpoint, int8, "the source named is the bundle");
        let bundle = Bundle::read_dir(&out).unwrap();
        let m = &bundle.manifest;
        assert_eq!(
            (m.weights, &m.name, m.max_seq_len),
            (precision, &original.manifest.name, 32)
        );
        assert_eq!(m.training, original.manifest.training);
        assert!(
            m.test_metrics.is_none(),
            "figures of other weights are dropped"
        );
        let logits = TractClassifier::new(&bundle).unwrap().logits(&ids).unwrap();
        let gap = max_gap(
            &original_logits
                .iter()
                .map(|l| l.to_vec())
                .collect::<Vec<_>>(),
            &logits,
        );
        match precision {
            // The same int8 values, bit for bit: the same model.
            Precision::Int8 => {
                assert_eq!(int8_values(&bundle), int8_values(&original));
                assert!(gap < 1e-5, "{gap}");
            }
            Precision::Int8Dynamic => {
                assert_eq!(int8_values(&bundle), int8_values(&original));
                assert!(gap < 0.1, "{gap}");
            }
            Precision::F32 => assert!(gap < 1e-5, "the dequantised weights: {gap}"),
        }
    }
    // A bundle has one model: --epoch is refused, naming the bundle.
    let options = ExportOptions {
        epoch: Some(1),
        ..ExportOptions::default()
    };
    let err = export_bundle(&int8, &dir.path().join("e"), false, &options).unwrap_err();
    assert!(err.to_string().contains("is a bundle"), "{err}");
}

/// The initializers of a bundle's graph by name: ONNX data type, shape and bytes.
fn initializers(bundle: &Bundle) -> std::collections::BTreeMap<String, (i32, Vec<i64>, Vec<u8>)> {
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(&bundle.model[..]).unwrap();
    let graph = proto.graph.unwrap();
    graph
        .initializer
        .into_iter()
        .map(|t| (t.name, (t.data_type, t.dims, t.raw_data)))
        .collect()
}

#[test]
fn four_bit_word_embeddings_run_as_the_values_they_store_and_export_again_unchanged() {
    use tract_onnx::pb::tensor_proto::DataType;
    let dir = tempfile::tempdir().unwrap();
    // A hidden size of 32: one block of 4-bit values a row.
    let shape = TinyShape {
        hidden: 32,
        heads: 2,
        ..TinyShape::default()
    };
    let run = tiny_run_shaped(dir.path(), &shape);
    let four_bit = |precision| ExportOptions {
        word_embeddings: EmbeddingFormat::Int4,
        ..export_options(precision)
    };
    let q4 = dir.path().join("q4");
    let exported = export_bundle(&run, &q4, false, &four_bit(Precision::Int8)).unwrap();
    assert!(exported.max_logit_difference <= logit_tolerance(Precision::Int8));
    let bundle = Bundle::read_dir(&q4).unwrap();
    assert_eq!(bundle.manifest.word_embeddings, EmbeddingFormat::Int4);
    let stored = initializers(&bundle);
    let rows = (4 + WORDS.len()) as i64;
    let table = "embeddings.word_embeddings.weight";
    let (kind, dims, _) = &stored[&format!("{table}.int4")];
    assert_eq!(
        (*kind, dims.as_slice()),
        (DataType::Uint8 as i32, &[rows, 16][..])
    );
    let (kind, dims, _) = &stored[&format!("{table}.block_scale")];
    assert_eq!(
        (*kind, dims.as_slice()),
        (DataType::Float16 as i32, &[rows, 1][..])
    );
    assert!(!stored.contains_key(&format!("{table}.int8")));

    // The same model in f32, its weights read back from the 4-bit bundle: the graph unpacks
    // exactly the values it stores.
    let f32 = dir.path().join("f32");
    export_bundle(&q4, &f32, false, &export_options(Precision::F32)).unwrap();
    let ids = tiny_ids(40, 5);
    let q4_logits = TractClassifier::new(&bundle).unwrap().logits(&ids).unwrap();
    let f32_logits = TractClassifier::new(&Bundle::read_dir(&f32).unwrap())
        .unwrap()
        .logits(&ids)
        .unwrap();
    let as_rows = |l: &[[f32; 2]]| l.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
    let gap = max_gap(&as_rows(&f32_logits), &q4_logits);
    assert!(gap < 1e-5, "4-bit graph vs its values in f32: {gap}");
    // Rounding to 4 bits moves the logits from the trained model's, a little.
    let candle = candle_logits(&exported.checkpoint, &ids, 0);
    let gap = max_gap(&candle, &q4_logits);
    assert!(gap > 1e-6 && gap < 0.1, "4-bit vs candle: {gap}");
    if let Some(ort) = onnxruntime_logits(&q4.join("model.onnx"), &ids, 0) {
        let gap = max_gap(&ort, &q4_logits);
        assert!(gap < 1e-4, "4-bit: onnxruntime vs tract: {gap}");
    }
    // Exported again at 4 bits from its own weights, at another precision: the same bytes.
    let again = dir.path().join("again");
    export_bundle(&q4, &again, false, &four_bit(Precision::Int8Dynamic)).unwrap();
    let again = initializers(&Bundle::read_dir(&again).unwrap());
    for suffix in ["int4", "block_scale"] {
        let name = format!("{table}.{suffix}");
        assert_eq!(again[&name].2, stored[&name].2, "{name}");
    }
    // 4 bits go with int8 weights: f32 ones are refused, and so is the Hugging Face layout.
    let err = export_bundle(
        &run,
        &dir.path().join("no"),
        false,
        &four_bit(Precision::F32),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("4-bit word embeddings go with int8"), "{err}");
    let hf = dir.path().join("hf");
    let err = export_hf_layout(&run, &hf, false, &four_bit(Precision::Int8))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4-bit word embeddings are a bundle's"),
        "{err}"
    );
    assert!(!hf.exists(), "nothing written");
}

#[test]
fn a_vocabulary_trimmed_to_a_corpus_gives_its_texts_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    // A corpus that never says "plot" or "hated" (nor "is": no review of the fixture does).
    let corpus_rows: Vec<(String, &str)> = reviews(40, 9)
        .into_iter()
        .filter(|(text, _)| !text.contains("plot") && !text.contains("hated"))
        .collect();
    let corpus = dir.path().join("corpus.csv");
    write_csv(&corpus, &corpus_rows);
    let used: std::collections::BTreeSet<&str> = corpus_rows
        .iter()
        .flat_map(|(text, _)| text.split(' '))
        .collect();
    let trimmed_options = ExportOptions {
        trim_vocab: vec![corpus.clone()],
        ..export_options(Precision::F32)
    };
    let (full, trimmed) = (dir.path().join("full"), dir.path().join("trimmed"));
    export_bundle(&run, &full, false, &export_options(Precision::F32)).unwrap();
    export_bundle(&run, &trimmed, false, &trimmed_options).unwrap();
    let (full, trimmed) = (
        Bundle::read_dir(&full).unwrap(),
        Bundle::read_dir(&trimmed).unwrap(),
    );
    assert_eq!(full.manifest.vocab_size, 4 + WORDS.len());
    // The 4 special tokens and the corpus's words: the tiny vocabulary has no single characters.
    assert_eq!(trimmed.manifest.vocab_size, 4 + used.len());
    assert!(!used.contains("plot") && used.len() < WORDS.len());
    assert!(trimmed.model.len() < full.model.len());
    let (full, trimmed) = (
        TractClassifier::new(&full).unwrap(),
        TractClassifier::new(&trimmed).unwrap(),
    );
    for (text, _) in &corpus_rows {
        let (a, b) = (
            full.classify(text).unwrap(),
            trimmed.classify(text).unwrap(),
        );
        assert_eq!(a.label, b.label);
        assert!(
            (a.score - b.score).abs() < 1e-6,
            "{text}: {} vs {}",
            a.score,
            b.score
        );
    }
    // A word the corpus never used becomes [UNK], and the review is still classified.
    let unseen = trimmed.encoder().encode("the plot was boring").unwrap();
    assert_eq!(unseen.ids.len(), 6);
    trimmed.classify("the plot was boring").unwrap();
    // A corpus without texts where they should be is refused, naming the file and the column.
    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "text,sentiment\nfine,positive\n").unwrap();
    let options = ExportOptions {
        trim_vocab: vec![wrong],
        ..export_options(Precision::F32)
    };
    let err = export_bundle(&run, &dir.path().join("w"), false, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong.csv") && err.contains("no column 'review'"),
        "{err}"
    );
}
