//! `evaluate` and `compare`: candle and tract agree, the reports hold every section.

use std::path::{Path, PathBuf};

use candle_core::Device;
use feelings_core::sentences::Excerpt;
use feelings_core::Bundle;
use feelings_trainer::data::DataOptions;
use feelings_trainer::evaluate::compare::{compare_runs, comparison_html};
use feelings_trainer::evaluate::report::evaluation_html;
use feelings_trainer::evaluate::{
    evaluate_source, record_test_metrics, DataChoice, EvaluateOptions, Subset,
};
use feelings_trainer::fixtures::tiny_bundle;
use feelings_trainer::train::settings::{RunInfo, TrainSettings};

fn options() -> EvaluateOptions {
    EvaluateOptions {
        data: None,
        subset: Subset::Test,
        max: None,
        shortest: false,
        excerpt: None,
        threshold: None,
        tune_threshold: true,
        checkpoint: None,
        device: Device::Cpu,
        batch_size: 8,
        progress: false,
    }
}

fn tune(s: &mut TrainSettings) {
    s.seq_len = 32;
    s.epochs = 2;
    s.patience = None;
    s.optimizer.lr = 1e-3;
}

/// A two-epoch tiny run and its bundle under `dir`: (run, bundle).
fn run_and_bundle(dir: &Path) -> (PathBuf, PathBuf) {
    let bundle = tiny_bundle(dir, 160, 11, tune).unwrap();
    (dir.join("run"), bundle)
}

fn run_info(run: &Path) -> RunInfo {
    serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap()
}

