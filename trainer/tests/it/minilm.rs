//! Checks on the real pretrained MiniLM-L6 shipped in ../shared.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use feelings_core::{ReviewEncoder, Truncation};
use feelings_trainer::data::batch::make_batch;
use feelings_trainer::export::check_logits;
use feelings_trainer::export::onnx::Precision;
use feelings_trainer::export::{export_bundle, ExportOptions};
use feelings_trainer::fixtures::{quiet_cpu, train_and_export};
use feelings_trainer::model::bert::Bert;
use feelings_trainer::model::weights::{VarLoader, WeightFile};
use feelings_trainer::model::{CandleClassifier, Head, ModelFiles};
use feelings_trainer::train::settings::TrainSettings;
use feelings_trainer::train::train;

use crate::fixtures::{imdb_reviews, minilm_l6, onnxruntime_logits, transformers_logits};

/// Writes `n` reviews spread evenly over the official `split` as a review,sentiment CSV.
fn write_reviews(path: &std::path::Path, split: &str, n: usize) {
    let all: Vec<_> = imdb_reviews()
        .into_iter()
        .filter(|e| e.split.as_deref() == Some(split))
        .collect();
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["review", "sentiment"]).unwrap();
    for e in all.iter().step_by(all.len() / n).take(n) {
        w.write_record([
            e.text.as_str(),
            if e.label == 1 { "positive" } else { "negative" },
        ])
        .unwrap();
    }
    w.flush().unwrap();
}

/// A padded batch of real reviews of different lengths.
fn review_batch(files: &ModelFiles, seq_len: usize) -> (Tensor, Tensor, Tensor) {
    let tokenizer = std::fs::read(&files.tokenizer).unwrap();
    let encoder = ReviewEncoder::from_bytes(&tokenizer, seq_len, Truncation::Tail).unwrap();
    let texts = [
        "It was really just ok. Meh.",
        "One of the best films I have seen this year: the acting is superb and the story moving.",
        "Terrible. I walked out after twenty minutes and I want my money back.",
        "",
    ];
    let ids: Vec<Vec<u32>> = encoder
        .encode_batch(&texts)
        .unwrap()
        .into_iter()
        .map(|e| e.ids)
        .collect();
    let batch = make_batch(
        &ids,
        &[0, 1, 0, 1],
        &[0, 1, 2, 3],
        encoder.pad_id(),
        &Device::Cpu,
    )
    .unwrap();
    (batch.input_ids, batch.attention_mask, batch.labels)
}

#[test]
fn in_evaluation_the_encoder_matches_candle_transformers_bert() {
    let files = ModelFiles::locate(&minilm_l6()).unwrap();
    let (ids, mask, _) = review_batch(&files, 64);

    let weights = WeightFile::open(&files.weights).unwrap();
    let varmap = VarMap::new();
    let config = files.read_config().unwrap();
    let ours = Bert::load(&VarLoader::new(&weights, &varmap, &Device::Cpu), &config).unwrap();
    let ours = ours.forward(&ids, &mask, None).unwrap();

    let reference_config: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[&files.weights], DType::F32, &Device::Cpu).unwrap()
    };
    let reference =
        candle_transformers::models::bert::BertModel::load(vb, &reference_config).unwrap();
    let theirs = reference
        .forward(
            &ids,
            &ids.zeros_like().unwrap(),
            Some(&mask.to_dtype(DType::U32).unwrap()),
        )
        .unwrap();

    // Compare the hidden states of real tokens (padding rows are meaningless in both).
    let mask3 = mask
        .unsqueeze(2)
        .unwrap()
        .broadcast_as(ours.shape())
        .unwrap();
    let diff = ((ours - theirs).unwrap().abs().unwrap() * mask3)
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "max difference {diff}");
}

