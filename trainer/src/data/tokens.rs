//! The token-length distribution of a dataset: how much of it a sequence length cuts.

use feelings_core::ReviewEncoder;
use serde::Serialize;

use crate::data::encode::encode_chunks;
use crate::error::Result;

/// Sequence lengths the report always covers.
pub const CUTS: [usize; 3] = [128, 256, 512];

/// Token lengths of a set of reviews (special tokens included, before truncation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthReport {
    /// Number of reviews.
    pub count: usize,
    /// Shortest review.
    pub min: usize,
    /// Longest review.
    pub max: usize,
    /// Mean length.
    pub mean: f64,
    /// (percentile, length) for the 10th, 25th, 50th, 75th, 90th and 99th percentiles.
    pub percentiles: Vec<(u8, usize)>,
    /// (sequence length, share of reviews longer than it, i.e. truncated) for 128, 256, 512.
    pub truncated_share: Vec<(usize, f64)>,
}

/// Tokenizes `texts` in full with `encoder`'s tokenizer and summarises their lengths;
/// `progress` is told the number of texts done after each chunk.
pub fn length_report(
    encoder: &ReviewEncoder,
    texts: &[&str],
    mut progress: impl FnMut(usize),
) -> Result<LengthReport> {
    // Only the lengths are kept, a chunk at a time.
    let mut lengths = Vec::with_capacity(texts.len());
    for chunk in encode_chunks(encoder, texts) {
        let chunk = chunk?;
        progress(chunk.len());
        lengths.extend(chunk.iter().map(|e| e.full_len));
    }
    Ok(summarise(lengths))
}

/// Summarises a list of lengths.
pub fn summarise(mut lengths: Vec<usize>) -> LengthReport {
    lengths.sort_unstable();
    let count = lengths.len();
    let at = |q: f64| {
        if count == 0 {
            0
        } else {
            lengths[((count - 1) as f64 * q).round() as usize]
        }
    };
    let share = |cut: usize| {
        if count == 0 {
            0.0
        } else {
            lengths.iter().filter(|&&l| l > cut).count() as f64 / count as f64
        }
    };
    LengthReport {
        count,
        min: lengths.first().copied().unwrap_or(0),
        max: lengths.last().copied().unwrap_or(0),
        mean: if count == 0 {
            0.0
        } else {
            lengths.iter().sum::<usize>() as f64 / count as f64
        },
        percentiles: [10u8, 25, 50, 75, 90, 99]
            .iter()
            .map(|&p| (p, at(f64::from(p) / 100.0)))
            .collect(),
        truncated_share: CUTS.iter().map(|&c| (c, share(c))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_lengths() {
        let r = summarise(vec![100, 300, 200, 600, 50]);
        assert_eq!((r.count, r.min, r.max), (5, 50, 600));
        assert!((r.mean - 250.0).abs() < 1e-12);
        assert_eq!(r.percentiles[2], (50, 200));
        assert_eq!(r.truncated_share, vec![(128, 0.6), (256, 0.4), (512, 0.2)]);
    }
}
