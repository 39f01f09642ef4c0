//! What every threshold does: the ROC curve, precision and recall against the threshold, and
//! the threshold that best separates the classes (Youden's J).

use serde::Serialize;

/// The decisions at one threshold: reviews scoring at or above it are called positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdPoint {
    /// The probability of positive from which a review is called positive.
    pub threshold: f64,
    /// True positive rate (recall): positives called positive / positives.
    pub tpr: f64,
    /// False positive rate: negatives called positive / negatives.
    pub fpr: f64,
    /// Positives among those called positive (1 when none is called positive).
    pub precision: f64,
}

impl ThresholdPoint {
    /// Youden's J: how much better than chance this threshold separates the classes.
    pub fn youden_j(&self) -> f64 {
        self.tpr - self.fpr
    }
}

/// One point per distinct score, from the highest threshold to the lowest, starting with one
/// above every score (nothing called positive, the ROC curve's (0, 0)). Tied scores move
/// together: they share one threshold. Empty when either class is missing.
pub fn threshold_curve(probs: &[f32], labels: &[u32]) -> Vec<ThresholdPoint> {
    let n = probs.len().min(labels.len());
    let positives = labels[..n].iter().filter(|&&y| y == 1).count();
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let point = |threshold: f64, tp: usize, fp: usize| ThresholdPoint {
        threshold,
        tpr: tp as f64 / positives as f64,
        fpr: fp as f64 / negatives as f64,
        precision: if tp + fp == 0 {
            1.0
        } else {
            tp as f64 / (tp + fp) as f64
        },
    };
    let highest = f64::from(probs[order[0]]);
    let mut points = vec![point(next_above(highest), 0, 0)];
    let (mut tp, mut fp) = (0, 0);
    let mut start = 0;
    while start < n {
        let score = probs[order[start]];
        let mut end = start;
        while end < n && probs[order[end]] == score {
            if labels[order[end]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            end += 1;
        }
        points.push(point(f64::from(score), tp, fp));
        start = end;
    }
    points
}

/// The threshold maximising Youden's J (the first, i.e. highest, on ties); `None` when a
/// class is missing.
pub fn youden_threshold(probs: &[f32], labels: &[u32]) -> Option<f64> {
    threshold_curve(probs, labels)
        .into_iter()
        .fold(None, |best: Option<ThresholdPoint>, p| match best {
            Some(b) if b.youden_j() >= p.youden_j() => Some(b),
            _ => Some(p),
        })
        .map(|p| p.threshold)
}

/// At most `n` points of a curve, evenly spaced along it, first and last kept (for charts).
pub fn thin(points: &[ThresholdPoint], n: usize) -> Vec<ThresholdPoint> {
    if points.len() <= n || n < 2 {
        return points.to_vec();
    }
    (0..n)
        .map(|i| points[i * (points.len() - 1) / (n - 1)])
        .collect()
}

fn next_above(x: f64) -> f64 {
    if x >= 1.0 {
        x + f64::EPSILON
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_of_a_hand_computed_case_with_a_tie() {
        // Scores: 0.9 (pos), 0.7 (neg), 0.6 (pos), 0.6 (neg), 0.2 (neg); 2 positives, 3 negatives.
        let probs = [0.9, 0.7, 0.6, 0.6, 0.2];
        let labels = [1, 0, 1, 0, 0];
        let curve = threshold_curve(&probs, &labels);
        let got: Vec<(f64, f64, f64)> = curve.iter().map(|p| (p.threshold, p.tpr, p.fpr)).collect();
        let want = [
            (1.0, 0.0, 0.0),
            (0.9, 0.5, 0.0),
            (0.7, 0.5, 1.0 / 3.0),
            (0.6, 1.0, 2.0 / 3.0),
            (0.2, 1.0, 1.0),
        ];
        assert_eq!(got.len(), want.len());
        for ((t, r, f), (wt, wr, wf)) in got.iter().zip(want) {
            assert!((t - wt).abs() < 1e-6 && (r - wr).abs() < 1e-12 && (f - wf).abs() < 1e-12);
        }
        assert_eq!(curve[0].precision, 1.0);
        assert!((curve[3].precision - 0.5).abs() < 1e-12);
        // J: 0, 0.5, 0.167, 0.333, 0 → 0.9.
        assert!((youden_threshold(&probs, &labels).unwrap() - 0.9).abs() < 1e-6);
    }

    #[test]
    fn one_class_has_no_curve_and_no_threshold() {
        assert!(threshold_curve(&[0.2, 0.8], &[1, 1]).is_empty());
        assert_eq!(youden_threshold(&[0.2, 0.8], &[0, 0]), None);
        assert!(threshold_curve(&[], &[]).is_empty());
    }

    #[test]
    fn thinning_keeps_both_ends() {
        let probs: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let labels: Vec<u32> = (0..1000).map(|i| u32::from(i % 3 == 0)).collect();
        let curve = threshold_curve(&probs, &labels);
        let thinned = thin(&curve, 50);
        assert_eq!(thinned.len(), 50);
        assert_eq!(thinned[0], curve[0]);
        assert_eq!(thinned[49], curve[curve.len() - 1]);
    }
}
