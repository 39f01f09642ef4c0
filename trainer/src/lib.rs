//! Fine-tuning BERT to tell positive from negative movie reviews, with candle: the library
//! behind the `feelings` command (whose subcommands, in `src/bin/feelings/`, are thin shells
//! over it).
//!
//! One folder per stage, in the order a run goes through them:
//!
//! | module | owns |
//! |---|---|
//! | [`data`] | reading labelled reviews, splitting them, tokenising in chunks, length reports, batches |
//! | [`model`] | the candle classifier: BERT encoder, fused CPU kernels, drop-out, checkpoint weights, head |
//! | [`train`] | the training loop, AdamW and its schedule, the run folder, settings, partial epochs |
//! | [`evaluate`] | scoring a checkpoint or bundle, metrics, curves, the HTML report and SVG charts, comparing runs |
//! | [`export`] | the ONNX writer and the deployable bundle, checked against candle |
//! | [`predict`] | classifying a file of reviews with the deployed inference core |
//! | [`bench`] | timing training steps and inference against the peers |
//! | [`deploy`] | uploading a bundle to a running gateway as a named deployment |
//!
//! Shared by all of them: [`error`], [`device`] (CPU or CUDA) and [`progress`] (bars).
//! The inference core (`feelings_core`, folder `wasm-app/`) holds what training and every
//! deployment must agree on: tokenisation, labels, the bundle manifest, the decision rule.

pub mod bench;
pub mod data;
pub mod deploy;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod export;
/// Tiny random-weight checkpoints and review sets for tests (the `test-support` feature).
#[cfg(feature = "test-support")]
pub mod fixtures;
pub mod model;
pub mod predict;
pub mod progress;
pub mod train;

pub use error::{Error, Result};

/// The candle version the trainer is built with (pinned in the workspace Cargo.toml).
pub const CANDLE_VERSION: &str = "0.11.1";

#[cfg(test)]
mod tests {
    #[test]
    fn candle_version_matches_the_workspace_pin() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("candle-core = \"={}\"", super::CANDLE_VERSION);
        assert!(manifest.contains(&pin), "Cargo.toml no longer pins {pin}");
    }
}
