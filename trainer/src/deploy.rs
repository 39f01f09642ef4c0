//! Uploading a model bundle to a running gateway (`feelings-serve`) as a named deployment:
//! `POST {server}/v1/deployments`, `multipart/form-data`, over plain HTTP.
//!
//! The form has the text parts `name`, `enabled` (`true` or `false`) and `sha256` (the hex
//! sha256 of `feelings.json` as uploaded, see [`bundle_digest`]), and one file part per bundle
//! file, named after the file: `feelings.json`, `model.onnx`, `tokenizer.json`. The gateway
//! answers 201 with the deployment, or an error as `{"error": {"code", "message",
//! "request_id"}}`, which [`DeployError::Refused`] carries with what to do about it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use feelings_core::contract::ErrorBody;
use feelings_core::deployment::bundle_digest;
use feelings_core::manifest::{Manifest, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use feelings_core::{Bundle, BundleError};
use serde::Deserialize;
use ureq::http::Uri;
use ureq::unversioned::multipart::{Form, Part};

use crate::export::{export_bundle, ExportOptions, Exported};
use crate::train::run_dir::CHECKPOINT_FILE;

/// The longest wait for the TCP connection (the rest of `--timeout` is for the upload).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer's body read (a deployment or an error is a few hundred bytes).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Why a deployment was not made; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The folder is not a valid bundle.
    #[error("{}: not a bundle to deploy: {source}", dir.display())]
    Bundle {
        /// The folder.
        dir: PathBuf,
        /// What is wrong with it.
        source: BundleError,
    },
    /// `--server` is not a plain `http://` URL.
    #[error("{0}")]
    Server(String),
    /// No connection could be made.
    #[error("cannot connect to {server}: {reason}: `feelings-serve` must be running and listening there (or give --server its address)")]
    Connect {
        /// The gateway's URL.
        server: String,
        /// What the network said.
        reason: String,
    },
    /// The upload or the answer took longer than allowed.
    #[error("no answer from {server} within {seconds} s: the upload may need longer (--timeout) or the gateway is stuck (see its log)")]
    Timeout {
        /// The gateway's URL.
        server: String,
        /// The limit.
        seconds: u64,
    },
    /// The connection broke or the HTTP exchange failed after it was made.
    #[error("the upload to {server} failed: {reason}: if the bundle is large, the gateway may refuse its size (see its log); otherwise check it still runs")]
    Transport {
        /// The gateway's URL.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The gateway answered with an error.
    #[error(
        "the gateway refused the deployment: HTTP {status}{code}: {message}{request_id}; {hint}"
    )]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `" (CODE)"` with the gateway's stable error code, or empty.
        code: String,
        /// The gateway's message (or the start of its body, if it is not an error object).
        message: String,
        /// `" (request id ID)"`, or empty.
        request_id: String,
        /// What to do about it.
        hint: String,
    },
    /// The gateway said it succeeded, with an answer that is not the deployment uploaded.
    #[error("the gateway at {server} answered HTTP {status} with {reason}")]
    BadAnswer {
        /// The gateway's URL.
        server: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// A deployment as the gateway describes it (its 201 answer).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Deployment {
    /// The deployment's name.
    pub name: String,
    /// The model it serves (the bundle manifest's `name`).
    pub model: serde_json::Value,
    /// The sha256 of the bundle's `feelings.json`.
    pub bundle_sha256: String,
    /// Whether it answers requests.
    pub enabled: bool,
    /// When it was created (RFC 3339).
    pub created: String,
}

impl Deployment {
    /// The model's name as text (the gateway sends a string; anything else is shown as JSON).
    pub fn model_name(&self) -> String {
        match &self.model {
            serde_json::Value::String(name) => name.clone(),
            other => other.to_string(),
        }
    }
}

