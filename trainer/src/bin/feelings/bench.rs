//! `feelings bench`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use feelings_trainer::data::{load_dataset, DataOptions};
use feelings_trainer::model::ModelFiles;
use feelings_trainer::{bench, device};

use crate::{set_threads, HardwareArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Labelled reviews to time on (their `train` split when a `split` column exists).
    #[arg(long)]
    data: PathBuf,
    /// Base model folder.
    #[arg(long)]
    model: PathBuf,
    /// Sequence lengths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,256")]
    seq: Vec<usize>,
    /// Reviews per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Timed steps per sequence length (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object per measurement.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hardware: HardwareArgs,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let device = device::parse_device(&args.hardware.device)?;
    let files = ModelFiles::locate(&args.model)?;
    let columns = DataOptions {
        split_column: Some("split".into()),
        ..DataOptions::default()
    };
    let dataset = load_dataset(&args.data, &columns)
        .or_else(|_| load_dataset(&args.data, &DataOptions::default()))?;
    let texts: Vec<(&str, u32)> = dataset
        .examples
        .iter()
        .filter(|e| e.split.as_deref().is_none_or(|s| s == "train"))
        .map(|e| (e.text.as_str(), e.label))
        .collect();
    if !args.json {
        println!(
            "training step, batch {}, {threads} threads, {:?}",
            args.batch_size, device
        );
        println!("  seq  step s  forward s  backward s  optimiser s  reviews/s");
    }
    for &seq in &args.seq {
        let t = bench::time_train_steps(
            &files,
            &texts,
            seq,
            args.batch_size,
            args.warmup,
            args.steps,
            &device,
        )?;
        if args.json {
            let mut row = serde_json::to_value(&t)?;
            row["what"] = "train_step".into();
            row["threads"] = threads.into();
            row["peak_rss_mib"] = bench::peak_rss_mib().into();
            println!("{row}");
        } else {
            println!(
                "  {:>3} {:>7.2} {:>10.2} {:>11.2} {:>12.2} {:>10.2}",
                t.seq_len, t.step_s, t.forward_s, t.backward_s, t.optimizer_s, t.reviews_per_s
            );
        }
    }
    if !args.json {
        if let Some(peak) = bench::peak_rss_mib() {
            println!("peak memory (RSS): {peak:.0} MiB");
        }
    }
    Ok(())
}
