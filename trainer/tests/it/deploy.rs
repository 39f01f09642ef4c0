//! `feelings deploy` against a fake gateway: a thread on 127.0.0.1 that reads one request,
//! records it and answers as told.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feelings_core::manifest::Manifest;
use feelings_core::Bundle;
use sha2::{Digest, Sha256};

use crate::cli::{assert_success, feelings};

/// A tiny run of two epochs (`run`) and its best checkpoint exported (`bundle`), shared by the
/// tests of this module, which only read them.
fn trained() -> &'static (tempfile::TempDir, PathBuf) {
    static TRAINED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let bundle = feelings_trainer::fixtures::tiny_bundle(dir.path(), 96, 4, |s| {
            s.seq_len = 24;
            s.epochs = 2;
        })
        .unwrap();
        (dir, bundle)
    })
}

/// `feelings deploy ARGS`, with no proxy and no admin key from the environment.
fn deploy(args: &[&str], path: &Path) -> Command {
    let mut command = feelings();
    command.arg("deploy").arg(path).args(args);
    for var in [
        "FEELINGS_ADMIN_KEY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    command
}

/// One request as the fake gateway read it.
#[derive(Debug)]
struct Request {
    /// The request line's method and target.
    method: String,
    target: String,
    /// The headers, names in lower case.
    headers: Vec<(String, String)>,
    /// The body (empty when the gateway answered before it was sent).
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }

    /// The parts of the multipart body.
    fn parts(&self) -> Vec<FormPart> {
        let content_type = self.header("content-type").unwrap();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_else(|| panic!("not a multipart form: {content_type}"));
        multipart(&self.body, boundary)
    }

    /// The content of the part called `name`.
    fn part(&self, name: &str) -> FormPart {
        let parts = self.parts();
        let found = parts.into_iter().find(|p| p.name == name);
        found.unwrap_or_else(|| panic!("no part '{name}'"))
    }
}

/// One part of a multipart form.
#[derive(Debug)]
struct FormPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// How the fake gateway answers: right after the headers, without asking for the body (as a
/// gateway does that refuses the key), or once it has read the body.
#[derive(Clone, Copy, PartialEq)]
enum When {
    Early,
    AfterBody,
}

/// A gateway on a free port of 127.0.0.1 that reads one request and answers `answer(request)`
/// (status and JSON body); joining gives the request.
fn fake_gateway(
    when: When,
    answer: impl FnOnce(&Request) -> (u16, String) + Send + 'static,
) -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut stream = accept(&listener);
        let request = read_request(&mut stream, when);
        let (status, body) = answer(&request);
        let head = format!(
            "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        stream.flush().unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Let the client read the answer before the socket goes.
        let _ = stream.read_to_end(&mut Vec::new());
        request
    });
    (url, handle)
}

/// The first connection to `listener` within a minute.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return stream;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no connection to the fake gateway: {e}"),
        }
    }
}

/// Reads a request's head, then (unless `when` is early) its body of content-length bytes,
/// first saying `100 Continue` if the client expects it.
fn read_request(stream: &mut TcpStream, when: When) -> Request {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(at) = find(&data, b"\r\n\r\n", 0) {
            break at;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed before the request's head ended");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let (method, target) = (request_line.next().unwrap(), request_line.next().unwrap());
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut request = Request {
        method: method.into(),
        target: target.into(),
        headers,
        body: data[head_end + 4..].to_vec(),
    };
    if when == When::Early {
        return request;
    }
    let length: usize = request
        .header("content-length")
        .expect("the upload has a content-length")
        .parse()
        .unwrap();
    if request.header("expect") == Some("100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
    }
    while request.body.len() < length {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed before the body ended");
        request.body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(request.body.len(), length, "more body than content-length");
    request
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let found = hay
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle);
    found.map(|at| at + from)
}

/// The parts of a `multipart/form-data` body with `boundary`.
fn multipart(body: &[u8], boundary: &str) -> Vec<FormPart> {
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes(), 0).expect("no first boundary") + delimiter.len();
    let closing = format!("\r\n--{boundary}--");
    assert!(
        find(body, closing.as_bytes(), 0).is_some(),
        "no closing boundary"
    );
    let separator = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut at = start;
    while body[at..].starts_with(b"\r\n") {
        let end = find(body, separator.as_bytes(), at).expect("a part without an end");
        let part = &body[at + 2..end];
        let head_end = find(part, b"\r\n\r\n", 0).expect("a part without headers");
        let head = String::from_utf8(part[..head_end].to_vec()).unwrap();
        parts.push(form_part(&head, part[head_end + 4..].to_vec()));
        at = end + separator.len();
    }
    assert!(
        body[at..].starts_with(b"--"),
        "the form does not end with --"
    );
    parts
}

