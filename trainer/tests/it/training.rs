//! Training on a tiny random BERT: learning, checkpoints, resumption, refusals.

use std::path::Path;

use candle_core::Device;
use feelings_core::{ReviewEncoder, Truncation};
use feelings_trainer::data::batch::make_batch;
use feelings_trainer::evaluate::compare::{compare_runs, summary_text};
use feelings_trainer::export::onnx::Precision;
use feelings_trainer::export::{export_bundle, ExportOptions};
use feelings_trainer::fixtures::quiet_cpu;
use feelings_trainer::model::{CandleClassifier, Head, ModelFiles};
use feelings_trainer::train::lineage::{continue_from, continue_from_bundle};
use feelings_trainer::train::optim::{AdamW, AdamWConfig};
use feelings_trainer::train::partial;
use feelings_trainer::train::run_dir::{EpochRecord, RunDir, BEST_FILE, METRICS_FILE};
use feelings_trainer::train::settings::{RunStatus, TrainSettings};
use feelings_trainer::train::{resume, train, TrainOptions};

use crate::fixtures::{reviews, tiny_bert, write_csv, TinyShape};

fn options(stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        threads: 1,
        stop_after,
        ..quiet_cpu()
    }
}

/// The largest difference between two tensors of the same shape, failing on a value that is
/// not finite (which `f32::max` would pass over).
fn largest_difference(name: &str, x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "{name} changed shape");
    x.iter()
        .zip(y)
        .map(|(p, q)| {
            assert!(p.is_finite() && q.is_finite(), "{name}: {p} vs {q}");
            (p - q).abs()
        })
        .fold(0f32, f32::max)
}

/// Asserts two safetensors files hold the same tensors within 1e-5.
fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        let diff = largest_difference(name, x, y);
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
}

