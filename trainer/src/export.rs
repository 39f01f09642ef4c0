//! Turning a run's checkpoint into a deployable model bundle (`feelings.json`, `model.onnx`,
//! `tokenizer.json`), checked against candle before it is declared done.

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::manifest::{
    Manifest, TrainingSummary, WeightFormat, FORMAT_VERSION, MANIFEST_FILE,
};
use feelings_core::{Bundle, Classifier as Core, ReviewEncoder};

use crate::batch::make_batch;
use crate::error::{Error, Result};
use crate::model::{Classifier, Head, ModelFiles};
use crate::onnx::{export, Precision};
use crate::run_dir::{read_json, Best, EpochRecord, RunDir, BEST_FILE, CHECKPOINT_FILE, RUN_FILE};
use crate::settings::RunInfo;

/// Reviews the exported model is checked on against candle.
const CHECK_REVIEWS: [&str; 4] = [
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
    /// Probability of positive from which a review is called positive.
    pub threshold: f32,
    /// The model's name in the manifest; the output folder's name if `None`.
    pub name: Option<String>,
    /// Tokens the deployed model reads; the training sequence length if `None`. Positions
    /// beyond the training length keep their pretrained embeddings, not fine-tuned ones.
    pub seq_len: Option<usize>,
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

/// Exports the checkpoint `source` names (see [`locate`]) as a bundle in `out`, refusing a
/// folder that holds a bundle unless `overwrite`.
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
    let (dir, epoch) = locate(source, options.epoch)?;
    let info: RunInfo = read_json(&dir.path().join(RUN_FILE))?;
    let checkpoint = dir.checkpoint(epoch);
    let files = ModelFiles::locate(&checkpoint)?;
    let model = Classifier::load(&files, &Device::Cpu, Head::FromFile)?;
    let settings = &info.settings;
    let max_seq_len = options.seq_len.unwrap_or(settings.seq_len);
    if max_seq_len > model.config().max_position_embeddings {
        return Err(Error::Setting(format!(
            "--seq-len {max_seq_len} exceeds the model's max_position_embeddings {}",
            model.config().max_position_embeddings
        )));
    }
    let onnx = export(
        &model,
        options.precision,
        &[(
            "feelings.labels",
            &format!("{},{}", info.labels.negative, info.labels.positive),
        )],
    )?;
    let tokenizer = std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
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
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name,
        labels: info.labels.clone(),
        max_seq_len,
        truncation: settings.truncation,
        threshold: options.threshold,
        vocab_size: model.config().vocab_size,
        weights: match options.precision {
            Precision::F32 => WeightFormat::F32,
            Precision::Int8 => WeightFormat::Int8,
        },
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
    };
    let bundle = Bundle::new(manifest, onnx, tokenizer);
    let max_logit_difference = compare_with_candle(&model, &bundle)?;
    let limit = match options.precision {
        Precision::F32 => 1e-3,
        Precision::Int8 => f32::INFINITY,
    };
    if max_logit_difference > limit {
        return Err(Error::model(
            &checkpoint,
            format!("the exported model disagrees with candle by {max_logit_difference} (more than {limit}): not written"),
        ));
    }
    bundle.write_dir(out).map_err(|e| Error::io(out, e))?;
    Ok(Exported {
        bundle,
        checkpoint,
        max_logit_difference,
    })
}

/// Runs the check reviews through candle and through tract; returns the largest logit gap.
fn compare_with_candle(model: &Classifier, bundle: &Bundle) -> Result<f32> {
    let core = Core::new(bundle).map_err(|e| Error::model(MANIFEST_FILE, e.to_string()))?;
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
    let candle = model.forward(&batch.input_ids, &batch.attention_mask, None)?;
    let candle = candle.to_vec2::<f32>()?;
    Ok(candle
        .iter()
        .zip(&tract)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max))
}
