//! Turning a run's checkpoint into a deployable model bundle (`feelings.json`, `model.onnx`,
//! `tokenizer.json`), checked against candle before it is declared done.

pub mod from_bundle;
pub mod hf_layout;
pub mod onnx;
pub mod trim_vocab;

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::manifest::{Manifest, TrainingSummary, FORMAT_VERSION, MANIFEST_FILE};
use feelings_core::{is_positive, positive_probability, Bundle, ReviewEncoder, TractClassifier};

use crate::data::batch::make_batch;
use crate::error::{Error, Result};
use crate::export::onnx::{export, EmbeddingFormat, Precision};
use crate::model::{CandleClassifier, Head, ModelFiles};
use crate::train::run_dir::{
    read_json, Best, EpochRecord, RunDir, BEST_FILE, CHECKPOINT_FILE, RUN_FILE,
};
use crate::train::settings::{Parent, RunInfo};

/// Reviews the exported model is checked on against candle (see [`check_bundle`]).
pub const CHECK_REVIEWS: [&str; 4] = [
    "It was really just ok. Meh.",
    "A wonderful, moving film with superb acting. I loved every minute of it.",
    "Dreadful. The plot makes no sense and the dialogue is painful; I walked out.",
    "Not the best, not the worst.",
];

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The epoch to export; the best one if `None`.
    pub epoch: Option<usize>,
    /// Weight storage.
    pub precision: Precision,
    /// Word-embedding storage, where not as `precision` says: 4-bit needs an int8 precision.
    pub word_embeddings: EmbeddingFormat,
    /// Probability of positive from which a review is called positive.
    pub threshold: f32,
    /// The model's name in the manifest; the output folder's name if `None`.
    pub name: Option<String>,
    /// Tokens the deployed model reads; the training sequence length if `None`. Positions
    /// beyond the training length keep their pretrained embeddings, not fine-tuned ones.
    pub seq_len: Option<usize>,
    /// Corpus files whose texts' pieces (with the special and single-character ones) are the
    /// only ones kept (see [`trim_vocab`]); the whole vocabulary when empty.
    pub trim_vocab: Vec<std::path::PathBuf>,
    /// With `trim_vocab`: keep a corpus piece only if the corpus uses it at least this many
    /// times.
    pub trim_min_count: usize,
    /// Word lists (one word or text a line) whose pieces are kept whatever their count, beside
    /// those of `trim_vocab`: the words of languages the corpus lacks.
    pub trim_words: Vec<std::path::PathBuf>,
}

impl Default for ExportOptions {
    /// The best checkpoint, f32 weights, threshold 0.5, named after the output folder, at the
    /// training sequence length: `feelings export`'s defaults.
    fn default() -> Self {
        Self {
            epoch: None,
            precision: Precision::F32,
            word_embeddings: EmbeddingFormat::AsWeights,
            threshold: 0.5,
            name: None,
            seq_len: None,
            trim_vocab: Vec::new(),
            trim_min_count: 1,
            trim_words: Vec::new(),
        }
    }
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The bundle as written.
    pub bundle: Bundle,
    /// The checkpoint it came from.
    pub checkpoint: PathBuf,
    /// Largest difference between candle's and tract's logits on the check reviews.
    pub max_logit_difference: f32,
}

/// Finds the run folder and the epoch for `source`: a run folder (its best checkpoint, or
/// `epoch`) or one checkpoint folder.
fn locate(source: &Path, epoch: Option<usize>) -> Result<(RunDir, usize)> {
    if source.join(CHECKPOINT_FILE).is_file() {
        let record: EpochRecord = read_json(&source.join(CHECKPOINT_FILE))?;
        let run = source
            .parent()
            .ok_or_else(|| Error::run(source, "a checkpoint folder must sit in its run folder"))?;
        return Ok((RunDir::open(run)?, record.epoch));
    }
    let dir = RunDir::open(source)?;
    let epoch = match epoch {
        Some(e) => e,
        None => {
            let best_file = source.join(BEST_FILE);
            if !best_file.is_file() {
                return Err(Error::run(
                    source,
                    "no best.json: the run has no complete epoch yet",
                ));
            }
            read_json::<Best>(&best_file)?.epoch
        }
    };
    Ok((dir, epoch))
}

