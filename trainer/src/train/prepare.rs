//! Everything a run reads and checks before its folder is touched: the base model's config and
//! tokenizer, the data, its split, and the encoded training and validation subsets.

use feelings_core::{Labels, ReviewEncoder};
use tracing::{info, warn};

use crate::data::encode::encode_all;
use crate::data::split::{split, Splits};
use crate::data::windows::draw_windows;
use crate::data::{load_dataset, Example};
use crate::error::{Error, Result};
use crate::model::bert::BertConfig;
use crate::model::ModelFiles;
use crate::progress::bar;
use crate::train::settings::TrainSettings;

/// Encoded reviews ready for batching, with their labels.
pub(super) struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
}

/// Everything read and checked before the run folder is touched.
pub(super) struct Prepared {
    pub config: BertConfig,
    pub encoder: ReviewEncoder,
    pub labels: Labels,
    pub skipped_empty: usize,
    pub data_sha256: String,
    pub splits: Splits,
    pub train_set: Encoded,
    pub val_set: Encoded,
}

/// Reads the model's config and tokenizer and the data, checks that they belong together,
/// splits the data and encodes the training and validation subsets.
pub(super) fn prepare(
    settings: &TrainSettings,
    files: &ModelFiles,
    progress: bool,
) -> Result<Prepared> {
    let config = files.read_config()?;
    if settings.seq_len > config.max_position_embeddings {
        return Err(Error::Setting(format!(
            "--seq-len {} exceeds the model's max_position_embeddings {} ({})",
            settings.seq_len,
            config.max_position_embeddings,
            files.config.display()
        )));
    }
    let tokenizer_json =
        std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
    let encoder = ReviewEncoder::from_bytes(&tokenizer_json, settings.seq_len, settings.truncation)
        .map_err(|e| Error::model(&files.tokenizer, e.to_string()))?;
    if encoder.vocab_size() > config.vocab_size {
        return Err(Error::model(
            &files.tokenizer,
            format!(
                "the tokenizer has {} tokens but the model's embedding has {} rows: they do not belong together",
                encoder.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let dataset = load_dataset(&settings.data, &settings.columns)?;
    if dataset.skipped_empty > 0 {
        info!(
            "skipped {} rows with an empty text (--strict refuses them)",
            dataset.skipped_empty
        );
    }
    let data_sha256 = dataset.content_hash();
    if let Some(parent) = &settings.from {
        if parent
            .data_sha256
            .as_ref()
            .is_some_and(|d| *d != data_sha256)
        {
            warn!(
                "{} is not the data the bundle {} was trained on (its sha256 differs): the \
                 bundle's test reviews may be among these training reviews",
                settings.data.display(),
                parent.run.display()
            );
        }
    }
    let labels = dataset.labels.clone();
    let skipped_empty = dataset.skipped_empty;
    let splits = split(dataset.examples, &settings.split, settings.seed)?;
    for line in splits.summary() {
        info!("{line}");
    }
    let train_set = encode(&encoder, &splits.train, "train", progress)?;
    let val_set = encode(&encoder, &splits.validation, "validation", progress)?;
    Ok(Prepared {
        config,
        encoder,
        labels,
        skipped_empty,
        data_sha256,
        splits,
        train_set,
        val_set,
    })
}

/// The training subset of one epoch with about `share` of its reviews replaced by a window of
/// their sentences each ([`draw_windows`]); the same `seed` (derived from the run's seed and
/// the epoch) draws the same windows, so a resumed epoch sees what it would have.
pub(super) fn with_windows(
    prepared: &Prepared,
    share: f64,
    seed: u64,
    progress: bool,
) -> Result<Encoded> {
    let texts: Vec<&str> = prepared
        .splits
        .train
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    let (at, windows): (Vec<usize>, Vec<&str>) = draw_windows(&texts, share, seed)
        .into_iter()
        .enumerate()
        .filter_map(|(i, window)| window.map(|w| (i, w)))
        .unzip();
    info!(
        "{} of {} training reviews shown as sentence windows this epoch",
        windows.len(),
        texts.len()
    );
    let pb = bar(windows.len(), "windows", "windows tokenised", progress);
    let encoded = encode_all(&prepared.encoder, &windows, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let mut ids = prepared.train_set.ids.clone();
    for (i, window) in at.into_iter().zip(encoded) {
        ids[i] = window.ids;
    }
    Ok(Encoded {
        ids,
        labels: prepared.train_set.labels.clone(),
    })
}

/// Tokenises one subset, with a progress bar named `name`.
pub(super) fn encode(
    encoder: &ReviewEncoder,
    examples: &[Example],
    name: &str,
    progress: bool,
) -> Result<Encoded> {
    let pb = bar(examples.len(), name, "reviews tokenised", progress);
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let encoded = encode_all(encoder, &texts, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    Ok(Encoded {
        ids: encoded.into_iter().map(|e| e.ids).collect(),
        labels: examples.iter().map(|e| e.label).collect(),
    })
}
