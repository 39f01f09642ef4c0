//! The layout of a run folder, and writes that a killed run can never leave torn.
//!
//! ```text
//! runs/minilm/
//!   run.json                 every setting, the data and base model hashes, versions, timing
//!   metrics.jsonl            one row per completed epoch
//!   best.json                which checkpoint is best, by which validation metric
//!   checkpoint-epoch-1/      model.safetensors, config.json, tokenizer.json, checkpoint.json
//!   checkpoint-epoch-2/      ... plus optimizer.safetensors in the newest one, for --resume
//!   partial-epoch/           the epoch in progress, saved every few minutes (see `partial`)
//! ```
//! A checkpoint is written to `checkpoint-epoch-N.tmp/` and renamed when complete; JSON files
//! are written to a temporary file and renamed. `metrics.jsonl` and `best.json` are derived
//! from the complete checkpoints, so they are rebuilt, never patched.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::evaluate::metrics::Metrics;

/// The settings file of a run.
pub const RUN_FILE: &str = "run.json";
/// One JSON row per completed epoch.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Names the best checkpoint.
pub const BEST_FILE: &str = "best.json";
/// What a checkpoint says about itself.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// The model weights in a checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The optimiser moments in the newest checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What one epoch produced, kept in its checkpoint's `checkpoint.json` and as one row of
/// `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Optimiser updates made by the end of this epoch, since the start of the run.
    pub global_step: usize,
    /// Mean training loss over the epoch (with drop-out on).
    pub train_loss: f64,
    /// Training accuracy over the epoch (with drop-out on).
    pub train_accuracy: f64,
    /// Metrics on the validation subset at the end of the epoch.
    pub validation: Metrics,
    /// Seconds the epoch took, evaluation included.
    pub seconds: f64,
}

/// The columns of an epoch's summary row, as the terminal table, the log and the report name
/// them; [`EpochRecord::cells`] gives the values in this order.
pub const EPOCH_COLUMNS: [&str; 8] = [
    "epoch",
    "train loss",
    "train acc",
    "val loss",
    "val acc",
    "val F1",
    "val AUC",
    "seconds",
];

impl EpochRecord {
    /// The epoch's summary row, formatted once for every place that shows it (the log line
    /// after each epoch, `feelings train`'s table, the report's history), in the order of
    /// [`EPOCH_COLUMNS`].
    pub fn cells(&self) -> [String; 8] {
        [
            self.epoch.to_string(),
            format!("{:.4}", self.train_loss),
            format!("{:.2} %", 100.0 * self.train_accuracy),
            format!("{:.4}", self.validation.loss),
            format!("{:.2} %", 100.0 * self.validation.accuracy),
            format!("{:.4}", self.validation.f1),
            self.validation.auc_text(),
            format!("{:.0}", self.seconds),
        ]
    }
}

/// Which validation metric picks the best checkpoint and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation loss; lower is better.
    #[default]
    Loss,
    /// Validation accuracy; higher is better.
    Accuracy,
}

impl Monitor {
    /// The monitored value of an epoch.
    pub fn value(self, record: &EpochRecord) -> f64 {
        match self {
            Monitor::Loss => record.validation.loss,
            Monitor::Accuracy => record.validation.accuracy,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Monitor::Loss => a < b,
            Monitor::Accuracy => a > b,
        }
    }
}

/// The contents of `best.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The best epoch.
    pub epoch: usize,
    /// Its folder, relative to the run folder.
    pub checkpoint: String,
    /// The metric that picked it.
    pub monitor: Monitor,
    /// Its value of that metric.
    pub value: f64,
}

