//! The inference core of Movie review feelings.
//!
//! Everything that must behave the same in training and in every deployment lives here, once:
//! how a review is cleaned and cut to the model's sequence length ([`ReviewEncoder`],
//! [`Truncation`]) and what the two classes are called ([`Labels`]). The trainer depends on this
//! crate, so what a model was trained on is exactly what it is later asked about.

mod encode;
mod labels;

pub use encode::{clean_review, EncodeError, EncodedReview, ReviewEncoder, Truncation};
pub use labels::Labels;
