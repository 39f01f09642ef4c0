//! Putting a bundle behind the API: reads the bundle and the component, prepares the sandboxes
//! and starts the pool. `feelings-serve` is a thin shell over [`start`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use feelings_core::{Bundle, BundleError};

use crate::api::{AppState, Limits};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolOptions};
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
}

/// Reads the bundle and the component, prepares the sandboxes (from the cache when it has them)
/// and starts the pool; returns the state for [`crate::app`] and how the component was prepared.
pub fn start(options: &GatewayOptions) -> Result<(Arc<AppState>, Preparation), StartError> {
    let bundle = Bundle::read_dir(&options.model)?;
    let wasm = read(&options.component)?;
    let (sandboxes, prepared) = Sandboxes::new(&wasm, &bundle, &options.sandbox)?;
    let metrics = Arc::new(Metrics::new());
    let pool = Pool::start(Arc::new(sandboxes), &options.pool, metrics.clone())?;
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
        metrics,
    };
    Ok((Arc::new(state), prepared))
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Component {
        path: path.to_path_buf(),
        source,
    })
}
