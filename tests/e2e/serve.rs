//! The `feelings-serve` process on loopback: a bounded load at a fixed arrival rate, load
//! shedding beyond capacity, RSS across replaced sandboxes, and SIGTERM during load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{debug_binary, tiny_bundle};

/// The gateway binary.
pub(crate) fn binary() -> PathBuf {
    debug_binary("feelings-serve")
}

pub(crate) struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `feelings-serve` on a free port with the tiny bundle and `args`.
    pub(crate) fn start(args: &[&str]) -> Self {
        let bundle = tiny_bundle();
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
        let mut command = Command::new(binary());
        command
            .arg("--model")
            .arg(bundle)
            .arg("--component")
            .arg(target.join("wasm32-wasip2/release/feelings_core.wasm"))
            .args(["--addr", "127.0.0.1:0", "--no-web"])
            .args(args);
        Self::launch(command)
    }

    /// Runs `command` (a `feelings-serve` listening on a free port) with a test cache and waits
    /// until it listens.
    pub(crate) fn launch(mut command: Command) -> Self {
        let mut child = command
            .arg("--cache")
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-cache"))
            .arg("--registry")
            .arg(crate::scratch_dir("registry"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (found, listening) = mpsc::channel();
        let logs = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in logs.lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let _ = found.send(line[at + "listening on ".len()..].trim().to_string());
                }
            }
        });
        let base = listening
            .recv_timeout(Duration::from_secs(300))
            .expect("feelings-serve did not start listening");
        Self { child, base }
    }

    /// The body of `GET path`, failing the test on any status but 200.
    pub(crate) fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    fn post(&self, body: &str) -> (u16, Duration) {
        let started = Instant::now();
        let status = match ureq::post(&format!("{}/v1/classify", self.base))
            .header("content-type", "application/json")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body)
        {
            Ok(response) => response.status().as_u16(),
            Err(e) => {
                eprintln!("transport error: {e}");
                0
            }
        };
        (status, started.elapsed())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `rate` requests a second for `seconds`, each on its own thread; returns the statuses