/// A model opened for export: its candle weights, the manifest its bundle gets (at
/// `options.precision`), its tokenizer and Hugging Face configuration, and where it came from.
pub(crate) struct ExportSource {
    pub(crate) model: CandleClassifier,
    pub(crate) manifest: Manifest,
    pub(crate) tokenizer: Vec<u8>,
    /// `config.json` of the model folder the weights were read from.
    pub(crate) config: Vec<u8>,
    /// The checkpoint or bundle folder, for messages.
    pub(crate) path: PathBuf,
    /// A likely cause, added to the message when an int8 export of this source fails its check.
    pub(crate) int8_hint: Option<String>,
}

/// Opens the checkpoint `source` names (see [`locate`]), or the bundle `source` is, for an
/// export to `out`.
pub(crate) fn open_source(
    source: &Path,
    out: &Path,
    options: &ExportOptions,
) -> Result<ExportSource> {
    if options.word_embeddings == EmbeddingFormat::Int4 && options.precision == Precision::F32 {
        return Err(Error::Setting(
            "4-bit word embeddings go with int8 or int8-dynamic weights, not f32".into(),
        ));
    }
    let opened = open_untrimmed(source, out, options)?;
    match options.trim_vocab.is_empty() && options.trim_words.is_empty() {
        true => Ok(opened),
        false => trim_vocab::trim(opened, options),
    }
}

/// [`open_source`] before any `--trim-vocab`.
fn open_untrimmed(source: &Path, out: &Path, options: &ExportOptions) -> Result<ExportSource> {
    if Bundle::is_in(source) {
        return open_bundle(source, options);
    }
    let (dir, epoch) = locate(source, options.epoch)?;
    let info: RunInfo = read_json(&dir.path().join(RUN_FILE))?;
    let checkpoint = dir.checkpoint(epoch);
    let files = ModelFiles::locate(&checkpoint)?;
    let model = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile)?;
    let max_seq_len = options.seq_len.unwrap_or(info.settings.seq_len);
    let manifest = manifest(
        &info,
        epoch,
        model.config().vocab_size,
        max_seq_len,
        out,
        options,
    );
    let read = |path: &Path| std::fs::read(path).map_err(|e| Error::io(path, e));
    Ok(ExportSource {
        manifest,
        tokenizer: read(&files.tokenizer)?,
        config: read(&files.config)?,
        model,
        path: checkpoint,
        int8_hint: continued_bundle_hint(info.settings.from.as_ref()),
    })
}

/// Exports the checkpoint `source` names (see [`locate`]), or the bundle `source` is, as a
/// bundle in `out`, refusing a folder that holds a bundle unless `overwrite`.
pub fn export_bundle(
    source: &Path,
    out: &Path,
    overwrite: bool,
    options: &ExportOptions,
) -> Result<Exported> {
    if out.join(MANIFEST_FILE).exists() && !overwrite {
        return Err(Error::run(
            out,
            "holds a model bundle already: pass --overwrite to replace it",
        ));
    }
    if out.join(hf_layout::CONFIG_FILE).exists() && !overwrite {
        return Err(Error::run(
            out,
            "holds a model folder (config.json), whose tokenizer.json a bundle would replace: pass --overwrite to write into it anyway",
        ));
    }
    let source = open_source(source, out, options)?;
    let exported = checked_bundle(&source, source.manifest.clone())?;
    exported
        .bundle
        .write_dir(out)
        .map_err(|e| Error::io(out, e))?;
    Ok(exported)
}

/// Opens the model of the bundle `source` for an export again, at `options.precision`, from the
/// weights it stores (see [`from_bundle`]): the same name (unless `options.name`), labels,
/// training summary and sequence length (unless `options.seq_len`), the threshold of
/// `options`; its test figures are dropped, the weights having changed (`feelings evaluate
/// --record` measures them again).
fn open_bundle(source: &Path, options: &ExportOptions) -> Result<ExportSource> {
    if options.epoch.is_some() {
        return Err(Error::Setting(format!(
            "{} is a bundle, which holds one model: --epoch applies to run folders",
            source.display()
        )));
    }
    let original = Bundle::read_dir(source).map_err(|e| Error::model(source, e.to_string()))?;
    let files = ModelFiles::unpack(source, &original)?;
    let model = CandleClassifier::load(&files, &Device::Cpu, Head::FromFile)?;
    let config = std::fs::read(&files.config).map_err(|e| Error::io(&files.config, e))?;
    let manifest = Manifest {
        name: options
            .name
            .clone()
            .unwrap_or(original.manifest.name.clone()),
        max_seq_len: options.seq_len.unwrap_or(original.manifest.max_seq_len),
        threshold: options.threshold,
        weights: options.precision,
        word_embeddings: options.word_embeddings,
        test_metrics: None,
        ..original.manifest.clone()
    };
    Ok(ExportSource {
        model,
        manifest,
        tokenizer: original.tokenizer,
        config,
        path: source.to_path_buf(),
        int8_hint: None,
    })
}

