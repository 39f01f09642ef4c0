//! Running a classifier over encoded reviews to get the probability of the positive class.

use candle_core::{Device, D};
use indicatif::ProgressBar;

use crate::data::batch::{make_batch, sorted_batches};
use crate::error::Result;
use crate::model::CandleClassifier;

/// The probability of `positive` for every sequence of `ids` (in order), in evaluation mode,
/// `batch_size` at a time; the bar advances by one per review.
pub fn positive_probabilities(
    model: &CandleClassifier,
    ids: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    device: &Device,
    bar: &ProgressBar,
) -> Result<Vec<f32>> {
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let no_labels = vec![0u32; ids.len()];
    let mut probs = vec![0f32; ids.len()];
    for indices in sorted_batches(&lengths, batch_size) {
        let batch = make_batch(ids, &no_labels, &indices, pad_id, device)?;
        let logits = model.forward(&batch.input_ids, &batch.attention_mask, None)?;
        let positive = candle_nn::ops::softmax(&logits, D::Minus1)?
            .narrow(1, 1, 1)?
            .squeeze(1)?
            .to_vec1::<f32>()?;
        for (&i, p) in indices.iter().zip(positive) {
            probs[i] = p;
        }
        bar.inc(indices.len() as u64);
    }
    Ok(probs)
}
