//! Tokenising many reviews a chunk at a time, so a progress bar can follow and a caller that
//! needs only some of them can stop early: the one loop every stage encodes reviews with.

use feelings_core::{EncodedReview, ReviewEncoder};

use crate::error::Result;

/// Reviews tokenised per call of the tokenizer (which spreads a call over its threads).
pub const ENCODE_CHUNK: usize = 512;

/// The encodings of `texts`, one chunk of [`ENCODE_CHUNK`] at a time, in order.
pub fn encode_chunks<'a>(
    encoder: &'a ReviewEncoder,
    texts: &'a [&str],
) -> impl Iterator<Item = Result<Vec<EncodedReview>>> + 'a {
    texts
        .chunks(ENCODE_CHUNK)
        .map(|chunk| Ok(encoder.encode_batch(chunk)?))
}

/// The encodings of every one of `texts`, in order; `done` is told how many reviews each
/// chunk finished (to advance a progress bar).
pub fn encode_all(
    encoder: &ReviewEncoder,
    texts: &[&str],
    mut done: impl FnMut(usize),
) -> Result<Vec<EncodedReview>> {
    let mut encoded = Vec::with_capacity(texts.len());
    for chunk in encode_chunks(encoder, texts) {
        let chunk = chunk?;
        done(chunk.len());
        encoded.extend(chunk);
    }
    Ok(encoded)
}
