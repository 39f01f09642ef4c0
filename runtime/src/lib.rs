//! The server side of Movie review feelings: the classifier's WebAssembly component (the
//! `wasm-app` crate built for wasm32-wasip2) run in wasmtime sandboxes, each with no files, no
//! network and no environment. The HTTP gateway on top of it is the next step.

mod sandbox;
mod snapshot;

pub use sandbox::{Sandbox, SandboxError, SandboxOptions, Sandboxes};
pub use snapshot::Preparation;
