//! Classifying a file of reviews with the deployed inference core, streaming row by row.

use std::io::Write;
use std::path::Path;

use feelings_core::TractClassifier;

use crate::data::open_maybe_gzip;
use crate::error::{Error, Result};

/// Rows classified per model call.
const BATCH: usize = 16;

/// What a file prediction did.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// Rows classified.
    pub rows: usize,
    /// Rows whose review was cut to the model's sequence length.
    pub truncated: usize,
    /// Rows whose true label was in the file, and how many of those were right.
    pub labelled: usize,
    /// Correct predictions among the labelled rows.
    pub correct: usize,
}

/// Reads CSV (plain or gzip) from `input`, classifies the `text_column` of every row, and
/// writes each row back with two more columns, `label` and `score` (probability of the
/// positive class), to `output`. If `label_column` names a column, predictions are compared
/// with it. `progress` is called with the rows done so far.
pub fn predict_csv(
    classifier: &TractClassifier,
    input: &Path,
    output: &mut dyn Write,
    text_column: &str,
    label_column: Option<&str>,
    mut progress: impl FnMut(usize),
) -> Result<FileSummary> {
    let mut reader = csv::Reader::from_reader(open_maybe_gzip(input)?);
    let headers = reader
        .headers()
        .map_err(|e| Error::data(input, format!("cannot read the CSV header: {e}")))?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h == name);
    let text_col = find(text_column).ok_or_else(|| {
        Error::data(
            input,
            format!(
                "no column '{text_column}'; the columns are: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let label_col = label_column.and_then(find);
    let mut writer = csv::Writer::from_writer(output);
    let mut out_headers = headers.clone();
    out_headers.push_field("label");
    out_headers.push_field("score");
    let write_err = |e: csv::Error| Error::data("<output>", e.to_string());
    writer.write_record(&out_headers).map_err(write_err)?;
    let mut summary = FileSummary {
        rows: 0,
        truncated: 0,
        labelled: 0,
        correct: 0,
    };
    let mut pending: Vec<csv::StringRecord> = Vec::with_capacity(BATCH);
    let mut records = reader.records().enumerate().peekable();
    while let Some((i, record)) = records.next() {
        let record = record.map_err(|e| Error::data(input, format!("row {}: {e}", i + 1)))?;
        pending.push(record);
        if pending.len() < BATCH && records.peek().is_some() {
            continue;
        }
        let texts: Vec<&str> = pending
            .iter()
            .map(|r| r.get(text_col).unwrap_or_default())
            .collect();
        let predictions = classifier.classify_batch(&texts).map_err(|e| {
            Error::data(
                input,
                format!("rows {}-{}: {e}", i + 2 - pending.len(), i + 1),
            )
        })?;
        for (mut record, p) in pending.drain(..).zip(predictions) {
            if let Some(truth) = label_col
                .and_then(|c| record.get(c))
                .filter(|t| !t.is_empty())
            {
                summary.labelled += 1;
                summary.correct += usize::from(truth == p.label);
            }
            summary.truncated += usize::from(p.truncated);
            record.push_field(&p.label);
            record.push_field(&format!("{:.6}", p.score));
            writer.write_record(&record).map_err(write_err)?;
            summary.rows += 1;
        }
        progress(summary.rows);
    }
    writer
        .flush()
        .map_err(|e| Error::data("<output>", e.to_string()))?;
    Ok(summary)
}
