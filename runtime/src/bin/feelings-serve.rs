//! `feelings-serve`: model bundles behind HTTP as named deployments, every request classified in
//! a fresh wasmtime sandbox; also serves the deployments page and each deployment's web app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::HeaderValue;
use clap::Parser;
use feelings_runtime::{
    app, listen, reserve_descriptors, serve, start, Access, ConnectionLimits, GatewayOptions,
    Limits, PoolOptions, SandboxOptions,
};
use tracing_subscriber::EnvFilter;

/// Serve model bundles over HTTP as deployments: --model is the default one (POST /v1/classify
/// {"text": "..."} or {"texts": [...]}); more are uploaded with `feelings deploy` (POST
/// /v1/deployments) and kept in --registry; each answers at POST /v1/deployments/NAME/classify
/// and has its web app at /d/NAME/; the deployments page is at /. GET /v1/model, /healthz,
/// /readyz, /metrics. Each guest call runs in a fresh wasmtime sandbox (no files, network or
/// environment; a deadline and a memory cap). A deployment with no traffic holds no sandbox;
/// its compiled snapshot is unmapped after --unload-after or when --memory-budget-mib needs
/// the room, and mapped again on its next request. Requests take turns a review at a time;
/// one that could not be answered within --timeout is turned away at once (503), and one
/// whose client leaves is dropped.
#[derive(Parser)]
#[command(version)]
#[command(group(clap::ArgGroup::new("write").args(["write_component", "write_http_component"])))]
struct Args {
    /// The bundle folder made by `feelings export`: the default deployment.
    #[arg(long, default_value = "models/imdb-minilm")]
    model: PathBuf,
    /// The default deployment's name [default: the --model folder's name].
    #[arg(long, value_parser = deployment_name)]
    name: Option<String>,
    /// Also deploy this bundle folder as the gateway starts, named after the folder (e.g. a
    /// second shipped model, with its web app at /d/NAME/); repeat for more. Like --model, it
    /// is kept in --registry and replaced when the folder's bundle changes.
    #[arg(long, value_name = "DIR")]
    add_model: Vec<PathBuf>,
    /// The registry folder: every deployment and its bundle, kept across restarts
    /// [default: $XDG_DATA_HOME/feelings/registry or ~/.local/share/feelings/registry].
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Address to listen on. Anything but loopback exposes the API: set --api-key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Sandbox slots per deployment (one thread each; a deployment's upload may set its own).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    instances: u16,
    /// Guest calls running at once, all deployments together: turns on the cores go first
    /// come, first served, so one deployment's flood delays another's request by at most
    /// about one guest call [default: the machine's cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    cores: Option<u16>,
    /// The most sandboxes alive at once, all deployments together (address space is
    /// reserved for this many).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_sandboxes: u32,
    /// MiB of compiled snapshots kept mapped at once; beyond it the least recently used idle
    /// deployment is unmapped (its next request maps it again).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    memory_budget_mib: u64,
    /// Seconds a deployment may go without requests before its snapshot is unmapped (scale to
    /// zero).
    #[arg(long, default_value = "300", value_parser = seconds, allow_negative_numbers = true)]
    unload_after: Duration,
    /// Reviews that may wait for a deployment's sandboxes; beyond it requests get 503 at once.
    #[arg(long, default_value_t = PoolOptions::default().queue as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queue: u32,
    /// Most reviews in one sandbox call (taken in turn from the waiting requests); 1, the
    /// default, runs one review per call: inside the sandbox a batch is no faster per review.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_batch: u16,
    /// Keep each sandbox for the next review instead of a fresh one per call (the default:
    /// no guest state outlives a call; a fresh sandbox costs microseconds to make and its
    /// first call a few per cent).
    #[arg(long)]
    reuse_sandboxes: bool,
    /// The classifier component [default: the one `web/build.sh` builds next to this binary:
    /// <target>/wasm32-wasip2/release/feelings_core.wasm].
    #[arg(long)]
    component: Option<PathBuf>,
    /// Private folder (mode 0700) caching the compiled, pre-initialised component
    /// [default: $XDG_CACHE_HOME/feelings or ~/.cache/feelings].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The web page's folder; only its page files are served, at /.
    #[arg(long, default_value = "web")]
    web: PathBuf,
    /// Serve only the API, not the page (nor the bundle at /model/).
    #[arg(long)]
    no_web: bool,
    /// Largest bundle upload (POST /v1/deployments), MiB (413 beyond).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=16_384))]
    max_upload_mib: u32,
    /// Seconds an upload may take to arrive (408 beyond).
    #[arg(long, default_value = "300", value_parser = seconds, allow_negative_numbers = true)]
    upload_timeout: Duration,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes as u64, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_body_bytes: u64,
    /// Most texts per request (422 beyond).
    #[arg(long, default_value_t = Limits::default().max_texts as u32, value_parser = clap::value_parser!(u32).range(1..=100_000), allow_negative_numbers = true)]
    max_texts: u32,
    /// Characters of a text passed to the model; longer ones are cut and marked truncated.
    #[arg(long, default_value_t = Limits::default().max_chars as u64, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    max_chars: u64,
    /// Seconds a request may take from arrival to answer, its wait in the queue included
    /// (504 beyond).
    #[arg(long, default_value = "30", value_parser = seconds, allow_negative_numbers = true)]
    timeout: Duration,
    /// Seconds one sandbox call (--max-batch reviews) may run before it is stopped (500, the
    /// sandbox replaced).
    #[arg(long, default_value = "20", value_parser = seconds, allow_negative_numbers = true)]
    deadline: Duration,
    /// Seconds a client may take to send a request body (408 beyond).
    #[arg(long, default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    body_timeout: Duration,
    /// Seconds a client may take to send a request's header; on HTTP/1.1 the wait for the next
    /// request on a kept-alive connection counts too (the connection is closed beyond).
    #[arg(long, default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    header_timeout: Duration,
    /// Seconds a connection may stay open with no request in progress (HTTP/2 included).
    #[arg(long, default_value = "60", value_parser = seconds, allow_negative_numbers = true)]
    idle_timeout: Duration,
    /// Most client connections open at once; beyond it new ones wait to be accepted. The
    /// open-files limit is raised to fit them (up to `ulimit -Hn`) [default: 4096, or what
    /// the limit allows].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: Option<u32>,
    /// Memory cap of one sandbox, MiB (the loaded model included).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=4096))]
    memory_mib: u32,
    /// Require this key as `Authorization: Bearer <key>` on /v1/* and /metrics (the health
    /// checks, the page and its bundle stay open).
    #[arg(long, env = "FEELINGS_API_KEY", hide_env_values = true, value_parser = api_key)]
    api_key: Option<String>,
    /// Require this key as `Authorization: Bearer <key>` to create, enable, disable or delete
    /// deployments [default: the --api-key does; with neither, anyone who can reach the API may].
    #[arg(long, env = "FEELINGS_ADMIN_KEY", hide_env_values = true, value_parser = api_key)]
    admin_key: Option<String>,
    /// A web origin allowed to call the API from a browser (e.g. https://example.com, or *
    /// for any); repeat for several. None by default.
    #[arg(long, value_name = "ORIGIN", value_parser = origin)]
    cors_allow_origin: Vec<HeaderValue>,
    /// Write the classifier component with the bundle already loaded inside it to this file
    /// and exit: a self-contained classifier for any WebAssembly component host.
    #[arg(long, value_name = "FILE")]
    write_component: Option<PathBuf>,
    /// Write a `wasi:http/proxy` component with the bundle already loaded inside it to this
    /// file and exit: it answers POST /v1/classify, GET /v1/model and GET /healthz as this
    /// gateway does (with the default limits), under `wasmtime serve`, Spin, wasmCloud or any
    /// other wasi:http host.
    #[arg(long, value_name = "FILE")]
    write_http_component: Option<PathBuf>,
    /// With --write-component or --write-http-component: the bundle of this deployment in
    /// --registry instead of --model.
    #[arg(long, value_name = "NAME", value_parser = deployment_name, conflicts_with = "name", requires = "write")]
    deployment: Option<String>,
    /// The wasi:http component that --write-http-component loads the bundle into [default:
    /// the one `web/build.sh` builds next to this binary:
    /// <target>/wasm32-wasip2/release/feelings_http_component.wasm].
    #[arg(long)]
    http_component: Option<PathBuf>,
}

/// A number of seconds: finite, at least a millisecond, at most a day.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(value.is_finite() && (0.001..=86_400.0).contains(&value)) {
        return Err(format!(
            "{text} seconds: give at least 0.001 and at most 86400 (a day)"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn deployment_name(text: &str) -> Result<String, String> {
    feelings_core::deployment::validate_name(text)?;
    Ok(text.to_string())
}

fn api_key(text: &str) -> Result<String, String> {
    let key = text.trim();
    if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("give at least 16 printable characters, without spaces".into());
    }
    Ok(key.to_string())
}

fn origin(text: &str) -> Result<HeaderValue, String> {
    let valid = text == "*"
        || ((text.starts_with("http://") || text.starts_with("https://"))
            && !text.ends_with('/')
            && text.bytes().all(|b| b.is_ascii_graphic()));
    if !valid {
        return Err("an origin is scheme://host[:port] without a path (or *)".into());
    }
    HeaderValue::from_str(text).map_err(|e| e.to_string())
}

/// The WebAssembly file `name` that `web/build.sh` builds next to this binary.
fn built_component(name: &str, flag: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let target = exe
        .parent()
        .and_then(|dir| dir.parent())
        .with_context(|| format!("this program is not in a cargo target folder; pass {flag}"))?;
    Ok(target.join("wasm32-wasip2/release").join(name))
}

fn default_component() -> Result<PathBuf> {
    built_component("feelings_core.wasm", "--component")
}

/// --registry, or its default.
fn registry_dir(args: &Args) -> Result<PathBuf> {
    args.registry.clone().map_or_else(default_registry, Ok)
}

/// --cache, or its default.
fn cache_dir(args: &Args) -> Result<PathBuf> {
    args.cache.clone().map_or_else(default_cache, Ok)
}

fn default_registry() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("neither $XDG_DATA_HOME nor $HOME is set: pass --registry DIR")?;
    Ok(base.join("feelings/registry"))
}

/// The default deployment's name: --name, or the --model folder's name made one.
fn default_name(args: &Args) -> Result<String> {
    match &args.name {
        Some(name) => Ok(name.clone()),
        None => name_of_folder(&args.model, "--model", ": pass --name"),
    }
}

/// The deployment name made of a bundle folder's name (lower case, other characters as `-`,
/// at most 63).
fn name_of_folder(dir: &std::path::Path, flag: &str, hint: &str) -> Result<String> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let folder = absolute
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = folder
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect();
    let name: String = name.trim_matches('-').chars().take(63).collect();
    deployment_name(name.trim_end_matches('-')).map_err(|e| {
        anyhow::anyhow!(
            "{flag} {}: no deployment name can be made of its folder's name ({e}){hint}",
            dir.display()
        )
    })
}

