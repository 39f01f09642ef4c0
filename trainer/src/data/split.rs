//! Dividing a dataset into training, validation and test subsets.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::{Error, Result};

/// How to divide the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Share of the data for validation when splitting at random (default 0.1).
    pub val_fraction: f64,
    /// Share of the data for the test subset when splitting at random (default 0.1).
    pub test_fraction: f64,
    /// Use the dataset's own split column (`train`/`validation`/`test`) instead of a random
    /// split; validation is then carved from `train` with `val_fraction` unless rows say
    /// `validation`.
    pub use_split_column: bool,
    /// Keep at most this many training examples (a random sample).
    pub max_train: Option<usize>,
    /// Keep at most this many validation and this many test examples.
    pub max_eval: Option<usize>,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            val_fraction: 0.1,
            test_fraction: 0.1,
            use_split_column: false,
            max_train: None,
            max_eval: None,
        }
    }
}

/// The three subsets.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Examples to learn from.
    pub train: Vec<Example>,
    /// Examples that pick the best epoch and stop training early.
    pub validation: Vec<Example>,
    /// Held-out examples, looked at only to report the final figures.
    pub test: Vec<Example>,
}

impl Splits {
    /// One line per subset: its size and how many of it are positive.
    pub fn summary(&self) -> Vec<String> {
        [
            ("train", &self.train),
            ("validation", &self.validation),
            ("test", &self.test),
        ]
        .iter()
        .map(|(name, subset)| {
            let positive = subset.iter().filter(|e| e.label == 1).count();
            let share = if subset.is_empty() {
                0.0
            } else {
                100.0 * positive as f64 / subset.len() as f64
            };
            format!(
                "{name:<10} {:>6} reviews, {positive:>6} positive ({share:.1} %), {:>6} negative",
                subset.len(),
                subset.len() - positive
            )
        })
        .collect()
    }
}

/// Divides `examples` as `options` say; the same `seed` always gives the same subsets.
pub fn split(examples: Vec<Example>, options: &SplitOptions, seed: u64) -> Result<Splits> {
    let fractions_ok = (0.0..1.0).contains(&options.val_fraction)
        && (0.0..1.0).contains(&options.test_fraction)
        && options.val_fraction + options.test_fraction < 1.0;
    if !fractions_ok {
        return Err(Error::Setting(format!(
            "validation ({}) and test ({}) fractions must each be in [0, 1) and leave room for training",
            options.val_fraction, options.test_fraction
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut splits = if options.use_split_column {
        by_column(examples, options, &mut rng)?
    } else {
        let mut all = examples;
        all.shuffle(&mut rng);
        let n = all.len();
        let n_test = (n as f64 * options.test_fraction).round() as usize;
        let n_val = (n as f64 * options.val_fraction).round() as usize;
        let test = all.split_off(n - n_test);
        let validation = all.split_off(n - n_test - n_val);
        Splits {
            train: all,
            validation,
            test,
        }
    };
    if let Some(max) = options.max_train {
        splits.train.truncate(max);
    }
    if let Some(max) = options.max_eval {
        splits.validation.truncate(max);
        splits.test.truncate(max);
    }
    if splits.train.is_empty() {
        return Err(Error::Setting("the training subset is empty".into()));
    }
    if splits.validation.is_empty() {
        return Err(Error::Setting(
            "the validation subset is empty: raise --val-fraction or give more data".into(),
        ));
    }
    Ok(splits)
}

fn by_column(
    examples: Vec<Example>,
    options: &SplitOptions,
    rng: &mut rand::rngs::StdRng,
) -> Result<Splits> {
    let mut train = Vec::new();
    let mut validation = Vec::new();
    let mut test = Vec::new();
    for example in examples {
        let value = example.split.as_deref().unwrap_or_default().to_lowercase();
        match value.as_str() {
            "train" | "training" => train.push(example),
            "validation" | "valid" | "val" | "dev" => validation.push(example),
            "test" | "testing" => test.push(example),
            _ => {
                return Err(Error::Setting(format!(
                    "{}: split value '{value}' is none of train, validation, test",
                    example.origin
                )))
            }
        }
    }
    train.shuffle(rng);
    validation.shuffle(rng);
    test.shuffle(rng);
    if validation.is_empty() {
        let n_val = (train.len() as f64 * options.val_fraction).round() as usize;
        validation = train.split_off(train.len() - n_val);
    }
    Ok(Splits {
        train,
        validation,
        test,
    })
}
