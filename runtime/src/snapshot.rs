//! Pre-initialised classifier components: the guest loads the bundle and warms up once, its
//! memory is snapshotted into a new component (Wizer), and that component is compiled and cached
//! on disk. A sandbox made from it starts with the model loaded: instantiation maps the
//! snapshot's memory copy-on-write instead of parsing and optimising the ONNX again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use feelings_core::Bundle;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::engine::{EngineOptions, SandboxEngine};
use crate::sandbox::{component, component_error, guest_store, linker, trap, Guest};
use crate::SandboxError;

/// Where the ready-to-run component came from, and what it cost.
#[derive(Debug, Clone)]
pub struct Preparation {
    /// Whether the compiled snapshot was read from the cache folder.
    pub from_cache: bool,
    /// The cached artifact, when a cache folder is used.
    pub cache_file: Option<PathBuf>,
    /// Time to load or make (snapshot + compile) the component.
    pub duration: Duration,
}

/// The compiled, pre-initialised component for `bundle`: from `cache_dir` when it holds one for
/// these exact bytes (and this engine), otherwise made and stored there.
pub(crate) fn prepare(
    sandbox_engine: &SandboxEngine,
    wasm: &[u8],
    bundle: &Bundle,
    manifest_json: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Component, Preparation), SandboxError> {
    let started = Instant::now();
    let engine = sandbox_engine.engine();
    let make = || {
        let snapshot = snapshot(sandbox_engine, wasm, bundle, manifest_json, cache_dir)?;
        let compiling = Instant::now();
        let component = Component::new(engine, &snapshot).map_err(component_error)?;
        tracing::info!(
            "snapshot compiled in {:.1} s ({} MB)",
            compiling.elapsed().as_secs_f64(),
            snapshot.len() / 1_000_000
        );
        Ok(component)
    };
    let (component, from_cache, cache_file) = match cache_dir {
        None => (make()?, false, None),
        Some(dir) => {
            let file = dir.join(format!("{}.cwasm", cache_key(engine, wasm, manifest_json)));
            let (component, from_cache) = cached(dir, &file, engine, make)?;
            (component, from_cache, Some(file))
        }
    };
    if !from_cache {
        release_freed_memory();
    }
    let preparation = Preparation {
        from_cache,
        cache_file,
        duration: started.elapsed(),
    };
    Ok((component, preparation))
}

/// Hands the memory a compile freed back to the kernel: Cranelift compiles on many threads,
/// and glibc's malloc keeps what each thread's arena freed (about 900 MB after a snapshot's
/// compile), which would stay in the gateway's RSS while it idles.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The component compiled in `file` of the cache folder `dir`, or, when there is none (or a
/// damaged one), the one `make` compiles, stored there; and whether it came from the file.
fn cached(
    dir: &Path,
    file: &Path,
    engine: &Engine,
    make: impl FnOnce() -> Result<Component, SandboxError>,
) -> Result<(Component, bool), SandboxError> {
    private_dir(dir)?;
    if let Some(component) = read_artifact(engine, file) {
        return Ok((component, true));
    }
    // One maker per artifact: whoever waited on the lock finds the file made.
    let _lock = lock(file)?;
    if let Some(component) = read_artifact(engine, file) {
        return Ok((component, true));
    }
    let component = make()?;
    store_artifact(file, &component)?;
    Ok((component, false))
}