fn tiny_settings(dir: &Path) -> TrainSettings {
    let model = tiny_bert(&dir.join("model"), &TinyShape::default());
    let data = dir.join("data.csv");
    write_csv(&data, &reviews(96, 3));
    let mut s = TrainSettings::new(data, model);
    s.seq_len = 24;
    s.batch_size = 8;
    s.epochs = 3;
    s.patience = None;
    s.optimizer.lr = 3e-3;
    s
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn loss_falls_on_a_fixed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let files = ModelFiles::locate(&tiny_bert(dir.path(), &TinyShape::default())).unwrap();
    let model = CandleClassifier::load(&files, &Device::Cpu, Head::Fresh { seed: 1 }).unwrap();
    let tokenizer = std::fs::read(&files.tokenizer).unwrap();
    let encoder = ReviewEncoder::from_bytes(&tokenizer, 32, Truncation::Tail).unwrap();
    let rows = reviews(16, 5);
    let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let ids: Vec<Vec<u32>> = encoder
        .encode_batch(&texts)
        .unwrap()
        .into_iter()
        .map(|e| e.ids)
        .collect();
    let labels: Vec<u32> = rows.iter().map(|r| u32::from(r.1 == "positive")).collect();
    let batch = make_batch(&ids, &labels, &(0..16).collect::<Vec<_>>(), 0, &Device::Cpu).unwrap();
    let config = AdamWConfig {
        lr: 1e-2,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(model.varmap(), config, &[]).unwrap();
    let mut losses = Vec::new();
    for _ in 0..25 {
        let logits = model
            .forward(&batch.input_ids, &batch.attention_mask, None)
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
    }
    assert!(
        losses[24] < 0.5 * losses[0],
        "loss did not fall: {losses:?}"
    );
}

#[test]
fn frozen_word_embeddings_stay_as_loaded_while_the_rest_learns() {
    let word = "embeddings.word_embeddings.weight";
    let query = "encoder.layer.0.attention.self.query.weight";
    // Checkpoints write `bert.`-prefixed names; the base model also holds integer tensors.
    let named = |file: &Path, name: &str| -> Vec<f32> {
        let all = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
        let found = all.iter().find(|(n, _)| n.ends_with(name));
        let tensor = found.unwrap_or_else(|| panic!("no {name}")).1;
        tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    for freeze in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = tiny_settings(dir.path());
        settings.epochs = 1;
        settings.freeze_embeddings = freeze;
        let base = settings.model.join("model.safetensors");
        let out = dir.path().join("run");
        train(settings, &out, false, &options(None)).unwrap();
        let checkpoint = out.join("checkpoint-epoch-1");
        let trained = checkpoint.join("model.safetensors");
        let moved = |name| largest_difference(name, &named(&base, name), &named(&trained, name));
        assert!(moved(query) > 1e-4, "the encoder learns either way");
        assert_eq!(
            moved(word) == 0.0,
            freeze,
            "word embeddings moved by {}",
            moved(word)
        );
        let moments =
            candle_core::safetensors::load(checkpoint.join("optimizer.safetensors"), &Device::Cpu)
                .unwrap();
        assert_eq!(moments.contains_key(&format!("m.{word}")), !freeze);
        assert!(moments.contains_key(&format!("m.{query}")));
    }
}

#[test]
fn a_run_writes_checkpoints_metrics_and_the_best_mark() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(dir.path());
    let out = dir.path().join("run");
    let info = train(settings, &out, false, &options(None)).unwrap();
    assert_eq!(info.status, RunStatus::Finished);
    assert_eq!(info.epochs_completed, 3);
    let test = info.test.as_ref().expect("test metrics once finished");
    assert_eq!(test.count, 10);
    for epoch in 1..=3 {
        let cp = out.join(format!("checkpoint-epoch-{epoch}"));
        for file in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "checkpoint.json",
        ] {
            assert!(
                cp.join(file).is_file(),
                "{} missing",
                cp.join(file).display()
            );
        }
        // Only the newest checkpoint keeps the optimiser state.
        assert_eq!(cp.join("optimizer.safetensors").exists(), epoch == 3);
    }
    let metrics = std::fs::read_to_string(out.join(METRICS_FILE)).unwrap();
    let rows: Vec<EpochRecord> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(rows[2].train_loss < rows[0].train_loss, "{rows:?}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(BEST_FILE)).unwrap()).unwrap();
    let best_epoch = best["epoch"].as_u64().unwrap() as usize;
    let lowest = rows
        .iter()
        .min_by(|a, b| a.validation.loss.total_cmp(&b.validation.loss))
        .unwrap();
    assert_eq!(best_epoch, lowest.epoch);
    assert_eq!(Some(best_epoch), info.best_epoch);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["settings"]["seed"], 42);
    assert_eq!(run["data_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(run["subsets"]["train"], 76);
}

#[test]
fn early_stopping_ends_the_run_when_validation_stops_improving() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    // A learning rate this high makes the validation loss worse after the first epoch.
    settings.optimizer.lr = 0.5;
    settings.optimizer.max_grad_norm = 1e6;
    settings.epochs = 6;
    settings.patience = Some(1);
    let info = train(settings, &dir.path().join("run"), false, &options(None)).unwrap();
    let records = RunDir::open(&dir.path().join("run"))
        .unwrap()
        .records()
        .unwrap();
    assert!(records.len() < 6, "ran all {} epochs", records.len());
    assert_eq!(info.status, RunStatus::EarlyStopped);
    let best = info.best_epoch.unwrap();
    assert_eq!(records.len(), best + 1);
}

#[test]
fn resuming_after_a_kill_gives_the_same_model_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(dir.path());
    let whole = dir.path().join("whole");
    train(settings.clone(), &whole, false, &options(None)).unwrap();

    let cut = dir.path().join("cut");
    let first = train(settings, &cut, false, &options(Some(1))).unwrap();
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(first.epochs_completed, 1);
    // The kill came while epoch 2 was being written: a torn temporary checkpoint is left.
    std::fs::create_dir_all(cut.join("checkpoint-epoch-2.tmp")).unwrap();
    std::fs::write(
        cut.join("checkpoint-epoch-2.tmp/model.safetensors"),
        b"torn",
    )
    .unwrap();
    let resumed = resume(&cut, &options(None)).unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    assert_eq!(resumed.epochs_completed, 3);
    assert!(!cut.join("checkpoint-epoch-2.tmp").exists());

    assert_same_weights(
        &whole.join("checkpoint-epoch-3/model.safetensors"),
        &cut.join("checkpoint-epoch-3/model.safetensors"),
    );
    let ra = RunDir::open(&whole).unwrap().records().unwrap();
    let rb = RunDir::open(&cut).unwrap().records().unwrap();
    assert!((ra[2].validation.loss - rb[2].validation.loss).abs() < 1e-5);
    assert_eq!(ra[2].global_step, rb[2].global_step);
}