#[test]
fn a_run_through_candle_and_its_bundle_through_tract_agree_and_report_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let (run, bundle) = run_and_bundle(dir.path());
    let by_candle = evaluate_source(&run, &options()).unwrap();
    let s = run_info(&run).settings;
    let same_data = DataChoice {
        path: s.data.clone(),
        columns: s.columns.clone(),
        split: s.split.clone(),
        seed: s.seed,
    };
    let by_tract = evaluate_source(
        &bundle,
        &EvaluateOptions {
            data: Some(same_data),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(by_candle.engine, "candle");
    assert_eq!(by_tract.engine, "tract");
    assert_eq!(by_candle.truth, by_tract.truth);
    assert_eq!(by_candle.metrics.count, 16);
    for (a, b) in by_candle.probabilities.iter().zip(&by_tract.probabilities) {
        assert!((a - b).abs() < 1e-4, "candle {a} vs tract {b}");
    }
    assert_eq!(by_candle.metrics.confusion, by_tract.metrics.confusion);
    let tuned = by_candle.tuned.as_ref().expect("a tuned threshold");
    assert!((0.0..=1.0).contains(&tuned.threshold));
    assert_eq!(by_candle.history.len(), 2);
    assert_eq!(by_candle.token_lengths.len(), 16);

    let html = evaluation_html(&by_candle);
    for section in [
        "summary",
        "history",
        "confusion",
        "roc",
        "threshold",
        "lengths",
        "wrong",
        "settings",
    ] {
        assert!(
            html.contains(&format!(r#"<section id="{section}">"#)),
            "no {section}"
        );
    }
    // Loss, accuracy, ROC, precision/recall, lengths: five charts, all inline.
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "fetches something"
    );
    assert!(html.contains("Youden"));
    let bundle_html = evaluation_html(&by_tract);
    assert!(bundle_html.contains("keeps no training history"));

    // The bundle's own figures replace the run's in its manifest; the bundle still loads.
    record_test_metrics(&by_tract).unwrap();
    let recorded = Bundle::read_dir(&bundle).unwrap().manifest.test_metrics;
    let recorded = recorded.expect("recorded test metrics");
    assert_eq!(recorded.count, 16);
    // JSON keeps 17 significant digits; serde_json's parsing may differ in the last bit.
    assert!((recorded.accuracy - by_tract.metrics.accuracy).abs() < 1e-12);
    let (auc, measured) = (recorded.roc_auc.unwrap(), by_tract.metrics.roc_auc.unwrap());
    assert!((auc - measured).abs() < 1e-12);
    let err = record_test_metrics(&by_candle).unwrap_err().to_string();
    assert!(err.contains("only a bundle"), "{err}");
    let mut elsewhere = by_tract.clone();
    elsewhere.metrics.threshold = 0.3;
    let err = record_test_metrics(&elsewhere).unwrap_err().to_string();
    assert!(err.contains("another threshold"), "{err}");
}

#[test]
fn every_row_of_a_file_is_evaluated_with_metrics_per_language() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = run_and_bundle(dir.path());
    // Three "languages" of 7, 6 and 5 reviews, in an order the groups do not follow.
    let rows = feelings_trainer::fixtures::reviews(18, 5);
    let data = dir.path().join("languages.csv");
    let mut w = csv::Writer::from_path(&data).unwrap();
    w.write_record(["language", "review", "sentiment"]).unwrap();
    let language = |i: usize| ["sv", "fr", "ja"][if i < 5 { 2 } else { i % 2 }];
    for (i, (text, label)) in rows.iter().enumerate() {
        w.write_record([language(i), text.as_str(), label]).unwrap();
    }
    w.flush().unwrap();
    let choice = |group_column: Option<&str>| DataChoice {
        path: data.clone(),
        columns: DataOptions {
            group_column: group_column.map(str::to_string),
            ..DataOptions::default()
        },
        split: Default::default(),
        seed: 42,
    };
    let every_row = |group_column: Option<&str>| EvaluateOptions {
        data: Some(choice(group_column)),
        subset: Subset::All,
        tune_threshold: false,
        ..options()
    };
    let e = evaluate_source(&bundle, &every_row(Some("language"))).unwrap();
    assert_eq!(e.metrics.count, 18, "every row, none held back");
    let groups: Vec<(&str, usize)> = e
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.metrics.count))
        .collect();
    assert_eq!(groups, [("fr", 7), ("ja", 5), ("sv", 6)]);
    // Each group's decisions are the whole file's, counted apart.
    let correct = |m: &feelings_trainer::evaluate::metrics::Metrics| m.accuracy * m.count as f64;
    let by_group: f64 = e.groups.iter().map(|g| correct(&g.metrics)).sum();
    assert!((by_group - correct(&e.metrics)).abs() < 1e-9);
    let html = evaluation_html(&e);
    for g in ["fr", "ja", "sv"] {
        assert!(
            html.contains(&format!(r#"<td class="text">{g}</td>"#)),
            "{g}"
        );
    }
    // The shortest reviews, in characters (each word a token of the tiny vocabulary, plus
    // [CLS] and [SEP]).
    let shortest = EvaluateOptions {
        max: Some(5),
        shortest: true,
        ..every_row(None)
    };
    let mut by_length: Vec<&str> = rows.iter().map(|(text, _)| text.as_str()).collect();
    by_length.sort_by_key(|text| text.chars().count());
    let expected: Vec<usize> = by_length[..5]
        .iter()
        .map(|text| text.split(' ').count() + 2)
        .collect();
    let e = evaluate_source(&bundle, &shortest).unwrap();
    assert_eq!(e.token_lengths, expected);
    // Without a group column there are no groups; a missing one is named.
    assert!(evaluate_source(&bundle, &every_row(None))
        .unwrap()
        .groups
        .is_empty());
    let err = evaluate_source(&bundle, &every_row(Some("lang")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no column 'lang'") && err.contains("language"),
        "{err}"
    );
    // Every row has no validation subset to tune on.
    let tuning = EvaluateOptions {
        tune_threshold: true,
        ..every_row(None)
    };
    let err = evaluate_source(&bundle, &tuning).unwrap_err().to_string();
    assert!(err.contains("--subset all"), "{err}");
}

#[test]
fn a_sentence_excerpt_scores_only_those_sentences_of_each_review() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = run_and_bundle(dir.path());
    let rows: Vec<(String, &str)> = feelings_trainer::fixtures::reviews(12, 9)
        .into_iter()
        .map(|(text, label)| (format!("{text}."), label))
        .collect();
    // Each review after the sentence of its neighbour, whose label is the other one.
    let joined: Vec<(String, &str)> = rows
        .iter()
        .enumerate()
        .map(|(i, (text, label))| (format!("{} {text}", rows[i ^ 1].0), *label))
        .collect();
    let write = |name: &str, rows: &[(String, &str)]| {
        let path = dir.path().join(name);
        feelings_trainer::fixtures::write_csv(&path, rows).unwrap();
        path
    };
    let scores = |path: PathBuf, excerpt: Option<Excerpt>| {
        let options = EvaluateOptions {
            data: Some(DataChoice {
                path,
                columns: DataOptions::default(),
                split: Default::default(),
                seed: 42,
            }),
            subset: Subset::All,
            tune_threshold: false,
            excerpt,
            ..options()
        };
        let e = evaluate_source(&bundle, &options).unwrap();
        assert_eq!(e.excerpt, excerpt);
        e.probabilities
    };
    let (plain, joined) = (write("plain.csv", &rows), write("joined.csv", &joined));
    let close = |x: &[f32], y: &[f32]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-6)
    };
    let alone = scores(plain, None);
    let last = scores(joined.clone(), Some(Excerpt::Last(1)));
    assert!(close(&last, &alone), "{last:?} vs {alone:?}");
    let neighbours: Vec<f32> = (0..alone.len()).map(|i| alone[i ^ 1]).collect();
    let first = scores(joined.clone(), Some(Excerpt::First(1)));
    assert!(close(&first, &neighbours), "{first:?} vs {neighbours:?}");
    let whole = scores(joined, None);
    assert!(
        !close(&whole, &alone),
        "both sentences count without an excerpt"
    );
}

