//! Running a bundle's ONNX model with tract: reviews in, probabilities out.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::bundle::{Bundle, BundleError};
use crate::encode::{EncodeError, ReviewEncoder};
use crate::explain::{Explanation, OcclusionPlan};
use crate::manifest::{Manifest, Prediction, MODEL_FILE, TOKENIZER_FILE};

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

/// Runs inference on `threads` threads in this process from now on (one by default): one review
/// has its matrix products split between them, several reviews run side by side, one per thread.
/// Native builds only: WebAssembly runs on one thread.
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

/// A loaded, optimised classifier; cheap to share between threads (`Clone` shares the plans).
#[derive(Clone)]
pub struct TractClassifier {
    manifest: Manifest,
    encoder: ReviewEncoder,
    /// The model optimised for one review of any length up to the model's.
    plan: Arc<TypedRunnableModel>,
    /// Native: the model optimised for a review of exactly the model's length.
    #[cfg(not(target_family = "wasm"))]
    full_length_plan: Arc<TypedRunnableModel>,
}

impl TractClassifier {
    /// Builds a classifier from a checked bundle: tokenizer with the training-time truncation,
    /// and the ONNX graph optimised by tract for one review of any length up to the model's.
    ///
    /// One review per call, never padded: with the batch fixed at 1 tract proves the shapes its
    /// fast element-wise kernels need (with a symbolic batch every add and layer norm took
    /// ndarray's generic path), and a call's working set stays in cache. Measured on MiniLM-L6
    /// at 256 tokens, 2 threads: 32 ms per review one at a time, 63 ms in batches of 16.
    ///
    /// Native builds also optimise the graph for a review of exactly the model's length (every
    /// review long enough to be truncated: 44 % of IMDB's at 256 tokens): tract picks each
    /// product's matrix kernel from its shape only when the shape is known, and with the length
    /// left open it takes one tile for all of them, which suits the 1,536-deep feed-forward
    /// product badly. Measured on MiniLM-L6 at 256 tokens, 1 thread: 47 ms per review → 39 ms,
    /// for a second copy of the packed weights (+50-95 MiB). The WebAssembly builds, with one
    /// kernel whatever the shape, skip it.
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
        let mut onnx = tract_onnx::onnx();
        crate::ops::register(&mut onnx);
        let model = onnx
            .with_ignore_output_shapes(true)
            .model_for_proto_model(&proto)
            .and_then(|m| one_review_at_a_time(m, manifest.max_seq_len))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(corrupt)?;
        #[cfg(not(target_family = "wasm"))]
        let full_length_plan = full_length(&model, manifest.max_seq_len)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(corrupt)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(corrupt)?;
        Ok(Self {
            manifest,
            encoder,
            plan,
            #[cfg(not(target_family = "wasm"))]
            full_length_plan,
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

    /// Why `text` gets its score: each of at most `max_units` units left out in turn (see
    /// [`crate::explain`]), the review and its variants classified as [`Self::classify_batch`]
    /// would.
    pub fn explain(&self, text: &str, max_units: usize) -> Result<Explanation, ClassifyError> {
        let plan = OcclusionPlan::new(text, max_units);
        let variants = plan.variants(text);
        let mut texts: Vec<&str> = vec![text];
        texts.extend(variants.iter().map(String::as_str));
        let ids: Vec<Vec<u32>> = self
            .encoder
            .encode_batch(&texts)?
            .into_iter()
            .map(|e| e.ids)
            .collect();
        let scores = self.positive_probabilities(&ids)?;
        Ok(plan
            .explain(text, scores[0], &scores[1..])
            .expect("one score per variant"))
    }

    /// The probability of the positive class for each token sequence, in order (see
    /// [`positive_probability`]).
    pub fn positive_probabilities(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>, ClassifyError> {
        let logits = self.logits(ids)?;
        Ok(logits
            .iter()
            .map(|&logits| positive_probability(logits))
            .collect())
    }

    /// The model's two logits (`[negative, positive]`) for each token sequence, in order.
    pub fn logits(&self, ids: &[Vec<u32>]) -> Result<Vec<[f32; 2]>, ClassifyError> {
        #[cfg(not(target_family = "wasm"))]
        {
            use tract_linalg::multithread::{current_tract_executor, Executor};
            let threads = match current_tract_executor() {
                Executor::MultiThread(pool) => pool.current_num_threads(),
                _ => 1,
            };
            if threads > 1 && ids.len() > 1 {
                return self.logits_side_by_side(ids, threads.min(ids.len()));
            }
        }
        ids.iter().map(|row| self.run(row)).collect()
    }

    /// Several reviews at once, each on its own thread with single-threaded matrix products:
    /// more reviews per second than splitting every product between the threads (on 2 cores at
    /// 256 tokens, splitting scales one review by only 1.45).
    #[cfg(not(target_family = "wasm"))]
    fn logits_side_by_side(
        &self,
        ids: &[Vec<u32>],
        threads: usize,
    ) -> Result<Vec<[f32; 2]>, ClassifyError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let next = AtomicUsize::new(0);
        let work = || {
            multithread_tract_scope(Executor::SingleThread, || {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = ids.get(i) else {
                        return Ok::<_, ClassifyError>(done);
                    };
                    done.push((i, self.run(row)?));
                }
            })
        };
        let finished: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
            workers.into_iter().map(|w| w.join()).collect()
        });
        let mut out = vec![[0f32; 2]; ids.len()];
        for result in finished {
            let done = result
                .map_err(|_| ClassifyError::Inference("an inference thread panicked".into()))??;
            for (i, logits) in done {
                out[i] = logits;
            }
        }
        Ok(out)
    }

    /// The plan for a review of `tokens` tokens.
    pub(crate) fn plan_for(&self, tokens: usize) -> &Arc<TypedRunnableModel> {
        #[cfg(not(target_family = "wasm"))]
        if tokens == self.manifest.max_seq_len {
            return &self.full_length_plan;
        }
        #[cfg(target_family = "wasm")]
        let _ = tokens; // one plan for every length
        &self.plan
    }

    /// The plan for a review of `tokens` tokens on `inputs`. Native, with several inference
    /// threads: inside their pool, so the steps between matrix products run on one of its
    /// threads instead of on a third thread that competes with the pool's for the cores.
    fn run_plan(&self, tokens: usize, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plan = self.plan_for(tokens);
        #[cfg(not(target_family = "wasm"))]
        if let tract_linalg::multithread::Executor::MultiThread(pool) =
            tract_linalg::multithread::current_tract_executor()
        {
            return pool.install(|| run_with_clean_vector_state(plan, inputs));
        }
        run_with_clean_vector_state(plan, inputs)
    }

    /// The model's inputs for one token sequence (every token attended).
    pub(crate) fn inputs(&self, row: &[u32]) -> Result<TVec<TValue>, ClassifyError> {
        let max = self.manifest.max_seq_len;
        if row.is_empty() || row.len() > max {
            return Err(ClassifyError::Inference(format!(
                "a token sequence of {} tokens: the model reads 1 to {max}",
                row.len()
            )));
        }
        let shape = [1, row.len()];
        let input_ids: Vec<i64> = row.iter().map(|&t| i64::from(t)).collect();
        let fail = |e: TractError| ClassifyError::Inference(format!("{e:#}"));
        Ok(tvec!(
            Tensor::from_shape(&shape, &input_ids)
                .map_err(fail)?
                .into_tvalue(),
            Tensor::from_shape(&shape, &vec![1i64; row.len()])
                .map_err(fail)?
                .into_tvalue(),
        ))
    }

    /// One model call on one token sequence (every token attended).
    fn run(&self, row: &[u32]) -> Result<[f32; 2], ClassifyError> {
        let fail = |e: TractError| ClassifyError::Inference(format!("{e:#}"));
        let inputs = self.inputs(row)?;
        let outputs = self.run_plan(row.len(), inputs).map_err(fail)?;
        let logits = outputs[0].to_plain_array_view::<f32>().map_err(fail)?;
        match logits.as_slice() {
            Some(&[negative, positive]) => Ok([negative, positive]),
            _ => Err(ClassifyError::Inference(format!(
                "the model returned {} values for one review",
                logits.len()
            ))),
        }
    }
}

