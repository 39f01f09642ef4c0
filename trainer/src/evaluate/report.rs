//! The self-contained HTML evaluation report: one file, inline SVG charts, nothing fetched.

use std::fmt::Write;

use crate::evaluate::curves::thin;
use crate::evaluate::metrics::Metrics;
use crate::evaluate::svg::{escape, histogram, line_chart, LineChart, Series};
use crate::evaluate::Evaluation;
use crate::train::run_dir::EPOCH_COLUMNS;

/// Points per curve drawn (the full curves can have one point per review).
const CURVE_POINTS: usize = 400;

/// The page's frame: title, inline style, body.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }}
section {{ margin: 2rem 0; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .3rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; vertical-align: top; }}
td.text, th.text {{ text-align: left; }} .charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
.better {{ font-weight: bold; background: #e8f5e9; }} pre {{ background: #f6f6f6; padding: .6rem; overflow-x: auto; }}
</style></head>
<body><h1>{t}</h1>
{body}
</body></html>
"#,
        t = escape(title)
    )
}

/// The report of one evaluation.
pub fn evaluation_html(e: &Evaluation) -> String {
    let mut body = String::new();
    let what = match e.checkpoint {
        Some(epoch) => format!(
            "checkpoint of epoch {epoch}{} of the run {} (candle)",
            if e.best_epoch == Some(epoch) {
                ", the best"
            } else {
                ""
            },
            e.source.display()
        ),
        None => format!("model bundle {} (tract, as deployed)", e.source.display()),
    };
    let _ = write!(
        body,
        "<p>{} on {} {} reviews{}; positive class <b>{}</b>.</p>",
        escape(&what),
        e.metrics.count,
        e.subset.name(),
        e.excerpt
            .map_or(String::new(), |x| format!(" ({x} sentences of each)")),
        escape(&e.labels.positive)
    );
    summary(&mut body, e);
    history(&mut body, e);
    confusion(
        &mut body,
        &e.metrics,
        &e.labels.positive,
        &e.labels.negative,
    );
    roc(&mut body, e);
    thresholds(&mut body, e);
    lengths(&mut body, e);
    wrong(&mut body, e);
    let settings = serde_json::to_string_pretty(&e.settings).unwrap_or_default();
    let _ = write!(
        body,
        r#"<section id="settings"><h2>Settings</h2><pre>{}</pre></section>"#,
        escape(&settings)
    );
    page("Evaluation report", &body)
}

/// One table row per metric set: accuracy, precision, recall, F1, AUC, log loss.
pub fn metrics_row(name: &str, m: &Metrics) -> String {
    format!(
        r#"<tr><td class="text">{}</td><td>{:.4}</td><td>{:.2} %</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{:.4}</td><td>{}</td></tr>"#,
        escape(name),
        m.threshold,
        100.0 * m.accuracy,
        m.precision,
        m.recall,
        m.f1,
        m.auc_text(),
        m.loss,
        m.count
    )
}

/// The header matching [`metrics_row`].
pub const METRICS_HEADER: &str = r#"<tr><th class="text"></th><th>threshold</th><th>accuracy</th><th>precision</th><th>recall</th><th>F1</th><th>ROC AUC</th><th>log loss</th><th>reviews</th></tr>"#;

fn summary(body: &mut String, e: &Evaluation) {
    let _ = write!(
        body,
        r#"<section id="summary"><h2>Metrics</h2><table>{METRICS_HEADER}{}"#,
        metrics_row("at the model's threshold", &e.metrics)
    );
    if let Some(t) = &e.tuned {
        body.push_str(&metrics_row(
            &format!(
                "at the threshold tuned on {} validation reviews (Youden's J)",
                t.validation_count
            ),
            &t.metrics,
        ));
    }
    for g in &e.groups {
        body.push_str(&metrics_row(&g.group, &g.metrics));
    }
    body.push_str("</table></section>");
}

