//! Reading labelled reviews: CSV (plain or gzip), JSON Lines, or the original `aclImdb/` folders.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use feelings_core::Labels;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One labelled review.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The review text as read (clean-up happens at tokenisation).
    pub text: String,
    /// 1 for the positive class, 0 for the negative one.
    pub label: u32,
    /// The value of the split column, if one was asked for (e.g. `train`, `test`).
    pub split: Option<String>,
    /// The value of the group column, if one was asked for (e.g. a language), which an
    /// evaluation reports on separately.
    pub group: Option<String>,
    /// Where the example came from: the 1-based data row, or the file for a folder dataset.
    pub origin: String,
}

/// Which columns hold what, and how strict to be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataOptions {
    /// The column (or JSON field) holding the text.
    pub text_column: String,
    /// The column (or JSON field) holding the label.
    pub label_column: String,
    /// The label value of the positive class.
    pub positive: String,
    /// The column holding a predefined split (`train`/`validation`/`test`), if used.
    pub split_column: Option<String>,
    /// A column whose values an evaluation reports on separately (e.g. `language`), if used.
    #[serde(default)]
    pub group_column: Option<String>,
    /// Refuse empty texts instead of skipping them.
    pub strict: bool,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            text_column: "review".into(),
            label_column: "sentiment".into(),
            positive: "positive".into(),
            split_column: None,
            group_column: None,
            strict: false,
        }
    }
}

/// A whole labelled dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The examples in file order.
    pub examples: Vec<Example>,
    /// The names of the two classes.
    pub labels: Labels,
    /// How many rows were skipped because their text was empty.
    pub skipped_empty: usize,
}

impl Dataset {
    /// A sha256 over every example's text and label, in order: identifies the data a run saw.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for e in &self.examples {
            hasher.update((e.text.len() as u64).to_le_bytes());
            hasher.update(e.text.as_bytes());
            hasher.update([e.label as u8]);
        }
        hex::encode(hasher.finalize())
    }
}

/// A row as read, before its label is resolved to a class.
struct RawRow {
    text: String,
    label: String,
    split: Option<String>,
    group: Option<String>,
    origin: String,
}

/// Reads a dataset from a CSV file (optionally gzip-compressed), a `.jsonl` file, or an
/// `aclImdb/`-style folder (`train/pos/*.txt`, `train/neg/*.txt`, `test/...`).
pub fn load_dataset(path: &Path, options: &DataOptions) -> Result<Dataset> {
    let rows = if path.is_dir() {
        read_acl_imdb(path, options)?
    } else {
        let text = read_text(path)?;
        let is_jsonl = {
            let name = path.to_string_lossy().to_lowercase();
            name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") || name.ends_with(".ndjson")
        };
        if is_jsonl {
            read_jsonl(path, &text, options)?
        } else {
            read_csv(path, &text, options)?
        }
    };
    resolve(path, rows, options)
}

/// Opens `path` for reading, decompressing gzip when the file starts with its magic bytes.
pub fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let reader = head.chain(file);
    if magic[..n] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads a whole file as UTF-8, decompressing gzip.
fn read_text(path: &Path) -> Result<String> {
    let mut raw = Vec::new();
    open_maybe_gzip(path)?
        .read_to_end(&mut raw)
        .map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    String::from_utf8(raw).map_err(|e| {
        Error::data(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn read_csv(path: &Path, text: &str, options: &DataOptions) -> Result<Vec<RawRow>> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::data(path, format!("cannot read the CSV header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            let found: Vec<&str> = headers.iter().collect();
            Error::data(
                path,
                format!("no column '{name}'; the columns are: {}", found.join(", ")),
            )
        })
    };
    let text_col = column(&options.text_column)?;
    let label_col = column(&options.label_column)?;
    let split_col = options.split_column.as_deref().map(column).transpose()?;
    let group_col = options.group_column.as_deref().map(column).transpose()?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| Error::data(path, format!("row {row}: {e}")))?;
        let field = |col: usize| record.get(col).unwrap_or_default().to_string();
        rows.push(RawRow {
            text: field(text_col),
            label: field(label_col),
            split: split_col.map(field),
            group: group_col.map(field),
            origin: format!("row {row}"),
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, text: &str, options: &DataOptions) -> Result<Vec<RawRow>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let row = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::data(path, format!("line {row}: not a JSON object: {e}")))?;
        let field = |name: &str| -> Result<String> {
            match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Null) | None => {
                    Err(Error::data(path, format!("line {row}: no field '{name}'")))
                }
                Some(other) => Ok(other.to_string()),
            }
        };
        rows.push(RawRow {
            text: field(&options.text_column)?,
            label: field(&options.label_column)?,
            split: options.split_column.as_deref().map(field).transpose()?,
            group: options.group_column.as_deref().map(field).transpose()?,
            origin: format!("line {row}"),
        });
    }
    Ok(rows)
}