/// Where and how to upload.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway's base URL, `http://HOST[:PORT][/PREFIX]`, without a trailing `/` (see
    /// [`server_url`]).
    pub server: String,
    /// The deployment's name (checked by [`feelings_core::deployment::validate_name`]).
    pub name: String,
    /// Whether the deployment answers requests as soon as it is made.
    pub enabled: bool,
    /// The gateway's admin key, sent as `Authorization: Bearer KEY`.
    pub admin_key: Option<String>,
    /// The longest the whole upload and its answer may take.
    pub timeout: Duration,
}

impl Target {
    /// `{server}/v1/deployments/{name}/classify`: where the deployment classifies reviews.
    pub fn classify_url(&self) -> String {
        format!("{}/v1/deployments/{}/classify", self.server, self.name)
    }

    /// `{server}/d/{name}/`: the deployment's web page.
    pub fn page_url(&self) -> String {
        format!("{}/d/{}/", self.server, self.name)
    }
}

/// Checks a gateway URL: `http://HOST[:PORT][/PREFIX]`, no query or fragment; returns it
/// without a trailing `/`. A clap value parser: `https://` is refused, this build speaking plain
/// HTTP only.
pub fn server_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|e| format!("not a URL ({e}): give http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: this build speaks plain http; reach an https \
                        gateway through a TLS-terminating proxy, or over http inside its network"
                    .into(),
            )
        }
        _ => return Err("must start with http://, e.g. http://127.0.0.1:8080".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host: give http://HOST:PORT".into());
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err("must not have a query or fragment: give http://HOST:PORT[/PREFIX]".into());
    }
    Ok(trimmed.to_string())
}

/// A bundle read for upload: the files as they are in the folder.
#[derive(Debug, Clone)]
pub struct BundleUpload {
    /// The folder it was read from.
    pub dir: PathBuf,
    /// The bundle, verified (manifest format, checksums of the model and the tokenizer).
    pub bundle: Bundle,
    /// The bytes of `feelings.json` exactly as stored (what is uploaded and hashed).
    pub manifest_json: Vec<u8>,
}

