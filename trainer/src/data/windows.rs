//! Sentence windows (`feelings train --sentence-windows`): a share of the training reviews is
//! shown in an epoch as a crop of 1 to [`MAX_WINDOW_SENTENCES`] consecutive sentences with the
//! review's label, so the model also learns to judge a few sentences on their own, as short
//! reviews are.

use feelings_core::sentences::{passage, sentence_spans};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most sentences in one window.
pub const MAX_WINDOW_SENTENCES: usize = 5;

/// For each of `texts`, with probability `share`, a window of its sentences: 1 to
/// [`MAX_WINDOW_SENTENCES`] (never more than it has) consecutive ones, the first drawn at
/// random, as written. `None` keeps the review whole, as it does for a review of one sentence.
/// The same `seed` draws the same windows.
pub fn draw_windows<'a>(texts: &[&'a str], share: f64, seed: u64) -> Vec<Option<&'a str>> {
    let share = share.clamp(0.0, 1.0);
    let mut rng = StdRng::seed_from_u64(seed);
    texts
        .iter()
        .map(|text| {
            // Drawn for every review, so one review's sentences do not shift another's window.
            let (chosen, pick) = (rng.random_bool(share), rng.random::<u64>());
            if !chosen {
                return None;
            }
            let spans = sentence_spans(text);
            if spans.len() < 2 {
                return None;
            }
            let mut pick = StdRng::seed_from_u64(pick);
            let len = pick.random_range(1..=MAX_WINDOW_SENTENCES.min(spans.len()));
            let first = pick.random_range(0..=spans.len() - len);
            Some(passage(text, &spans[first..first + len]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = "One. Two! Three? Four.<br />Five. Six. Seven.";

    #[test]
    fn windows_are_runs_of_one_to_five_whole_sentences_of_their_review() {
        let texts = vec![REVIEW; 400];
        let windows = draw_windows(&texts, 1.0, 7);
        let starts: Vec<usize> = sentence_spans(REVIEW).iter().map(|s| s.start).collect();
        let mut lengths = std::collections::BTreeSet::new();
        for window in windows {
            let window = window.expect("every review of several sentences gets a window");
            let at = window.as_ptr() as usize - REVIEW.as_ptr() as usize;
            assert!(
                starts.contains(&at),
                "{window} starts a sentence of the review"
            );
            let sentences = sentence_spans(window).len();
            assert!((1..=MAX_WINDOW_SENTENCES).contains(&sentences), "{window}");
            assert!(
                window.ends_with(['.', '!', '?']),
                "{window} ends a sentence"
            );
            lengths.insert(sentences);
        }
        assert_eq!(lengths.len(), MAX_WINDOW_SENTENCES, "every length is drawn");
    }

    #[test]
    fn the_share_and_the_seed_decide_which_reviews_get_a_window() {
        let texts = vec![REVIEW; 1000];
        let count = |share| draw_windows(&texts, share, 1).iter().flatten().count();
        assert_eq!(count(0.0), 0);
        assert!((250..350).contains(&count(0.3)), "{}", count(0.3));
        assert_eq!(draw_windows(&texts, 0.3, 5), draw_windows(&texts, 0.3, 5));
        assert_ne!(draw_windows(&texts, 0.3, 5), draw_windows(&texts, 0.3, 6));
        assert_eq!(
            draw_windows(&["Just one sentence, no more."], 1.0, 1),
            [None],
            "a review of one sentence stays whole"
        );
    }
}
