//! The accept loop: hyper's HTTP/1 server with a header-read timeout (which also bounds an idle
//! keep-alive connection: hyper starts it whenever it waits for a request head), a cap on open
//! connections (past it a connection gets a 503 and is closed), a raised file-descriptor limit,
//! and a drain deadline on shutdown. The request-body timeout is applied where bodies are read
//! (`read_body` in `mod.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service;

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

/// Serves `app` on `listener` until `shutdown` completes, then lets the open connections finish
/// their requests (new ones are not read) for at most `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req).await }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
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