/// A part from its headers and content.
fn form_part(head: &str, bytes: Vec<u8>) -> FormPart {
    let mut part = FormPart {
        name: String::new(),
        file_name: None,
        content_type: None,
        bytes,
    };
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-disposition" => {
                for field in value.split(';').map(str::trim) {
                    if let Some(v) = field.strip_prefix("name=") {
                        part.name = v.trim_matches('"').into();
                    } else if let Some(v) = field.strip_prefix("filename=") {
                        part.file_name = Some(v.trim_matches('"').into());
                    }
                }
            }
            "content-type" => part.content_type = Some(value.trim().into()),
            _ => {}
        }
    }
    part
}

/// A 201 answer describing the deployment `request` asked for, as the gateway would.
fn created(request: &Request) -> (u16, String) {
    let text = |name: &str| String::from_utf8(request.part(name).bytes).unwrap();
    let manifest: Manifest = serde_json::from_slice(&request.part("feelings.json").bytes).unwrap();
    let body = serde_json::json!({
        "name": text("name"),
        "model": manifest.name,
        "bundle_sha256": text("sha256"),
        "enabled": text("enabled") == "true",
        "created": "2025-01-02T03:04:05Z",
        "review_ms": 12.5,
    });
    (201, body.to_string())
}

/// An error answer as the gateway gives them.
fn error_answer(status: u16, code: &str, message: &str) -> (u16, String) {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "request_id": "req-42"}
    });
    (status, body.to_string())
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deploy_uploads_a_bundle_folder_as_a_multipart_form() {
    let bundle = &trained().1;
    let (server, gateway) = fake_gateway(When::AfterBody, created);
    let out = deploy(&["--name", "shipped-copy", "--server", &server], bundle)
        .args(["--admin-key", "s3cret key"])
        .output()
        .unwrap();
    let request = gateway.join().unwrap();
    assert_success(&out);

    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/v1/deployments")
    );
    assert_eq!(request.header("authorization"), Some("Bearer s3cret key"));
    let parts = request.parts();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "name",
            "enabled",
            "sha256",
            "feelings.json",
            "model.onnx",
            "tokenizer.json"
        ]
    );
    assert_eq!(request.part("name").bytes, b"shipped-copy");
    assert_eq!(request.part("enabled").bytes, b"true");
    for (file, content_type) in [
        ("feelings.json", "application/json"),
        ("model.onnx", "application/octet-stream"),
        ("tokenizer.json", "application/json"),
    ] {
        let part = request.part(file);
        assert_eq!(part.file_name.as_deref(), Some(file));
        assert_eq!(part.content_type.as_deref(), Some(content_type), "{file}");
        assert!(
            part.bytes == std::fs::read(bundle.join(file)).unwrap(),
            "{file} is not the bundle's"
        );
    }
    let manifest = std::fs::read(bundle.join("feelings.json")).unwrap();
    let sha256 = String::from_utf8(request.part("sha256").bytes).unwrap();
    assert_eq!(sha256, hex_sha256(&manifest));

    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "deployed 'shipped-copy'".to_string(),
        "model 'bundle'".into(),
        sha256[..12].to_string(),
        "enabled".into(),
        format!("{server}/v1/deployments/shipped-copy/classify"),
        format!("{server}/d/shipped-copy/"),
    ] {
        assert!(stdout.contains(&expected), "no {expected:?} in:\n{stdout}");
    }
}

