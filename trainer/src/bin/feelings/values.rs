//! Value parsers of the numeric flags: every number is checked when the command line is parsed,
//! so a nonsensical one is refused, naming its flag, before any work starts.
//!
//! clap prefixes each message with `invalid value 'TEXT' for '--flag <FLAG>'`.

/// Longest `--save-minutes`: a week. Longer is no different from never saving a partial epoch
/// (`0`), and far longer would overflow a `Duration`.
pub const MAX_SAVE_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// Most epochs a run may ask for (the learning-rate schedule counts every step of every epoch).
pub const MAX_EPOCHS: usize = 10_000;

/// Most CPU threads `--threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Most timed or warm-up steps and calls of `feelings bench`, and its largest batch.
pub const MAX_BENCH_COUNT: usize = 100_000;

/// A whole number, 1 or more: counts, sizes, epochs (numbered from 1).
pub fn positive_count(text: &str) -> Result<usize, String> {
    whole(text, 1, usize::MAX).ok_or_else(|| "must be a whole number, 1 or more".into())
}

/// A whole number from `min` to `max`.
pub fn count_in(
    min: usize,
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |text| {
        whole(text, min, max).ok_or_else(|| format!("must be a whole number from {min} to {max}"))
    }
}

fn whole(text: &str, min: usize, max: usize) -> Option<usize> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// `--epochs`: 1 to [`MAX_EPOCHS`].
pub fn epochs(text: &str) -> Result<usize, String> {
    count_in(1, MAX_EPOCHS)(text)
}

/// `--threads`: 1 to [`MAX_THREADS`].
pub fn threads(text: &str) -> Result<usize, String> {
    count_in(1, MAX_THREADS)(text)
}

/// A finite real number (NaN and infinities, `1e400` included, are refused).
fn real(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A finite number above 0 (learning rates, norms).
pub fn positive_real(text: &str) -> Result<f64, String> {
    real(text)
        .filter(|&x| x > 0.0)
        .ok_or_else(|| "must be a finite number above 0".into())
}

/// A finite number, 0 or more (weight decay).
pub fn non_negative_real(text: &str) -> Result<f64, String> {
    real(text)
        .filter(|&x| x >= 0.0)
        .ok_or_else(|| "must be a finite number, 0 or more".into())
}

/// A share from 0 up to, not including, 1 (validation and test fractions, warm-up).
pub fn fraction(text: &str) -> Result<f64, String> {
    real(text)
        .filter(|x| (0.0..1.0).contains(x))
        .ok_or_else(|| "must be a number from 0 up to (not including) 1".into())
}

/// A probability from 0 to 1 (decision thresholds).
pub fn probability(text: &str) -> Result<f64, String> {
    real(text)
        .filter(|x| (0.0..=1.0).contains(x))
        .ok_or_else(|| "must be a probability from 0 to 1".into())
}

/// `--save-minutes`: 0 (save complete epochs only) to [`MAX_SAVE_MINUTES`].
pub fn save_minutes(text: &str) -> Result<f64, String> {
    real(text)
        .filter(|x| (0.0..=MAX_SAVE_MINUTES).contains(x))
        .ok_or_else(|| format!("must be a number of minutes from 0 to {MAX_SAVE_MINUTES} (a week)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_range_are_refused() {
        assert_eq!(positive_count("3"), Ok(3));
        for bad in ["0", "-1", "1.5", "", "99999999999999999999999"] {
            assert!(positive_count(bad).is_err(), "{bad}");
        }
        assert_eq!(epochs("10000"), Ok(10_000));
        assert!(epochs("10001").unwrap_err().contains("from 1 to 10000"));
        assert_eq!(count_in(0, 5)("0"), Ok(0));
        for bad in ["nan", "NaN", "inf", "-inf", "1e400", "0", "-0.1"] {
            assert!(positive_real(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative_real("0"), Ok(0.0));
        assert!(non_negative_real("-1e-9").is_err());
        assert_eq!(fraction("0"), Ok(0.0));
        assert!(fraction("1").is_err() && fraction("nan").is_err());
        assert_eq!(probability("1"), Ok(1.0));
        assert!(probability("1.01").is_err() && probability("nan").is_err());
        assert_eq!(save_minutes("0"), Ok(0.0));
        for bad in ["1e300", "inf", "nan", "-1", "10081"] {
            assert!(save_minutes(bad).unwrap_err().contains("to 10080"), "{bad}");
        }
    }
}
