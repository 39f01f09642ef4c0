//! `feelings-serve`: a model bundle behind HTTP, every request classified in a wasmtime sandbox;
//! also serves the web page, with the bundle at `/model/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use feelings_runtime::{app, start, GatewayOptions, Limits, PoolOptions, SandboxOptions};
use tracing_subscriber::EnvFilter;

/// Serve a model bundle over HTTP: POST /v1/classify {"text": "..."} or {"texts": [...]};
/// GET /v1/model, /healthz, /readyz, /metrics; the web page at / with the bundle at /model/.
/// Each request runs in a wasmtime sandbox (no files, network or environment; a deadline
/// and a memory cap); a sandbox that fails is replaced and the server keeps serving.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The bundle folder made by `feelings export`.
    #[arg(long, default_value = "models/imdb-minilm")]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Sandboxes classifying at the same time (one thread each).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Classification jobs that may wait for a sandbox; beyond it requests get 503 at once.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Most reviews one sandbox call takes when waiting requests are batched together; 1 turns
    /// batching off (the default: inside the sandbox a batch is no faster per review).
    #[arg(long, default_value_t = PoolOptions::default().max_batch)]
    max_batch: usize,
    /// The classifier component [default: the one `web/build.sh` builds next to this binary:
    /// <target>/wasm32-wasip2/release/feelings_core.wasm].
    #[arg(long)]
    component: Option<PathBuf>,
    /// Folder caching the compiled, pre-initialised component [default: ~/.cache/feelings].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The web page's folder, served at /.
    #[arg(long, default_value = "web")]
    web: PathBuf,
    /// Serve only the API, not the page.
    #[arg(long)]
    no_web: bool,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most texts per request (422 beyond).
    #[arg(long, default_value_t = Limits::default().max_texts)]
    max_texts: usize,
    /// Characters of a text passed to the model; longer ones are cut and marked truncated.
    #[arg(long, default_value_t = Limits::default().max_chars)]
    max_chars: usize,
    /// Seconds a request may wait for its answer (504 beyond).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Seconds one sandbox call may run before it is stopped (500, the sandbox replaced).
    #[arg(long, default_value_t = 20.0)]
    deadline: f64,
    /// Memory cap of one sandbox, MiB (the loaded model included).
    #[arg(long, default_value_t = 1024)]
    memory_mib: usize,
    /// Write the classifier component with the bundle already loaded inside it to this file
    /// and exit: a self-contained classifier for any WebAssembly component host.
    #[arg(long, value_name = "FILE")]
    write_component: Option<PathBuf>,
}

fn default_component() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let target = exe
        .parent()
        .and_then(|dir| dir.parent())
        .context("this program is not in a cargo target folder; pass --component")?;
    Ok(target.join("wasm32-wasip2/release/feelings_core.wasm"))
}

fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("feelings")
}

/// `--write-component`: the pre-initialised component, for other hosts.
fn write_component(args: &Args, out: &std::path::Path) -> Result<()> {
    let bundle = feelings_core::Bundle::read_dir(&args.model)?;
    let component = match &args.component {
        Some(path) => path.clone(),
        None => default_component()?,
    };
    let wasm = std::fs::read(&component).with_context(|| format!("{}", component.display()))?;
    let snapshot = feelings_runtime::preinitialise(&wasm, &bundle)?;
    std::fs::write(out, &snapshot).with_context(|| format!("{}", out.display()))?;
    tracing::info!(
        "wrote {} ({} MB)",
        out.display(),
        snapshot.len() / 1_000_000
    );
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a signal handler can be installed");
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(out) = &args.write_component {
        return write_component(&args, out);
    }
    let options = GatewayOptions {
        model: args.model.clone(),
        component: match args.component {
            Some(path) => path,
            None => default_component()?,
        },
        web_dir: (!args.no_web && args.web.is_dir()).then(|| args.web.clone()),
        sandbox: SandboxOptions {
            cache_dir: Some(args.cache.unwrap_or_else(default_cache)),
            memory_limit: args.memory_mib << 20,
            deadline: Duration::from_secs_f64(args.deadline),
        },
        pool: PoolOptions {
            instances: args.instances,
            queue: args.queue,
            max_batch: args.max_batch,
        },
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_texts: args.max_texts,
            max_chars: args.max_chars,
            timeout: Duration::from_secs_f64(args.timeout),
        },
    };
    let (state, prepared) = tokio::task::spawn_blocking(move || start(&options)).await??;
    tracing::info!(
        model = %state.manifest.name,
        from_cache = prepared.from_cache,
        seconds = prepared.duration.as_secs_f64(),
        "sandboxes ready"
    );
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