impl BundleUpload {
    /// Reads and verifies the bundle in `dir` ([`Bundle::read_dir`]), keeping the bytes of its
    /// `feelings.json` as they are.
    pub fn read(dir: &Path) -> Result<Self, DeployError> {
        let refused = |source| DeployError::Bundle {
            dir: dir.to_path_buf(),
            source,
        };
        let bundle = Bundle::read_dir(dir).map_err(refused)?;
        let path = dir.join(MANIFEST_FILE);
        let manifest_json = std::fs::read(&path).map_err(|e| {
            refused(BundleError::Unreadable {
                file: path.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        // Read twice: the bytes uploaded must be the manifest that was verified.
        if serde_json::from_slice::<Manifest>(&manifest_json)
            .ok()
            .as_ref()
            != Some(&bundle.manifest)
        {
            return Err(refused(BundleError::Corrupt {
                file: MANIFEST_FILE.into(),
                reason: "changed while it was read: try again".into(),
            }));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            bundle,
            manifest_json,
        })
    }

    /// The bundle's identity: the hex sha256 of `feelings.json` as uploaded.
    pub fn digest(&self) -> String {
        bundle_digest(&self.manifest_json)
    }

    /// Bytes of the three files together.
    pub fn size(&self) -> u64 {
        (self.manifest_json.len() + self.bundle.model.len() + self.bundle.tokenizer.len()) as u64
    }
}

/// A bundle exported for upload into a temporary folder, removed when this is dropped.
#[derive(Debug)]
pub struct Staged {
    /// The export's result.
    pub exported: Exported,
    /// The bundle folder, inside the temporary folder.
    pub dir: PathBuf,
    _temporary: tempfile::TempDir,
}

/// Exports the run (or checkpoint folder) `source` at `epoch` (the best if `None`) with
/// `feelings export`'s other defaults into a temporary folder, as [`export_bundle`] does for
/// `feelings export`; the model is named after the run folder.
pub fn stage_run(source: &Path, epoch: Option<usize>) -> crate::Result<Staged> {
    let temporary = tempfile::tempdir().map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
    let run = if source.join(CHECKPOINT_FILE).is_file() {
        source.parent().unwrap_or(source)
    } else {
        source
    };
    let name = std::fs::canonicalize(run)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "feelings-model".into());
    let dir = temporary.path().join(&name);
    let options = ExportOptions {
        epoch,
        ..ExportOptions::default()
    };
    let exported = export_bundle(source, &dir, false, &options)?;
    Ok(Staged {
        exported,
        dir,
        _temporary: temporary,
    })
}

/// Uploads `upload` to `target` as a deployment and returns it as the gateway describes it,
/// with a spinner on standard error while it runs (if that is a terminal).
pub fn deploy(upload: &BundleUpload, target: &Target) -> Result<Deployment, DeployError> {
    let digest = upload.digest();
    let spinner = crate::progress::waiting(
        "uploading",
        &format!("{:.1} MB to {}", upload.size() as f64 / 1e6, target.server),
        std::io::stderr().is_terminal(),
    );
    let answer = send(upload, &digest, target);
    spinner.finish_and_clear();
    let (status, body) = answer?;
    read_answer(status, &body, &digest, upload, target)
}

/// Posts the form; returns the answer's status and body.
fn send(
    upload: &BundleUpload,
    digest: &str,
    target: &Target,
) -> Result<(u16, String), DeployError> {
    let file = |bytes, name, mime| file_part(bytes, name, mime).map_err(|e| transport(target, e));
    let form = Form::new()
        .text("name", &target.name)
        .text("enabled", if target.enabled { "true" } else { "false" })
        .text("sha256", digest)
        .part(
            MANIFEST_FILE,
            file(&upload.manifest_json, MANIFEST_FILE, "application/json")?,
        )
        .part(
            MODEL_FILE,
            file(&upload.bundle.model, MODEL_FILE, "application/octet-stream")?,
        )
        .part(
            TOKENIZER_FILE,
            file(&upload.bundle.tokenizer, TOKENIZER_FILE, "application/json")?,
        );
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(target.timeout)))
            .timeout_global(Some(target.timeout))
            .build(),
    );
    let mut request = agent
        .post(format!("{}/v1/deployments", target.server))
        // The gateway can refuse (a bad key, a taken name) before the bundle is sent.
        .header("Expect", "100-continue")
        .header("Accept", "application/json");
    if let Some(key) = &target.admin_key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.send(form).map_err(|e| network(target, e))?;
    let status = response.status().as_u16();
    let location = header(&response, "location");
    let mut body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| network(target, e))?;
    if let (300..=399, Some(location)) = (status, location) {
        body = format!("a redirect to {location}");
    }
    Ok((status, body))
}

/// A file part of the form: `bytes` as the file `name` of type `mime`.
fn file_part<'a>(bytes: &'a [u8], name: &str, mime: &str) -> Result<Part<'a>, ureq::Error> {
    Part::bytes(bytes).file_name(name).mime_str(mime)
}

/// The value of the header `name` of `response`, if it is text.
fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    Some(value.to_string())
}

/// A failure of the exchange with the gateway.
fn transport(target: &Target, reason: impl ToString) -> DeployError {
    DeployError::Transport {
        server: target.server.clone(),
        reason: reason.to_string(),
    }
}

/// Classifies a ureq error: no connection, a timeout, or a failure once connected.
fn network(target: &Target, error: ureq::Error) -> DeployError {
    use std::io::ErrorKind;
    use ureq::Timeout;
    let server = target.server.clone();
    match &error {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => DeployError::Connect {
            server,
            reason: error.to_string(),
        },
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ) =>
        {
            DeployError::Connect {
                server,
                reason: error.to_string(),
            }
        }
        ureq::Error::Timeout(_) => DeployError::Timeout {
            server,
            seconds: target.timeout.as_secs(),
        },
        ureq::Error::Http(_) if target.admin_key.is_some() => transport(
            target,
            "the admin key cannot be sent as a header: it must be printable text",
        ),
        _ => transport(target, error),
    }
}

