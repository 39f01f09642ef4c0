//! The one wasmtime engine every deployment's sandboxes run on: SIMD, epoch interruption (one
//! timer thread for all), a bounded stack, and the pooling allocator, whose memory slots keep
//! a snapshot's pages mapped from one instance to the next: a fresh instance per request then
//! costs microseconds and its first call finds the model's pages already in place (only the
//! pages the last call wrote are put back, found with Linux's `PAGEMAP_SCAN`). Compiled
//! functions are cached by their code, so a new bundle, whose code is the same as every other
//! bundle's, compiles from that cache in seconds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{
    CacheStore, Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use crate::snapshot::{private_dir, write_private};
use crate::SandboxError;

/// How often the engine's epoch advances: the granularity of the deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most stack a guest may use, in bytes.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// Bytes of a memory slot that are put back by copying, not unmapped, after an instance: more
/// than one call writes (its activations and scratch), so the next instance in the slot finds
/// the snapshot's pages mapped.
const KEEP_RESIDENT: usize = 256 << 20;

/// Per component: core instances, memories and tables the classifier needs (with room).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The most linear memory one instance may have, in bytes.
    pub memory_limit: usize,
    /// The most sandboxes alive at once, all deployments together (the pooling allocator
    /// reserves address space for this many).
    pub max_sandboxes: u32,
    /// Folder for compiled functions, shared by every bundle (`None`: every compile is full).
    pub function_cache: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            max_sandboxes: 64,
            function_cache: None,
        }
    }
}

/// The shared engine and its epoch timer (stopped when the last clone is dropped).
#[derive(Clone)]
pub struct SandboxEngine {
    engine: Engine,
    /// Components compiled on this engine, kept for its lifetime by the sha256 of what they
    /// were made from (the instrumented classifier: the same for every bundle).
    compiled: Arc<Mutex<HashMap<String, Component>>>,
    _ticker: Arc<Ticker>,
}

struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl SandboxEngine {
    /// Builds the engine and starts its epoch timer.
    pub fn new(options: &EngineOptions) -> Result<Self, SandboxError> {
        let mut config = Config::new();
        config
            .wasm_simd(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(options)));
        if let Some(dir) = &options.function_cache {
            private_dir(dir)?;
            let store = Arc::new(FunctionCache { dir: dir.clone() });
            config
                .enable_incremental_compilation(store)
                .map_err(|e| SandboxError::Component(format!("{e:#}")))?;
        }
        let engine = Engine::new(&config).map_err(|e| SandboxError::Component(format!("{e:#}")))?;
        let running = Arc::new(AtomicBool::new(true));
        let (ticker, still) = (engine.clone(), running.clone());
        std::thread::Builder::new()
            .name("feelings-epoch".into())
            .spawn(move || {
                while still.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Component(format!("cannot start the epoch timer: {e}")))?;
        Ok(Self {
            engine,
            compiled: Arc::default(),
            _ticker: Arc::new(Ticker(running)),
        })
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The component kept under `key`, or the one `make` compiles, kept from now on; `make`
    /// runs once however many callers ask at the same time.
    pub(crate) fn compiled(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Component, SandboxError>,
    ) -> Result<Component, SandboxError> {
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(component) = compiled.get(key) {
            return Ok(component.clone());
        }
        let component = make()?;
        compiled.insert(key.to_string(), component.clone());
        Ok(component)
    }
}

/// The pooling allocator's limits: room for `max_sandboxes` classifier instances.
fn pooling(options: &EngineOptions) -> PoolingAllocationConfig {
    let sandboxes = options.max_sandboxes.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(sandboxes)
        .total_core_instances(sandboxes * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(sandboxes * MEMORIES_PER_COMPONENT)
        .total_tables(sandboxes * TABLES_PER_COMPONENT)
        .total_stacks(sandboxes)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memories_per_module(MEMORIES_PER_COMPONENT)
        .max_tables_per_module(TABLES_PER_COMPONENT)
        .table_elements(100_000)
        .max_memory_size(options.memory_limit)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Cranelift's incremental cache on disk: one private file per compiled function, named by
/// the sha256 of its key (which covers the function's code and the compiler's settings).
#[derive(Debug)]
struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    fn file(&self, key: &[u8]) -> PathBuf {
        let name = feelings_core::sha256_hex(key);
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        std::fs::read(self.file(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let file = self.file(key);
        let Some(dir) = file.parent() else {
            return false;
        };
        let write = WRITES.fetch_add(1, Ordering::Relaxed);
        let partial = file.with_extension(format!("tmp{}-{write}", std::process::id()));
        std::fs::create_dir_all(dir).is_ok()
            && write_private(&partial, &value).is_ok()
            && std::fs::rename(&partial, &file).is_ok()
    }
}

/// The function cache's folder inside a cache folder.
pub fn function_cache_in(cache_dir: &Path) -> PathBuf {
    cache_dir.join("functions")
}
