//! The accept loop: hyper's HTTP/1 server with a header-read timeout (which also bounds an idle
//! keep-alive connection: hyper starts it whenever it waits for a request head), a cap on open
//! connections, a raised file-descriptor limit, and a drain deadline on shutdown. The
//! request-body timeout is applied where bodies are read (`read_body` in `mod.rs`).
//!
//! At the cap, a new connection takes the place of the one that has waited longest without a
//! request in progress (a stalled or idle client; a request being read, queued or ranked is never
//! cut), so stalled clients cannot lock others out even before their timeout; only when every
//! connection has a request in progress does a new one get a 503 and close.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower_service::Service;

use super::parse_errors::ProblemBodies;

/// Connection limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest time to receive a request's head, and longest idle time between requests.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for connections to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit (capped at 2^20), so that the
/// connection cap, not the default 1,024 descriptors, is what bounds the server. Returns the
/// soft limit now in force.
// rlim_t is u64 on Linux but not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        let want = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < want {
            let new = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: setrlimit reads one valid rlimit; a soft limit at most the hard limit is
            // always allowed, and failure leaves the old limit (checked below).
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
                return want as u64;
            }
        }
        lim.rlim_cur as u64
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// One open connection: requests in progress, when it last started or ended one, and how to
/// close it.
struct Conn {
    busy: usize,
    since: Instant,
    close: Arc<Notify>,
}

/// The open connections, for choosing which one gives its place to a new one at the cap.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Conn>>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let conn = Conn {
            busy: 0,
            since: Instant::now(),
            close: close.clone(),
        };
        self.lock().insert(id, conn);
        (id, close)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// A request of connection `id` starts (`true`) or has been answered (`false`).
    fn request(&self, id: u64, starts: bool) {
        if let Some(c) = self.lock().get_mut(&id) {
            if starts {
                c.busy += 1;
            } else {
                c.busy = c.busy.saturating_sub(1);
            }
            c.since = Instant::now();
        }
    }

    /// Closes the connection idle for longest (no request in progress); false when there is none.
    fn close_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        let oldest = conns
            .iter()
            .filter(|(_, c)| c.busy == 0)
            .min_by_key(|(id, c)| (c.since, **id))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The 503 a connection past the cap gets before it is closed.
fn over_cap_response() -> String {
    let body = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many open connections, try again later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(over_cap_response().as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// hyper's HTTP/1 server as `serve` runs it: `header_timeout` for a request's head and for the
/// wait for the next one on a kept-alive connection.
pub fn http1_builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the open connections finish
/// their requests (new ones are not read) for at most `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http1_builder(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before it was accepted:
                // pause instead of spinning, then go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            // At the cap: the longest-idle connection gives way (its task ends at once).
            Err(_) if registry.close_longest_idle() => {
                let freed =
                    tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned());
                match freed.await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tokio::spawn(refuse(stream));
                        continue;
                    }
                }
            }
            Err(_) => {
                tokio::spawn(refuse(stream));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, close) = registry.add();
        let app = app.clone();
        let reg = registry.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            let reg = reg.clone();
            reg.request(id, true);
            async move {
                let resp = app.call(req).await;
                reg.request(id, false);
                resp
            }
        });
        let conn =
            graceful.watch(builder.serve_connection(TokioIo::new(ProblemBodies::new(stream)), svc));
        let reg = registry.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = close.notified() => {}
            }
            reg.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    let open = limits.max_connections.max(1) - slots.available_permits();
    tracing::info!(open, "shutting down: finishing requests in flight");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        let open = limits.max_connections.max(1) - slots.available_permits();
        tracing::warn!(
            open,
            "the drain deadline passed; closing the connections still open"
        );
    }
}
