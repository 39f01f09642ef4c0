//! Progress saved in the middle of an epoch, so a killed run loses minutes, not the epoch.
//!
//! ```text
//! runs/minilm/partial-epoch/    model.safetensors, optimizer.safetensors, progress.json
//! ```
//! Written to `partial-epoch.tmp/`, then swapped in through `partial-epoch.old/`: at every
//! moment one complete copy exists. Removed when the epoch's checkpoint is written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::run_dir::{read_json, write_json};

/// The folder of the saved partial epoch, inside the run folder.
pub const PARTIAL_DIR: &str = "partial-epoch";
/// What the partial epoch says about itself.
pub const PROGRESS_FILE: &str = "progress.json";

/// How far into an epoch the saved weights and optimiser state are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// The epoch in progress, from 1.
    pub epoch: usize,
    /// Batches of this epoch already trained on.
    pub batches_done: usize,
    /// Optimiser updates since the start of the run.
    pub global_step: usize,
    /// Sum of the per-review training loss so far in this epoch.
    pub loss_sum: f64,
    /// Reviews classified correctly so far in this epoch (drop-out on).
    pub correct: usize,
    /// Reviews trained on so far in this epoch.
    pub seen: usize,
    /// Seconds spent on this epoch so far.
    pub seconds: f64,
}

/// Writes a partial epoch: `fill` puts the weights and optimiser state in a temporary folder,
/// which then replaces the previous partial epoch.
pub fn save(
    run: &Path,
    progress: &PartialEpoch,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let (current, tmp, old) = paths(run);
    remove(&tmp)?;
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    fill(&tmp)?;
    write_json(&tmp.join(PROGRESS_FILE), progress)?;
    remove(&old)?;
    if current.exists() {
        std::fs::rename(&current, &old).map_err(|e| Error::io(&old, e))?;
    }
    std::fs::rename(&tmp, &current).map_err(|e| Error::io(&current, e))?;
    remove(&old)
}

/// The saved partial epoch, if a complete one exists, with the folder holding its files.
pub fn load(run: &Path) -> Result<Option<(PartialEpoch, PathBuf)>> {
    let (current, _, old) = paths(run);
    for dir in [current, old] {
        let file = dir.join(PROGRESS_FILE);
        if file.is_file() {
            return Ok(Some((read_json(&file)?, dir)));
        }
    }
    Ok(None)
}

/// Removes every trace of a partial epoch (after its epoch completed).
pub fn clear(run: &Path) -> Result<()> {
    let (current, tmp, old) = paths(run);
    for dir in [current, tmp, old] {
        remove(&dir)?;
    }
    Ok(())
}

/// Whether `name` is a file or folder this module writes in a run folder.
pub fn is_partial(name: &str) -> bool {
    name.starts_with(PARTIAL_DIR)
}

fn paths(run: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        run.join(PARTIAL_DIR),
        run.join(format!("{PARTIAL_DIR}.tmp")),
        run.join(format!("{PARTIAL_DIR}.old")),
    )
}

fn remove(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}