#[test]
fn a_run_killed_mid_epoch_resumes_from_its_partial_epoch_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(dir.path());
    let whole = dir.path().join("whole");
    train(settings.clone(), &whole, false, &options(None)).unwrap();

    let cut = dir.path().join("cut");
    let stop_at = |steps| TrainOptions {
        stop_after_steps: Some(steps),
        save_every: Some(std::time::Duration::ZERO),
        ..options(None)
    };
    let first = train(settings, &cut, false, &stop_at(4)).unwrap();
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(first.epochs_completed, 0);
    let (progress, _) = partial::load(&cut)
        .unwrap()
        .expect("a partial epoch is saved");
    assert_eq!(
        (progress.epoch, progress.batches_done, progress.global_step),
        (1, 4, 4)
    );
    assert!(!cut.join("checkpoint-epoch-1").exists());

    // Through the end of epoch 1 into epoch 2; a kill then leaves a torn temporary copy.
    let second = resume(&cut, &stop_at(9)).unwrap();
    assert_eq!(second.epochs_completed, 1);
    let (progress, _) = partial::load(&cut).unwrap().unwrap();
    assert_eq!(progress.epoch, 2);
    assert_eq!(progress.global_step, 13);
    std::fs::create_dir_all(cut.join("partial-epoch.tmp")).unwrap();
    std::fs::write(cut.join("partial-epoch.tmp/model.safetensors"), b"torn").unwrap();

    let resumed = resume(&cut, &options(None)).unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    assert!(partial::load(&cut).unwrap().is_none());
    assert!(!cut.join("partial-epoch.tmp").exists());
    assert_same_weights(
        &whole.join("checkpoint-epoch-3/model.safetensors"),
        &cut.join("checkpoint-epoch-3/model.safetensors"),
    );
    let ra = RunDir::open(&whole).unwrap().records().unwrap();
    let rb = RunDir::open(&cut).unwrap().records().unwrap();
    for (a, b) in ra.iter().zip(&rb) {
        assert_eq!(a.global_step, b.global_step);
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-6,
            "epoch {}",
            a.epoch
        );
        assert_eq!(a.train_accuracy, b.train_accuracy);
        assert!((a.validation.loss - b.validation.loss).abs() < 1e-5);
    }
}

#[test]
fn a_stop_asked_for_saves_the_epoch_before_the_next_step() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.epochs = 1;
    let whole = dir.path().join("whole");
    train(settings.clone(), &whole, false, &options(None)).unwrap();

    // Asked while the data is prepared (Ctrl-C early): nothing is written, nothing replaced.
    let asked = options(None);
    asked.stop.store(true, Ordering::Relaxed);
    let err = train(settings.clone(), &whole, true, &asked).unwrap_err();
    assert!(
        err.to_string().contains("stopped before training started"),
        "{err}"
    );
    assert_eq!(RunDir::open(&whole).unwrap().records().unwrap().len(), 1);

    // Asked in the middle of an epoch: it is saved where it stood.
    let cut = dir.path().join("cut");
    let first = TrainOptions {
        stop_after_steps: Some(3),
        ..options(None)
    };
    train(settings, &cut, false, &first).unwrap();
    let stopped = resume(&cut, &asked).unwrap();
    assert_eq!(stopped.status, RunStatus::Running);
    let (progress, _) = partial::load(&cut).unwrap().expect("the epoch is saved");
    assert_eq!((progress.epoch, progress.batches_done), (1, 3));

    let resumed = resume(&cut, &options(None)).unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    assert_same_weights(
        &whole.join("checkpoint-epoch-1/model.safetensors"),
        &cut.join("checkpoint-epoch-1/model.safetensors"),
    );
}

#[test]
fn a_checkpoint_reloads_to_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.epochs = 1;
    let out = dir.path().join("run");
    train(settings, &out, false, &options(None)).unwrap();
    let files = ModelFiles::locate(&out.join("checkpoint-epoch-1")).unwrap();
    let a = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap();
    let b = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap();
    let ids = candle_core::Tensor::new(&[[2u32, 4, 5, 8, 3]], &Device::Cpu).unwrap();
    let mask = ids
        .ones_like()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let la = a
        .forward(&ids, &mask, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let lb = b
        .forward(&ids, &mask, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(la, lb);
    // A base model has no head to reload.
    let base = ModelFiles::locate(&dir.path().join("model")).unwrap();
    let err = CandleClassifier::load(&base, &Device::Cpu, Head::FromFile)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("classifier.weight"), "{err}");
}