#[test]
fn deploy_disabled_sends_enabled_false_and_takes_the_admin_key_from_the_environment() {
    let bundle = &trained().1;
    let (server, gateway) = fake_gateway(When::AfterBody, created);
    let out = deploy(&["--name", "quiet", "--disabled", "--server"], bundle)
        .arg(format!("{server}/"))
        .env("FEELINGS_ADMIN_KEY", "from-env")
        .output()
        .unwrap();
    let request = gateway.join().unwrap();
    assert_success(&out);
    assert_eq!(request.target, "/v1/deployments");
    assert_eq!(request.part("enabled").bytes, b"false");
    assert_eq!(request.header("authorization"), Some("Bearer from-env"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("disabled"), "{stdout}");

    // Without a key, no Authorization header at all.
    let (server, gateway) = fake_gateway(When::AfterBody, created);
    let out = deploy(&["--name", "open", "--server", &server], bundle)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(gateway.join().unwrap().header("authorization"), None);
}

#[test]
fn deploy_reports_a_taken_name_with_the_servers_message_and_the_delete_hint() {
    let bundle = &trained().1;
    let (server, gateway) = fake_gateway(When::AfterBody, |_| {
        error_answer(
            409,
            "conflict",
            "a deployment called 'minilm-l6' exists already",
        )
    });
    let out = deploy(&["--name", "minilm-l6", "--server", &server], bundle)
        .output()
        .unwrap();
    gateway.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
    for expected in [
        "409".to_string(),
        "a deployment called 'minilm-l6' exists already".into(),
        "req-42".into(),
        format!("curl -X DELETE {server}/v1/deployments/minilm-l6"),
    ] {
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn deploy_with_a_refused_key_stops_before_the_bundle_is_sent() {
    let bundle = &trained().1;
    let (server, gateway) = fake_gateway(When::Early, |_| {
        error_answer(401, "unauthorized", "this route needs the admin key")
    });
    let out = deploy(&["--name", "minilm-l6", "--server", &server], bundle)
        .output()
        .unwrap();
    let request = gateway.join().unwrap();
    assert_eq!(request.header("expect"), Some("100-continue"));
    assert!(request.body.is_empty(), "the bundle was sent anyway");
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
    assert!(
        stderr.contains("401")
            && stderr.contains("this route needs the admin key")
            && stderr.contains("--admin-key"),
        "{stderr}"
    );
}

#[test]
fn deploy_of_a_run_uploads_the_bundle_exported_from_its_checkpoint() {
    let (dir, bundle) = trained();
    let run = dir.path().join("run");
    let best: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("best.json")).unwrap()).unwrap();
    let best_epoch = best["epoch"].as_u64().unwrap() as usize;
    let upload = |checkpoint: &str| {
        let (server, gateway) = fake_gateway(When::AfterBody, created);
        let out = deploy(&["--name", "from-run", "--server", &server], &run)
            .args(["--checkpoint", checkpoint])
            .output()
            .unwrap();
        let request = gateway.join().unwrap();
        assert_success(&out);
        let file = |name: &str| request.part(name).bytes;
        let uploaded = Bundle::from_bytes(
            &file("feelings.json"),
            file("model.onnx"),
            file("tokenizer.json"),
        )
        .expect("the upload is a valid bundle");
        let sha256 = String::from_utf8(file("sha256")).unwrap();
        assert_eq!(sha256, hex_sha256(&file("feelings.json")));
        (uploaded, String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let (uploaded, stdout) = upload("best");
    assert_eq!(uploaded.manifest.name, "run");
    assert_eq!(uploaded.manifest.training.epoch, best_epoch);
    assert!(stdout.contains("largest logit difference"), "{stdout}");
    // The same checkpoint at the same settings as `feelings export` made the shipped bundle.
    let exported = Bundle::read_dir(bundle).unwrap();
    assert_eq!(exported.manifest.training.epoch, best_epoch);
    assert!(
        uploaded.model == exported.model,
        "another model than export's"
    );
    assert_eq!(uploaded.tokenizer, exported.tokenizer);

    let other = 3 - best_epoch;
    let (uploaded, _) = upload(&other.to_string());
    assert_eq!(uploaded.manifest.training.epoch, other);
    assert!(uploaded.model != exported.model);
}

#[test]
fn deploy_refuses_bad_options_when_parsing() {
    let path = Path::new("no-such-folder");
    for (args, message) in [
        (&["--name", "Not_Valid"][..], "not a deployment name"),
        (&["--name=-lead"], "not a deployment name"),
        (&["--name", ""], "not a deployment name"),
        (&["--name", "ok", "--server", "https://gw.example"], "TLS"),
        (&["--name", "ok", "--server", "127.0.0.1:8080"], "http://"),
        (
            &["--name", "ok", "--checkpoint", "last"],
            "`best` or an epoch",
        ),
        (&["--name", "ok", "--checkpoint", "0"], "`best` or an epoch"),
        (&["--name", "ok", "--timeout", "0"], "from 1 to"),
        (&["--server", "http://127.0.0.1:1"], "--name"),
    ] {
        let out = deploy(args, path).output().unwrap();
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // A bundle holds one model: an epoch makes no sense for it.
    let out = deploy(&["--name", "ok", "--checkpoint", "2"], &trained().1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("applies to run folders"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn deploy_to_a_server_not_listening_says_where_and_what_must_run() {
    let bundle = &trained().1;
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let out = deploy(&["--name", "nowhere", "--server", &server], bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr(&out);
    assert!(
        stderr.contains(&server)
            && stderr.contains("feelings-serve")
            && !stderr.contains("panicked"),
        "{stderr}"
    );

    let missing = deploy(
        &["--name", "nothing", "--server", &server],
        Path::new("no-such-run"),
    )
    .output()
    .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        self::stderr(&missing).contains("no-such-run"),
        "{}",
        self::stderr(&missing)
    );
}
