//! `feelings-guest-bench`: times the classifier component in a wasmtime sandbox against the
//! native inference core on reviews read from stdin, one JSON line per batch size on stdout.
//! `feelings bench --wasm` runs it and reports the ratios; it is a tool, not a server.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use feelings_core::{Bundle, TractClassifier};
use feelings_runtime::{
    function_cache_in, time_guest, EngineOptions, SandboxEngine, SandboxOptions, Sandboxes,
};
use serde_json::json;
use tracing_subscriber::EnvFilter;

/// Time the classifier component (the server build) in a wasmtime sandbox against the native
/// core, calls interleaved on the same reviews. Reads a JSON array of review texts on stdin
/// (every one should reach the bundle's sequence length, as `feelings bench` picks them) and
/// prints, per batch size, one JSON object of every timing in milliseconds.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The classifier component: <target>/wasm32-wasip2/release/feelings_core.wasm.
    #[arg(long)]
    component: PathBuf,
    /// The bundle folder made by `feelings export`.
    #[arg(long)]
    bundle: PathBuf,
    /// Folder caching the compiled, pre-initialised component between runs.
    #[arg(long, default_value = "target/feelings-sandbox-cache")]
    cache: PathBuf,
    /// Reviews per call, comma-separated, each 1 to 100000.
    #[arg(long, value_delimiter = ',', default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: Vec<u32>,
    /// Untimed calls first, 0 to 100000.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    warmup: u32,
    /// Timed calls per batch size, 1 to 100000.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    runs: u32,
    /// Threads of the native core's matrix products, 1 to 1024.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    feelings_core::set_inference_threads(usize::from(args.threads));
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("stdin")?;
    let texts: Vec<String> =
        serde_json::from_str(&input).context("stdin: not a JSON array of review texts")?;
    let component =
        std::fs::read(&args.component).with_context(|| format!("{}", args.component.display()))?;
    let bundle = Bundle::read_dir(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let core = TractClassifier::new(&bundle)?;
    let options = SandboxOptions {
        cache_dir: Some(args.cache.clone()),
        ..SandboxOptions::default()
    };
    let engine = SandboxEngine::new(&EngineOptions {
        function_cache: Some(function_cache_in(&args.cache)),
        ..EngineOptions::default()
    })?;
    let (sandboxes, prepared) = Sandboxes::new(&engine, &component, &bundle, &options)?;
    let (warmup, runs) = (args.warmup as usize, args.runs as usize);
    for &batch in &args.batch {
        let batch = batch as usize;
        if texts.len() < batch * (warmup + runs) {
            bail!(
                "batch {batch}: {} reviews are needed ({warmup} + {runs} calls), stdin has {}",
                batch * (warmup + runs),
                texts.len()
            );
        }
        let timings = time_guest(&bundle, &core, &sandboxes, &texts, batch, warmup, runs)?;
        let mut row = serde_json::to_value(&timings)?;
        row["prepare_s"] = json!(prepared.duration.as_secs_f64());
        row["prepared_from_cache"] = json!(prepared.from_cache);
        row["peak_rss_mib"] = json!(peak_rss_mib());
        println!("{row}");
    }
    Ok(())
}

/// The peak resident memory of this process so far, in MiB (Linux; `None` elsewhere): the
/// sandboxes' share of what `feelings bench` reports.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
