//! wasmtime sandboxes around the classifier component (`wasm-app/wit/feelings.wit`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use feelings_core::{Bundle, Prediction};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::snapshot::{self, Preparation};

wasmtime::component::bindgen!({ world: "classifier", path: "../wasm-app/wit" });

/// What can go wrong when building or using a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The component could not be compiled or linked.
    #[error("the classifier component cannot be used: {0}")]
    Component(String),
    /// The guest trapped (a bug, or a limit hit); the instance is unusable.
    #[error("the sandbox trapped: {0}")]
    Trap(String),
    /// The guest refused the request (e.g. a bundle it cannot load).
    #[error("the classifier refused: {0}")]
    Refused(String),
    /// The cache folder for compiled components cannot be written.
    #[error("cannot store the compiled component: {0}")]
    Cache(String),
}

/// The per-instance state: WASI with nothing granted.
pub(crate) struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Guest {
    /// No files, no network, no environment, no arguments.
    pub(crate) fn new() -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub(crate) fn component_error(e: wasmtime::Error) -> SandboxError {
    SandboxError::Component(format!("{e:#}"))
}

pub(crate) fn trap(e: wasmtime::Error) -> SandboxError {
    SandboxError::Trap(format!("{e:#}"))
}

/// The imports a classifier instance gets: WASI's interfaces, backed by an empty context.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<Guest>, SandboxError> {
    let mut linker = Linker::<Guest>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(component_error)?;
    Ok(linker)
}

/// How sandboxes are made.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Folder for compiled, pre-initialised components (one file per component and bundle);
    /// `None` makes the snapshot again at every start.
    pub cache_dir: Option<PathBuf>,
}

/// The pre-initialised component for one bundle, ready to instantiate.
pub struct Sandboxes {
    engine: Engine,
    pre: ClassifierPre<Guest>,
}

impl Sandboxes {
    /// Prepares the classifier component (`wasm`, the server build) for `bundle`: the guest
    /// loads the bundle once, its memory is snapshotted and compiled (or read from the cache).
    pub fn new(
        wasm: &[u8],
        bundle: &Bundle,
        options: &SandboxOptions,
    ) -> Result<(Self, Preparation), SandboxError> {
        let mut config = Config::new();
        config.wasm_simd(true);
        let engine = Engine::new(&config).map_err(component_error)?;
        let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
        let (component, preparation) = snapshot::prepare(
            &engine,
            wasm,
            bundle,
            &manifest_json,
            options.cache_dir.as_deref(),
        )?;
        let pre = ClassifierPre::new(
            linker(&engine)?
                .instantiate_pre(&component)
                .map_err(component_error)?,
        )
        .map_err(component_error)?;
        Ok((Self { engine, pre }, preparation))
    }

    /// A fresh instance, the bundle already loaded; also returns how long it took.
    pub fn instance(&self) -> Result<(Sandbox, Duration), SandboxError> {
        let started = Instant::now();
        let mut store = Store::new(&self.engine, Guest::new());
        let bindings = self.pre.instantiate(&mut store).map_err(trap)?;
        Ok((Sandbox { store, bindings }, started.elapsed()))
    }
}

/// One instance of the classifier with a bundle loaded.
pub struct Sandbox {
    store: Store<Guest>,
    bindings: Classifier,
}

impl Sandbox {
    /// Loads another bundle into this instance (parsing and optimising its ONNX inside the
    /// guest: what a snapshot saves every new instance from); returns how long it took.
    pub fn load(&mut self, bundle: &Bundle) -> Result<Duration, SandboxError> {
        let started = Instant::now();
        let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
        self.bindings
            .feelings_classifier_classify()
            .call_load(
                &mut self.store,
                &manifest_json,
                &bundle.model,
                &bundle.tokenizer,
            )
            .map_err(trap)?
            .map_err(SandboxError::Refused)?;
        Ok(started.elapsed())
    }

    /// Classifies reviews inside the sandbox.
    pub fn classify(&mut self, texts: &[String]) -> Result<Vec<Prediction>, SandboxError> {
        let predictions = self
            .bindings
            .feelings_classifier_classify()
            .call_classify(&mut self.store, texts)
            .map_err(trap)?
            .map_err(SandboxError::Refused)?;
        Ok(predictions
            .into_iter()
            .map(|p| Prediction {
                label: p.label,
                score: p.score,
                threshold: p.threshold,
                truncated: p.truncated,
            })
            .collect())
    }
}
