//! The web pages: the deployments page at `/`, each deployment's web app at `/d/NAME/` with its
//! bundle at `/d/NAME/model/`, and the default deployment's bundle at `/model/` (the page's
//! own files also at the root, as before deployments). Only the page's files are served, never
//! the rest of its folder (its build script, test driver, node_modules).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service};
use axum::Router;
use feelings_core::manifest::{MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::{deployments, request_id, AppState};
use crate::deployments::Deployment;
use crate::error::{ApiError, ErrorBody, ErrorKind};

/// The page's files: the path under a deployment's page, and the file in the web folder.
/// `web/build.sh` makes `pkg/`. `sw.js` is the page's service worker (offline visits): served
/// from the page's folder, its scope is that folder.
pub const PAGE_FILES: [(&str, &str); 8] = [
    ("", "index.html"),
    ("index.html", "index.html"),
    ("app.js", "app.js"),
    ("worker.js", "worker.js"),
    ("style.css", "style.css"),
    ("sw.js", "sw.js"),
    ("pkg/feelings_core.js", "pkg/feelings_core.js"),
    ("pkg/feelings_core_bg.wasm", "pkg/feelings_core_bg.wasm"),
];

/// Routes for the pages of the web folder `dir`.
pub(super) fn page(dir: &Path) -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/", get(deployments::page))
        .route("/model/{file}", get(default_bundle_file))
        .route("/d/{name}/", get(deployment_page_index))
        .route("/d/{name}/{*path}", get(deployment_page));
    // The page's own files at the root too (their bundle is the default deployment's).
    PAGE_FILES
        .iter()
        .filter(|(route, _)| !route.is_empty())
        .fold(routes, |router, (route, file)| {
            router.route(
                &format!("/{route}"),
                get_service(ServeFile::new(dir.join(file))),
            )
        })
}

fn not_found(message: String, headers: &HeaderMap) -> ApiError {
    ApiError::new(ErrorKind::NotFound, message, &request_id(headers))
}

/// A deployment's web app, `/d/NAME/`.
async fn deployment_page_index(
    state: State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    deployment_page(state, UrlPath((name, String::new())), request).await
}

/// A file of a deployment's web app, or of its bundle (`/d/NAME/model/FILE`).
async fn deployment_page(
    State(state): State<Arc<AppState>>,
    UrlPath((name, path)): UrlPath<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let deployment = deployments::find(&state, &name, &request_id(&headers))?;
    if let Some(file) = path.strip_prefix("model/") {
        return bundle_file_of(&deployment, file, request).await;
    }
    let (Some(dir), Some((_, file))) = (
        &state.web_dir,
        PAGE_FILES.iter().find(|(route, _)| *route == path),
    ) else {
        return Err(not_found(format!("no such page file: {path}"), &headers));
    };
    serve_file(dir.join(file), request).await
}

async fn serve_file(path: PathBuf, request: Request) -> Result<Response, ApiError> {
    let response = ServeFile::new(path)
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    Ok(response.map(Body::new))
}

/// The default deployment's bundle files, where the page at the root loads them from.
#[utoipa::path(get, path = "/model/{file}", params(("file" = String, Path, description = "feelings.json, model.onnx or tokenizer.json")),
    responses((status = 200, description = "the file"), (status = 404, description = "no such file", body = ErrorBody)))]
pub(crate) async fn default_bundle_file(
    State(state): State<Arc<AppState>>,
    UrlPath(file): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(deployment) = state.deployments.default_deployment() else {
        return Err(not_found(
            "there is no default deployment".into(),
            request.headers(),
        ));
    };
    bundle_file_of(&deployment, &file, request).await
}

/// One of `deployment`'s bundle files.
async fn bundle_file_of(
    deployment: &Deployment,
    file: &str,
    request: Request,
) -> Result<Response, ApiError> {
    match (file, &deployment.bundle_dir) {
        (MANIFEST_FILE, _) => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            deployment.manifest_json.clone(),
        )
            .into_response()),
        (MODEL_FILE | TOKENIZER_FILE, Some(dir)) => serve_file(dir.join(file), request).await,
        _ => Err(not_found(
            format!("the bundle has no file {file:?}"),
            request.headers(),
        )),
    }
}
