//! End-to-end tests across the pieces, one test binary.

mod cache;
mod deployments;
mod explain;
mod gateway;
mod hardening;
mod hf;
mod http_component;
mod parity;
mod sandbox;
mod serve;
mod web_apps;
mod web_page;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use feelings_runtime::{EngineOptions, SandboxEngine};
use feelings_trainer::fixtures;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Held by the tests that time a server under load or drive Chromium, so they never run at the
/// same time as each other: on a 2-core machine one of them starves the other's server of CPU
/// (a burst of 400 connections then sees connection errors that no server setting causes).
fn alone() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A tiny trained bundle (random BERT, fixture reviews), made once per test run in the target
/// folder and shared, read-only, by the sandbox, gateway and server tests.
fn tiny_bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-tiny-bundle");
        let _ = std::fs::remove_dir_all(&dir);
        fixtures::tiny_bundle(&dir, 96, 5, |s| {
            s.seq_len = 24;
            s.epochs = 1;
        })
        .unwrap()
    })
}

/// A new, empty folder under the target folder's temporary space, kept after the test (a
/// registry, a cache).
fn scratch_dir(what: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(what)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep()
}

/// One sandbox engine for the tests that make sandboxes themselves.
fn engine() -> &'static SandboxEngine {
    static ENGINE: OnceLock<SandboxEngine> = OnceLock::new();
    ENGINE.get_or_init(|| SandboxEngine::new(&EngineOptions::default()).unwrap())
}

/// The target folder the tests are built in.
fn target_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap()
}

/// A workspace binary as `cargo test --workspace` builds it (`feelings`, `feelings-serve`, ...).
fn debug_binary(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: cargo build --workspace",
        path.display()
    );
    path
}

/// Where `web/build.sh` puts the server build.
fn component_path() -> PathBuf {
    target_dir().join("wasm32-wasip2/release/feelings_core.wasm")
}

/// The server build made by `web/build.sh`.
fn component() -> Vec<u8> {
    let path = component_path();
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `bash web/build.sh` first", path.display()))
}

/// Runs `node --test` on `tests` in web/ with `env`; returns what it printed, failing the test
/// (with that output) when node fails.
fn node_test(tests: &str, env: &[(&str, &Path)]) -> String {
    let web = root().join("web");
    assert!(
        web.join("pkg/feelings_core_bg.wasm").is_file(),
        "web/pkg is missing: run `bash web/build.sh` first"
    );
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run `npm ci` in web/ (web/build.sh does)"
    );
    let mut command = Command::new("node");
    command.args(["--test", tests]).current_dir(&web);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("node is needed for the page tests");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the page test failed:\n{report}");
    report
}

/// The Python of the peer venv (`../shared/bench/peers/setup.sh`, made by tests/run.sh with
/// `PEERS_DIR=~/.cache/feelings-tools/peers`): `FEELINGS_PEERS_PYTHON`, else that venv's.
fn peers_python() -> PathBuf {
    std::env::var_os("FEELINGS_PEERS_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/feelings-tools/peers/venv/bin/python")
        },
        PathBuf::from,
    )
}

/// Gives up a check whose tool is missing: a failure when `CI` is set, a visible skip
/// elsewhere (written past the test harness's capture).
fn missing_tool(what: &str, install: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what}, and CI is set: every check must run there; install it ({install})");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nSKIPPED CHECK: {what} ({install}); with CI=1 this fails instead\n"
    );
}
