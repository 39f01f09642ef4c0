//! The shipped default model, `models/imdb-minilm/`: still as good as its card says, measured
//! through tract (the deployed inference core) on a fixed sample of the official test reviews.

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::Bundle;
use feelings_trainer::data::split::SplitOptions;
use feelings_trainer::data::DataOptions;
use feelings_trainer::evaluate::{evaluate_source, DataChoice, EvaluateOptions, Subset};

/// Test reviews the check classifies (the first of the official test split, shuffled by seed 42).
const SAMPLE: usize = 1000;
/// How far below the card's figure the sample's accuracy may fall.
const TOLERANCE: f64 = 0.015;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_shipped_model_keeps_its_card_accuracy_on_1000_official_test_reviews() {
    let bundle = repository().join("models/imdb-minilm");
    let manifest = Bundle::read_dir(&bundle)
        .expect("models/imdb-minilm is a valid bundle")
        .manifest;
    let card = manifest
        .test_metrics
        .expect("the shipped manifest records its test figures");
    assert_eq!(card.count, 25_000, "measured on every official test review");
    let readme = std::fs::read_to_string(bundle.join("README.md")).expect("a model card");
    let stated = format!("{:.2} %", 100.0 * card.accuracy);
    assert!(
        readme.contains(&stated),
        "the card does not state the manifest's accuracy {stated}"
    );

    feelings_core::set_inference_threads(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let options = EvaluateOptions {
        data: Some(DataChoice {
            path: repository().join("../shared/data/imdb/imdb.csv.gz"),
            columns: DataOptions {
                split_column: Some("split".into()),
                ..DataOptions::default()
            },
            split: SplitOptions {
                use_split_column: true,
                val_fraction: 0.05,
                ..SplitOptions::default()
            },
            seed: manifest.training.seed,
        }),
        subset: Subset::Test,
        max: Some(SAMPLE),
        shortest: false,
        excerpt: None,
        threshold: None,
        tune_threshold: false,
        checkpoint: None,
        device: Device::Cpu,
        batch_size: 16,
        progress: false,
    };
    let measured = evaluate_source(&bundle, &options).unwrap().metrics;
    assert_eq!(measured.count, SAMPLE);
    println!(
        "{SAMPLE} test reviews: accuracy {:.2} % (card: {stated})",
        100.0 * measured.accuracy
    );
    assert!(
        measured.accuracy >= card.accuracy - TOLERANCE,
        "accuracy {:.4} on {SAMPLE} test reviews is more than {TOLERANCE} below the card's {:.4}",
        measured.accuracy,
        card.accuracy
    );
}
