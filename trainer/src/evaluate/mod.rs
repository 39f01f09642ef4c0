//! `feelings evaluate`: a checkpoint (through candle) or a deployed bundle (through tract, the
//! deployment's inference core) on a held-out subset, with everything the report shows.

pub mod compare;
pub mod curves;
pub mod faithfulness;
pub mod metrics;
pub mod probabilities;
pub mod report;
pub mod svg;

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::sentences::Excerpt;
use feelings_core::{is_positive, Bundle, Labels, ReviewEncoder, Truncation};
use serde::Serialize;

use crate::data::encode::encode_all;
use crate::data::split::{split, SplitOptions};
use crate::data::{load_dataset, DataOptions, Example};
use crate::error::{Error, Result};
use crate::evaluate::curves::{threshold_curve, youden_threshold, ThresholdPoint};
use crate::evaluate::metrics::{compute, Metrics};
use crate::evaluate::probabilities::positive_probabilities;
use crate::model::{CandleClassifier, Head, ModelFiles};
use crate::progress::bar;
use crate::train::run_dir::{read_json, EpochRecord, RunDir, RUN_FILE};
use crate::train::settings::RunInfo;

/// Rows of the most confidently wrong reviews kept for the report.
const WRONG_SHOWN: usize = 12;
/// Characters of each wrong review shown.
const EXCERPT_CHARS: usize = 600;

/// Which reviews to read and how to divide them (the run's own when evaluating a run).
#[derive(Debug, Clone)]
pub struct DataChoice {
    /// The labelled reviews.
    pub path: PathBuf,
    /// Which columns hold what.
    pub columns: DataOptions,
    /// How to split them.
    pub split: SplitOptions,
    /// The split's seed.
    pub seed: u64,
}

/// Which subset of the split to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subset {
    /// The held-out test subset.
    Test,
    /// The validation subset.
    Validation,
    /// Every row of `--data`: a file of test reviews only (e.g. `tests/data/`), not split.
    All,
}

impl Subset {
    /// Its name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Subset::Test => "test",
            Subset::Validation => "validation",
            Subset::All => "all",
        }
    }
}

/// How an evaluation is run.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Other data than the run's own (required for a bundle).
    pub data: Option<DataChoice>,
    /// The subset to report on.
    pub subset: Subset,
    /// Evaluate at most this many reviews of it (the first of its seeded shuffle).
    pub max: Option<usize>,
    /// With `max`: the shortest reviews of the subset (in characters, after any `excerpt`),
    /// not the first ones.
    pub shortest: bool,
    /// Only these sentences of each review (e.g. its last two), a short-review slice.
    pub excerpt: Option<Excerpt>,
    /// The decision threshold; the model's own (0.5, or the bundle's) when absent.
    pub threshold: Option<f64>,
    /// Also find the threshold maximising Youden's J on the validation subset.
    pub tune_threshold: bool,
    /// A run's checkpoint by epoch; its best one when absent.
    pub checkpoint: Option<usize>,
    /// Where candle computes (runs only).
    pub device: Device,
    /// Reviews per model call (runs only).
    pub batch_size: usize,
    /// Show progress bars.
    pub progress: bool,
}

/// A threshold found on the validation subset, and what it does on the evaluated subset.
#[derive(Debug, Clone, Serialize)]
pub struct TunedThreshold {
    /// The threshold maximising Youden's J (recall - false positive rate) on validation.
    pub threshold: f64,
    /// Validation reviews it was found on.
    pub validation_count: usize,
    /// The evaluated subset's metrics at that threshold.
    pub metrics: Metrics,
}

/// The metrics of the reviews sharing one value of the group column.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMetrics {
    /// The value (e.g. `fr`).
    pub group: String,
    /// Its reviews' metrics at the threshold in use.
    pub metrics: Metrics,
}

/// A wrongly classified review, with how sure the model was.
#[derive(Debug, Clone, Serialize)]
pub struct WrongReview {
    /// Where it came from (data row or file).
    pub origin: String,
    /// Its true label.
    pub label: String,
    /// The model's probability of positive.
    pub probability: f32,
    /// Its beginning.
    pub excerpt: String,
}

