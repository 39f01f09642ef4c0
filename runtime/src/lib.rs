//! The gateway of Movie review feelings: an axum HTTP endpoint that classifies reviews inside
//! wasmtime sandboxes running the `wasm-app` server build.
//!
//! Not built yet: this crate holds its place in the workspace until the gateway issue (see the
//! README's roadmap).