#[test]
fn bad_models_and_folders_are_refused_without_touching_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(dir.path());

    // A model folder missing files.
    let empty = dir.path().join("empty-model");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let mut s = settings.clone();
    s.model = empty;
    let err = train(s, &dir.path().join("o1"), false, &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing model.safetensors, tokenizer.json"),
        "{err}"
    );
    assert!(
        !dir.path().join("o1").exists(),
        "nothing is written for a bad model"
    );

    // Weights that do not match the configuration.
    let wrong = tiny_bert(
        &dir.path().join("wrong"),
        &TinyShape {
            hidden: 12,
            heads: 2,
            ..TinyShape::default()
        },
    );
    let config = std::fs::read_to_string(settings.model.join("config.json")).unwrap();
    std::fs::write(wrong.join("config.json"), config).unwrap();
    let mut s = settings.clone();
    s.model = wrong;
    let err = train(s, &dir.path().join("o2"), false, &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("embeddings.word_embeddings.weight")
            && err.contains("shape"),
        "{err}"
    );

    // A tokenizer whose vocabulary is larger than the embedding.
    let small_vocab = tiny_bert(&dir.path().join("small-vocab"), &TinyShape::default());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(small_vocab.join("config.json")).unwrap())
            .unwrap();
    config["vocab_size"] = serde_json::json!(5);
    std::fs::write(small_vocab.join("config.json"), config.to_string()).unwrap();
    let mut s = settings.clone();
    s.model = small_vocab;
    let err = train(s, &dir.path().join("o3"), false, &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("do not belong together"),
        "{err}"
    );

    // A sequence length beyond the position embeddings.
    let mut s = settings.clone();
    s.seq_len = 65;
    let err = train(s, &dir.path().join("o4"), false, &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("max_position_embeddings 64"), "{err}");

    // An output folder that holds another run is refused and left as it was.
    let out = dir.path().join("run");
    let mut one = settings.clone();
    one.epochs = 1;
    train(one.clone(), &out, false, &options(None)).unwrap();
    let before = std::fs::read(out.join("checkpoint-epoch-1/model.safetensors")).unwrap();
    let err = train(one.clone(), &out, false, &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("holds another run")
            && err.contains("--resume")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        before,
        std::fs::read(out.join("checkpoint-epoch-1/model.safetensors")).unwrap()
    );
    // ... unless asked to overwrite; files that are not the run's are kept.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    one.seed = 7;
    train(one, &out, true, &options(None)).unwrap();
    assert!(out.join("notes.txt").exists());
    assert_ne!(
        before,
        std::fs::read(out.join("checkpoint-epoch-1/model.safetensors")).unwrap()
    );

    // Resuming a folder that is not a run.
    let err = resume(&dir.path().join("model"), &options(None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a run folder"), "{err}");
}

#[test]
fn a_bert_prefixed_checkpoint_loads_like_a_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tiny_bert(&dir.path().join("plain"), &TinyShape::default());
    let prefixed = tiny_bert(
        &dir.path().join("prefixed"),
        &TinyShape {
            prefix: "bert.",
            ..TinyShape::default()
        },
    );
    let a = CandleClassifier::load(
        &ModelFiles::locate(&plain).unwrap(),
        &Device::Cpu,
        Head::Fresh { seed: 3 },
    )
    .unwrap();
    let b = CandleClassifier::load(
        &ModelFiles::locate(&prefixed).unwrap(),
        &Device::Cpu,
        Head::Fresh { seed: 3 },
    )
    .unwrap();
    let ids = candle_core::Tensor::new(&[[2u32, 7, 9, 3]], &Device::Cpu).unwrap();
    let mask = ids
        .ones_like()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    assert_eq!(
        a.forward(&ids, &mask, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        b.forward(&ids, &mask, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    );
    // The pooler is part of the head (BertForSequenceClassification); position_ids are not
    // trained or saved.
    let names: Vec<String> = a.varmap().data().lock().unwrap().keys().cloned().collect();
    assert!(names.iter().all(|n| !n.contains("position_ids")));
    for head in ["pooler.dense.weight", "classifier.weight"] {
        assert!(names.contains(&head.to_string()), "{names:?}");
    }
}

/// The logits of `model` on a fixed five-token review.
fn fixed_logits(model: &CandleClassifier) -> Vec<Vec<f32>> {
    let ids = candle_core::Tensor::new(&[[2u32, 4, 5, 8, 3]], &Device::Cpu).unwrap();
    let mask = ids
        .ones_like()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    model
        .forward(&ids, &mask, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn a_checkpoint_is_a_bert_for_sequence_classification_and_old_cls_heads_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.epochs = 1;
    let out = dir.path().join("run");
    train(settings, &out, false, &options(None)).unwrap();
    let checkpoint = out.join("checkpoint-epoch-1");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoint.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
    assert_eq!(
        config["id2label"],
        serde_json::json!({"0": "negative", "1": "positive"})
    );
    assert_eq!(
        config["label2id"],
        serde_json::json!({"negative": 0, "positive": 1})
    );
    assert_eq!(config["problem_type"], "single_label_classification");
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("model/config.json")).unwrap())
            .unwrap();
    for (field, value) in base.as_object().unwrap() {
        if field != "architectures" {
            assert_eq!(&config[field], value, "the base model's {field} is kept");
        }
    }
    let names: Vec<String> = weights(&checkpoint.join("model.safetensors"))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for name in [
        "bert.pooler.dense.weight",
        "bert.embeddings.word_embeddings.weight",
        "classifier.weight",
    ] {
        assert!(names.contains(&name.to_string()), "{name} not in {names:?}");
    }
    let files = ModelFiles::locate(&checkpoint).unwrap();
    let pooled = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap();
    assert!(pooled.has_pooler());

    // A checkpoint written before the pooler joined the head: its config names no
    // BertForSequenceClassification, and its head reads the raw [CLS] state.
    let mut old = config.clone();
    old["architectures"] = serde_json::json!(["BertModel"]);
    std::fs::write(
        checkpoint.join("config.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let cls = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile).unwrap();
    assert!(!cls.has_pooler());
    let (a, b) = (fixed_logits(&pooled), fixed_logits(&cls));
    assert!(b[0].iter().all(|l| l.is_finite()));
    assert_ne!(a, b, "the two heads compute different functions");
}

#[test]
fn a_run_continued_from_a_checkpoint_starts_from_its_weights_and_records_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.epochs = 1;
    let parent = dir.path().join("parent");
    train(settings, &parent, false, &options(None)).unwrap();
    let parent_weights = parent.join("checkpoint-epoch-1").join("model.safetensors");

    // Continued with a learning rate too small to move anything: it ends where it started.
    let (mut settings, default_out) = continue_from(&parent, false).unwrap();
    assert!(
        default_out.ends_with("parent-from-epoch-1"),
        "{default_out:?}"
    );
    settings.optimizer.lr = 1e-12;
    settings.batch_size = 4;
    let child = dir.path().join("child");
    let info = train(settings, &child, false, &options(None)).unwrap();
    let from = info.settings.from.clone().expect("the parent is recorded");
    assert_eq!((from.epoch, from.new_head), (1, false));
    assert_eq!(from.run, std::fs::canonicalize(&parent).unwrap());
    assert_eq!(info.settings.batch_size, 4);
    assert_eq!(info.subsets.train, 76, "the parent's data and split");
    assert_same_weights(
        &parent_weights,
        &child.join("checkpoint-epoch-1").join("model.safetensors"),
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(child.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["settings"]["from"]["epoch"], 1);

    // With a new head, only the encoder and pooler carry over.
    let (mut settings, _) = continue_from(&parent.join("checkpoint-epoch-1"), true).unwrap();
    settings.optimizer.lr = 1e-12;
    let fresh = dir.path().join("fresh-head");
    train(settings, &fresh, false, &options(None)).unwrap();
    let (before, after) = (
        weights(&parent_weights),
        weights(&fresh.join("checkpoint-epoch-1").join("model.safetensors")),
    );
    assert_eq!(before.len(), after.len());
    for ((name, x), (other, y)) in before.iter().zip(&after) {
        assert_eq!(name, other);
        let diff = largest_difference(name, x, y);
        if name == "classifier.weight" {
            assert!(diff > 1e-3, "the classifier is new");
        } else if name != "classifier.bias" {
            assert!(diff < 1e-5, "{name} carried over, yet differs by {diff}");
        }
    }

    // Lineage in the comparison.
    let comparison = compare_runs(&[parent.clone(), child.clone()]).unwrap();
    let text = summary_text(&comparison);
    assert!(
        text.contains("child continues parent from its checkpoint-epoch-1"),
        "{text}"
    );
    // A folder that is no run is refused, naming it.
    let err = continue_from(dir.path(), false).err().unwrap().to_string();
    assert!(err.contains("no run.json"), "{err}");
}

#[test]
fn a_run_continued_from_a_bundle_starts_from_its_stored_weights_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.epochs = 1;
    let data = settings.data.clone();
    let parent = dir.path().join("parent");
    train(settings, &parent, false, &options(None)).unwrap();
    let bundle = dir.path().join("bundle");
    let f32_bundle = ExportOptions {
        precision: Precision::F32,
        name: Some("tiny".into()),
        ..ExportOptions::default()
    };
    export_bundle(&parent, &bundle, false, &f32_bundle).unwrap();

    let (mut settings, default_out) = continue_from_bundle(&bundle, false, data.clone()).unwrap();
    assert!(default_out.ends_with("bundle-continued"), "{default_out:?}");
    assert_eq!(settings.seq_len, 24, "the bundle's sequence length");
    settings.optimizer.lr = 1e-12;
    let child = dir.path().join("child");
    let info = train(settings, &child, false, &options(None)).unwrap();
    let from = info.settings.from.clone().expect("the bundle is recorded");
    assert_eq!(from.run, std::fs::canonicalize(&bundle).unwrap());
    assert_eq!((from.epoch, from.new_head, from.bundle), (1, false, true));
    assert_eq!(
        from.data_sha256.as_ref(),
        Some(&info.data_sha256),
        "the same data"
    );
    // The bundle stores token type 0's embedding only (a review has no other): the rest are
    // the checkpoint's weights, head included.
    let (before, after) = (
        weights(&parent.join("checkpoint-epoch-1").join("model.safetensors")),
        weights(&child.join("checkpoint-epoch-1").join("model.safetensors")),
    );
    assert_eq!(before.len(), after.len());
    for ((name, x), (other, y)) in before.iter().zip(&after) {
        assert_eq!(name, other);
        if name != "bert.embeddings.token_type_embeddings.weight" {
            let diff = largest_difference(name, x, y);
            assert!(diff < 1e-5, "{name} differs by {diff}");
        }
    }
    let text = summary_text(&compare_runs(&[parent.clone(), child]).unwrap());
    assert!(
        text.contains("child continues the bundle bundle (epoch 1 of its run)"),
        "{text}"
    );

    // As a base model (--model), a bundle gives its encoder and pooler to a new classifier.
    let mut settings = TrainSettings::new(data, bundle);
    settings.seq_len = 24;
    settings.epochs = 1;
    settings.optimizer.lr = 1e-12;
    let based = dir.path().join("based");
    train(settings, &based, false, &options(None)).unwrap();
    let after = weights(&based.join("checkpoint-epoch-1").join("model.safetensors"));
    for ((name, x), (_, y)) in before.iter().zip(&after) {
        let diff = largest_difference(name, x, y);
        if name == "classifier.weight" {
            assert!(diff > 1e-3, "the classifier is new");
        } else if !name.starts_with("classifier.") && !name.contains("token_type") {
            assert!(diff < 1e-5, "{name} carried over, yet differs by {diff}");
        }
    }
}

#[test]
fn sentence_windows_change_what_is_learnt_and_a_resumed_run_draws_the_same_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(dir.path());
    let rows: Vec<(String, &str)> = reviews(96, 3)
        .into_iter()
        .map(|(text, label)| (format!("{text}. the plot was long. {text}!"), label))
        .collect();
    write_csv(&settings.data, &rows);
    settings.epochs = 2;
    let plain = dir.path().join("plain");
    train(settings.clone(), &plain, false, &options(None)).unwrap();

    settings.sentence_windows = 0.5;
    let windowed = dir.path().join("windowed");
    let info = train(settings.clone(), &windowed, false, &options(None)).unwrap();
    assert_eq!(info.status, RunStatus::Finished);
    assert_eq!(info.settings.sentence_windows, 0.5, "recorded in run.json");
    let last = |run: &Path| weights(&run.join("checkpoint-epoch-2/model.safetensors"));
    let moved = last(&plain)
        .iter()
        .zip(&last(&windowed))
        .map(|((name, x), (_, y))| largest_difference(name, x, y))
        .fold(0f32, f32::max);
    assert!(moved > 1e-4, "windows change the training: {moved}");

    let cut = dir.path().join("cut");
    let stop_at = TrainOptions {
        stop_after_steps: Some(5),
        save_every: Some(std::time::Duration::ZERO),
        ..options(None)
    };
    train(settings, &cut, false, &stop_at).unwrap();
    assert_eq!(
        resume(&cut, &options(None)).unwrap().status,
        RunStatus::Finished
    );
    assert_same_weights(
        &windowed.join("checkpoint-epoch-2/model.safetensors"),
        &cut.join("checkpoint-epoch-2/model.safetensors"),
    );
}
