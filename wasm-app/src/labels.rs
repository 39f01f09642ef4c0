//! The names of the two classes a binary review classifier tells apart.

use serde::{Deserialize, Serialize};

/// The decision rule, written once for training metrics, evaluation, the exporter's check and
/// every deployment: a review is positive when its probability of positive reaches the
/// threshold (a probability exactly at the threshold is positive).
pub fn is_positive(positive_probability: f32, threshold: f64) -> bool {
    f64::from(positive_probability) >= threshold
}

/// The names of the two classes, as they appear in the training data.
///
/// Class index 1 is `positive`, class index 0 is `negative`: the model's second logit (or its
/// probability) is the probability of the positive class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The label value of class 0 (e.g. `negative`).
    pub negative: String,
    /// The label value of class 1 (e.g. `positive`).
    pub positive: String,
}

impl Labels {
    /// The label name of a class index (0 or 1; anything else counts as positive).
    pub fn name(&self, class: u32) -> &str {
        if class == 0 {
            &self.negative
        } else {
            &self.positive
        }
    }

    /// The label of a probability of the positive class, at `threshold` ([`is_positive`]).
    pub fn decide(&self, positive_probability: f32, threshold: f32) -> &str {
        self.name(u32::from(is_positive(
            positive_probability,
            f64::from(threshold),
        )))
    }
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            negative: "negative".into(),
            positive: "positive".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_at_the_threshold() {
        let labels = Labels::default();
        assert_eq!(labels.decide(0.5, 0.5), "positive");
        assert_eq!(labels.decide(0.49, 0.5), "negative");
        assert_eq!(labels.decide(0.7, 0.8), "negative");
        assert_eq!(labels.name(0), "negative");
    }
}
