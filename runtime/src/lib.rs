//! The server side of Movie review feelings: the classifier's WebAssembly component (the
//! inference core, `feelings-core` in `wasm-app/`, built for wasm32-wasip2) run in wasmtime sandboxes, each with no files, no
//! network and no environment, behind an axum HTTP gateway (`feelings-serve`).
//!
//! [`Sandboxes`] pre-initialise the component with a bundle and make instances; a [`Pool`]
//! runs a fixed number of them behind a fair queue that admits requests by cost; [`app`] is
//! the HTTP API over a pool; [`start`] builds all of it from a bundle folder and a component
//! file; [`serve`] puts the API on a socket with bounded connections. [`time_guest`] times a
//! sandbox against the native core (`feelings-guest-bench`, run by `feelings bench --wasm`).

mod api;
mod bench;
mod error;
mod gateway;
mod metrics;
mod pool;
mod sandbox;
mod server;
mod snapshot;

pub use api::{app, Access, ApiDoc, AppState, Classified, Limits};
pub use bench::{time_guest, GuestTimings};
pub use error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
pub use gateway::{check_limits, start, GatewayOptions, StartError};
pub use metrics::Metrics;
pub use pool::{
    AnswerCheck, Instance, Instances, JobError, JobResult, Overloaded, Pool, PoolOptions,
};
pub use sandbox::{Sandbox, SandboxError, SandboxOptions, Sandboxes, EPOCH_TICK, MAX_WASM_STACK};
pub use server::{listen, reserve_descriptors, serve, ConnectionLimits};
pub use snapshot::{preinitialise, Preparation};