/// Turns the gateway's answer into the deployment it made, or the error it gave.
fn read_answer(
    status: u16,
    body: &str,
    digest: &str,
    upload: &BundleUpload,
    target: &Target,
) -> Result<Deployment, DeployError> {
    let bad = |reason: String| DeployError::BadAnswer {
        server: target.server.clone(),
        status,
        reason,
    };
    if !(200..300).contains(&status) {
        return Err(refused(status, body, upload, target));
    }
    let deployment: Deployment = serde_json::from_str(body).map_err(|e| {
        bad(format!(
            "a body that is not a deployment ({e}): {}",
            excerpt(body)
        ))
    })?;
    if deployment.bundle_sha256 != digest || deployment.name != target.name {
        return Err(bad(format!(
            "deployment '{}' of bundle {}, not '{}' of the bundle uploaded ({digest})",
            deployment.name, deployment.bundle_sha256, target.name
        )));
    }
    Ok(deployment)
}

/// The error the gateway answered with, and what to do about it.
fn refused(status: u16, body: &str, upload: &BundleUpload, target: &Target) -> DeployError {
    let (code, message, request_id) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => (error.code, error.message, error.request_id),
        Err(_) => (String::new(), excerpt(body), String::new()),
    };
    DeployError::Refused {
        status,
        code: if code.is_empty() {
            code
        } else {
            format!(" ({code})")
        },
        message,
        request_id: if request_id.is_empty() {
            request_id
        } else {
            format!(" (request id {request_id})")
        },
        hint: hint(status, upload, target),
    }
}

/// What to do about an error answer of `status`.
fn hint(status: u16, upload: &BundleUpload, target: &Target) -> String {
    let server = &target.server;
    match status {
        401 | 403 if target.admin_key.is_some() => {
            "the admin key given (--admin-key or FEELINGS_ADMIN_KEY) is not the gateway's: check it"
                .into()
        }
        401 | 403 => {
            "pass the gateway's admin key with --admin-key or the FEELINGS_ADMIN_KEY variable"
                .into()
        }
        409 => {
            let auth = if target.admin_key.is_some() {
                " -H \"Authorization: Bearer $FEELINGS_ADMIN_KEY\""
            } else {
                ""
            };
            format!(
                "the name '{}' is taken: choose another --name, or delete it first: curl -X DELETE{auth} {server}/v1/deployments/{}",
                target.name, target.name
            )
        }
        413 => format!(
            "the bundle ({:.1} MB) is larger than the gateway accepts: raise its upload limit, or \
             deploy a smaller export (feelings export --quantize int8: a quarter of the size)",
            upload.size() as f64 / 1e6
        ),
        422 => format!(
            "the gateway cannot serve this bundle: check {} with `feelings predict`, or export it \
             again with the gateway's version of feelings",
            upload.dir.display()
        ),
        404 | 405 => format!(
            "{server} has no deployments API: is it `feelings-serve`, of a version that keeps deployments?"
        ),
        300..=399 => "give --server the address the gateway redirects to".into(),
        503 => "the gateway is busy or not ready: try again shortly".into(),
        _ => "see the gateway's log for this request".into(),
    }
}

/// The start of `body`, on one line, for messages.
fn excerpt(body: &str) -> String {
    let text: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None if text.is_empty() => "an empty body".into(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_plain_http_without_a_trailing_slash() {
        assert_eq!(
            server_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            server_url("http://gw.local/feelings").unwrap(),
            "http://gw.local/feelings"
        );
        assert!(server_url("https://gw.local").unwrap_err().contains("TLS"));
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://x/?a=1",
            "",
            "http://x/#a",
        ] {
            assert!(server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("a\n  b"), "a b");
        assert_eq!(excerpt(""), "an empty body");
        assert_eq!(excerpt(&"é".repeat(300)).chars().count(), 203);
    }
}
