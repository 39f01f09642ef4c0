//! The classifier as a `wasi:http/proxy` component: `wasi:http/incoming-handler` answers the
//! gateway's contract (`POST /v1/classify`, `GET /v1/model`, `GET /healthz`, errors as the
//! gateway's JSON) with the inference core's classifier, which this component also exports as
//! `feelings:classifier/classify` (from the core) so that a host can load a bundle into it and
//! snapshot it: `feelings-serve --write-http-component` does, and the written component runs
//! under `wasmtime serve`, Spin, wasmCloud or any other wasi:http host with the model already
//! in its memory. Built for wasm32-wasip2 by `web/build.sh`; empty on other targets.

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod handler;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod http_io;