/// Runs `plan`, clearing the upper halves of the vector registers after every operator.
///
/// tract's AVX-512 kernels return with those halves in use, and on Intel cores every
/// SSE-encoded instruction after that (the baseline x86-64 code of tract's other operators,
/// and of anything the thread runs next: a wasmtime guest's code too) waits on them. Measured
/// on an Intel Xeon (`feelings bench --threads 1`, issue 17): a 10-token review took 5.9 s in
/// a wasmtime guest called on the thread that had just run native tract, 26 ms on another.
fn run_with_clean_vector_state(
    plan: &Arc<TypedRunnableModel>,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let mut state = TypedSimpleState::new(plan)?;
    state.run_plan_with_eval(inputs, |ctx, op_state, node, input| {
        let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
        clear_upper_vector_state();
        out
    })
}

/// `vzeroupper` where the CPU has AVX; nothing elsewhere.
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        fn zero_upper() {
            // vzeroupper clears only the upper halves of the vector registers, which no Rust
            // value lives in across calls.
            std::arch::x86_64::_mm256_zeroupper()
        }
        // SAFETY: AVX was detected just above.
        unsafe { zero_upper() }
    }
}

/// The symbol tract knows a review's token count by.
const TOKENS: &str = "tokens";

/// Fixes the model's inputs (`input_ids`, `attention_mask`) at one review of 1 to `max_seq_len`
/// tokens.
fn one_review_at_a_time(
    mut model: InferenceModel,
    max_seq_len: usize,
) -> TractResult<InferenceModel> {
    let tokens = model.symbols.sym(TOKENS);
    model.symbols.add_assertion(format!("{TOKENS} >= 1"))?;
    model
        .symbols
        .add_assertion(format!("{TOKENS} <= {max_seq_len}"))?;
    let fact = i64::fact([TDim::from(1), tokens.into()]);
    for input in 0..model.inputs.len() {
        model.set_input_fact(input, fact.clone().into())?;
    }
    Ok(model)
}

/// The one-review model with its length fixed at `max_seq_len` tokens.
#[cfg(not(target_family = "wasm"))]
fn full_length(model: &TypedModel, max_seq_len: usize) -> TractResult<TypedModel> {
    let tokens = model.symbols.sym(TOKENS);
    let length = TDim::Val(max_seq_len as i64);
    model.set_symbols(&std::collections::HashMap::from([(tokens, length)]))
}

/// The probability of the positive class from `[negative, positive]` logits (the softmax of
/// two classes), as every runtime and the exporter's check compute it.
pub fn positive_probability([negative, positive]: [f32; 2]) -> f32 {
    1.0 / (1.0 + (negative - positive).exp())
}
