//! Why a review came out the way it did, by occlusion: each unit of the review (a word; for a
//! longer review a sentence, or a run of sentences) is left out in turn, and its weight is how
//! much the probability of positive falls without it (positive: it pushed toward positive).
//! Faithful by construction (the model itself is asked), gradient-free, and it needs nothing but
//! a classifier of texts: the plan ([`OcclusionPlan`]) is made here, every runtime classifies its
//! variants with its own classifier (natively, in a wasmtime sandbox, in the browser) and the
//! weights are computed here again, so every runtime gives the same numbers.
//!
//! The work is capped: at most `max_units` variants per review ([`DEFAULT_MAX_UNITS`], never more
//! than [`MAX_UNITS`]). A review with more words than that is explained by sentences; one with
//! more sentences, by runs of consecutive sentences, as even as the count allows; one that is a
//! single long sentence, by runs of words ([`Granularity`]).

use serde::{Deserialize, Serialize};

pub use crate::sentences::Span;
use crate::sentences::{sentences, words};

/// Variants classified per explanation unless told otherwise: a 48-word review by words.
pub const DEFAULT_MAX_UNITS: usize = 48;

/// The most units any explanation is allowed, wherever it is asked for: a larger `max_units`
/// is taken as this many.
pub const MAX_UNITS: usize = 1000;

/// What one unit of an explanation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// A word: a run of characters between spaces or line breaks, its punctuation included.
    Word,
    /// A sentence: words up to one ending in `.`, `!`, `?` or `…`, or up to a line break.
    Sentence,
    /// A run of consecutive sentences.
    Passage,
    /// A run of consecutive words, for a long review that is all one sentence.
    Phrase,
}

/// The units of one review and the variants that leave each out.
#[derive(Debug, Clone, PartialEq)]
pub struct OcclusionPlan {
    /// What a unit is.
    pub granularity: Granularity,
    /// The units, in order, not overlapping.
    pub spans: Vec<Span>,
}

/// One unit and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedUnit {
    /// The unit's text, as in the review.
    pub text: String,
    /// Its first byte in the review.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// The probability of positive with the review whole minus without this unit: above 0 the
    /// unit pushed toward positive, below 0 toward negative.
    pub weight: f32,
}

/// Why a review got its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The probability of positive of the whole review.
    pub score: f32,
    /// What a unit is.
    pub granularity: Granularity,
    /// The units in reading order, each with its weight.
    pub units: Vec<WeightedUnit>,
}

/// The scores given to [`OcclusionPlan::explain`] do not fit its plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{given} scores for a plan of {planned} variants")]
pub struct ScoreCountMismatch {
    /// Variants in the plan.
    pub planned: usize,
    /// Scores given.
    pub given: usize,
}

impl OcclusionPlan {
    /// Splits `text` into at most `max_units` units (at least 1, at most [`MAX_UNITS`]): its
    /// words if there are that few, else its sentences, else runs of sentences; a long review
    /// that is one sentence, into runs of words.
    pub fn new(text: &str, max_units: usize) -> Self {
        let max_units = max_units.clamp(1, MAX_UNITS);
        let words = words(text);
        let word_spans: Vec<Span> = words.iter().map(|w| w.span).collect();
        if words.len() <= max_units {
            return Self {
                granularity: Granularity::Word,
                spans: word_spans,
            };
        }
        let sentences = sentences(&words);
        let (granularity, spans) = match sentences.len() {
            1 => (Granularity::Phrase, runs(&word_spans, max_units)),
            n if n <= max_units => (Granularity::Sentence, sentences),
            _ => (Granularity::Passage, runs(&sentences, max_units)),
        };
        Self { granularity, spans }
    }

