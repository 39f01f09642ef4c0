//! The web page's own files and the deployed bundle at `/model/`, so the page classifies in
//! the browser from the same origin. Only the page's files are served, never the rest of its
//! folder (its build script, test driver, node_modules).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service};
use axum::Router;
use feelings_core::manifest::{MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use tower_http::services::ServeFile;

use super::{request_id, AppState};
use crate::error::{ApiError, ErrorBody, ErrorKind};

/// The page's files: the route, and the file in the web folder. `web/build.sh` makes `pkg/`.
pub const PAGE_FILES: [(&str, &str); 7] = [
    ("/", "index.html"),
    ("/index.html", "index.html"),
    ("/app.js", "app.js"),
    ("/worker.js", "worker.js"),
    ("/style.css", "style.css"),
    ("/pkg/feelings_core.js", "pkg/feelings_core.js"),
    ("/pkg/feelings_core_bg.wasm", "pkg/feelings_core_bg.wasm"),
];

/// Routes for the page's files in `dir`, and the bundle at `/model/`.
pub(super) fn page(dir: &Path) -> Router<Arc<AppState>> {
    let bundle = Router::new().route("/model/{file}", get(bundle_file));
    PAGE_FILES.iter().fold(bundle, |router, (route, file)| {
        router.route(route, get_service(ServeFile::new(dir.join(file))))
    })
}

/// The deployed bundle's files, where the page loads them from.
#[utoipa::path(get, path = "/model/{file}", params(("file" = String, Path, description = "feelings.json, model.onnx or tokenizer.json")),
    responses((status = 200, description = "the file"), (status = 404, description = "no such file", body = ErrorBody)))]
pub(crate) async fn bundle_file(
    State(state): State<Arc<AppState>>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (bytes, content_type) = match file.as_str() {
        MANIFEST_FILE => (state.files[0].clone(), "application/json"),
        MODEL_FILE => (state.files[1].clone(), "application/octet-stream"),
        TOKENIZER_FILE => (state.files[2].clone(), "application/json"),
        _ => {
            let message = format!("the bundle has no file {file:?}");
            return Err(ApiError::new(
                ErrorKind::NotFound,
                message,
                &request_id(&headers),
            ));
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
