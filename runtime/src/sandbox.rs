//! wasmtime sandboxes around the classifier component (`wasm-app/wit/feelings.wit`).

use std::time::{Duration, Instant};

use feelings_core::{Bundle, Prediction};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
}

/// The per-instance state: WASI with nothing granted.
struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The compiled component and the bundle every instance loads.
pub struct Sandboxes {
    engine: Engine,
    pre: ClassifierPre<Guest>,
    bundle: Bundle,
    manifest_json: Vec<u8>,
}

impl Sandboxes {
    /// Compiles the component (`wasm` bytes, or a precompiled artifact of the same engine
    /// configuration) for `bundle`.
    pub fn new(wasm: &[u8], bundle: Bundle) -> Result<Self, SandboxError> {
        let component_error = |e: wasmtime::Error| SandboxError::Component(format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_simd(true);
        let engine = Engine::new(&config).map_err(component_error)?;
        let component = Component::new(&engine, wasm).map_err(component_error)?;
        let mut linker = Linker::<Guest>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(component_error)?;
        let pre = ClassifierPre::new(
            linker
                .instantiate_pre(&component)
                .map_err(component_error)?,
        )
        .map_err(component_error)?;
        let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
        Ok(Self {
            engine,
            pre,
            bundle,
            manifest_json,
        })
    }

    /// A fresh instance with the bundle loaded; also returns how long instantiation and the
    /// guest's model load took.
    pub fn instance(&self) -> Result<(Sandbox, Duration, Duration), SandboxError> {
        let trap = |e: wasmtime::Error| SandboxError::Trap(format!("{e:#}"));
        let started = Instant::now();
        let mut store = Store::new(
            &self.engine,
            Guest {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let bindings = self.pre.instantiate(&mut store).map_err(trap)?;
        let instantiated = started.elapsed();
        bindings
            .feelings_classifier_classify()
            .call_load(
                &mut store,
                &self.manifest_json,
                &self.bundle.model,
                &self.bundle.tokenizer,
            )
            .map_err(trap)?
            .map_err(SandboxError::Refused)?;
        let loaded = started.elapsed() - instantiated;
        Ok((Sandbox { store, bindings }, instantiated, loaded))
    }
}

/// One instance of the classifier with a bundle loaded.
pub struct Sandbox {
    store: Store<Guest>,
    bindings: Classifier,
}

impl Sandbox {
    /// Classifies reviews inside the sandbox.
    pub fn classify(&mut self, texts: &[String]) -> Result<Vec<Prediction>, SandboxError> {
        let predictions = self
            .bindings
            .feelings_classifier_classify()
            .call_classify(&mut self.store, texts)
            .map_err(|e| SandboxError::Trap(format!("{e:#}")))?
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
