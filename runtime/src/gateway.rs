//! Putting a bundle behind the API: reads the bundle and the component, prepares the sandboxes,
//! starts the pool and checks that the limits can be met. `feelings-serve` is a thin shell
//! over [`start`] and [`crate::serve`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use feelings_core::{Bundle, BundleError, Manifest};

use crate::api::{Access, AppState, Limits};
use crate::metrics::Metrics;
use crate::pool::{AnswerCheck, Pool, PoolOptions, ADMISSION_SHARE};
use crate::{Preparation, SandboxError, SandboxOptions, Sandboxes};

/// Everything the gateway needs besides its address.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The bundle folder made by `feelings export`.
    pub model: PathBuf,
    /// The classifier component (the server build made by `web/build.sh`).
    pub component: PathBuf,
    /// The page served at `/`; `None` serves only the API.
    pub web_dir: Option<PathBuf>,
    /// How sandboxes are made.
    pub sandbox: SandboxOptions,
    /// How many, and how much may wait.
    pub pool: PoolOptions,
    /// Request limits.
    pub limits: Limits,
    /// Who may call the API.
    pub access: Access,
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bundle is missing or damaged (the error names the file).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The component file cannot be read.
    #[error("{path}: {source} (build it with `bash web/build.sh`, or pass --component)")]
    Component {
        /// The component's path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The sandboxes cannot be made or do not answer.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The limits contradict each other: a request they allow could never be answered.
    #[error("the limits cannot all hold: {0}")]
    Limits(String),
}

/// Reads the bundle and the component, prepares the sandboxes (from the cache when it has them),
/// starts the pool and checks the limits against what a review costs; returns the state for
/// [`crate::app`] and how the component was prepared.
pub fn start(options: &GatewayOptions) -> Result<(Arc<AppState>, Preparation), StartError> {
    check_queue(options)?;
    let bundle = Bundle::read_dir(&options.model)?;
    let wasm = read(&options.component)?;
    let (sandboxes, prepared) = Sandboxes::new(&wasm, &bundle, &options.sandbox)?;
    let metrics = Arc::new(Metrics::new());
    let check = AnswerCheck {
        labels: bundle.manifest.labels.clone(),
        threshold: bundle.manifest.threshold,
        probe: probe_review(&bundle.manifest),
    };
    let pool = Pool::start(Arc::new(sandboxes), &options.pool, check, metrics.clone())?;
    check_limits(options, pool.review_cost())?;
    let Bundle {
        manifest,
        model,
        tokenizer,
    } = bundle;
    let files = [
        Bytes::from(feelings_core::manifest::to_json(&manifest)),
        Bytes::from(model),
        Bytes::from(tokenizer),
    ];
    let state = AppState {
        pool,
        manifest,
        files,
        web_dir: options.web_dir.clone(),
        limits: options.limits.clone(),
        access: options.access.clone(),
        metrics,
    };
    Ok((Arc::new(state), prepared))
}

/// A review longer than the model reads: what the longest review costs.
fn probe_review(manifest: &Manifest) -> String {
    let sentence =
        "A first review, to check the sandbox and time a review as long as the model reads. ";
    sentence.repeat(manifest.max_seq_len / 16 + 1)
}

/// Refuses limits under which a request that passes every check could still never be
/// answered, given `review` (what one full-length review costs a sandbox, measured).
pub fn check_limits(options: &GatewayOptions, review: Duration) -> Result<(), StartError> {
    check_queue(options)?;
    let (pool, limits) = (&options.pool, &options.limits);
    let sandboxes = pool.instances.max(1) as u32;
    let call = review * pool.max_batch.max(1) as u32;
    if options.sandbox.deadline < call {
        return Err(StartError::Limits(format!(
            "--deadline {:?} is shorter than one guest call of --max-batch {} full-length reviews (about {call:.2?}: {review:.2?} each, measured at start)",
            options.sandbox.deadline, pool.max_batch
        )));
    }
    let largest = review * limits.max_texts as u32 / sandboxes;
    if limits.timeout.mul_f64(ADMISSION_SHARE) < largest {
        return Err(StartError::Limits(format!(
            "a request of --max-texts {} full-length reviews takes about {largest:.1?} on {sandboxes} sandboxes with nothing else to do ({review:.2?} a review, measured at start); requests are admitted within two thirds of --timeout {:?}, so it would never be",
            limits.max_texts, limits.timeout
        )));
    }
    Ok(())
}

/// The queue must hold the largest request.
fn check_queue(options: &GatewayOptions) -> Result<(), StartError> {
    let (queue, max_texts) = (options.pool.queue, options.limits.max_texts);
    if queue < max_texts {
        return Err(StartError::Limits(format!(
            "--queue {queue} reviews is less than --max-texts {max_texts}: a request of {max_texts} texts would always be turned away"
        )));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Component {
        path: path.to_path_buf(),
        source,
    })
}
