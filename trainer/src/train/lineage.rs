//! `feelings train --from`: a new run that starts from the weights of another run's
//! checkpoint, or of a bundle (the tutorial's "Continue training" and "Reuse part of model").

use std::path::{Path, PathBuf};

use feelings_core::Bundle;

use crate::error::{Error, Result};
use crate::train::run_dir::{read_json, Best, RunDir, BEST_FILE, CHECKPOINT_FILE, RUN_FILE};
use crate::train::settings::{Parent, RunInfo, TrainSettings};

/// The checkpoint `from` names and the run it belongs to: a run folder means its best
/// checkpoint (its last complete one before it has a best), a `checkpoint-epoch-N` folder of a
/// run means that one. Returns the parent run's record, the lineage to record, and the
/// checkpoint's folder (a model folder: config.json, model.safetensors, tokenizer.json).
pub fn parent_checkpoint(from: &Path, new_head: bool) -> Result<(RunInfo, Parent, PathBuf)> {
    let is_checkpoint = from.join(CHECKPOINT_FILE).is_file();
    let run = match (is_checkpoint, from.parent()) {
        (true, Some(parent)) => parent.to_path_buf(),
        _ => from.to_path_buf(),
    };
    if !run.join(RUN_FILE).is_file() {
        return Err(Error::run(
            from,
            "not a run folder nor one of its checkpoint-epoch-N folders (no run.json)",
        ));
    }
    let dir = RunDir::open(&run)?;
    let info: RunInfo = read_json(&run.join(RUN_FILE))?;
    let epoch = if is_checkpoint {
        let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.strip_prefix("checkpoint-epoch-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::run(from, "a checkpoint folder is named checkpoint-epoch-N"))?
    } else if run.join(BEST_FILE).is_file() {
        read_json::<Best>(&run.join(BEST_FILE))?.epoch
    } else {
        dir.records()?.len()
    };
    if epoch == 0 || !dir.checkpoint(epoch).join(CHECKPOINT_FILE).is_file() {
        return Err(Error::run(&run, "the run has no complete checkpoint yet"));
    }
    let parent = Parent {
        run: std::fs::canonicalize(&run).map_err(|e| Error::io(&run, e))?,
        epoch,
        new_head,
        bundle: false,
        data_sha256: None,
    };
    Ok((info, parent, dir.checkpoint(epoch)))
}

/// The settings of a new run that continues from the checkpoint `from` names (see
/// [`parent_checkpoint`]): the parent run's, with that checkpoint as the model and the parent
/// recorded; the caller sets this run's own epochs, learning rate and batch size (and may
/// change the data). Also returns its default folder, `runs/<parent>-from-epoch-N`.
pub fn continue_from(from: &Path, new_head: bool) -> Result<(TrainSettings, PathBuf)> {
    let (parent_info, parent, checkpoint) = parent_checkpoint(from, new_head)?;
    let parent_name = parent.run.file_name().unwrap_or_default().to_string_lossy();
    let out = PathBuf::from("runs").join(format!("{parent_name}-from-epoch-{}", parent.epoch));
    let settings = TrainSettings {
        model: checkpoint,
        from: Some(parent),
        ..parent_info.settings
    };
    Ok((settings, out))
}

/// The settings of a new run that continues from the bundle `from` (`feelings export`'s
/// folder, whose run may be gone: the shipped model's is), trained on `data`: the tutorial's
/// defaults with the bundle's sequence length, truncation and seed, the bundle as the model
/// (its stored weights, in f32) and as the parent, with the epoch and data hash its training
/// summary names. A bundle keeps no path to its data nor its split, so the caller gives them
/// (the same, for its test reviews to stay unseen). Also returns its default folder,
/// `runs/<bundle folder>-continued`.
pub fn continue_from_bundle(
    from: &Path,
    new_head: bool,
    data: PathBuf,
) -> Result<(TrainSettings, PathBuf)> {
    let manifest = Bundle::read_dir(from)
        .map_err(|e| Error::model(from, e.to_string()))?
        .manifest;
    let run = std::fs::canonicalize(from).map_err(|e| Error::io(from, e))?;
    let name = run.file_name().unwrap_or_default().to_string_lossy();
    let out = PathBuf::from("runs").join(format!("{name}-continued"));
    let settings = TrainSettings {
        seq_len: manifest.max_seq_len,
        truncation: manifest.truncation,
        seed: manifest.training.seed,
        from: Some(Parent {
            run: run.clone(),
            epoch: manifest.training.epoch,
            new_head,
            bundle: true,
            data_sha256: Some(manifest.training.data_sha256),
        }),
        ..TrainSettings::new(data, from.to_path_buf())
    };
    Ok((settings, out))
}
