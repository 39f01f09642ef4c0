//! Stage 1, the data: labelled reviews read from disk ([`read`]), divided into subsets
//! ([`split`]), tokenised in chunks ([`encode`]), measured ([`tokens`]) and grouped into padded,
//! length-bucketed batches ([`batch`]); in training, a share of the reviews may be cropped to a
//! few sentences ([`windows`]).

pub mod batch;
pub mod encode;
pub mod read;
pub mod split;
pub mod tokens;
pub mod windows;

pub use read::{load_dataset, open_maybe_gzip, DataOptions, Dataset, Example};