fn default_cache() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither $XDG_CACHE_HOME nor $HOME is set: pass --cache DIR (a private folder)")?;
    Ok(base.join("feelings"))
}

/// `--write-component` and `--write-http-component`: a pre-initialised component, for other
/// hosts.
fn write_component(args: &Args, out: &std::path::Path, http: bool) -> Result<()> {
    let bundle_dir = match &args.deployment {
        Some(name) => {
            let registry = registry_dir(args)?;
            feelings_runtime::Registry::deployment_bundle(&registry, name).with_context(|| {
                format!(
                    "--deployment {name}: not a deployment of the registry {}",
                    registry.display()
                )
            })?
        }
        None => args.model.clone(),
    };
    let bundle = feelings_core::Bundle::read_dir(&bundle_dir)?;
    let component = match (http, &args.component, &args.http_component) {
        (false, Some(path), _) | (true, _, Some(path)) => path.clone(),
        (false, None, _) => default_component()?,
        (true, _, None) => built_component("feelings_http_component.wasm", "--http-component")?,
    };
    let wasm = std::fs::read(&component).with_context(|| {
        format!(
            "{}: build it with web/build.sh, or pass its path",
            component.display()
        )
    })?;
    let cache = cache_dir(args)?;
    let snapshot =
        feelings_runtime::preinitialise(&wasm, &bundle, Some(&cache)).with_context(|| {
            format!(
                "{}: cannot load {} into it",
                component.display(),
                bundle_dir.display()
            )
        })?;
    std::fs::write(out, &snapshot).with_context(|| format!("{}", out.display()))?;
    tracing::info!(
        "wrote {} ({} MB): {} loaded into {}",
        out.display(),
        snapshot.len() / 1_000_000,
        bundle_dir.display(),
        component.display()
    );
    Ok(())
}

