//! wasmtime sandboxes around the classifier component (`wasm-app/wit/feelings.wit`), each with
//! nothing granted (no files, network, environment, clock beyond WASI's defaults), a memory cap,
//! a bounded stack and a deadline per call (wall-clock time, enforced by epoch interruption).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feelings_core::{Bundle, Prediction};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::engine::SandboxEngine;
use crate::pool::{Instance, Instances};
use crate::snapshot::{self, Preparation};
use crate::EPOCH_TICK;

/// The host side of `wasm-app/wit/feelings.wit`, generated: `component::Classifier` is the
/// component's exports as wasmtime calls them.
pub(crate) mod component {
    wasmtime::component::bindgen!({ world: "classifier", path: "../wasm-app/wit" });
}

/// What can go wrong when building or using a sandbox.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// The component could not be compiled or linked.
    #[error("the classifier component cannot be used: {0}")]
    Component(String),
    /// The guest ran past its deadline and was stopped; the instance is unusable.
    #[error("the sandbox ran past its deadline of {0:?} and was stopped")]
    Deadline(Duration),
    /// The guest trapped (a bug, or the memory cap hit); the instance is unusable.
    #[error("the sandbox trapped: {0}")]
    Trap(String),
    /// The guest refused the request (e.g. a bundle it cannot load).
    #[error("the classifier refused: {0}")]
    Refused(String),
    /// The guest answered something that cannot be right (too few predictions, a score that
    /// is not a probability, a label its score does not decide); the instance is not trusted
    /// again.
    #[error("the sandbox gave an impossible answer: {0}")]
    Invalid(String),
    /// The host panicked while running the guest; the instance is dropped.
    #[error("the sandbox crashed: {0}")]
    Crashed(String),
    /// The cache folder for compiled components cannot be used.
    #[error("the compiled-component cache: {0}")]
    Cache(String),
}

impl SandboxError {
    /// Whether the instance that gave this error must be dropped.
    pub fn breaks_sandbox(&self) -> bool {
        matches!(
            self,
            Self::Trap(_) | Self::Deadline(_) | Self::Invalid(_) | Self::Crashed(_)
        )
    }
}

/// The per-instance state: WASI with nothing granted, and the memory cap.
pub(crate) struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    http: WasiHttpCtx,
    hooks: NoOutgoingRequests,
}

impl Guest {
    /// No files, no network, no environment, no arguments; at most `memory` bytes of memory.
    pub(crate) fn new(memory: usize) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .trap_on_grow_failure(true)
                .build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutgoingRequests,
        }
    }
}

/// wasi:http for an HTTP component while its bundle loads (before it is snapshotted): its
/// types, and every outgoing request refused.
impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses every outgoing HTTP request: a guest has no network.
struct NoOutgoingRequests;

/// What `WasiHttpHooks::send_request` returns.
type SendRequest = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    axum::http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for NoOutgoingRequests {
    fn send_request(
        &mut self,
        _request: axum::http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _done: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendRequest {
        Box::new(std::future::ready(Err(HttpError::HttpRequestDenied)))
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

/// A store for one instance: limited to `memory` bytes, stopped at the epoch deadline.
pub(crate) fn guest_store(engine: &Engine, memory: usize) -> Store<Guest> {
    let mut store = Store::new(engine, Guest::new(memory));
    store.limiter(|guest| &mut guest.limits);
    store.epoch_deadline_trap();
    store
}

/// How sandboxes are made.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Folder for compiled, pre-initialised components (one file per component and bundle);
    /// `None` makes the snapshot again at every start.
    pub cache_dir: Option<PathBuf>,
    /// The most linear memory one instance may have, in bytes (the snapshot's model included).
    pub memory_limit: usize,
    /// The most time (wall-clock) one classify call may take; the guest is stopped past it.
    pub deadline: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            memory_limit: 1 << 30,
            deadline: Duration::from_secs(30),
        }
    }
}

/// The pre-initialised component for one bundle, ready to instantiate.
pub struct Sandboxes {
    engine: SandboxEngine,
    pre: component::ClassifierPre<Guest>,
    options: SandboxOptions,
    image_bytes: u64,
}

impl Sandboxes {
    /// Prepares the classifier component (`wasm`, the server build) for `bundle` on `engine`:
    /// the guest loads the bundle once, its memory is snapshotted and compiled (or read from
    /// the cache).
    pub fn new(
        engine: &SandboxEngine,
        wasm: &[u8],
        bundle: &Bundle,
        options: &SandboxOptions,
    ) -> Result<(Self, Preparation), SandboxError> {
        let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
        let (component, preparation) = snapshot::prepare(
            engine,
            wasm,
            bundle,
            &manifest_json,
            options.cache_dir.as_deref(),
        )?;
        let pre = component::ClassifierPre::new(
            linker(engine.engine())?
                .instantiate_pre(&component)
                .map_err(component_error)?,
        )
        .map_err(component_error)?;
        let sandboxes = Self {
            engine: engine.clone(),
            pre,
            options: options.clone(),
            image_bytes: {
                let range = component.image_range();
                (range.end as usize - range.start as usize) as u64
            },
        };
        Ok((sandboxes, preparation))
    }