/// Everything one evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The run folder or bundle evaluated.
    pub source: PathBuf,
    /// `candle` for a run's checkpoint, `tract` for a bundle.
    pub engine: String,
    /// The run's checkpoint evaluated.
    pub checkpoint: Option<usize>,
    /// The subset's name.
    pub subset: Subset,
    /// The sentences of each review evaluated, when not all of them.
    pub excerpt: Option<Excerpt>,
    /// The two classes.
    pub labels: Labels,
    /// Metrics at the threshold in use.
    pub metrics: Metrics,
    /// The threshold tuned on validation, when asked for.
    pub tuned: Option<TunedThreshold>,
    /// Metrics per value of the data's group column (e.g. per language), in order of the
    /// value; empty without one.
    pub groups: Vec<GroupMetrics>,
    /// Every threshold's rates on the subset, highest threshold first.
    pub curve: Vec<ThresholdPoint>,
    /// Token lengths of the subset's reviews before truncation.
    pub token_lengths: Vec<usize>,
    /// The model's sequence length.
    pub seq_len: usize,
    /// What is kept of longer reviews.
    pub truncation: Truncation,
    /// The most confidently wrong reviews, surest first.
    pub wrong: Vec<WrongReview>,
    /// A run's epochs (empty for a bundle).
    pub history: Vec<EpochRecord>,
    /// A run's best epoch.
    pub best_epoch: Option<usize>,
    /// The run's settings or the bundle's manifest, as recorded.
    pub settings: serde_json::Value,
    /// The probability of positive per evaluated review, in subset order.
    pub probabilities: Vec<f32>,
    /// The true label per evaluated review (1 = positive).
    pub truth: Vec<u32>,
}

/// A model that scores token sequences.
enum Scorer {
    Candle {
        model: Box<CandleClassifier>,
        encoder: Box<ReviewEncoder>,
    },
    Tract(Box<feelings_core::TractClassifier>),
}

impl Scorer {
    fn encoder(&self) -> &ReviewEncoder {
        match self {
            Scorer::Candle { encoder, .. } => encoder,
            Scorer::Tract(c) => c.encoder(),
        }
    }

    /// (probabilities, full token lengths) of `examples`.
    fn score(
        &self,
        examples: &[Example],
        name: &str,
        options: &EvaluateOptions,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let pb = bar(examples.len(), name, "reviews", options.progress);
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let (ids, lengths): (Vec<Vec<u32>>, Vec<usize>) =
            encode_all(self.encoder(), &texts, |_| {})?
                .into_iter()
                .map(|e| (e.ids, e.full_len))
                .unzip();
        let probs = match self {
            Scorer::Candle { model, encoder } => positive_probabilities(
                model,
                &ids,
                encoder.pad_id(),
                options.batch_size,
                &options.device,
                &pb,
            )?,
            Scorer::Tract(classifier) => {
                let mut probs = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(64) {
                    probs.extend(
                        classifier
                            .positive_probabilities(chunk)
                            .map_err(|e| Error::model(name, e.to_string()))?,
                    );
                    pb.inc(chunk.len() as u64);
                }
                probs
            }
        };
        pb.finish_and_clear();
        Ok((probs, lengths))
    }
}

/// What a source folder provides before any review is scored.
struct Loaded {
    scorer: Scorer,
    engine: &'static str,
    checkpoint: Option<usize>,
    labels: Labels,
    threshold: f64,
    data: DataChoice,
    history: Vec<EpochRecord>,
    best_epoch: Option<usize>,
    settings: serde_json::Value,
    seq_len: usize,
    truncation: Truncation,
}

/// Evaluates the run folder or bundle at `source`.
pub fn evaluate_source(source: &Path, options: &EvaluateOptions) -> Result<Evaluation> {
    let loaded = if source.join(RUN_FILE).is_file() {
        load_run(source, options)?
    } else if Bundle::is_in(source) {
        load_bundle(source, options)?
    } else {
        return Err(Error::run(
            source,
            format!(
                "neither a run folder ({RUN_FILE}) nor a model bundle ({})",
                feelings_core::manifest::MANIFEST_FILE
            ),
        ));
    };
    let data = &loaded.data;
    let dataset = load_dataset(&data.path, &data.columns)?;
    check_labels(&loaded.labels, &dataset.labels, &data.path)?;
    if options.subset == Subset::All && (options.data.is_none() || options.tune_threshold) {
        return Err(Error::Setting(
            "--subset all takes every row of --data, a file of test reviews: it needs --data and \
             has no validation subset to tune a threshold on"
                .into(),
        ));
    }
    let examples = dataset.examples;
    let (chosen, validation) = match options.subset {
        Subset::All => (examples, Vec::new()),
        Subset::Test => {
            let splits = split(examples, &data.split, data.seed)?;
            (splits.test, splits.validation)
        }
        Subset::Validation => {
            let splits = split(examples, &data.split, data.seed)?;
            (splits.validation.clone(), splits.validation)
        }
    };
    if chosen.is_empty() {
        return Err(Error::data(
            &data.path,
            format!("the {} subset is empty", options.subset.name()),
        ));
    }
    let (chosen, validation) = narrow(chosen, validation, options);
    let threshold = options.threshold.unwrap_or(loaded.threshold);
    let (probabilities, token_lengths) = loaded.scorer.score(&chosen, "evaluate", options)?;
    let truth: Vec<u32> = chosen.iter().map(|e| e.label).collect();
    let metrics = compute(&probabilities, &truth, threshold);
    let groups = group_metrics(&chosen, &probabilities, threshold);
    let tuned = if options.tune_threshold {
        let scored = (&chosen[..], &probabilities[..], &truth[..]);
        Some(tune_threshold(&loaded, &validation, scored, options)?)
    } else {
        None
    };
    let wrong = confidently_wrong(&chosen, &probabilities, threshold, &loaded.labels);
    Ok(Evaluation {
        source: source.to_path_buf(),
        engine: loaded.engine.to_string(),
        checkpoint: loaded.checkpoint,
        subset: options.subset,
        excerpt: options.excerpt,
        labels: loaded.labels,
        curve: threshold_curve(&probabilities, &truth),
        metrics,
        groups,
        tuned,
        token_lengths,
        seq_len: loaded.seq_len,
        truncation: loaded.truncation,
        wrong,
        history: loaded.history,
        best_epoch: loaded.best_epoch,
        settings: loaded.settings,
        probabilities,
        truth,
    })
}