#[test]
fn evaluating_needs_data_for_a_bundle_and_a_real_source() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = run_and_bundle(dir.path());
    let err = evaluate_source(&bundle, &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--data"), "{err}");
    let err = evaluate_source(dir.path(), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither a run folder"), "{err}");
}

#[test]
fn compare_shows_two_runs_and_refuses_runs_with_other_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = run_and_bundle(&dir.path().join("a"));
    let b_bundle = tiny_bundle(&dir.path().join("b"), 160, 11, |s| {
        tune(s);
        s.optimizer.lr = 3e-3;
    })
    .unwrap();
    let b = b_bundle.parent().unwrap().join("run");
    let comparison = compare_runs(&[a.clone(), b.clone()]).unwrap();
    let keys: Vec<&str> = comparison
        .differing
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(keys.contains(&"optimizer.lr"), "{keys:?}");
    assert!(keys.contains(&"data"), "{keys:?}");
    let html = comparison_html(&comparison);
    for section in ["settings", "history", "final"] {
        assert!(
            html.contains(&format!(r#"<section id="{section}">"#)),
            "no {section}"
        );
    }
    assert!(html.contains(r#"class="better""#));
    assert_eq!(html.matches("<svg").count(), 4);

    // The same run, relabelled: a different question.
    let c = dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    for entry in std::fs::read_dir(&b).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), c.join(entry.file_name())).unwrap();
        }
    }
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("run.json")).unwrap()).unwrap();
    info["labels"]["positive"] = "good".into();
    std::fs::write(c.join("run.json"), info.to_string()).unwrap();
    let err = compare_runs(&[a, c]).unwrap_err().to_string();
    assert!(err.contains("classes") && err.contains("good"), "{err}");
}

#[test]
fn explanations_of_a_trained_model_beat_random_words_by_erasers_measures() {
    let dir = tempfile::tempdir().unwrap();
    // Trained until it tells the fixture's good words from its bad ones.
    let bundle = tiny_bundle(dir.path(), 200, 11, |s| {
        s.seq_len = 32;
        s.epochs = 4;
        s.patience = None;
        s.optimizer.lr = 3e-3;
    })
    .unwrap();
    let out = crate::cli::feelings()
        .arg("explain")
        .arg(&bundle)
        .arg("--data")
        .arg(dir.path().join("data.csv"))
        .args(["--reviews", "30", "--threads", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(figures["reviews"], 30, "{stdout}");
    let get = |which: &str, what: &str| figures[which][what].as_f64().unwrap();
    // The fixture's reviews hang on one or two words: leaving out the ones the explanation
    // ranks first costs the prediction more than random words, and keeping only them keeps
    // more of it (an explanation ranked the wrong way round does worse than random on both;
    // seen here: 0.12 against 0.08, and 0.05 against 0.14).
    assert!(
        get("explained", "comprehensiveness") > get("random", "comprehensiveness") + 0.02,
        "{stdout}"
    );
    assert!(
        get("explained", "sufficiency") < get("random", "sufficiency") - 0.05,
        "{stdout}"
    );
    assert!(
        figures["units_per_review"].as_f64().unwrap() >= 3.0,
        "{stdout}"
    );
}
