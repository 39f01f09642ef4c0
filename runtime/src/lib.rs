//! The server side of Movie review feelings: the classifier's WebAssembly component (the
//! `wasm-app` crate built for wasm32-wasip2) run in wasmtime sandboxes, each with no files, no
//! network and no environment, behind an axum HTTP gateway (`feelings-serve`).
//!
//! [`Sandboxes`] pre-initialise the component with a bundle and make instances; a [`Pool`]
//! runs a fixed number of them behind a bounded queue; [`app`] is the HTTP API over a pool;
//! [`start`] builds all of it from a bundle folder and a component file.

mod api;
mod error;
mod gateway;
mod metrics;
mod pool;
mod sandbox;
mod snapshot;

pub use api::{app, ApiDoc, AppState, Classified, Limits};
pub use error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
pub use gateway::{start, GatewayOptions, StartError};
pub use metrics::Metrics;
pub use pool::{JobResult, Overloaded, Pool, PoolOptions};
pub use sandbox::{Sandbox, SandboxError, SandboxOptions, Sandboxes, EPOCH_TICK, MAX_WASM_STACK};
pub use snapshot::{preinitialise, Preparation};