/// The reviews to evaluate and the validation reviews a threshold is tuned on, both cut to
/// `options.excerpt` alike; then the evaluated ones narrowed to `options.max` (the shortest
/// of them, after the cut, with `options.shortest`).
fn narrow(
    mut chosen: Vec<Example>,
    mut validation: Vec<Example>,
    options: &EvaluateOptions,
) -> (Vec<Example>, Vec<Example>) {
    if let Some(excerpt) = options.excerpt {
        for e in chosen.iter_mut().chain(&mut validation) {
            e.text = excerpt.of(&e.text).to_string();
        }
    }
    if options.shortest {
        chosen.sort_by_key(|e| e.text.chars().count());
    }
    if let Some(max) = options.max {
        chosen.truncate(max);
    }
    (chosen, validation)
}

/// The metrics of each value of the examples' group column, in order of the value.
fn group_metrics(examples: &[Example], probabilities: &[f32], threshold: f64) -> Vec<GroupMetrics> {
    let mut groups: std::collections::BTreeMap<&str, (Vec<f32>, Vec<u32>)> = Default::default();
    for (e, &p) in examples.iter().zip(probabilities) {
        if let Some(group) = &e.group {
            let (probs, truth) = groups.entry(group).or_default();
            probs.push(p);
            truth.push(e.label);
        }
    }
    groups
        .into_iter()
        .map(|(group, (probs, truth))| GroupMetrics {
            group: group.to_string(),
            metrics: compute(&probs, &truth, threshold),
        })
        .collect()
}

/// The threshold Youden's J picks on the validation subset, and the evaluated subset's metrics
/// at it; `scored` is the evaluated subset with its probabilities and true classes.
fn tune_threshold(
    loaded: &Loaded,
    validation: &[Example],
    (chosen, probabilities, truth): (&[Example], &[f32], &[u32]),
    options: &EvaluateOptions,
) -> Result<TunedThreshold> {
    // Evaluating the whole validation subset, in its order, already scored it.
    let whole = chosen.len() == validation.len() && !options.shortest;
    let val_probs = if options.subset == Subset::Validation && whole {
        probabilities.to_vec()
    } else {
        loaded.scorer.score(validation, "validation", options)?.0
    };
    let val_truth: Vec<u32> = validation.iter().map(|e| e.label).collect();
    let best = youden_threshold(&val_probs, &val_truth).ok_or_else(|| {
        Error::data(
            &loaded.data.path,
            "the validation subset has one class only: no threshold to tune",
        )
    })?;
    Ok(TunedThreshold {
        threshold: best,
        validation_count: validation.len(),
        metrics: compute(probabilities, truth, best),
    })
}

