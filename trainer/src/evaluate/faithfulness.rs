//! How faithful the core's occlusion explanations are (`feelings explain`), by ERASER's
//! measures (DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate Rationalized NLP Models"):
//! for the units an explanation ranks highest toward the predicted class,
//! - comprehensiveness: the predicted class's probability minus its probability with those
//!   units removed (higher: they mattered);
//! - sufficiency: the same minus its probability with only those units kept (lower: they are
//!   enough),
//!
//! each averaged over the top 1, 5, 10, 20 and 50 % of the units (ERASER's AOPC bins, at least
//! one unit each), against the same number of units drawn at random (words for a short review;
//! sentences or runs of them for a long one, as the explanation's own units).

use std::path::Path;
use std::time::Instant;

use feelings_core::explain::{OcclusionPlan, Span};
use feelings_core::{is_positive, ClassifyError, TractClassifier};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};

/// The shares of an explanation's units ERASER's AOPC averages over.
pub const BINS: [f64; 5] = [0.01, 0.05, 0.10, 0.20, 0.50];

/// Comprehensiveness and sufficiency of one way of choosing units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Erasure {
    /// Mean drop in the predicted class's probability without the chosen units.
    pub comprehensiveness: f64,
    /// Mean drop in the predicted class's probability with only the chosen units.
    pub sufficiency: f64,
}

/// What `feelings explain` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faithfulness {
    /// Reviews measured (those with at least one unit).
    pub reviews: usize,
    /// The explanations' highest-ranked units.
    pub explained: Erasure,
    /// As many units drawn at random.
    pub random: Erasure,
    /// Mean units per explanation.
    pub units_per_review: f64,
    /// Mean milliseconds per explanation (the review and its variants classified).
    pub ms_per_review: f64,
}

/// Explains each of `texts` with `classifier` in at most `max_units` units and measures the
/// explanations as the module says; the random draws use `seed`. A text with no units (blank)
/// is explained but not measured. `progress` is called with the reviews done; errors name
/// `bundle`.
pub fn measure(
    classifier: &TractClassifier,
    bundle: &Path,
    texts: &[String],
    max_units: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<Faithfulness> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut explained, mut random) = (Erasure::default(), Erasure::default());
    let (mut units, mut measured, mut explaining_ms) = (0usize, 0usize, 0f64);
    let threshold = f64::from(classifier.manifest().threshold);
    for (done, text) in texts.iter().enumerate() {
        let started = Instant::now();
        let explanation = classifier
            .explain(text, max_units)
            .map_err(|e| model_error(bundle, e))?;
        explaining_ms += started.elapsed().as_secs_f64() * 1e3;
        let n = explanation.units.len();
        units += n;
        progress(done + 1);
        if n == 0 {
            continue;
        }
        measured += 1;
        // Toward the predicted class first.
        let toward = if is_positive(explanation.score, threshold) {
            1.0
        } else {
            -1.0
        };
        let mut ranked: Vec<usize> = (0..n).collect();
        ranked.sort_by(|&a, &b| {
            let weight = |i: usize| toward * explanation.units[i].weight;
            weight(b).total_cmp(&weight(a))
        });
        let mut shuffled = ranked.clone();
        shuffled.shuffle(&mut rng);
        let predicted = |p: f32| f64::from(if toward > 0.0 { p } else { 1.0 - p });
        let whole = predicted(explanation.score);
        let plan = OcclusionPlan {
            granularity: explanation.granularity,
            spans: explanation
                .units
                .iter()
                .map(|u| Span {
                    start: u.start,
                    end: u.end,
                })
                .collect(),
        };
        for (order, sum) in [(&ranked, &mut explained), (&shuffled, &mut random)] {
            let erased =
                erase(classifier, text, &plan, order).map_err(|e| model_error(bundle, e))?;
            for (without, only) in erased {
                sum.comprehensiveness += whole - predicted(without);
                sum.sufficiency += whole - predicted(only);
            }
        }
    }
    let bins = (measured * BINS.len()).max(1) as f64;
    for sum in [&mut explained, &mut random] {
        sum.comprehensiveness /= bins;
        sum.sufficiency /= bins;
    }
    let reviews = texts.len().max(1) as f64;
    Ok(Faithfulness {
        reviews: measured,
        explained,
        random,
        units_per_review: units as f64 / reviews,
        ms_per_review: explaining_ms / reviews,
    })
}

/// For each of [`BINS`], the probability of positive of `text` without, and with only, the
/// first units of `order`.
fn erase(
    classifier: &TractClassifier,
    text: &str,
    plan: &OcclusionPlan,
    order: &[usize],
) -> std::result::Result<Vec<(f32, f32)>, ClassifyError> {
    let mut texts = Vec::with_capacity(2 * BINS.len());
    for bin in BINS {
        let k = ((bin * order.len() as f64).ceil() as usize).clamp(1, order.len());
        let chosen = &order[..k];
        texts.push(plan.compose(text, |i| !chosen.contains(&i)));
        texts.push(plan.compose(text, |i| chosen.contains(&i)));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let scores: Vec<f32> = classifier
        .classify_batch(&refs)?
        .iter()
        .map(|p| p.score)
        .collect();
    Ok(scores.chunks(2).map(|pair| (pair[0], pair[1])).collect())
}

fn model_error(bundle: &Path, e: ClassifyError) -> Error {
    Error::model(bundle, e.to_string())
}