    /// The review with every unit `keep` accepts (by index), joined by single spaces.
    pub fn compose(&self, text: &str, keep: impl Fn(usize) -> bool) -> String {
        let kept: Vec<&str> = self
            .spans
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, s)| &text[s.start..s.end])
            .collect();
        kept.join(" ")
    }

    /// The texts to classify, one per unit: the review without that unit.
    pub fn variants(&self, text: &str) -> Vec<String> {
        (0..self.spans.len())
            .map(|left_out| self.compose(text, |i| i != left_out))
            .collect()
    }

    /// The explanation of `text` from the probability of positive of the whole review and of
    /// each of [`Self::variants`], in order.
    pub fn explain(
        &self,
        text: &str,
        score: f32,
        variant_scores: &[f32],
    ) -> Result<Explanation, ScoreCountMismatch> {
        if variant_scores.len() != self.spans.len() {
            return Err(ScoreCountMismatch {
                planned: self.spans.len(),
                given: variant_scores.len(),
            });
        }
        let units = self
            .spans
            .iter()
            .zip(variant_scores)
            .map(|(s, without)| WeightedUnit {
                text: text[s.start..s.end].to_string(),
                start: s.start,
                end: s.end,
                weight: score - without,
            })
            .collect();
        Ok(Explanation {
            score,
            granularity: self.granularity,
            units,
        })
    }
}

/// `count` runs of consecutive `spans` (more spans than runs), as even as the count allows.
fn runs(spans: &[Span], count: usize) -> Vec<Span> {
    let n = spans.len();
    (0..count)
        .map(|i| Span {
            start: spans[i * n / count].start,
            end: spans[(i + 1) * n / count - 1].end,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, plan: &OcclusionPlan) -> Vec<String> {
        plan.spans
            .iter()
            .map(|s| text[s.start..s.end].to_string())
            .collect()
    }

    #[test]
    fn a_short_review_is_explained_word_by_word_line_breaks_aside() {
        let text = "Loved it!<br /><br />Truly  great,\tthe <BR>end.";
        let plan = OcclusionPlan::new(text, 48);
        assert_eq!(plan.granularity, Granularity::Word);
        assert_eq!(
            texts(text, &plan),
            ["Loved", "it!", "Truly", "great,", "the", "end."]
        );
        assert_eq!(
            plan.variants(text)[1],
            "Loved Truly great, the end.",
            "the variant leaves one word out"
        );
    }

    #[test]
    fn longer_reviews_fall_back_to_sentences_then_to_runs_of_them() {
        let text = "One two three. \"Four five!\" Six<br />seven eight? Nine";
        let plan = OcclusionPlan::new(text, 5);
        assert_eq!(plan.granularity, Granularity::Sentence);
        assert_eq!(
            texts(text, &plan),
            [
                "One two three.",
                "\"Four five!\"",
                "Six",
                "seven eight?",
                "Nine"
            ]
        );
        let runs = OcclusionPlan::new(text, 2);
        assert_eq!(runs.granularity, Granularity::Passage);
        assert_eq!(
            texts(text, &runs),
            [
                "One two three. \"Four five!\"",
                "Six<br />seven eight? Nine"
            ]
        );
        assert_eq!(
            OcclusionPlan::new(text, 0).spans.len(),
            1,
            "at least one unit"
        );
    }

    #[test]
    fn a_long_review_of_one_sentence_is_explained_by_runs_of_words() {
        let text = "one two three four five six seven";
        let plan = OcclusionPlan::new(text, 3);
        assert_eq!(plan.granularity, Granularity::Phrase);
        assert_eq!(
            texts(text, &plan),
            ["one two", "three four", "five six seven"]
        );
        let many = "word ".repeat(2 * MAX_UNITS);
        assert_eq!(
            OcclusionPlan::new(&many, usize::MAX).spans.len(),
            MAX_UNITS,
            "never more than MAX_UNITS"
        );
    }

    #[test]
    fn weights_are_the_drop_in_the_score_without_each_unit() {
        let text = "good bad";
        let plan = OcclusionPlan::new(text, 48);
        let explanation = plan.explain(text, 0.5, &[0.2, 0.9]).unwrap();
        let weights: Vec<f32> = explanation.units.iter().map(|u| u.weight).collect();
        assert!(
            (weights[0] - 0.3).abs() < 1e-6 && (weights[1] + 0.4).abs() < 1e-6,
            "{weights:?}"
        );
        assert_eq!(explanation.units[1].text, "bad");
        assert_eq!(
            plan.explain(text, 0.5, &[0.2]),
            Err(ScoreCountMismatch {
                planned: 2,
                given: 1
            })
        );
        let empty = OcclusionPlan::new("  <br /> ", 48);
        assert!(empty.spans.is_empty() && empty.variants("  <br /> ").is_empty());
    }
}