fn load_run(dir: &Path, options: &EvaluateOptions) -> Result<Loaded> {
    let info: RunInfo = read_json(&dir.join(RUN_FILE))?;
    let run = RunDir::open(dir)?;
    let history = run.records()?;
    let epoch = options
        .checkpoint
        .or(info.best_epoch)
        .ok_or_else(|| Error::run(dir, "no complete epoch yet: nothing to evaluate"))?;
    let folder = run.checkpoint(epoch);
    if !folder.is_dir() {
        return Err(Error::run(&folder, "no such checkpoint"));
    }
    let files = ModelFiles::locate(&folder)?;
    let model = CandleClassifier::load(&files, &options.device, Head::FromFile)?;
    let s = &info.settings;
    let tokenizer = std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
    let encoder = ReviewEncoder::from_bytes(&tokenizer, s.seq_len, s.truncation)
        .map_err(|e| Error::model(&files.tokenizer, e.to_string()))?;
    let data = options.data.clone().unwrap_or_else(|| DataChoice {
        path: s.data.clone(),
        columns: s.columns.clone(),
        split: s.split.clone(),
        seed: s.seed,
    });
    Ok(Loaded {
        scorer: Scorer::Candle {
            model: Box::new(model),
            encoder: Box::new(encoder),
        },
        engine: "candle",
        checkpoint: Some(epoch),
        labels: info.labels.clone(),
        threshold: 0.5,
        data,
        best_epoch: info.best_epoch,
        history,
        settings: serde_json::to_value(&info.settings).unwrap_or_default(),
        seq_len: s.seq_len,
        truncation: s.truncation,
    })
}

fn load_bundle(dir: &Path, options: &EvaluateOptions) -> Result<Loaded> {
    let bundle = Bundle::read_dir(dir).map_err(|e| Error::model(dir, e.to_string()))?;
    let classifier = feelings_core::TractClassifier::new(&bundle)
        .map_err(|e| Error::model(dir, e.to_string()))?;
    let manifest = bundle.manifest;
    let data = options.data.clone().ok_or_else(|| {
        Error::Setting(format!(
            "{}: a bundle carries no data: give --data (and --split-column split for the dataset's own test set)",
            dir.display()
        ))
    })?;
    Ok(Loaded {
        scorer: Scorer::Tract(Box::new(classifier)),
        engine: "tract",
        checkpoint: None,
        labels: manifest.labels.clone(),
        threshold: f64::from(manifest.threshold),
        data,
        history: Vec::new(),
        best_epoch: None,
        settings: serde_json::to_value(&manifest).unwrap_or_default(),
        seq_len: manifest.max_seq_len,
        truncation: manifest.truncation,
    })
}

/// Refuses data whose class names are not the model's.
fn check_labels(model: &Labels, data: &Labels, path: &Path) -> Result<()> {
    if model != data {
        return Err(Error::data(
            path,
            format!(
                "its classes ({} / {}) are not the model's ({} / {})",
                data.positive, data.negative, model.positive, model.negative
            ),
        ));
    }
    Ok(())
}

/// The wrong decisions the model was surest of, surest first.
fn confidently_wrong(
    examples: &[Example],
    probs: &[f32],
    threshold: f64,
    labels: &Labels,
) -> Vec<WrongReview> {
    let mut wrong: Vec<(f64, usize)> = examples
        .iter()
        .zip(probs)
        .enumerate()
        .filter(|(_, (e, &p))| is_positive(p, threshold) != (e.label == 1))
        .map(|(i, (e, &p))| {
            let sureness = if e.label == 1 {
                1.0 - f64::from(p)
            } else {
                f64::from(p)
            };
            (sureness, i)
        })
        .collect();
    wrong.sort_by(|a, b| b.0.total_cmp(&a.0));
    wrong
        .into_iter()
        .take(WRONG_SHOWN)
        .map(|(_, i)| {
            let e = &examples[i];
            let mut excerpt: String = e.text.chars().take(EXCERPT_CHARS).collect();
            if e.text.chars().count() > EXCERPT_CHARS {
                excerpt.push('…');
            }
            WrongReview {
                origin: e.origin.clone(),
                label: labels.name(e.label).to_string(),
                probability: probs[i],
                excerpt,
            }
        })
        .collect()
}

/// Writes the figures of `evaluation` into the manifest (`test_metrics`) of the bundle it
/// measured, so a shipped bundle carries what was measured on it, through the engine it is
/// deployed with. Refused unless the evaluation is of a bundle, on its test subset, at the
/// bundle's own threshold.
pub fn record_test_metrics(evaluation: &Evaluation) -> Result<()> {
    let dir = &evaluation.source;
    let refuse = |why: &str| Err(Error::run(dir, format!("not recorded: {why}")));
    if evaluation.engine != "tract" {
        return refuse("only a bundle's evaluation is recorded in its manifest");
    }
    if evaluation.subset != Subset::Test {
        return refuse("only figures on the test subset are recorded");
    }
    let mut bundle = Bundle::read_dir(dir).map_err(|e| Error::model(dir, e.to_string()))?;
    let m = &evaluation.metrics;
    if (m.threshold - f64::from(bundle.manifest.threshold)).abs() > 1e-6 {
        return refuse("measured at another threshold than the bundle's");
    }
    bundle.manifest.test_metrics = Some(m.test_metrics());
    let path = dir.join(feelings_core::manifest::MANIFEST_FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, feelings_core::manifest::to_json(&bundle.manifest))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(&path, e))
}
