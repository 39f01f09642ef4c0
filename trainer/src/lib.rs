//! Fine-tuning BERT to tell positive from negative movie reviews, with candle.
//!
//! The pieces, in the order a run uses them: [`data`] reads labelled reviews, [`split`] divides
//! them, `feelings_core::ReviewEncoder` tokenizes them, [`model`] holds the classifier (a
//! trainable [`bert`] encoder plus a dense head), [`train`] runs epochs of [`optim`] steps over
//! length-bucketed [`batch`]es and writes checkpoints and [`metrics`] into a [`run_dir`].

pub mod batch;
pub mod bench;
#[cfg(feature = "sandbox")]
pub mod bench_guest;
pub mod bert;
pub mod compare;
pub mod curves;
pub mod data;
pub mod device;
pub mod dropout;
pub mod error;
pub mod evaluate;
pub mod evaluation;
pub mod export;
pub mod fixtures;
pub mod fused;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod optim;
pub mod partial;
pub mod predict;
pub mod progress;
pub mod report;
pub mod run_dir;
pub mod settings;
pub mod split;
pub mod svg;
pub mod tokens;
pub mod train;
pub mod weights;

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
