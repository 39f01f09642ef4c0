//! The router on a TCP listener: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port,
//! with the limits of a server that faces slow or hostile clients: a connection cap, a time
//! limit on request headers, and idle connections closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// How connections are bounded, with the defaults `feelings-serve` documents.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// The most time a client may take to send a request's header. On HTTP/1.1 it runs from
    /// the moment the connection waits for a request, so it also closes keep-alive
    /// connections left idle that long.
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2 included,
    /// and an HTTP/2 client that never completes a request); one asked to close (idle, or the
    /// server stopping) gets this long again to finish, then is dropped.
    pub idle_timeout: Duration,
    /// The most connections open at once; beyond it new ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// File descriptors kept for everything but client connections (the bundle, the cache, logs).
const OTHER_FILES: u64 = 256;

/// The connection cap when none is asked for, if the open-files limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Makes sure this process may open `wanted` client sockets besides its other files (by
/// default [`DEFAULT_MAX_CONNECTIONS`], or fewer if the hard open-files limit is lower): raises
/// the soft `RLIMIT_NOFILE` towards the hard one if needed. Returns the connection cap; an
/// explicit `wanted` the hard limit cannot hold is an error.
pub fn reserve_descriptors(wanted: Option<usize>) -> Result<usize, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot read the open-files limit: {e}"));
    }
    let room = limit.rlim_max.saturating_sub(OTHER_FILES) as usize;
    let connections = match wanted {
        Some(n) if n > room => {
            return Err(format!(
                "--max-connections {n} needs {} open files and this process may open at most {} (ulimit -Hn): lower --max-connections or raise the limit",
                n as u64 + OTHER_FILES,
                limit.rlim_max
            ))
        }
        Some(n) => n,
        None => DEFAULT_MAX_CONNECTIONS.min(room).max(1),
    };
    let needed = connections as u64 + OTHER_FILES;
    if limit.rlim_cur < needed {
        limit.rlim_cur = needed.min(limit.rlim_max);
        // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the
        // hard one is allowed to every process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "cannot raise the open-files limit to {needed}: {e}"
            ));
        }
    }
    Ok(connections)
}

/// A listener on `addr` whose kernel queue holds `backlog` connections not yet accepted (capped
/// by `net.core.somaxconn`); tokio's `bind` keeps only 128, so a burst of new connections has
/// its SYNs dropped and each dropped client waits a second to retry.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// open connection finish its requests and returns. `open` counts the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    open: Gauge,
    shutdown: impl Future<Output = ()>,
) {
    let capacity = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(capacity));
    let (stop, stopping) = watch::channel(());
    let builder = Arc::new(builder(&limits));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to be freed.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            idle_timeout: limits.idle_timeout,
            stopping: stopping.clone(),
            open: open.clone(),
            _permit: permit,
        };
        open.inc();
        tokio::spawn(connection.run(stream));
    }
    drop(stop);
    // Every connection holds a permit until it closes.
    let _ = permits.acquire_many(capacity as u32).await;
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One accepted connection and what it needs.
struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    stopping: watch::Receiver<()>,
    open: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves requests until the client closes, the connection idles past its timeout or
    /// the server stops (then the requests in progress are finished first).
    async fn run(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let service = {
            let (app, activity) = (self.app.clone(), activity.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = activity.begin();
                let app = app.clone();
                async move {
                    let response = app.oneshot(request).await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing = false;
        // Once asked to close, a connection gets one more idle timeout to finish its requests
        // and write its answers (a client that stops reading never lets hyper finish).
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!("connection closed: {e}");
                    }
                    break;
                }
                () = &mut grace, if closing => {
                    tracing::debug!("connection dropped: it did not finish within the grace time");
                    break;
                }
                () = activity.idle_for(self.idle_timeout), if !closing => {
                    closing = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                    connection.as_mut().graceful_shutdown();
                }
                _ = self.stopping.changed(), if !closing => {
                    closing = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        self.open.dec();
    }
}

/// Requests in progress on one connection, and when it last had none.
struct Activity {
    in_progress: AtomicUsize,
    since: Mutex<Instant>,
}

/// Marks a request in progress until dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            in_progress: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Resolves once no request has been in progress for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let idle = *self.since.lock().unwrap_or_else(PoisonError::into_inner);
            let wait = if self.in_progress.load(Ordering::SeqCst) > 0 {
                timeout
            } else if idle.elapsed() >= timeout {
                return;
            } else {
                timeout.saturating_sub(idle.elapsed())
            };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}