/// For a run continued `from` an int8 bundle (as its manifest says, where it is still there):
/// why an int8 export of the run may fail its check. Its weights started on the bundle's int8
/// grid, and a short continuation moves them by a fraction of a step, which int8 rounding takes
/// back while the biases and normalisations keep their change (measured: 250 steps at lr 1e-5
/// from the shipped bundle moved its matrices by 0.055 steps on average and changed 0.01 % of
/// their int8 values, while the logits moved by up to 0.7).
fn continued_bundle_hint(from: Option<&Parent>) -> Option<String> {
    let parent = from.filter(|p| p.bundle)?;
    let manifest: Manifest = read_json(&parent.run.join(MANIFEST_FILE)).ok()?;
    (manifest.weights != Precision::F32).then(|| {
        format!(
            "this run continues the int8 bundle {}: a short continuation moves its weights by \
             less than an int8 step, which int8 rounds away while the biases and normalisations \
             keep their change; export it in f32 (without --quantize)",
            parent.run.display()
        )
    })
}

/// The bundle of `source`'s model as ONNX at `manifest.weights`, once its logits pass
/// [`check_bundle`].
pub(crate) fn checked_bundle(source: &ExportSource, manifest: Manifest) -> Result<Exported> {
    let model = &source.model;
    if manifest.max_seq_len > model.config().max_position_embeddings {
        return Err(Error::Setting(format!(
            "--seq-len {} exceeds the model's max_position_embeddings {}",
            manifest.max_seq_len,
            model.config().max_position_embeddings
        )));
    }
    let labels = format!("{},{}", manifest.labels.negative, manifest.labels.positive);
    let onnx = export(
        model,
        manifest.weights,
        manifest.word_embeddings,
        &[("feelings.labels", &labels)],
    )?;
    let manifest_is_int8 = manifest.weights != Precision::F32;
    let bundle = Bundle::new(manifest, onnx, source.tokenizer.clone());
    let max_logit_difference = check_bundle(model, &bundle).map_err(|e| match e {
        Error::Check(failure) => {
            let hint = match (&source.int8_hint, manifest_is_int8) {
                (Some(hint), true) => format!(" ({hint})"),
                _ => String::new(),
            };
            Error::model(
                &source.path,
                format!(
                    "the exported model fails its check against candle: {failure}; not written{hint}"
                ),
            )
        }
        other => other,
    })?;
    Ok(Exported {
        bundle,
        checkpoint: source.path.clone(),
        max_logit_difference,
    })
}

