//! `feelings compare`: runs side by side, the tutorial's "duplicate the experiment with another
//! BERT and compare".

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::evaluate::metrics::{Metrics, COLUMNS_HEADER};
use crate::evaluate::report::{page, METRICS_HEADER};
use crate::evaluate::svg::{escape, line_chart, LineChart, Series};
use crate::train::run_dir::{read_json, EpochRecord, RunDir, RUN_FILE};
use crate::train::settings::RunInfo;

/// One run as compared.
#[derive(Debug, Clone)]
pub struct ComparedRun {
    /// Its folder.
    pub path: PathBuf,
    /// Its run.json.
    pub info: RunInfo,
    /// Its completed epochs.
    pub history: Vec<EpochRecord>,
}

impl ComparedRun {
    /// A short name: the folder's name.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }

    /// The final figures: the test metrics of a finished run, else the best epoch's validation
    /// metrics; and which of the two they are.
    pub fn final_metrics(&self) -> Option<(&'static str, &Metrics)> {
        if let Some(test) = &self.info.test {
            return Some(("test", test));
        }
        let best = self.info.best_epoch?;
        self.history
            .iter()
            .find(|r| r.epoch == best)
            .map(|r| ("validation", &r.validation))
    }
}

/// Runs side by side, with the settings in which they differ.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The runs, in the order given.
    pub runs: Vec<ComparedRun>,
    /// Each setting (dotted path) whose value differs between runs, with every run's value.
    pub differing: Vec<(String, Vec<String>)>,
}