fn gateway_options(args: &Args) -> Result<GatewayOptions> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cache = cache_dir(args)?;
    Ok(GatewayOptions {
        model: args.model.clone(),
        default_name: default_name(args)?,
        more_models: args
            .add_model
            .iter()
            .map(|dir| {
                Ok((
                    name_of_folder(dir, "--add-model", ": rename it")?,
                    dir.clone(),
                ))
            })
            .collect::<Result<_>>()?,
        registry: registry_dir(args)?,
        cores: args.cores.map_or(cores, usize::from),
        max_sandboxes: args.max_sandboxes,
        budget_bytes: args.memory_budget_mib << 20,
        component: match &args.component {
            Some(path) => path.clone(),
            None => default_component()?,
        },
        web_dir: (!args.no_web && args.web.is_dir()).then(|| args.web.clone()),
        sandbox: SandboxOptions {
            cache_dir: Some(cache),
            memory_limit: (args.memory_mib as usize) << 20,
            deadline: args.deadline,
        },
        pool: PoolOptions {
            instances: args.instances.into(),
            queue: args.queue as usize,
            max_batch: args.max_batch.into(),
            reuse_sandboxes: args.reuse_sandboxes,
            ..PoolOptions::default()
        },
        limits: Limits {
            max_body_bytes: args.max_body_bytes as usize,
            max_texts: args.max_texts as usize,
            max_chars: args.max_chars as usize,
            timeout: args.timeout,
            body_timeout: args.body_timeout,
            max_upload_bytes: (args.max_upload_mib as usize) << 20,
            upload_timeout: args.upload_timeout,
        },
        access: Access {
            api_key: args.api_key.clone(),
            admin_key: args.admin_key.clone(),
            cors_origins: args.cors_allow_origin.clone(),
        },
    })
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
        return write_component(&args, out, false);
    }
    if let Some(out) = &args.write_http_component {
        return write_component(&args, out, true);
    }
    let max_connections = reserve_descriptors(args.max_connections.map(|n| n as usize))
        .map_err(anyhow::Error::msg)?;
    let options = gateway_options(&args)?;
    let state = tokio::task::spawn_blocking(move || start(&options)).await??;
    let deployments = state.deployments.clone();
    tracing::info!(
        default = deployments.default_name().unwrap_or("-"),
        deployments = deployments.list().len(),
        "deployments ready"
    );
    if !args.addr.ip().is_loopback() && args.api_key.is_none() {
        tracing::warn!(
            "listening on {} without --api-key: anyone who can reach it can use the API and change its deployments",
            args.addr
        );
    }
    let unload_after = args.unload_after;
    tokio::spawn(async move {
        let every = (unload_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            tokio::time::sleep(every).await;
            deployments.cool_idle(unload_after);
        }
    });
    let listener = listen(args.addr, max_connections as u32)
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let limits = ConnectionLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections,
    };
    let open = state.metrics.open_connections.clone();
    serve(listener, app(state), limits, open, shutdown_signal()).await;
    Ok(())
}