    /// Bytes of the compiled snapshot (its code and its memory image), as mapped.
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// A fresh instance, the bundle already loaded; also returns how long it took.
    pub fn instance(&self) -> Result<(Sandbox, Duration), SandboxError> {
        let started = Instant::now();
        let mut store = guest_store(self.engine.engine(), self.options.memory_limit);
        store.set_epoch_deadline(deadline_ticks(self.options.deadline));
        let bindings = self.pre.instantiate(&mut store).map_err(trap)?;
        let sandbox = Sandbox {
            store,
            bindings,
            deadline: self.options.deadline,
        };
        Ok((sandbox, started.elapsed()))
    }
}

impl Instances for Sandboxes {
    fn instance(&self) -> Result<Box<dyn Instance>, SandboxError> {
        Ok(Box::new(Sandboxes::instance(self)?.0))
    }
}

/// Sandboxes that each load the bundle themselves, from the classifier component as it is (the
/// instrumented one, compiled once for every bundle): what a new deployment answers with while
/// its snapshot is made, each sandbox paying the bundle's load (about half a second for
/// MiniLM) that a snapshot saves.
pub struct LoadingSandboxes {
    engine: SandboxEngine,
    pre: component::ClassifierPre<Guest>,
    bundle: Arc<Bundle>,
    options: SandboxOptions,
}

impl LoadingSandboxes {
    /// Sandboxes of the classifier component `wasm` (the server build) that load `bundle`.
    pub fn new(
        engine: &SandboxEngine,
        wasm: &[u8],
        bundle: Arc<Bundle>,
        options: &SandboxOptions,
    ) -> Result<Self, SandboxError> {
        let component = snapshot::instrumented(engine, wasm, options.cache_dir.as_deref())?;
        let pre = component::ClassifierPre::new(
            linker(engine.engine())?
                .instantiate_pre(&component)
                .map_err(component_error)?,
        )
        .map_err(component_error)?;
        Ok(Self {
            engine: engine.clone(),
            pre,
            bundle,
            options: options.clone(),
        })
    }
}

impl Instances for LoadingSandboxes {
    fn instance(&self) -> Result<Box<dyn Instance>, SandboxError> {
        let mut store = guest_store(self.engine.engine(), self.options.memory_limit);
        store.set_epoch_deadline(deadline_ticks(self.options.deadline));
        let bindings = self.pre.instantiate(&mut store).map_err(trap)?;
        let mut sandbox = Sandbox {
            store,
            bindings,
            deadline: self.options.deadline,
        };
        sandbox.load(&self.bundle)?;
        Ok(Box::new(sandbox))
    }
}

/// Epoch ticks in `deadline`, at least one.
fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

/// One instance of the classifier with a bundle loaded.
pub struct Sandbox {
    store: Store<Guest>,
    bindings: component::Classifier,
    deadline: Duration,
}

impl Sandbox {
    /// Loads another bundle into this instance (parsing and optimising its ONNX inside the
    /// guest: what a snapshot saves every new instance from); returns how long it took.
    pub(crate) fn load(&mut self, bundle: &Bundle) -> Result<Duration, SandboxError> {
        let started = Instant::now();
        let manifest_json = feelings_core::manifest::to_json(&bundle.manifest);
        self.store.set_epoch_deadline(deadline_ticks(self.deadline));
        let classify = self.bindings.feelings_classifier_classify();
        classify
            .call_load(
                &mut self.store,
                &manifest_json,
                &bundle.model,
                &bundle.tokenizer,
            )
            .map_err(|e| Self::failure(e, self.deadline))?
            .map_err(SandboxError::Refused)?;
        Ok(started.elapsed())
    }

    /// Classifies reviews inside the sandbox, within the deadline. After an error other than
    /// `Refused` the instance must be dropped.
    pub fn classify(&mut self, texts: &[String]) -> Result<Vec<Prediction>, SandboxError> {
        self.classify_within(texts, self.deadline)
    }

    /// [`Sandbox::classify`] with another deadline for this one call (e.g. a generous one for
    /// the check at start, which a loaded machine may slow down).
    pub fn classify_within(
        &mut self,
        texts: &[String],
        deadline: Duration,
    ) -> Result<Vec<Prediction>, SandboxError> {
        self.store.set_epoch_deadline(deadline_ticks(deadline));
        let classify = self.bindings.feelings_classifier_classify();
        let predictions = classify
            .call_classify(&mut self.store, texts)
            .map_err(|e| Self::failure(e, deadline))?
            .map_err(SandboxError::Refused)?;
        Ok(predictions
            .into_iter()
            .map(|p| feelings_core::prediction_as!(Prediction, p))
            .collect())
    }

    fn failure(e: wasmtime::Error, deadline: Duration) -> SandboxError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => SandboxError::Deadline(deadline),
            _ => trap(e),
        }
    }
}

impl Instance for Sandbox {
    fn classify(
        &mut self,
        texts: &[String],
        deadline: Option<Duration>,
    ) -> Result<Vec<Prediction>, SandboxError> {
        self.classify_within(texts, deadline.unwrap_or(self.deadline))
    }
}