/// and latencies.
fn fixed_rate(server: &Server, rate: u32, seconds: u32, body: &str) -> Vec<(u16, Duration)> {
    let started = Instant::now();
    let total = rate * seconds;
    thread::scope(|scope| {
        let handles: Vec<_> = (0..total)
            .map(|i| {
                let due = Duration::from_secs_f64(f64::from(i) / f64::from(rate));
                thread::sleep(due.saturating_sub(started.elapsed()));
                scope.spawn(move || server.post(body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn below_capacity_nothing_fails_and_above_it_only_fast_503s() {
    let _alone = crate::alone();
    let server = Server::start(&["--instances", "2", "--queue", "16", "--max-texts", "8"]);
    let body = r#"{"texts": ["the movie was great", "the plot was awful and very boring"]}"#;
    let steady = fixed_rate(&server, 40, 10, body);
    let failed = steady.iter().filter(|(s, _)| *s != 200).count();
    let mut latencies: Vec<Duration> = steady.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    println!(
        "40 req/s for 10 s: {} requests, {failed} not 200, p50 {:?}, p99 {:?}",
        steady.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
    assert_eq!(failed, 0, "below capacity every request succeeds");

    // 400 long requests at once against 2 sandboxes and a queue of 8.
    let long =
        serde_json::json!({"texts": vec!["the movie was great and wonderful ".repeat(300); 8]})
            .to_string();
    let burst: Vec<(u16, Duration)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..400)
            .map(|_| scope.spawn(|| server.post(&long)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let shed: Vec<&(u16, Duration)> = burst.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        burst.iter().all(|(s, _)| *s == 200 || *s == 503),
        "only 200 or 503: {burst:?}"
    );
    assert!(!shed.is_empty(), "some requests are shed");
    let slowest_shed = shed.iter().map(|(_, l)| *l).max().unwrap();
    println!(
        "burst of 400: {} shed, slowest 503 in {slowest_shed:?}",
        shed.len()
    );
    assert!(
        slowest_shed < Duration::from_secs(2),
        "503s are answered at once"
    );
    assert_eq!(server.post(body).0, 200, "the server still answers");
}

#[test]
fn rss_stays_flat_while_sandboxes_are_replaced() {
    let server = Server::start(&[
        "--deadline",
        "0.02",
        "--max-chars",
        "4000000",
        "--max-body-bytes",
        "8000000",
    ]);
    let huge = serde_json::json!({"text": "the movie was great and wonderful ".repeat(100_000)})
        .to_string();
    let small = r#"{"text": "the acting was fine"}"#;
    // Each sandbox slot keeps up to 256 MiB of its memory resident for the next sandbox: the
    // first rounds fill the slots in use and the allocator's pools (quiet, RSS levels off
    // after 30-60 rounds), after which replacing sandboxes must not keep growing it.
    for _ in 0..40 {
        assert_eq!(server.post(&huge).0, 500);
        assert_eq!(server.post(small).0, 200);
    }
    let before = server.rss_kib();
    for _ in 0..20 {
        assert_eq!(server.post(&huge).0, 500, "past the deadline");
        assert_eq!(server.post(small).0, 200, "the next request is served");
    }
    let after = server.rss_kib();
    println!("RSS before {before} KiB, after 20 replaced sandboxes {after} KiB");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[test]
fn sigterm_during_load_finishes_the_requests_in_flight() {
    let _alone = crate::alone();
    let mut server = Server::start(&["--instances", "1"]);
    let long =
        serde_json::json!({"texts": vec!["the movie was great and wonderful ".repeat(550); 16]})
            .to_string();
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| server.post(&long).0))
            .collect();
        thread::sleep(Duration::from_millis(100));
        let pid = server.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 12], "requests in flight complete");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "a clean exit after SIGTERM: {exit}");
}

#[test]
fn a_missing_component_stops_the_start_naming_it() {
    let out = Command::new(binary())
        .arg("--model")
        .arg(tiny_bundle())
        .args(["--component", "/nonexistent/feelings_core.wasm", "--no-web"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("/nonexistent/feelings_core.wasm") && text.contains("web/build.sh"),
        "{text}"
    );
}

/// README's main command: `feelings-serve` with no options, from the repository root, serves the
/// shipped model (`models/imdb-minilm`) and the web page.
#[test]
fn the_main_command_serves_the_shipped_model_and_the_page() {
    let _alone = crate::alone();
    let mut command = Command::new(binary());
    command
        .current_dir(crate::root())
        .args(["--addr", "127.0.0.1:0"]);
    let server = Server::launch(command);
    let model: serde_json::Value = serde_json::from_str(&server.get("/v1/model")).unwrap();
    assert_eq!(model["name"], "imdb-minilm");
    let deployments = server.get("/");
    assert!(
        deployments.contains("imdb-minilm (default)")
            && deployments.contains("href=\"/d/imdb-minilm/\""),
        "the deployments page at /: {deployments}"
    );
    assert!(
        server.get("/d/imdb-minilm/").contains("<textarea"),
        "the web app at /d/imdb-minilm/"
    );
    assert!(server
        .get("/d/imdb-minilm/model/feelings.json")
        .contains("imdb-minilm"));
    assert!(server.get("/model/feelings.json").contains("imdb-minilm"));
    for (review, label) in [
        (
            "One of the best films I have seen in years: moving, funny and beautifully acted.",
            "positive",
        ),
        (
            "A dull, badly written mess. I walked out after an hour and want my money back.",
            "negative",
        ),
    ] {
        let body = serde_json::json!({ "text": review }).to_string();
        let answer = ureq::post(&format!("{}/v1/classify", server.base))
            .header("content-type", "application/json")
            .send(&body)
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["label"], label, "{review}: {answer}");
    }
}

/// The `host:port` the server listens on.
fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `limit` passes from `started`); returns how
/// long after `started` that was.
fn time_until_closed(
    stream: &mut std::net::TcpStream,
    started: Instant,
    limit: Duration,
) -> Duration {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading: {e}"),
            Ok(_) => {}
        }
    }
    started.elapsed()
}

#[test]
fn slow_header_clients_and_idle_connections_are_cut_off() {
    use std::io::Write;
    let _alone = crate::alone();
    let server = Server::start(&["--header-timeout", "1", "--idle-timeout", "30"]);
    // Parsed once: resolving the text again for each connection takes milliseconds.
    let addr: std::net::SocketAddr = address(&server).parse().unwrap();
    // 200 clients send half a header, then one more header line every 300 ms.
    let opened = Instant::now();
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let trickle = {
        let mut clones: Vec<_> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            for _ in 0..20 {
                thread::sleep(Duration::from_millis(300));
                clones.retain_mut(|s| s.write_all(b"X-Slow: yes\r\n").is_ok());
            }
        })
    };
    let took = time_until_closed(&mut slow[199], opened, Duration::from_secs(10));
    println!("a slow-header client was cut off after {took:?} (header timeout 1 s)");
    assert!(
        took > Duration::from_millis(900),
        "cut off early, after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "still open after {took:?}");
    thread::sleep(Duration::from_millis(500));
    let metrics = server.get("/metrics");
    let open: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("feelings_open_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(open <= 2.0, "{open} connections still open:\n{metrics}");
    drop(trickle);

    // A kept-alive connection left idle is closed by the same timeout.
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let took = time_until_closed(&mut idle, Instant::now(), Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(3),
        "an idle connection stayed {took:?}"
    );
}

#[test]
fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Full};
    let server = Server::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(address(&server))
            .await
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(format!("{}/v1/classify", server.base))
            .header("content-type", "application/json")
            .body(Full::new(axum::body::Bytes::from(
                r#"{"text": "the movie was great"}"#,
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(answer["score"].is_number(), "{answer}");
    });
}