#[test]
fn one_backward_pass_reaches_every_variable() {
    let files = ModelFiles::locate(&minilm_l6()).unwrap();
    let (ids, mask, labels) = review_batch(&files, 32);
    let model = CandleClassifier::load(&files, &Device::Cpu, Head::Fresh { seed: 0 }).unwrap();
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
    let logits = model.forward(&ids, &mask, Some(&mut rng)).unwrap();
    let grads = candle_nn::loss::cross_entropy(&logits, &labels)
        .unwrap()
        .backward()
        .unwrap();
    let vars = model.varmap().data().lock().unwrap();
    // 6 layers x 16 + 5 embedding tensors + 4 head tensors (pooler and classifier).
    assert_eq!(vars.len(), 6 * 16 + 5 + 4);
    let without: Vec<&String> = vars
        .iter()
        .filter(|(_, var)| {
            grads.get(var).is_none_or(|g| {
                g.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
            })
        })
        .map(|(name, _)| name)
        .collect();
    assert!(without.is_empty(), "no gradient for {without:?}");
}

#[test]
fn fine_tuning_minilm_briefly_leaves_a_checkpoint_that_reloads_to_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    // 64 + 2 x 16 reviews from the official training split.
    write_reviews(&dir.path().join("few.csv"), "train", 96);

    let mut settings = TrainSettings::new(dir.path().join("few.csv"), minilm_l6());
    settings.seq_len = 64;
    settings.epochs = 1;
    settings.split.val_fraction = 1.0 / 6.0;
    settings.split.test_fraction = 1.0 / 6.0;
    let out = dir.path().join("run");
    let info = train(settings, &out, false, &quiet_cpu()).unwrap();
    assert_eq!(info.subsets.train, 64);
    assert_eq!(info.epochs_completed, 1);

    let checkpoint = ModelFiles::locate(&out.join("checkpoint-epoch-1")).unwrap();
    let (ids, mask, _) = review_batch(&checkpoint, 64);
    let reloaded = CandleClassifier::load(&checkpoint, &Device::Cpu, Head::FromFile).unwrap();
    let a = reloaded.forward(&ids, &mask, None).unwrap();
    // The same weights evaluated by a fresh load of the saved file must agree; and they must
    // differ from the base model with the same fresh head (training changed them).
    let again = CandleClassifier::load(&checkpoint, &Device::Cpu, Head::FromFile).unwrap();
    let b = again.forward(&ids, &mask, None).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    let base = CandleClassifier::load(
        &ModelFiles::locate(&minilm_l6()).unwrap(),
        &Device::Cpu,
        Head::Fresh { seed: 0 },
    )
    .unwrap();
    let c = base.forward(&ids, &mask, None).unwrap();
    let moved = (a - c)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-4, "training did not change the logits");

    // Hugging Face transformers loads the checkpoint as BertForSequenceClassification and
    // computes the same logits, on 200 test reviews at seq 256.
    let tokenizer = std::fs::read(&checkpoint.tokenizer).unwrap();
    let encoder = ReviewEncoder::from_bytes(&tokenizer, 256, Truncation::Tail).unwrap();
    let texts: Vec<String> = imdb_reviews()
        .into_iter()
        .filter(|r| r.split.as_deref() == Some("test"))
        .step_by(97)
        .take(200)
        .map(|r| r.text)
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids: Vec<Vec<u32>> = encoder
        .encode_batch(&refs)
        .unwrap()
        .into_iter()
        .map(|e| e.ids)
        .collect();
    if let Some(theirs) = transformers_logits(&checkpoint.dir, &ids, encoder.pad_id()) {
        assert_eq!(theirs.len(), ids.len(), "one row of logits per review");
        let mut worst = 0f32;
        for chunk in (0..ids.len()).step_by(16) {
            let rows = &ids[chunk..(chunk + 16).min(ids.len())];
            let labels = vec![0; rows.len()];
            let order: Vec<usize> = (0..rows.len()).collect();
            let batch = make_batch(rows, &labels, &order, encoder.pad_id(), &Device::Cpu).unwrap();
            let ours = reloaded
                .forward(&batch.input_ids, &batch.attention_mask, None)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (a, b) in ours.iter().zip(&theirs[chunk..]) {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    // f32::max would pass a NaN over.
                    assert!(x.is_finite() && y.is_finite(), "{x} vs {y}");
                    worst = worst.max((x - y).abs());
                }
            }
        }
        eprintln!("transformers vs feelings, 200 test reviews at seq 256: largest logit difference {worst:e}");
        assert!(worst <= 1e-4, "largest logit difference {worst}");
    }
}

