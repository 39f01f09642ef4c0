//! The inference core of Movie review feelings.
//!
//! Everything that must behave the same in training and in every deployment lives here, once:
//! how a review is cleaned and cut to the model's sequence length ([`ReviewEncoder`],
//! [`Truncation`]), what the two classes are called ([`Labels`]), what a model bundle holds
//! ([`Manifest`]) and what a prediction looks like ([`Prediction`]). [`TractClassifier`] loads a
//! bundle from bytes (no filesystem needed) and runs it with tract, natively and in
//! WebAssembly alike. The trainer depends on this crate, so what a model was trained on is
//! exactly what it is later asked about.

mod bundle;
mod classifier;
pub mod contract;
pub mod deployment;
mod encode;
pub mod explain;
mod labels;
pub mod manifest;
mod ops;
pub mod profile;
pub mod sentences;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub mod wasi;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod web;

pub use bundle::{sha256_hex, Bundle, BundleError};
#[cfg(not(target_family = "wasm"))]
pub use classifier::set_inference_threads;
pub use classifier::{positive_probability, ClassifyError, TractClassifier};
pub use encode::{
    clean_review, EncodeError, EncodedReview, ReviewEncoder, Token, Truncation, LINE_BREAK_PATTERN,
};
pub use labels::{is_positive, Labels};
pub use manifest::{Manifest, Prediction};