fn history(body: &mut String, e: &Evaluation) {
    body.push_str(r#"<section id="history"><h2>Loss and accuracy per epoch</h2>"#);
    if e.history.is_empty() {
        body.push_str("<p>A bundle keeps no training history; evaluate its run folder to see it (the manifest's training summary is under Settings).</p></section>");
        return;
    }
    let curve = |f: &dyn Fn(&crate::train::run_dir::EpochRecord) -> f64| -> Vec<(f64, f64)> {
        e.history.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let chart = |title: &str, y: &str, train: Vec<(f64, f64)>, val: Vec<(f64, f64)>| {
        line_chart(&LineChart {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: y.into(),
            series: vec![
                Series {
                    name: "training".into(),
                    points: train,
                },
                Series {
                    name: "validation".into(),
                    points: val,
                },
            ],
            ..LineChart::default()
        })
    };
    let _ = write!(
        body,
        r#"<div class="charts">{}{}</div><table><tr>{}</tr>"#,
        chart(
            "Loss",
            "cross-entropy",
            curve(&|r| r.train_loss),
            curve(&|r| r.validation.loss)
        ),
        chart(
            "Binary accuracy",
            "accuracy",
            curve(&|r| r.train_accuracy),
            curve(&|r| r.validation.accuracy)
        ),
        EPOCH_COLUMNS.map(|c| format!("<th>{c}</th>")).concat(),
    );
    for r in &e.history {
        let best = if e.best_epoch == Some(r.epoch) {
            " (best)"
        } else {
            ""
        };
        let mut cells = r.cells();
        cells[0].push_str(best);
        let _ = write!(
            body,
            "<tr>{}</tr>",
            cells.map(|c| format!("<td>{c}</td>")).concat()
        );
    }
    body.push_str("</table></section>");
}

/// The confusion matrix table.
pub fn confusion(body: &mut String, m: &Metrics, positive: &str, negative: &str) {
    let c = &m.confusion;
    let _ = write!(
        body,
        r#"<section id="confusion"><h2>Confusion matrix (threshold {:.4})</h2><table><tr><th class="text">true \ predicted</th><th>{p}</th><th>{n}</th></tr><tr><th class="text">{p}</th><td>{}</td><td>{}</td></tr><tr><th class="text">{n}</th><td>{}</td><td>{}</td></tr></table></section>"#,
        m.threshold,
        c.true_positive,
        c.false_negative,
        c.false_positive,
        c.true_negative,
        p = escape(positive),
        n = escape(negative)
    );
}

fn roc(body: &mut String, e: &Evaluation) {
    let points = thin(&e.curve, CURVE_POINTS);
    let c = &e.metrics.confusion;
    let negatives = (c.false_positive + c.true_negative).max(1) as f64;
    let fpr = c.false_positive as f64 / negatives;
    let svg = line_chart(&LineChart {
        title: format!("ROC curve (AUC {})", e.metrics.auc_text()),
        x_label: "false positive rate".into(),
        y_label: "true positive rate (recall)".into(),
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
        series: vec![Series {
            name: "model".into(),
            points: points.iter().map(|p| (p.fpr, p.tpr)).collect(),
        }],
        mark: Some((
            fpr,
            e.metrics.recall,
            format!("threshold {:.3}", e.metrics.threshold),
        )),
        diagonal: true,
    });
    let _ = write!(
        body,
        r#"<section id="roc"><h2>ROC curve</h2>{svg}<p>The circle is the operating point at threshold {:.4}: recall {:.4}, false positive rate {:.4}.</p></section>"#,
        e.metrics.threshold, e.metrics.recall, fpr
    );
}

fn thresholds(body: &mut String, e: &Evaluation) {
    let points = thin(&e.curve, CURVE_POINTS);
    let inside: Vec<_> = points.iter().filter(|p| p.threshold <= 1.0).collect();
    let svg = line_chart(&LineChart {
        title: "Precision and recall against the threshold".into(),
        x_label: "threshold (probability of positive)".into(),
        y_label: "share".into(),
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
        series: vec![
            Series {
                name: "precision".into(),
                points: inside.iter().map(|p| (p.threshold, p.precision)).collect(),
            },
            Series {
                name: "recall".into(),
                points: inside.iter().map(|p| (p.threshold, p.tpr)).collect(),
            },
        ],
        mark: Some((
            e.metrics.threshold,
            e.metrics.precision,
            format!("in use: {:.3}", e.metrics.threshold),
        )),
        diagonal: false,
    });
    let _ = write!(
        body,
        r#"<section id="threshold"><h2>Threshold</h2>{svg}<p>In use: {:.4} (precision {:.4}, recall {:.4}).</p>"#,
        e.metrics.threshold, e.metrics.precision, e.metrics.recall
    );
    if let Some(t) = &e.tuned {
        let _ = write!(
            body,
            "<p>Youden's J on {} validation reviews picks {:.4}: precision {:.4} → {:.4}, recall {:.4} → {:.4}, accuracy {:.2} % → {:.2} % on this subset.</p>",
            t.validation_count,
            t.threshold,
            e.metrics.precision,
            t.metrics.precision,
            e.metrics.recall,
            t.metrics.recall,
            100.0 * e.metrics.accuracy,
            100.0 * t.metrics.accuracy
        );
    }
    body.push_str("</section>");
}

fn lengths(body: &mut String, e: &Evaluation) {
    let cut = e.token_lengths.iter().filter(|&&l| l > e.seq_len).count();
    let share = 100.0 * cut as f64 / e.token_lengths.len().max(1) as f64;
    let svg = histogram(
        "Review length in tokens",
        "tokens ([CLS] and [SEP] included)",
        &e.token_lengths,
        40,
        Some((e.seq_len as f64, &format!("sequence length {}", e.seq_len))),
    );
    let _ = write!(
        body,
        r#"<section id="lengths"><h2>Token lengths</h2>{svg}<p>{cut} of {} reviews ({share:.1} %) are longer than {} tokens and are cut ({:?}).</p></section>"#,
        e.token_lengths.len(),
        e.seq_len,
        e.truncation
    );
}

fn wrong(body: &mut String, e: &Evaluation) {
    body.push_str(r#"<section id="wrong"><h2>Most confidently wrong</h2>"#);
    if e.wrong.is_empty() {
        body.push_str("<p>No review was classified wrongly.</p></section>");
        return;
    }
    body.push_str(r#"<table><tr><th class="text">review</th><th class="text">true label</th><th>P(positive)</th><th class="text">where</th></tr>"#);
    for w in &e.wrong {
        let _ = write!(
            body,
            r#"<tr><td class="text">{}</td><td class="text">{}</td><td>{:.4}</td><td class="text">{}</td></tr>"#,
            escape(&w.excerpt),
            escape(&w.label),
            w.probability,
            escape(&w.origin)
        );
    }
    body.push_str("</table></section>");
}