/// The epoch of the best record (the first one on ties).
pub fn best_of(records: &[EpochRecord], monitor: Monitor) -> Option<&EpochRecord> {
    records
        .iter()
        .fold(None, |best: Option<&EpochRecord>, r| match best {
            Some(b) if !monitor.better(monitor.value(r), monitor.value(b)) => Some(b),
            _ => Some(r),
        })
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Prepares `path` for a new run. A folder holding a run, or anything else, is refused
    /// unless `overwrite`, which removes the files a run writes (and nothing else).
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        let dir = Self {
            path: path.to_path_buf(),
        };
        if path.exists() {
            let entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            if !entries.is_empty() && !overwrite {
                let what = if path.join(RUN_FILE).exists() {
                    "holds another run"
                } else {
                    "is not empty"
                };
                return Err(Error::run(
                    path,
                    format!("the output folder {what}: pass --resume to continue it or --overwrite to replace it"),
                ));
            }
            for entry in entries.iter().filter(|p| is_run_output(p)) {
                let removed = if entry.is_dir() {
                    std::fs::remove_dir_all(entry)
                } else {
                    std::fs::remove_file(entry)
                };
                removed.map_err(|e| Error::io(entry, e))?;
            }
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Ok(dir)
    }

    /// Opens an existing run folder (one with a `run.json`) to continue it.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(RUN_FILE).is_file() {
            return Err(Error::run(
                path,
                format!("no {RUN_FILE}: not a run folder to resume"),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of epoch `epoch`'s checkpoint.
    pub fn checkpoint(&self, epoch: usize) -> PathBuf {
        self.path.join(format!("checkpoint-epoch-{epoch}"))
    }

    /// The records of the complete checkpoints, epoch 1, 2, ... up to the first gap.
    pub fn records(&self) -> Result<Vec<EpochRecord>> {
        let mut records = Vec::new();
        for epoch in 1.. {
            let file = self.checkpoint(epoch).join(CHECKPOINT_FILE);
            if !file.is_file() {
                break;
            }
            records.push(read_json(&file)?);
        }
        Ok(records)
    }

    /// Writes checkpoint `record.epoch`: `fill` puts the files in a temporary folder, which is
    /// then renamed into place with its `checkpoint.json`; then `metrics.jsonl` and
    /// `best.json` are rebuilt and the previous epoch's optimiser state is dropped.
    pub fn write_checkpoint(
        &self,
        record: &EpochRecord,
        monitor: Monitor,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let final_dir = self.checkpoint(record.epoch);
        let tmp = self
            .path
            .join(format!("checkpoint-epoch-{}.tmp", record.epoch));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        fill(&tmp)?;
        write_json(&tmp.join(CHECKPOINT_FILE), record)?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        self.rebuild_summaries(monitor)?;
        if record.epoch > 1 {
            let old = self.checkpoint(record.epoch - 1).join(OPTIMIZER_FILE);
            if old.exists() {
                std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
            }
        }
        Ok(())
    }

    /// Rewrites `metrics.jsonl` and `best.json` from the complete checkpoints.
    pub fn rebuild_summaries(&self, monitor: Monitor) -> Result<Option<Best>> {
        let records = self.records()?;
        let mut lines = String::new();
        for r in &records {
            lines.push_str(
                &serde_json::to_string(r).map_err(|e| Error::run(&self.path, e.to_string()))?,
            );
            lines.push('\n');
        }
        write_atomic(&self.path.join(METRICS_FILE), lines.as_bytes())?;
        let best = best_of(&records, monitor).map(|r| Best {
            epoch: r.epoch,
            checkpoint: format!("checkpoint-epoch-{}", r.epoch),
            monitor,
            value: monitor.value(r),
        });
        if let Some(best) = &best {
            write_json(&self.path.join(BEST_FILE), best)?;
        }
        Ok(best)
    }
}

/// Whether `path` is something a run writes (and `--overwrite` may remove).
fn is_run_output(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    [RUN_FILE, METRICS_FILE, BEST_FILE].contains(&name)
        || name.starts_with("checkpoint-epoch-")
        || crate::train::partial::is_partial(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::run(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON file, naming it on error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::run(path, format!("malformed: {e}")))
}
