//! The server's whole request path in-process, for the HTTP fuzz target (`fuzz/`) and the
//! replay of its corpus in CI (`crates/cli/tests/fuzz_corpus.rs`): arbitrary bytes go through
//! hyper's HTTP/1 parser, with the server's settings, into the router, its handlers, the
//! batcher and a small model, exactly as on a socket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_service::Service;

use super::batcher::BatchParams;
use super::metrics::Metrics;
use super::project::{Project, ProjectSpec};
use super::{router, AppState};

struct Harness {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

/// A small model of three labels (the sparse model alone: it trains in milliseconds) served
/// as project `m`, built once per process in a temporary folder.
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("inceptionxml-http-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let texts: Vec<String> = [
            "salt and pepper",
            "bread dough",
            "sourdough bread",
            "pepper sauce",
            "salt crust",
            "rye bread",
            "hot sauce",
            "sea salt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = [
            vec![0],
            vec![1],
            vec![1],
            vec![2],
            vec![0],
            vec![1],
            vec![2],
            vec![0],
        ];
        let labels = xmc::SparseMatrix::from_index_rows(3, &rows).expect("labels");
        let model = xmc::tree::train(&texts, &labels, &xmc::tree::SparseParams::DEFAULT, &|_| {})
            .expect("the fuzz model trains");
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let sparse = inceptionxml::predict::fusion::Sparse {
            model,
            fusion: inceptionxml::predict::fusion::FusionConfig::SPARSE_ONLY,
        };
        sparse.save(&dir).expect("the fuzz model saves");
        let names = vec!["salt".to_string(), "bread".to_string(), "sauce".to_string()];
        xmc::labels::Labels::from_names(names)
            .write_tsv(dir.join(inceptionxml::model_dir::LABELS))
            .expect("labels");
        let params = BatchParams {
            max_batch: 256,
            max_wait: Duration::from_millis(1),
            queue: 64,
            workers: 1,
        };
        let metrics = Arc::new(Metrics::default());
        let spec = ProjectSpec {
            id: "m".into(),
            dirs: vec![PathBuf::from(&dir)],
        };
        let project = Project::start(spec, false, params, metrics.clone()).expect("the project");
        let mut projects = BTreeMap::new();
        projects.insert("m".to_string(), Arc::new(project));
        let state = Arc::new(AppState {
            projects,
            metrics,
            max_body: 1 << 16,
            body_timeout: Duration::from_millis(200),
            language: "en".into(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Harness {
            rt,
            app: router(state),
        }
    })
}

/// What the server writes back to a client that sends `input` and closes its side. Panics if
/// a handler panicked (a 500) or the exchange hangs past 5 seconds.
pub fn exchange(input: &[u8]) -> Vec<u8> {
    let h = harness();
    h.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let app = h.app.clone();
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 9).into();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req).await }
        });
        let mut builder = super::listener::http1_builder(Duration::from_millis(200));
        // The client closes its side once it has sent everything: answer what it asked.
        builder.half_close(true);
        let conn = builder.serve_connection(TokioIo::new(server), svc);
        let input = input.to_vec();
        let talk = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let run = async {
            let (_, out) = tokio::join!(conn, talk);
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the exchange ends within 5 s");
        // A status line of 500, first or after an earlier response (bodies are JSON: no raw
        // line breaks).
        let failed =
            out.starts_with(b"HTTP/1.1 500") || out.windows(14).any(|w| w == b"\nHTTP/1.1 500");
        assert!(
            !failed,
            "a handler failed: {}",
            String::from_utf8_lossy(&out)
        );
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_is_answered_in_process() {
        let out = super::exchange(
            b"POST /v1/projects/m/suggest HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\ntext=salt",
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("\"label\":\"salt\""), "{out}");
        let out = super::exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 404"));
    }
}
