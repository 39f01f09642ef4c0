//! Grouping encoded reviews into padded batches, bucketed by length so little padding is
//! computed.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// How many batches' worth of examples are sorted by length together: large enough to group
/// similar lengths, small enough that batches stay a random mix of the data.
const BUCKET_BATCHES: usize = 50;

/// The model input for a few examples.
pub struct Batch {
    /// Token ids, `[batch, longest]`, u32, padded with the pad id.
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding, `[batch, longest]`, f32.
    pub attention_mask: Tensor,
    /// Classes, `[batch]`, u32.
    pub labels: Tensor,
    /// The positions of these examples in the subset they came from.
    pub indices: Vec<usize>,
}

/// Pads the sequences `ids[i]` for every `i` in `indices` to the longest of them.
pub fn make_batch(
    ids: &[Vec<u32>],
    labels: &[u32],
    indices: &[usize],
    pad_id: u32,
    device: &Device,
) -> candle_core::Result<Batch> {
    let longest = indices.iter().map(|&i| ids[i].len()).max().unwrap_or(0);
    let mut flat_ids = Vec::with_capacity(indices.len() * longest);
    let mut mask = Vec::with_capacity(indices.len() * longest);
    for &i in indices {
        let seq = &ids[i];
        flat_ids.extend_from_slice(seq);
        flat_ids.extend(std::iter::repeat_n(pad_id, longest - seq.len()));
        mask.extend(std::iter::repeat_n(1f32, seq.len()));
        mask.extend(std::iter::repeat_n(0f32, longest - seq.len()));
    }
    let shape = (indices.len(), longest);
    let batch_labels: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
    Ok(Batch {
        input_ids: Tensor::from_vec(flat_ids, shape, device)?,
        attention_mask: Tensor::from_vec(mask, shape, device)?,
        labels: Tensor::new(batch_labels, device)?,
        indices: indices.to_vec(),
    })
}

/// The training order of one epoch: a seeded shuffle cut into chunks of `BUCKET_BATCHES`
/// batches, each chunk sorted by length and cut into batches, and the batches shuffled.
/// Every index appears exactly once.
pub fn bucketed_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in order.chunks_mut(batch_size * BUCKET_BATCHES) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Batches for evaluation: sorted by length (least padding), order irrelevant.
pub fn sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketing_covers_every_example_once_and_groups_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 300 + 3).collect();
        let batches = bucketed_batches(&lengths, 16, 3);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 16));
        let padded: usize = batches
            .iter()
            .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len())
            .sum();
        let real: usize = lengths.iter().sum();
        assert!(padded < real * 11 / 10, "padding {padded} vs {real}");
        assert_eq!(batches, bucketed_batches(&lengths, 16, 3));
        assert_ne!(batches, bucketed_batches(&lengths, 16, 4));
    }

    #[test]
    fn batches_keep_each_example_with_its_own_label() {
        // Each example's ids encode its index and its label, so any mix-up shows.
        let n = 200;
        let labels: Vec<u32> = (0..n).map(|i| (i % 3 == 0) as u32).collect();
        let ids: Vec<Vec<u32>> = (0..n).map(|i| vec![i as u32; 2 + (i * 13) % 17]).collect();
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        for indices in bucketed_batches(&lengths, 8, 9) {
            let batch = make_batch(&ids, &labels, &indices, 9999, &Device::Cpu).unwrap();
            let rows = batch.input_ids.to_vec2::<u32>().unwrap();
            let mask = batch.attention_mask.to_vec2::<f32>().unwrap();
            let got = batch.labels.to_vec1::<u32>().unwrap();
            for (k, &i) in indices.iter().enumerate() {
                assert_eq!(rows[k][0] as usize, i);
                assert_eq!(got[k], labels[i]);
                let real = mask[k].iter().filter(|m| **m == 1.0).count();
                assert_eq!(real, ids[i].len());
                assert!(rows[k][real..].iter().all(|&t| t == 9999));
            }
        }
    }
}