/// The manifest of a bundle of `epoch` of the run `info` describes, written to `out`.
fn manifest(
    info: &RunInfo,
    epoch: usize,
    vocab_size: usize,
    max_seq_len: usize,
    out: &Path,
    options: &ExportOptions,
) -> Manifest {
    let settings = &info.settings;
    let name = options.name.clone().unwrap_or_else(|| {
        out.file_name().map_or_else(
            || "feelings-model".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    // The run's test figures belong to its best checkpoint at full precision.
    let test_metrics = match (
        &info.test,
        info.best_epoch == Some(epoch),
        options.precision,
    ) {
        (Some(t), true, Precision::F32) => Some(t.test_metrics()),
        _ => None,
    };
    Manifest {
        format_version: FORMAT_VERSION,
        name,
        labels: info.labels.clone(),
        max_seq_len,
        truncation: settings.truncation,
        threshold: options.threshold,
        vocab_size,
        weights: options.precision,
        word_embeddings: options.word_embeddings,
        training: TrainingSummary {
            // The base model's folder name: the run's absolute path says nothing elsewhere.
            base_model: settings.model.file_name().map_or_else(
                || settings.model.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            ),
            train_reviews: info.subsets.train,
            epochs: info.epochs_completed,
            epoch,
            learning_rate: settings.optimizer.lr,
            batch_size: settings.batch_size,
            seed: settings.seed,
            data_sha256: info.data_sha256.clone(),
        },
        test_metrics,
        sha256: Default::default(),
        sizes: Default::default(),
    }
}

/// The largest difference between a logit of candle and the same logit of the exported model
/// (run by tract) that an export with weights of `precision` may show on [`CHECK_REVIEWS`].
///
/// f32 runs the same arithmetic in another order. Measured (max |logit difference|, candle
/// against tract): tiny test models under 1e-7, MiniLM-L6 and -L3 fine-tuned for one step 3.1e-7 and
/// 3.9e-7, MiniLM-L6 with trained weights (below) 1.7e-6 on the check reviews and 9.5e-6 on
/// 200 IMDB test reviews at 256 tokens: 1e-3 leaves a margin of 100.
///
/// int8 rounds every weight matrix to 255 levels per output channel. Measured the same way:
/// - tiny test models (4 data seeds and learning rates, logits up to 0.39): at most 1.5e-3,
///   on the check reviews and on 40 more token sequences;
/// - MiniLM-L6 and -L3 fine-tuned for one step (logits up to 0.31): at most 8.5e-3 and 5.6e-3
///   on the check reviews, 7.7e-3 and 9.6e-3 on 200 IMDB test reviews;
/// - MiniLM-L6 with the shipped model's trained weights (dequantised, plus uniform noise of
///   half a quantisation step: f32 weights that round to the shipped int8 ones; logits up to
///   ±3.2), three draws of the noise: 0.065, 0.020 and 0.0088 on the check reviews; for two of
///   them 0.13 and 0.19 on 200 reviews (where 2 and 1 of the 200 decisions flip, all with
///   margins under 0.4).
///
/// 0.5 is 2.6 times the largest of these and 7.7 times the largest on the check reviews, yet a
/// fraction of what a broken export does to a trained model's logits (units: a wrong scale,
/// sign or layout).
pub fn logit_tolerance(precision: Precision) -> f32 {
    match precision {
        Precision::F32 => 1e-3,
        Precision::Int8 | Precision::Int8Dynamic => 0.5,
    }
}

/// Why an exported model fails its check against the candle model it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckFailure {
    /// The two gave different numbers of results.
    #[error("{exported} results from the exported model for {candle} reviews")]
    Count {
        /// Reviews candle classified.
        candle: usize,
        /// Results from the exported model.
        exported: usize,
    },
    /// A logit is NaN or infinite: the weights are broken.
    #[error("check review {review}: {engine} gives the logits {logits:?}: NaN or infinite logits mean broken weights")]
    NotFinite {
        /// The review's index in the checked batch.
        review: usize,
        /// `candle` or `the exported model`.
        engine: &'static str,
        /// The review's `[negative, positive]` logits.
        logits: [f32; 2],
    },
    /// A logit moved further than the weights' precision allows.
    #[error("check review {review}: logits {exported:?} against candle's {candle:?}, {difference:.3e} apart where {precision:?} weights allow {limit:.0e}")]
    TooFar {
        /// The review's index in the checked batch.
        review: usize,
        /// candle's logits.
        candle: [f32; 2],
        /// The exported model's logits.
        exported: [f32; 2],
        /// The largest difference of the two.
        difference: f32,
        /// [`logit_tolerance`] of the precision.
        limit: f32,
        /// The weights' precision.
        precision: Precision,
    },
    /// A review is decided the other way at the bundle's threshold.
    #[error("check review {review} is called {} (p(positive) {exported:.4}) where candle calls it {} ({candle:.4}) at the threshold {threshold}", decision(is_positive(*.exported, f64::from(*.threshold))), decision(is_positive(*.candle, f64::from(*.threshold))))]
    Decision {
        /// The review's index in the checked batch.
        review: usize,
        /// candle's probability of positive.
        candle: f32,
        /// The exported model's probability of positive.
        exported: f32,
        /// The bundle's threshold.
        threshold: f32,
    },
}

fn decision(positive: bool) -> &'static str {
    if positive {
        "positive"
    } else {
        "negative"
    }
}

/// Checks the exported model's logits against candle's for the same reviews and returns their
/// largest difference: every logit must be finite, within [`logit_tolerance`] of candle's, and
/// each review called the same at `threshold`, except one that candle itself puts within the
/// tolerance of the threshold (there rounding the weights may tip it either way).
pub fn check_logits(
    candle: &[[f32; 2]],
    exported: &[[f32; 2]],
    precision: Precision,
    threshold: f32,
) -> Result<f32, CheckFailure> {
    if candle.len() != exported.len() {
        return Err(CheckFailure::Count {
            candle: candle.len(),
            exported: exported.len(),
        });
    }
    let limit = logit_tolerance(precision);
    // The decision margin of the threshold in logit space (±infinity at 1 and 0).
    let threshold_margin = (threshold / (1.0 - threshold)).ln();
    let mut largest = 0f32;
    for (review, (&c, &e)) in candle.iter().zip(exported).enumerate() {
        for (engine, logits) in [("candle", c), ("the exported model", e)] {
            if !logits.iter().all(|l| l.is_finite()) {
                return Err(CheckFailure::NotFinite {
                    review,
                    engine,
                    logits,
                });
            }
        }
        let difference = (c[0] - e[0]).abs().max((c[1] - e[1]).abs());
        if difference > limit {
            return Err(CheckFailure::TooFar {
                review,
                candle: c,
                exported: e,
                difference,
                limit,
                precision,
            });
        }
        largest = largest.max(difference);
        let (pc, pe) = (positive_probability(c), positive_probability(e));
        let undecided = ((c[1] - c[0]) - threshold_margin).abs() <= limit;
        let at = f64::from(threshold);
        if is_positive(pc, at) != is_positive(pe, at) && !undecided {
            return Err(CheckFailure::Decision {
                review,
                candle: pc,
                exported: pe,
                threshold,
            });
        }
    }
    Ok(largest)
}

/// Runs [`CHECK_REVIEWS`] through `model` (candle) and through `bundle` (tract, as deployed)
/// and [checks](check_logits) the bundle's logits at its own precision and threshold; returns
/// the largest logit difference, or [`Error::Check`].
pub fn check_bundle(model: &CandleClassifier, bundle: &Bundle) -> Result<f32> {
    let core =
        TractClassifier::new(bundle).map_err(|e| Error::model(MANIFEST_FILE, e.to_string()))?;
    let encoder: &ReviewEncoder = core.encoder();
    let ids: Vec<Vec<u32>> = encoder
        .encode_batch(&CHECK_REVIEWS)?
        .into_iter()
        .map(|e| e.ids)
        .collect();
    let tract = core
        .logits(&ids)
        .map_err(|e| Error::model(MANIFEST_FILE, e.to_string()))?;
    let indices: Vec<usize> = (0..ids.len()).collect();
    let batch = make_batch(
        &ids,
        &vec![0; ids.len()],
        &indices,
        encoder.pad_id(),
        &Device::Cpu,
    )?;
    let candle: Vec<[f32; 2]> = model
        .forward(&batch.input_ids, &batch.attention_mask, None)?
        .to_vec2::<f32>()?
        .into_iter()
        .map(|row| [row[0], row[1]])
        .collect();
    let precision = bundle.manifest.weights;
    Ok(check_logits(
        &candle,
        &tract,
        precision,
        bundle.manifest.threshold,
    )?)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::continued_bundle_hint;
    use crate::train::settings::Parent;

    fn parent(run: &Path, bundle: bool) -> Parent {
        Parent {
            run: run.to_path_buf(),
            epoch: 2,
            new_head: false,
            bundle,
            data_sha256: None,
        }
    }

    #[test]
    fn only_a_run_continued_from_an_int8_bundle_gets_the_hint() {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/imdb-minilm");
        let hint = continued_bundle_hint(Some(&parent(&shipped, true))).unwrap();
        assert!(
            hint.contains("imdb-minilm") && hint.contains("f32"),
            "{hint}"
        );
        assert_eq!(continued_bundle_hint(Some(&parent(&shipped, false))), None);
        assert_eq!(continued_bundle_hint(None), None);

        let dir = tempfile::tempdir().unwrap();
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(shipped.join("feelings.json")).unwrap()).unwrap();
        manifest["weights"] = "f32".into();
        std::fs::write(dir.path().join("feelings.json"), manifest.to_string()).unwrap();
        assert_eq!(continued_bundle_hint(Some(&parent(dir.path(), true))), None);
        let gone = dir.path().join("gone");
        assert_eq!(continued_bundle_hint(Some(&parent(&gone, true))), None);
    }
}
