//! Running a bundle's ONNX model with tract: reviews in, probabilities out.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::bundle::{Bundle, BundleError};
use crate::encode::{EncodeError, ReviewEncoder};
use crate::manifest::{Manifest, Prediction, MODEL_FILE, TOKENIZER_FILE};

/// Reviews per model call in [`Classifier::classify_batch`]; longer lists are run in chunks of
/// similar lengths so memory stays bounded and little padding is computed.
const CHUNK: usize = 16;

/// Why a review could not be classified, or a classifier not built.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The bundle is unusable.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The tokenizer failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// tract failed to run the model.
    #[error("running the model failed: {0}")]
    Inference(String),
}

/// Runs tract's matrix products on `threads` threads in this process from now on (one by
/// default). Native builds only: WebAssembly runs on one thread.
#[cfg(not(target_family = "wasm"))]
pub fn set_inference_threads(threads: usize) {
    use tract_linalg::multithread::{
        set_default_executor, set_threading_panel_threshold, Executor,
    };
    // Every product of a BERT is large enough to split, even at batch 1.
    set_threading_panel_threshold(0);
    set_default_executor(if threads > 1 {
        Executor::multithread(threads)
    } else {
        Executor::SingleThread
    });
}

/// A loaded, optimised classifier; cheap to share between threads (`Clone` shares the plan).
#[derive(Clone)]
pub struct Classifier {
    manifest: Manifest,
    encoder: ReviewEncoder,
    plan: Arc<TypedRunnableModel>,
}

impl Classifier {
    /// Builds a classifier from a checked bundle: tokenizer with the training-time truncation,
    /// and the ONNX graph optimised by tract for any batch size and sequence length.
    pub fn new(bundle: &Bundle) -> Result<Self, ClassifyError> {
        let manifest = bundle.manifest.clone();
        let encoder =
            ReviewEncoder::from_bytes(&bundle.tokenizer, manifest.max_seq_len, manifest.truncation)
                .map_err(|e| BundleError::Corrupt {
                    file: TOKENIZER_FILE.into(),
                    reason: e.to_string(),
                })?;
        if encoder.vocab_size() > manifest.vocab_size {
            return Err(BundleError::Corrupt {
                file: TOKENIZER_FILE.into(),
                reason: format!(
                    "its vocabulary has {} tokens but the model's embedding has {} rows: they do not belong together",
                    encoder.vocab_size(),
                    manifest.vocab_size
                ),
            }
            .into());
        }
        let proto = bundle.onnx_proto()?;
        let corrupt = |e: TractError| BundleError::Corrupt {
            file: MODEL_FILE.into(),
            reason: format!("{e:#}"),
        };
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(corrupt)?;
        Ok(Self {
            manifest,
            encoder,
            plan,
        })
    }

    /// The bundle's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The tokenizer with the model's sequence length and truncation.
    pub fn encoder(&self) -> &ReviewEncoder {
        &self.encoder
    }

    /// Classifies one review.
    pub fn classify(&self, text: &str) -> Result<Prediction, ClassifyError> {
        let mut all = self.classify_batch(&[text])?;
        Ok(all.remove(0))
    }

    /// Classifies many reviews, in order.
    pub fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, ClassifyError> {
        let encoded = self.encoder.encode_batch(texts)?;
        let ids: Vec<Vec<u32>> = encoded.iter().map(|e| e.ids.clone()).collect();
        let probabilities = self.positive_probabilities(&ids)?;
        let threshold = self.manifest.threshold;
        Ok(encoded
            .iter()
            .zip(probabilities)
            .map(|(e, score)| Prediction {
                label: self.manifest.labels.decide(score, threshold).to_string(),
                score,
                threshold,
                truncated: e.truncated(),
            })
            .collect())
    }

    /// The probability of the positive class for each token sequence, in order, computed in
    /// chunks of similar lengths.
    pub fn positive_probabilities(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>, ClassifyError> {
        let logits = self.logits(ids)?;
        Ok(logits
            .iter()
            .map(|[neg, pos]| 1.0 / (1.0 + (neg - pos).exp()))
            .collect())
    }

    /// The model's two logits (`[negative, positive]`) for each token sequence, in order.
    pub fn logits(&self, ids: &[Vec<u32>]) -> Result<Vec<[f32; 2]>, ClassifyError> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![[0f32; 2]; ids.len()];
        for chunk in order.chunks(CHUNK) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, logits) in chunk.iter().zip(self.run(&rows)?) {
                out[i] = logits;
            }
        }
        Ok(out)
    }

    /// One model call on sequences padded to the longest of them.
    fn run(&self, rows: &[&[u32]]) -> Result<Vec<[f32; 2]>, ClassifyError> {
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let pad = i64::from(self.encoder.pad_id());
        let mut input_ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for row in rows {
            input_ids.extend(row.iter().map(|&t| i64::from(t)));
            input_ids.extend(std::iter::repeat_n(pad, longest - row.len()));
            mask.extend(std::iter::repeat_n(1i64, row.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - row.len()));
        }
        let shape = [rows.len(), longest];
        let fail = |e: TractError| ClassifyError::Inference(format!("{e:#}"));
        let inputs = tvec!(
            Tensor::from_shape(&shape, &input_ids)
                .map_err(fail)?
                .into_tvalue(),
            Tensor::from_shape(&shape, &mask)
                .map_err(fail)?
                .into_tvalue(),
        );
        let outputs = self.plan.run(inputs).map_err(fail)?;
        let logits = outputs[0].to_plain_array_view::<f32>().map_err(fail)?;
        let values: Vec<f32> = logits.iter().copied().collect();
        if values.len() != rows.len() * 2 {
            return Err(ClassifyError::Inference(format!(
                "the model returned {} values for {} reviews",
                values.len(),
                rows.len()
            )));
        }
        Ok(values.chunks(2).map(|c| [c[0], c[1]]).collect())
    }
}