/// Reads the runs in `dirs` (two or more); refuses runs whose classes differ.
pub fn compare_runs(dirs: &[PathBuf]) -> Result<Comparison> {
    if dirs.len() < 2 {
        return Err(Error::Setting(
            "compare needs two or more run folders".into(),
        ));
    }
    let mut runs = Vec::new();
    for dir in dirs {
        let info: RunInfo = read_json(&dir.join(RUN_FILE))?;
        let history = RunDir::open(dir)?.records()?;
        runs.push(ComparedRun {
            path: dir.clone(),
            info,
            history,
        });
    }
    let first = &runs[0];
    for other in &runs[1..] {
        if other.info.labels != first.info.labels {
            return Err(Error::run(
                &other.path,
                format!(
                    "its classes ({} / {}) differ from those of {} ({} / {}): the runs answer different questions",
                    other.info.labels.positive,
                    other.info.labels.negative,
                    first.path.display(),
                    first.info.labels.positive,
                    first.info.labels.negative
                ),
            ));
        }
    }
    let flat: Vec<BTreeMap<String, String>> = runs
        .iter()
        .map(|r| {
            let mut map = BTreeMap::new();
            flatten(
                "",
                &serde_json::to_value(&r.info.settings).unwrap_or_default(),
                &mut map,
            );
            map.insert(
                "base_model.layers".into(),
                r.info.base_model_config.num_hidden_layers.to_string(),
            );
            map
        })
        .collect();
    let keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let differing = keys
        .into_iter()
        .filter_map(|k| {
            let values: Vec<String> = flat
                .iter()
                .map(|m| m.get(k).cloned().unwrap_or_else(|| "—".into()))
                .collect();
            values
                .iter()
                .any(|v| v != &values[0])
                .then(|| (k.clone(), values))
        })
        .collect();
    Ok(Comparison { runs, differing })
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The metrics compared, whether higher is better, and how to read each from [`Metrics`].
type MetricColumn = (&'static str, bool, fn(&Metrics) -> Option<f64>);
const COLUMNS: [MetricColumn; 6] = [
    ("accuracy", true, |m| Some(m.accuracy)),
    ("precision", true, |m| Some(m.precision)),
    ("recall", true, |m| Some(m.recall)),
    ("F1", true, |m| Some(m.f1)),
    ("ROC AUC", true, |m| m.roc_auc),
    ("log loss", false, |m| Some(m.loss)),
];

/// For each metric column, the index of the best run (none when no run has it).
pub fn best_per_metric(c: &Comparison) -> Vec<(&'static str, Option<usize>)> {
    COLUMNS
        .iter()
        .map(|&(name, higher, get)| {
            let best = c
                .runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.final_metrics().and_then(|(_, m)| get(m)).map(|v| (i, v)))
                .fold(None, |best: Option<(usize, f64)>, (i, v)| match best {
                    Some((_, b)) if (higher && v <= b) || (!higher && v >= b) => best,
                    _ => Some((i, v)),
                });
            (name, best.map(|(i, _)| i))
        })
        .collect()
}

/// A plain-text table of the final figures, for the terminal.
pub fn summary_text(c: &Comparison) -> String {
    let mut out = format!("{:<24} {:<10} {COLUMNS_HEADER}\n", "run", "figures");
    for r in &c.runs {
        match r.final_metrics() {
            Some((kind, m)) => {
                let _ = writeln!(out, "{:<24} {kind:<10} {}", r.name(), m.columns());
            }
            None => {
                let _ = writeln!(out, "{:<24} no complete epoch yet", r.name());
            }
        }
    }
    for (metric, best) in best_per_metric(c) {
        if let Some(i) = best {
            let _ = writeln!(out, "best {metric}: {}", c.runs[i].name());
        }
    }
    for r in &c.runs {
        if let Some(line) = lineage(r) {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Where a run continued from (`feelings train --from`), in words.
pub fn lineage(r: &ComparedRun) -> Option<String> {
    let parent = r.info.settings.from.as_ref()?;
    let name = parent.run.file_name().unwrap_or_default().to_string_lossy();
    let head = if parent.new_head {
        ", encoder only (new head)"
    } else {
        ""
    };
    let from = if parent.bundle {
        format!("the bundle {name} (epoch {} of its run)", parent.epoch)
    } else {
        format!("{name} from its checkpoint-epoch-{}", parent.epoch)
    };
    Some(format!("{} continues {from}{head}", r.name()))
}

/// The comparison report: the settings that differ, the per-epoch charts, the final figures.
pub fn comparison_html(c: &Comparison) -> String {
    let mut body = String::new();
    let lines: Vec<String> = c
        .runs
        .iter()
        .filter_map(lineage)
        .map(|l| escape(&l))
        .collect();
    if !lines.is_empty() {
        body.push_str(&format!(
            "<section id=\"lineage\"><h2>Lineage</h2><p>{}</p></section>",
            lines.join("<br>")
        ));
    }
    settings_table(&mut body, c);
    epoch_charts(&mut body, c);
    final_figures(&mut body, c);
    page("Experiment comparison", &body)
}

/// The settings that differ between the runs, one row each.
fn settings_table(body: &mut String, c: &Comparison) {
    body.push_str(r#"<section id="settings"><h2>Settings that differ</h2><table><tr><th class="text">setting</th>"#);
    for r in &c.runs {
        let _ = write!(body, r#"<th class="text">{}</th>"#, escape(&r.name()));
    }
    body.push_str("</tr>");
    for (key, values) in &c.differing {
        let _ = write!(body, r#"<tr><td class="text">{}</td>"#, escape(key));
        for v in values {
            let _ = write!(body, r#"<td class="text">{}</td>"#, escape(v));
        }
        body.push_str("</tr>");
    }
    if c.differing.is_empty() {
        body.push_str(r#"<tr><td class="text" colspan="9">none</td></tr>"#);
    }
    body.push_str("</table></section>");
}

/// The runs' validation and training curves, overlaid.
fn epoch_charts(body: &mut String, c: &Comparison) {
    let overlay = |title: &str, y: &str, get: fn(&EpochRecord) -> f64| {
        line_chart(&LineChart {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: y.into(),
            series: c
                .runs
                .iter()
                .map(|r| Series {
                    name: r.name(),
                    points: r.history.iter().map(|e| (e.epoch as f64, get(e))).collect(),
                })
                .collect(),
            ..LineChart::default()
        })
    };
    let _ = write!(
        body,
        r#"<section id="history"><h2>Per epoch</h2><div class="charts">{}{}{}{}</div></section>"#,
        overlay("Validation loss", "cross-entropy", |e| e.validation.loss),
        overlay("Validation accuracy", "accuracy", |e| e.validation.accuracy),
        overlay("Training loss", "cross-entropy", |e| e.train_loss),
        overlay("Training accuracy", "accuracy", |e| e.train_accuracy),
    );
}

/// Each run's final figures, the better run marked on each metric.
fn final_figures(body: &mut String, c: &Comparison) {
    let best = best_per_metric(c);
    body.push_str(r#"<section id="final"><h2>Final figures</h2><table>"#);
    body.push_str(&METRICS_HEADER.replace(
        r#"<th class="text"></th>"#,
        r#"<th class="text">run (figures)</th>"#,
    ));
    for (i, r) in c.runs.iter().enumerate() {
        let Some((kind, m)) = r.final_metrics() else {
            let _ = write!(
                body,
                r#"<tr><td class="text">{} — no complete epoch</td></tr>"#,
                escape(&r.name())
            );
            continue;
        };
        let mark = |col: usize| {
            if best[col].1 == Some(i) {
                r#" class="better""#
            } else {
                ""
            }
        };
        let _ = write!(
            body,
            r#"<tr><td class="text">{} ({kind})</td><td>{:.4}</td><td{}>{:.2} %</td><td{}>{:.4}</td><td{}>{:.4}</td><td{}>{:.4}</td><td{}>{}</td><td{}>{:.4}</td><td>{}</td></tr>"#,
            escape(&r.name()),
            m.threshold,
            mark(0),
            100.0 * m.accuracy,
            mark(1),
            m.precision,
            mark(2),
            m.recall,
            mark(3),
            m.f1,
            mark(4),
            m.auc_text(),
            mark(5),
            m.loss,
            m.count
        );
    }
    body.push_str("</table><p>Highlighted: the better run on each metric.</p></section>");
}
