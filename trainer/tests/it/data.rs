//! Reading datasets in every supported form, splitting them, and refusing bad ones clearly.

use std::io::Write;

use feelings_trainer::data::split::{split, SplitOptions};
use feelings_trainer::data::{load_dataset, DataOptions};

use crate::fixtures::{reviews, write_csv};

fn options() -> DataOptions {
    DataOptions::default()
}

#[test]
fn csv_gzip_jsonl_and_folder_give_the_same_examples() {
    let dir = tempfile::tempdir().unwrap();
    let rows = reviews(20, 1);
    let csv = dir.path().join("r.csv");
    write_csv(&csv, &rows);

    let gz = dir.path().join("r.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&csv).unwrap()).unwrap();
    enc.finish().unwrap();

    let jsonl = dir.path().join("r.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"review": t, "sentiment": l}).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();

    let from_csv = load_dataset(&csv, &options()).unwrap();
    assert_eq!(from_csv.examples.len(), 20);
    assert_eq!(from_csv.labels.negative, "negative");
    assert_eq!(from_csv.examples[0].label, 1);
    let from_gz = load_dataset(&gz, &options()).unwrap();
    let from_jsonl = load_dataset(&jsonl, &options()).unwrap();
    assert_eq!(from_csv.content_hash(), from_gz.content_hash());
    assert_eq!(from_csv.content_hash(), from_jsonl.content_hash());

    // aclImdb layout: train/pos, train/neg, test/pos, test/neg.
    let acl = dir.path().join("aclImdb");
    for (i, (text, label)) in rows.iter().enumerate() {
        let split = if i < 12 { "train" } else { "test" };
        let folder = acl
            .join(split)
            .join(if *label == "positive" { "pos" } else { "neg" });
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{i}_7.txt")), text).unwrap();
    }
    let mut with_split = options();
    with_split.split_column = Some("split".into());
    let from_folder = load_dataset(&acl, &with_split).unwrap();
    assert_eq!(from_folder.examples.len(), 20);
    assert_eq!(
        from_folder.examples.iter().filter(|e| e.label == 1).count(),
        10
    );
    let test_rows = from_folder
        .examples
        .iter()
        .filter(|e| e.split.as_deref() == Some("test"))
        .count();
    assert_eq!(test_rows, 8);
}

#[test]
fn the_real_imdb_file_reads_whole() {
    let mut opts = options();
    opts.split_column = Some("split".into());
    let data = load_dataset(&crate::fixtures::imdb(), &opts).unwrap();
    assert_eq!(data.examples.len(), 50_000);
    assert_eq!(
        data.examples.iter().filter(|e| e.label == 1).count(),
        25_000
    );
    assert_eq!(
        data.examples
            .iter()
            .filter(|e| e.split.as_deref() == Some("test"))
            .count(),
        25_000
    );
}

#[test]
fn split_is_deterministic_disjoint_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    // Distinct texts so membership can be compared by text.
    let rows: Vec<(String, &str)> = (0..200usize)
        .map(|i| {
            (
                format!("the movie {i}"),
                if i.is_multiple_of(3) {
                    "positive"
                } else {
                    "negative"
                },
            )
        })
        .collect();
    write_csv(&csv, &rows);
    let data = load_dataset(&csv, &options()).unwrap();
    let a = split(data.examples.clone(), &SplitOptions::default(), 42).unwrap();
    let b = split(data.examples.clone(), &SplitOptions::default(), 42).unwrap();
    let c = split(data.examples.clone(), &SplitOptions::default(), 43).unwrap();
    assert_eq!(
        (a.train.len(), a.validation.len(), a.test.len()),
        (160, 20, 20)
    );
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_ne!(a.train, c.train);
    let mut all: Vec<&str> = a
        .train
        .iter()
        .chain(&a.validation)
        .chain(&a.test)
        .map(|e| e.text.as_str())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "subsets overlap or lose rows");
    // Labels travel with their texts.
    for e in a.train.iter().chain(&a.test) {
        let i: usize = e.text.trim_start_matches("the movie ").parse().unwrap();
        assert_eq!(e.label, u32::from(i.is_multiple_of(3)));
    }
    let summary = a.summary().join("\n");
    assert!(
        summary.contains("train") && summary.contains("160 reviews"),
        "{summary}"
    );
}

#[test]
fn split_column_keeps_the_official_test_set_and_carves_validation_from_train() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    let mut w = csv::Writer::from_path(&csv).unwrap();
    w.write_record(["review", "sentiment", "split"]).unwrap();
    for i in 0..100 {
        let split = if i < 60 { "train" } else { "test" };
        w.write_record([
            format!("review {i}").as_str(),
            if i % 2 == 0 { "positive" } else { "negative" },
            split,
        ])
        .unwrap();
    }
    w.flush().unwrap();
    let mut opts = options();
    opts.split_column = Some("split".into());
    let data = load_dataset(&csv, &opts).unwrap();
    let split_opts = SplitOptions {
        use_split_column: true,
        max_eval: Some(30),
        ..SplitOptions::default()
    };
    let s = split(data.examples, &split_opts, 1).unwrap();
    assert_eq!(
        (s.train.len(), s.validation.len(), s.test.len()),
        (54, 6, 30)
    );
    assert!(s.test.iter().all(|e| e.split.as_deref() == Some("test")));
    assert!(s
        .validation
        .iter()
        .all(|e| e.split.as_deref() == Some("train")));
}

#[test]
fn bad_data_is_refused_naming_the_file_row_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let missing = write("m.csv", "text,sentiment\nhello,positive\n");
    let err = load_dataset(&missing, &options()).unwrap_err().to_string();
    assert!(
        err.contains("m.csv")
            && err.contains("no column 'review'")
            && err.contains("text, sentiment"),
        "{err}"
    );

    let unknown = write(
        "u.csv",
        "review,sentiment\na,positive\nb,negative\nc,neutral\nd,positive\n",
    );
    let err = load_dataset(&unknown, &options()).unwrap_err().to_string();
    assert!(
        err.contains("row 3") && err.contains("'neutral'") && err.contains("'positive' (2)"),
        "{err}"
    );

    let no_positive = write("p.csv", "review,sentiment\na,pos\nb,neg\n");
    let err = load_dataset(&no_positive, &options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'positive'") && err.contains("'pos' (1)"),
        "{err}"
    );

    let empty = write(
        "e.csv",
        "review,sentiment\na,positive\n  ,negative\nc,negative\n",
    );
    let data = load_dataset(&empty, &options()).unwrap();
    assert_eq!((data.examples.len(), data.skipped_empty), (2, 1));
    let strict = DataOptions {
        strict: true,
        ..options()
    };
    let err = load_dataset(&empty, &strict).unwrap_err().to_string();
    assert!(err.contains("row 2") && err.contains("empty text"), "{err}");

    let ragged = write("r.csv", "review,sentiment\na,positive,extra\n");
    let err = load_dataset(&ragged, &options()).unwrap_err().to_string();
    assert!(err.contains("r.csv") && err.contains("row 1"), "{err}");

    let jsonl = write(
        "j.jsonl",
        "{\"review\": \"a\", \"sentiment\": \"positive\"}\nnot json\n",
    );
    let err = load_dataset(&jsonl, &options()).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");

    let err = load_dataset(&dir.path().join("absent.csv"), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.csv"), "{err}");
}