#[test]
fn exported_minilm_gives_candles_logits_on_200_reviews_at_seq_256() {
    let dir = tempfile::tempdir().unwrap();
    write_reviews(&dir.path().join("few.csv"), "train", 24);
    let mut settings = TrainSettings::new(dir.path().join("few.csv"), minilm_l6());
    settings.epochs = 1;
    settings.split.val_fraction = 1.0 / 6.0;
    settings.split.test_fraction = 1.0 / 6.0;
    let exported = train_and_export(
        settings,
        dir.path(),
        &quiet_cpu(),
        &ExportOptions::default(),
    )
    .unwrap();
    let core = feelings_core::TractClassifier::new(&exported.bundle).unwrap();
    let test: Vec<_> = imdb_reviews()
        .into_iter()
        .filter(|e| e.split.as_deref() == Some("test"))
        .collect();
    let texts: Vec<&str> = test
        .iter()
        .step_by(125)
        .take(200)
        .map(|e| e.text.as_str())
        .collect();
    let ids: Vec<Vec<u32>> = core
        .encoder()
        .encode_batch(&texts)
        .unwrap()
        .into_iter()
        .map(|e| e.ids)
        .collect();
    assert!(
        ids.iter().any(|s| s.len() == 256),
        "some reviews fill the sequence"
    );
    let tract = core.logits(&ids).unwrap();
    let model = CandleClassifier::load(
        &ModelFiles::locate(&exported.checkpoint).unwrap(),
        &Device::Cpu,
        Head::FromFile,
    )
    .unwrap();
    let mut worst = 0f32;
    let mut all_candle = Vec::new();
    for chunk in (0..ids.len()).collect::<Vec<_>>().chunks(16) {
        let batch = make_batch(&ids, &vec![0; ids.len()], chunk, 0, &Device::Cpu).unwrap();
        let candle = model
            .forward(&batch.input_ids, &batch.attention_mask, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, &i) in candle.iter().zip(chunk) {
            for k in 0..2 {
                worst = worst.max((row[k] - tract[i][k]).abs());
            }
            all_candle.push([row[0], row[1]]);
            let candle_positive = row[1] > row[0];
            let tract_positive = tract[i][1] > tract[i][0];
            assert_eq!(
                candle_positive, tract_positive,
                "review {i} decided differently"
            );
        }
    }
    assert!(worst <= 1e-4, "largest logit difference {worst}");
    if let Some(ort) = onnxruntime_logits(&dir.path().join("bundle/model.onnx"), &ids, 0) {
        let gap = ort
            .iter()
            .zip(&tract)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max);
        assert!(gap <= 1e-4, "onnxruntime vs tract: {gap}");
    }

    // int8, as the web ships it: the exporter's own check holds on all 200 reviews.
    let exported8 = export_bundle(
        &dir.path().join("run"),
        &dir.path().join("bundle-int8"),
        false,
        &ExportOptions {
            precision: Precision::Int8,
            ..ExportOptions::default()
        },
    )
    .unwrap();
    let tract8 = feelings_core::TractClassifier::new(&exported8.bundle)
        .unwrap()
        .logits(&ids)
        .unwrap();
    let gap = check_logits(&all_candle, &tract8, Precision::Int8, 0.5).unwrap();
    println!(
        "int8: largest logit difference {:.3e} on the check reviews, {gap:.3e} on 200 reviews",
        exported8.max_logit_difference
    );
}