/// Makes `dir` if needed (mode 0700) and refuses it unless it is this user's and nobody
/// else may write into it: files in it are loaded as compiled code.
pub(crate) fn private_dir(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |why: String| {
        SandboxError::Cache(format!(
            "{}: {why}; the cache holds compiled code, so it must be private (pass another --cache, or fix it: chmod 700)",
            dir.display()
        ))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(format!("cannot create it: {e}")))?;
    let meta = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    let me = current_user();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it belongs to user {}, not to this user ({me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "others may write into it (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

fn current_user() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The sidecar holding the sha256 of a compiled file, written with it.
fn checksum_file(file: &Path) -> PathBuf {
    file.with_extension("cwasm.sha256")
}

/// The compiled component cached in `file`, if there is one this user wrote whose bytes match
/// the checksum written with it; a damaged or foreign one is reported, and made again.
fn read_artifact(engine: &Engine, file: &Path) -> Option<Component> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    let distrust = |why: &str| {
        tracing::warn!("{}: {why}; making it again", file.display());
        None
    };
    if meta.uid() != current_user() || meta.mode() & 0o022 != 0 {
        return distrust("not written by this user");
    }
    let expected = std::fs::read_to_string(checksum_file(file)).unwrap_or_default();
    let bytes = std::fs::read(file).ok()?;
    if hex(&Sha256::digest(&bytes)) != expected.trim() {
        return distrust("its checksum does not match (a damaged or partial file)");
    }
    // SAFETY: the file was written by `Component::serialize` of this program into a private
    // folder of this user, and its bytes are the ones written (checked above); wasmtime checks
    // the version and engine settings it was made with.
    match unsafe { Component::deserialize_file(engine, file) } {
        Ok(component) => Some(component),
        Err(e) => distrust(&format!("wasmtime cannot load it ({e})")),
    }
}

/// An exclusive lock on `<file>.lock`, held until the returned file is dropped; gateways that
/// start together on a cold cache make the snapshot once.
fn lock(file: &Path) -> Result<std::fs::File, SandboxError> {
    let cache_error = |e: std::io::Error| SandboxError::Cache(format!("{}: {e}", file.display()));
    let lock = std::fs::File::create(file.with_extension("lock")).map_err(cache_error)?;
    lock.lock().map_err(cache_error)?;
    Ok(lock)
}

/// Names the artifact after everything it depends on: the component, what was loaded into it
/// (the bundle's manifest, which holds the sha256 of the model and tokenizer; or a tag for the
/// instrumented component, which holds nothing) and the engine's version and settings.
fn cache_key(engine: &Engine, wasm: &[u8], manifest_json: &[u8]) -> String {
    let mut engine_hash = DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut hasher = Sha256::new();
    hasher.update(b"feelings snapshot 1\0");
    hasher.update(engine_hash.finish().to_le_bytes());
    hasher.update(Sha256::digest(wasm));
    hasher.update(Sha256::digest(manifest_json));
    hex(&hasher.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the compiled component and its checksum next to their final names, then renames
/// them (the checksum first): readers never see half a file, and two servers starting at once
/// both end with a whole one.
fn store_artifact(file: &Path, component: &Component) -> Result<(), SandboxError> {
    let cache_error = |e: std::io::Error| SandboxError::Cache(format!("{}: {e}", file.display()));
    let bytes = component.serialize().map_err(component_error)?;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = |path: &Path| path.with_extension(format!("tmp{}-{write}", std::process::id()));
    let sums = checksum_file(file);
    write_private(&partial(&sums), hex(&Sha256::digest(&bytes)).as_bytes()).map_err(cache_error)?;
    write_private(&partial(file), &bytes).map_err(cache_error)?;
    std::fs::rename(partial(&sums), &sums).map_err(cache_error)?;
    std::fs::rename(partial(file), file).map_err(cache_error)
}

/// Writes a new file readable and writable by this user only, whatever the umask.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The classifier component `wasm` (or a component built on the classifier, such as the
/// `wasi:http` one) with `bundle` loaded and warmed up inside it, as a new component: a
/// self-contained classifier that any component host can run (its `classify`, and its HTTP
/// handler, answer without `load`). `feelings-serve --write-component` and
/// `--write-http-component` write it. With `cache_dir`, the instrumented component and the
/// compiled functions come from that cache (and are kept there).
pub fn preinitialise(
    wasm: &[u8],
    bundle: &Bundle,
    cache_dir: Option<&Path>,
) -> Result<Vec<u8>, SandboxError> {
    let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
    let engine = SandboxEngine::new(&EngineOptions {
        function_cache: cache_dir.map(crate::engine::function_cache_in),
        ..EngineOptions::default()
    })?;
    snapshot(&engine, wasm, bundle, &manifest_json, cache_dir)
}

/// The classifier component `wasm` instrumented for snapshots and compiled: the same for every
/// bundle, so it is compiled once per cache folder and kept by the engine once made. It also
/// serves as it is: an instance of it that loads a bundle classifies like a snapshot of it.
pub(crate) fn instrumented(
    engine: &SandboxEngine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component, SandboxError> {
    // Kept per cache folder too: each cache holds its own compiled copy.
    let key = format!("instrumented {} {cache_dir:?}", hex(&Sha256::digest(wasm)));
    engine.compiled(&key, || {
        let (_, instrumented) = Wizer::new()
            .instrument_component(wasm)
            .map_err(component_error)?;
        let compile = || Component::new(engine.engine(), &instrumented).map_err(component_error);
        match cache_dir {
            None => compile(),
            Some(dir) => {
                let key = cache_key(engine.engine(), &instrumented, b"instrumented");
                let file = dir.join(format!("instrumented-{key}.cwasm"));
                Ok(cached(dir, &file, engine.engine(), compile)?.0)
            }
        }
    })
}

/// Instantiates an instrumented copy of the component, loads the bundle and warms up inside it,
/// and returns the component rewritten with that state as its initial memory. The instrumented
/// copy is the same for every bundle: with a cache folder it is compiled once.
fn snapshot(
    sandbox_engine: &SandboxEngine,
    wasm: &[u8],
    bundle: &Bundle,
    manifest_json: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Vec<u8>, SandboxError> {
    let started = Instant::now();
    let engine = sandbox_engine.engine();
    let wizer = Wizer::new();
    let (context, _) = wizer.instrument_component(wasm).map_err(component_error)?;
    let component = instrumented(sandbox_engine, wasm, cache_dir)?;
    let instrumented_at = started.elapsed();
    // The bundle is the operator's; no memory cap or deadline while it loads.
    let mut store = guest_store(engine, usize::MAX);
    store.set_epoch_deadline(u64::MAX / 2);
    let mut linker = linker(engine)?;
    // A component built on the classifier may answer wasi:http too (the HTTP component).
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(component_error)?;
    let instance = linker.instantiate(&mut store, &component).map_err(trap)?;
    let bindings = component::Classifier::new(&mut store, &instance).map_err(component_error)?;
    bindings
        .feelings_classifier_classify()
        .call_load(&mut store, manifest_json, &bundle.model, &bundle.tokenizer)
        .map_err(trap)?
        .map_err(SandboxError::Refused)?;
    bindings.call_warm_up(&mut store).map_err(trap)?;
    let loaded_at = started.elapsed();
    // Wizer reads the guest's whole memory back through one call; it is ours, not a request's.
    store.set_hostcall_fuel(usize::MAX);
    let mut state = GuestState {
        store: &mut store,
        instance,
    };
    let snapshot = pollster::block_on(wizer.snapshot_component(&context, &mut state))
        .map_err(component_error)?;
    tracing::info!(
        "bundle {:?} loaded into the component and snapshotted in {:.1} s (instrumented \
         component ready at {:.1} s, bundle loaded and warmed up at {:.1} s)",
        bundle.manifest.name,
        started.elapsed().as_secs_f64(),
        instrumented_at.as_secs_f64(),
        loaded_at.as_secs_f64()
    );
    Ok(snapshot)
}

/// Lets Wizer read the instrumented guest's memories and globals.
struct GuestState<'a> {
    store: &'a mut Store<Guest>,
    instance: Instance,
}

impl GuestState<'_> {
    /// Calls `func` of the exported `instance` (Wizer's accessors); the guest was made to answer
    /// them, so a failure is a bug in the instrumentation, not in the input.
    fn call<R: Lift + Send + Sync + 'static, V>(
        &mut self,
        instance: &str,
        func: &str,
        then: impl FnOnce(&Store<Guest>, R) -> V,
    ) -> V {
        let (_, accessors) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("the instrumented component exports Wizer's accessors");
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&accessors), func)
            .expect("the instrumented component exports each accessor");
        let typed = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .expect("Wizer's accessors have the types it expects");
        let (value,) = typed
            .call(&mut *self.store, ())
            .expect("Wizer's accessors do not trap");
        then(self.store, value)
    }
}

impl ComponentInstanceState for GuestState<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.call(instance, func, |store, list: WasmList<u8>| {
            contents(list.as_le_slice(store))
        })
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, value| value)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, value| value)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, value: f32| value.to_bits())
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, value: f64| value.to_bits())
    }
}
