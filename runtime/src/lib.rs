//! The server side of Movie review feelings: the classifier's WebAssembly component (the
//! inference core, `feelings-core` in `wasm-app/`, built for wasm32-wasip2) run in wasmtime sandboxes, each with no files, no
//! network and no environment, behind an axum HTTP gateway (`feelings-serve`).
//!
//! A [`SandboxEngine`] is the one wasmtime engine (pooling allocator, epoch timer, compiled
//! function cache); [`Sandboxes`] pre-initialise the component with a bundle and make
//! instances; a [`Pool`] runs a number of slots behind a fair queue that admits requests by
//! cost, each guest call taking its turn at a [`Gate`] shared by every pool; [`Deployments`]
//! are named bundles kept in a [`Registry`] folder, warm while used and cold (no snapshot
//! mapped, no sandbox) otherwise, and a new one answers at once from [`LoadingSandboxes`]
//! (each loads the bundle itself) while its snapshot is made; [`app`] is the HTTP API over them; [`start`] builds all of
//! it; [`serve`] puts the API on a socket with bounded connections. [`time_guest`] times a
//! sandbox against the native core (`feelings-guest-bench`, run by `feelings bench --wasm`).

mod api;
mod bench;
mod deployments;
mod engine;
mod error;
mod gateway;
mod metrics;
mod pool;
mod sandbox;
mod server;
mod snapshot;

pub use api::{app, Access, ApiDoc, AppState, Classified, DeploymentList, Limits};
pub use bench::{time_guest, GuestTimings};
pub use deployments::{
    BundleFiles, DeployError, Deployment, DeploymentInfo, Deployments, Host, NewDeployment, Record,
    Registry, RegistryError, SnapshotSlot, Warm,
};
pub use engine::{function_cache_in, EngineOptions, SandboxEngine, EPOCH_TICK, MAX_WASM_STACK};
pub use error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
pub use gateway::{start, GatewayOptions, LimitCheck, StartError};
pub use metrics::{Metrics, PoolMetrics};
pub use pool::{
    AnswerCheck, Gate, Instance, Instances, JobError, JobResult, Overloaded, Pool, PoolOptions,
};
pub use sandbox::{LoadingSandboxes, Sandbox, SandboxError, SandboxOptions, Sandboxes};
pub use server::{listen, reserve_descriptors, serve, ConnectionLimits};
pub use snapshot::{preinitialise, Preparation};
