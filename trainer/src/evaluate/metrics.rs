//! Binary classification metrics from predicted probabilities and true labels.

use feelings_core::is_positive;
use serde::{Deserialize, Serialize};

/// Counts of a binary confusion matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Positive, predicted positive.
    pub true_positive: usize,
    /// Negative, predicted positive.
    pub false_positive: usize,
    /// Negative, predicted negative.
    pub true_negative: usize,
    /// Positive, predicted negative.
    pub false_negative: usize,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of examples.
    pub count: usize,
    /// Mean cross-entropy (log loss).
    pub loss: f64,
    /// Share of correct decisions at `threshold`.
    pub accuracy: f64,
    /// Of the predicted positives, the share that are positive (0 if none predicted).
    pub precision: f64,
    /// Of the positives, the share predicted positive (0 if none).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Area under the ROC curve; absent when only one class is present.
    pub roc_auc: Option<f64>,
    /// The probability of `positive` from which a review is called positive.
    pub threshold: f64,
    /// The confusion matrix at `threshold`.
    pub confusion: Confusion,
}

/// The column titles matching [`Metrics::columns`].
pub const COLUMNS_HEADER: &str = "threshold accuracy precision  recall      F1      AUC  log loss";

impl Metrics {
    /// These figures as a bundle manifest records them (`test_metrics` in `feelings.json`).
    pub fn test_metrics(&self) -> feelings_core::manifest::TestMetrics {
        feelings_core::manifest::TestMetrics {
            count: self.count,
            accuracy: self.accuracy,
            precision: self.precision,
            recall: self.recall,
            f1: self.f1,
            roc_auc: self.roc_auc,
        }
    }

    /// The ROC AUC to four decimals, or `n/a` when one class was missing.
    pub fn auc_text(&self) -> String {
        self.roc_auc.map_or("n/a".into(), |a| format!("{a:.4}"))
    }

    /// Threshold, accuracy, precision, recall, F1, ROC AUC and log loss in fixed-width
    /// columns under [`COLUMNS_HEADER`], for terminal tables.
    pub fn columns(&self) -> String {
        format!(
            "{:>9.4} {:>7.2}% {:>9.4} {:>7.4} {:>7.4} {:>8} {:>9.4}",
            self.threshold,
            100.0 * self.accuracy,
            self.precision,
            self.recall,
            self.f1,
            self.auc_text(),
            self.loss
        )
    }
}

/// Computes every metric from `probs` (probability of positive) and `labels` (1 = positive).
pub fn compute(probs: &[f32], labels: &[u32], threshold: f64) -> Metrics {
    let mut c = Confusion::default();
    let mut loss = 0.0;
    for (&p, &y) in probs.iter().zip(labels) {
        let predicted = is_positive(p, threshold);
        match (y == 1, predicted) {
            (true, true) => c.true_positive += 1,
            (true, false) => c.false_negative += 1,
            (false, true) => c.false_positive += 1,
            (false, false) => c.true_negative += 1,
        }
        let p_true = if y == 1 {
            f64::from(p)
        } else {
            1.0 - f64::from(p)
        };
        loss -= p_true.clamp(1e-12, 1.0).ln();
    }
    let count = probs.len().min(labels.len());
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(c.true_positive, c.true_positive + c.false_positive);
    let recall = ratio(c.true_positive, c.true_positive + c.false_negative);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Metrics {
        count,
        loss: if count == 0 { 0.0 } else { loss / count as f64 },
        accuracy: ratio(c.true_positive + c.true_negative, count),
        precision,
        recall,
        f1,
        roc_auc: roc_auc(probs, labels),
        threshold,
        confusion: c,
    }
}

/// The area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting half (Mann-Whitney U with average ranks).
pub fn roc_auc(probs: &[f32], labels: &[u32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..probs.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let positives = order.iter().filter(|&&i| labels[i] == 1).count();
    let negatives = order.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && probs[order[end + 1]] == probs[order[start]] {
            end += 1;
        }
        let average_rank = (start + end) as f64 / 2.0 + 1.0;
        rank_sum += average_rank
            * order[start..=end]
                .iter()
                .filter(|&&i| labels[i] == 1)
                .count() as f64;
        start = end + 1;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives * negatives) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios_match_a_hand_computed_case() {
        // positives 0.9 (TP), 0.4 (FN), 0.6 (TP); negatives 0.2 (TN), 0.7 (FP).
        let probs = [0.9, 0.4, 0.6, 0.2, 0.7];
        let labels = [1, 1, 1, 0, 0];
        let m = compute(&probs, &labels, 0.5);
        assert_eq!(
            m.confusion,
            Confusion {
                true_positive: 2,
                false_positive: 1,
                true_negative: 1,
                false_negative: 1
            }
        );
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        // pairs (pos > neg): 0.9>0.2, 0.9>0.7, 0.4>0.2, 0.6>0.2 → 4 of 6.
        assert!((m.roc_auc.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        let expected_loss =
            -(0.9f64.ln() + 0.4f64.ln() + 0.6f64.ln() + 0.8f64.ln() + 0.3f64.ln()) / 5.0;
        assert!((m.loss - expected_loss).abs() < 1e-6);
    }

    #[test]
    fn ties_count_half_and_one_class_has_no_auc() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[1, 0]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.9], &[1, 0, 1]), Some(0.75));
        assert_eq!(roc_auc(&[0.1, 0.9], &[1, 1]), None);
        let m = compute(&[0.1, 0.2], &[0, 0], 0.5);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.recall, 0.0);
        assert_eq!(m.accuracy, 1.0);
    }
}