/// The Large Movie Review Dataset's own layout: `<split>/pos/*.txt` and `<split>/neg/*.txt`
/// (or `pos/` and `neg/` directly). Labels become `positive`/`negative`; the split column, if
/// asked for, is the split folder's name.
fn read_acl_imdb(root: &Path, options: &DataOptions) -> Result<Vec<RawRow>> {
    let splits: Vec<(Option<String>, PathBuf)> = if root.join("pos").is_dir() {
        vec![(None, root.to_path_buf())]
    } else {
        ["train", "test"]
            .iter()
            .filter(|s| root.join(s).join("pos").is_dir())
            .map(|s| (Some(s.to_string()), root.join(s)))
            .collect()
    };
    if splits.is_empty() {
        return Err(Error::data(
            root,
            "a data folder must hold pos/ and neg/, or train/pos, train/neg, test/pos, test/neg",
        ));
    }
    if let Some(column) = &options.group_column {
        return Err(Error::data(
            root,
            format!("a data folder has no columns: no '{column}' to group the reviews by"),
        ));
    }
    let mut rows = Vec::new();
    for (split, dir) in splits {
        for (folder, label) in [("neg", "negative"), ("pos", "positive")] {
            let dir = dir.join(folder);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                rows.push(RawRow {
                    text,
                    label: label.to_string(),
                    split: options.split_column.as_ref().and(split.clone()),
                    group: None,
                    origin: file.display().to_string(),
                });
            }
        }
    }
    Ok(rows)
}

/// The two classes of `rows`: the positive label and the one other value, or an error naming
/// the values found.
fn find_labels(path: &Path, rows: &[RawRow], options: &DataOptions) -> Result<Labels> {
    let mut counts: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for row in rows {
        counts
            .entry(row.label.as_str())
            .or_insert((0, &row.origin))
            .0 += 1;
    }
    let found = || {
        counts
            .iter()
            .map(|(value, (n, _))| format!("'{value}' ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let column = &options.label_column;
    if rows.is_empty() {
        return Err(Error::data(path, "no rows"));
    }
    if !counts.contains_key(options.positive.as_str()) {
        return Err(Error::data(
            path,
            format!(
                "no row has the positive label '{}' in '{column}'; values found: {}",
                options.positive,
                found()
            ),
        ));
    }
    let others: Vec<(&str, &str)> = counts
        .iter()
        .filter(|(v, _)| **v != options.positive)
        .map(|(v, (_, origin))| (*v, *origin))
        .collect();
    let negative = match others.as_slice() {
        [(negative, _)] => negative.to_string(),
        [] => {
            return Err(Error::data(
                path,
                format!("every row is '{}': a classifier needs both classes in '{column}'", options.positive),
            ))
        }
        [_, (extra, origin), ..] => {
            return Err(Error::data(
                path,
                format!(
                    "{origin}: unknown label '{extra}' in '{column}': a binary classifier takes two values, found: {}",
                    found()
                ),
            ))
        }
    };
    Ok(Labels {
        negative,
        positive: options.positive.clone(),
    })
}

/// Maps label values to classes, skipping (or refusing) empty texts.
fn resolve(path: &Path, rows: Vec<RawRow>, options: &DataOptions) -> Result<Dataset> {
    let labels = find_labels(path, &rows, options)?;
    let mut examples = Vec::with_capacity(rows.len());
    let mut skipped_empty = 0;
    for row in rows {
        if row.text.trim().is_empty() {
            if options.strict {
                return Err(Error::data(
                    path,
                    format!("{}: empty text in '{}'", row.origin, options.text_column),
                ));
            }
            skipped_empty += 1;
            continue;
        }
        examples.push(Example {
            label: u32::from(row.label == labels.positive),
            text: row.text,
            split: row.split,
            group: row.group,
            origin: row.origin,
        });
    }
    if examples.is_empty() {
        return Err(Error::data(path, "every text is empty"));
    }
    Ok(Dataset {
        examples,
        labels,
        skipped_empty,
    })
}
