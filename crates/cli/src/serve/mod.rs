//! `inceptionxml serve`: models over HTTP with Annif's REST API (v1).
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/projects`, `GET /v1/projects/{id}` | the projects (Annif's project objects) |
//! | `POST /v1/projects/{id}/suggest` | form-encoded `text`, `limit` (10), `threshold` (0) -> `{"results": [...]}` |
//! | `POST /v1/projects/{id}/suggest-batch` | JSON `{"documents": [{"text", "document_id"}]}` (≤ 32), `limit`/`threshold` in the query |
//! | `POST /v1/reload` | reload changed model directories (loopback clients only; also SIGHUP) |
//! | `GET /health`, `GET /metrics` | liveness; Prometheus text |
//! | `GET /` | a web page to try the projects: suggestions with each word's weight (`ui/`) |
//! | `GET /ui/examples/{id}` | example texts of a project (its model directory's `examples.txt`) |
//!
//! `explain=true` (a form field of `suggest`, a query parameter of `suggest-batch`) adds to each
//! result an `"explanation": [{"word", "weight"}]` (occlusion, `inceptionxml::predict::explain`);
//! without it, the answers are Annif's, byte for byte.
//!
//! Errors are `application/problem+json`. Requests to a project are micro-batched (`batcher`)
//! on worker threads; the async runtime only parses, queues and answers.

// Handlers return a ready `Response` as their error: it is what axum sends either way.
#![allow(clippy::result_large_err)]

mod batcher;
pub mod fuzz;
mod listener;
mod metrics;
mod parse_errors;
mod project;
mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::oneshot;

use batcher::{BatchParams, Job, Ranked, Refused};
use inceptionxml::Model;
use metrics::Metrics;
use project::{Project, ProjectSpec, ReloadOutcome};

use crate::output::{explained, suggestions};

/// `serve --max-batch`'s default.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Most documents in one `suggest-batch` request (Annif's limit).
pub const MAX_DOCUMENTS: usize = 32;

/// Flags of `inceptionxml serve`.
#[derive(clap::Args)]
pub struct Args {
    /// A project: a model directory (its id is the directory's name), `NAME=DIR`, or an ensemble
    /// `NAME=DIR1,DIR2` (scores averaged as by `predict --model A --model B`). Repeat for more
    /// projects.
    #[arg(long = "model", required = true)]
    pub models: Vec<ProjectSpec>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Most texts ranked in one forward pass. Batches follow the queue: a lone request is ranked
    /// at once on its own; while requests wait, all of them (up to this many texts) are ranked
    /// together, where the model's throughput is highest (256: where batch throughput stops
    /// rising on the models measured, docs/BENCHMARKS.md).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Longest wait for more requests to join a batch (only while other requests are arriving).
    #[arg(long, default_value_t = 2)]
    pub max_wait_ms: u64,
    /// Requests queued per project before new ones get 503.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Worker threads per project (each forward pass uses every core).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// The language of every project's subject labels: reported in the project objects, and a
    /// request's `language` must equal it (any is accepted while it is `und`, undetermined).
    #[arg(long, default_value = "und")]
    pub language: String,
    /// Seconds a client may take to send a request's head, and to start its next request on a
    /// kept-alive connection (the connection is closed after).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client may take to send a request's body (408 after).
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,
    /// Most connections open at once (kept below the process's open-file limit, which serve
    /// raises to its hard limit). At the cap a new connection takes the place of the one idle
    /// for longest; it gets a 503 only when every connection has a request in progress.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds to let requests in flight finish after SIGTERM or Ctrl-C before closing what is
    /// still open and exiting.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Score every batch exactly in f32 (no int8 indexes for small batches).
    #[arg(long)]
    pub exact: bool,
    /// Threads of the model's kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Everything the handlers share.
struct AppState {
    projects: BTreeMap<String, Arc<Project>>,
    metrics: Arc<Metrics>,
    max_body: usize,
    body_timeout: Duration,
    language: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.threads)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    anyhow::ensure!(args.max_batch > 0, "--max-batch must be > 0");
    anyhow::ensure!(args.queue > 0, "--queue must be > 0");
    anyhow::ensure!(
        (1..=64).contains(&args.workers),
        "--workers must be within 1..=64"
    );
    let params = BatchParams {
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue,
        workers: args.workers,
    };
    let metrics = Arc::new(Metrics::default());
    let mut projects = BTreeMap::new();
    for spec in &args.models {
        anyhow::ensure!(
            !projects.contains_key(&spec.id),
            "two projects named {:?} (use NAME=DIR)",
            spec.id
        );
        let p = Project::start(spec.clone(), args.exact, params, metrics.clone())?;
        tracing::info!(
            project = %spec.id,
            models = spec.dirs.len(),
            labels = p.current().n_labels(),
            "loaded"
        );
        projects.insert(spec.id.clone(), Arc::new(p));
    }
    let state = Arc::new(AppState {
        projects,
        metrics,
        max_body: args.max_body,
        body_timeout: Duration::from_secs(args.body_timeout),
        language: args.language.clone(),
    });
    anyhow::ensure!(
        args.header_timeout > 0 && args.body_timeout > 0,
        "--header-timeout and --body-timeout must be > 0"
    );
    anyhow::ensure!(args.max_connections > 0, "--max-connections must be > 0");
    let fds = listener::raise_fd_limit();
    // Room for the model files, the log and the listening socket besides the connections.
    let max_connections = args
        .max_connections
        .min(fds.saturating_sub(64).max(1) as usize);
    if max_connections < args.max_connections {
        tracing::warn!(
            max_connections,
            open_file_limit = fds,
            "fewer connections than --max-connections: the open-file limit is lower"
        );
    }
    let limits = listener::ConnLimits {
        header_timeout: Duration::from_secs(args.header_timeout),
        max_connections,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(state.clone(), args.addr, limits));
    // Connections past the drain deadline are dropped with the runtime, not waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    // Requests in flight have been answered; let the workers drain and stop.
    for p in state.projects.values() {
        p.batcher.shutdown();
    }
    tracing::info!(
        answered = state.metrics.count_status(200),
        refused = state.metrics.count_status(503),
        "stopped"
    );
    result
}

async fn serve(
    state: Arc<AppState>,
    addr: SocketAddr,
    limits: listener::ConnLimits,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    // Tests and scripts read this line to find an ephemeral port.
    println!("listening on http://{local}");
    tracing::info!(%local, projects = state.projects.len(), "serving");
    tokio::spawn(reload_on_sighup(state.clone()));
    let app = router(state);
    listener::serve(listener, app, limits, shutdown_signal()).await;
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/", get(api_info))
        .route("/v1", get(api_info))
        .route("/v1/projects", get(list_projects))
        .route("/v1/projects/{id}", get(show_project))
        .route("/v1/projects/{id}/suggest", post(suggest))
        .route("/v1/projects/{id}/suggest-batch", post(suggest_batch))
        .route("/v1/reload", post(reload))
        .route("/", get(ui::page))
        .route("/ui/examples/{id}", get(ui::examples))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    "the request failed",
                )
            },
        ))
        .with_state(state)
}

/// Waits for SIGTERM or SIGINT (graceful shutdown: stop accepting, finish in-flight requests).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn reload_on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while s.recv().await.is_some() {
            let _ = reload_all(state.clone()).await;
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// Reloads every project whose files changed, off the async threads.
async fn reload_all(state: Arc<AppState>) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (id, p) in &state.projects {
        let p = p.clone();
        let outcome = tokio::task::spawn_blocking(move || p.reload_if_changed())
            .await
            .unwrap_or_else(|_| ReloadOutcome::Failed("the reload task failed".into()));
        let v = match &outcome {
            ReloadOutcome::Unchanged => serde_json::json!("unchanged"),
            ReloadOutcome::Reloaded => {
                tracing::info!(project = %id, "reloaded");
                serde_json::json!("reloaded")
            }
            ReloadOutcome::Failed(e) => {
                tracing::warn!(project = %id, error = %e, "reload failed; the old model keeps serving");
                serde_json::json!({ "failed": e })
            }
        };
        out.insert(id.clone(), v);
    }
    out
}

/// Counts and times every request; one log line per request at debug level.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let (method, uri) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let secs = t0.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.observe_request(&route, status, secs);
    tracing::debug!(%method, path = %uri, status, ms = secs * 1e3, "request");
    resp
}

/// An `application/problem+json` response.
fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn bad_request(detail: impl Into<String>) -> Response {
    problem(StatusCode::BAD_REQUEST, "Bad Request", detail)
}

fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            e.to_string(),
        ),
    }
}

async fn not_found(uri: Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not Found",
        format!("no route {}", uri.path()),
    )
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "this route does not take that method",
    )
}

fn project_not_found(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Project not found",
        format!("Project '{id}' not found"),
    )
}

/// `GET /v1/`: what Annif answers there, the API's title and version.
async fn api_info() -> Response {
    json_response(&serde_json::json!({
        "title": "Annif REST API",
        "version": env!("CARGO_PKG_VERSION"),
        "server": "inceptionxml",
    }))
}

async fn health() -> Response {
    json_response(&serde_json::json!({ "status": "ok" }))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let queues: Vec<(String, usize)> = state
        .projects
        .iter()
        .map(|(id, p)| (id.clone(), p.batcher.depth.load(Ordering::SeqCst)))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&queues),
    )
        .into_response()
}

async fn list_projects(State(state): State<Arc<AppState>>) -> Response {
    let projects: Vec<_> = state
        .projects
        .values()
        .map(|p| p.json(&state.language))
        .collect();
    json_response(&serde_json::json!({ "projects": projects }))
}

async fn show_project(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.projects.get(&id) {
        Some(p) => json_response(&p.json(&state.language)),
        None => project_not_found(&id),
    }
}

async fn reload(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "reload is accepted from loopback clients only",
        );
    }
    json_response(&reload_all(state).await)
}

/// The body, at most `limit` bytes (413 above), received within `timeout` (408 after). A body
/// with a `Content-Encoding` (gzip, …) is refused with 415: it would otherwise be read as text.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Response> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?").trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                format!("Content-Encoding {enc:?}: send the body uncompressed"),
            ));
        }
    }
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!("the request body is over {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        return Err(problem(
            StatusCode::REQUEST_TIMEOUT,
            "Request Timeout",
            format!(
                "the request body did not arrive within {}s",
                timeout.as_secs()
            ),
        ));
    };
    read.map_err(|e| {
        // Over the limit while streaming, or the client broke off.
        if format!("{e:?}").contains("LengthLimit") {
            too_large()
        } else {
            bad_request(format!("reading the request body: {e}"))
        }
    })
}

/// Whether the request's content type is `want` (parameters such as a charset allowed).
fn check_content_type(headers: &HeaderMap, want: &str) -> Result<(), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    if base.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(bad_request(format!("content type {ct:?}: expected {want}")))
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space); an error for
/// a bad escape or bytes that are not UTF-8.
fn form_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                match v {
                    Some(v) => out.push(v),
                    None => return Err(format!("bad percent escape at byte {i}")),
                }
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

/// `key=value` pairs of a form body or query string.
fn form_pairs(s: &str) -> Result<Vec<(String, String)>, Response> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = form_decode(k).map_err(|e| bad_request(format!("form field name: {e}")))?;
            let v = form_decode(v).map_err(|e| bad_request(format!("form field {k}: {e}")))?;
            Ok((k, v))
        })
        .collect()
}

/// The value of form field `name`: the first one when it is repeated, the one rule for every
/// field (as Annif's form parsing takes the first).
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a String> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// A request's `language`, when given, must be the projects' (`--language`), as Annif refuses
/// a language its vocabulary lacks; while that is `und` (undetermined) any is accepted.
fn check_language(pairs: &[(String, String)], project_language: &str) -> Result<(), Response> {
    match field(pairs, "language") {
        Some(l) if project_language != "und" && !l.eq_ignore_ascii_case(project_language) => {
            Err(bad_request(format!(
                "language {l:?} not supported by vocabulary (the projects' language is {project_language:?})"
            )))
        }
        _ => Ok(()),
    }
}

/// `limit` (default 10, at least 0: 0 asks for no results, as in Annif) and `threshold`
/// (default 0, within [0, 1]).
fn limits(pairs: &[(String, String)]) -> Result<(usize, f32), Response> {
    let get = |k: &str| field(pairs, k);
    let limit = match get("limit") {
        None => 10,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => n.min(100_000) as usize,
            _ => {
                return Err(bad_request(format!(
                    "limit {v:?}: expected an integer >= 0"
                )))
            }
        },
    };
    let threshold = match get("threshold") {
        None => 0.0,
        Some(v) => match v.trim().parse::<f32>() {
            Ok(t) if (0.0..=1.0).contains(&t) => t,
            _ => {
                return Err(bad_request(format!(
                    "threshold {v:?}: expected a number within [0, 1]"
                )))
            }
        },
    };
    Ok((limit, threshold))
}

/// `explain` (`true`/`false`, `1`/`0`; default false): whether to explain each result.
fn explain_flag(pairs: &[(String, String)]) -> Result<bool, Response> {
    match field(pairs, "explain").map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(bad_request(format!(
            "explain {v:?}: expected true or false"
        ))),
    }
}

/// Ranks and explains `texts` with `project`'s model on a blocking thread (explanations score
/// each text's variants: they bypass the micro-batcher).
async fn explain(
    project: &Project,
    texts: Vec<String>,
    limit: usize,
    threshold: f32,
) -> Result<(Vec<Vec<inceptionxml::Explained>>, Arc<Model>), Response> {
    let model = project.current();
    let m = model.clone();
    let opts = inceptionxml::PredictOptions {
        threshold,
        ..Default::default()
    };
    let done = tokio::task::spawn_blocking(move || m.explain(&texts, limit, &opts)).await;
    match done {
        Ok(Ok(rows)) => Ok((rows, model)),
        // A text too long to explain.
        Ok(Err(e @ inceptionxml::Error::Config(_))) => Err(bad_request(e.to_string())),
        Ok(Err(e)) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            e.to_string(),
        )),
        Err(_) => Err(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "the explanation failed",
        )),
    }
}

/// Queues `texts` on `project` and waits for the ranked rows (503 when the queue is full).
async fn rank(
    project: &Project,
    texts: Vec<String>,
    limit: usize,
    threshold: f32,
) -> Result<Ranked, Response> {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        texts,
        limit,
        threshold,
        reply: tx,
    };
    let in_flight = &project.batcher.in_flight;
    in_flight.fetch_add(1, Ordering::SeqCst);
    let result = match project.batcher.submit(job) {
        Err(Refused::Full) => Err(overloaded("the request queue is full; try again shortly")),
        Err(Refused::Closed) => Err(overloaded("the server is shutting down")),
        Ok(()) => match rx.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                e,
            )),
            Err(_) => Err(overloaded("the request was dropped")),
        },
    };
    in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}

fn overloaded(detail: &str) -> Response {
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        detail,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Annif's `{"results": [...]}` for a row ranked by `model` (whose labels name the ids).
fn results_json(row: &[(u32, f32)], model: &Model) -> serde_json::Value {
    serde_json::json!({ "results": suggestions(row, model.labels()) })
}

async fn suggest(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(project) = state.projects.get(&id) else {
        return project_not_found(&id);
    };
    let run = async {
        check_content_type(&headers, "application/x-www-form-urlencoded")?;
        let body = read_body(body, &headers, state.max_body, state.body_timeout).await?;
        let body = std::str::from_utf8(&body).map_err(|_| bad_request("the body is not UTF-8"))?;
        let pairs = form_pairs(body)?;
        check_language(&pairs, &state.language)?;
        let (limit, threshold) = limits(&pairs)?;
        let text = field(&pairs, "text")
            .cloned()
            .ok_or_else(|| bad_request("the form field text is missing"))?;
        // No text, or no result asked for: no result (Annif's answer), the model not asked.
        if limit == 0 || text.trim().is_empty() {
            return Ok(json_response(&serde_json::json!({ "results": [] })));
        }
        if explain_flag(&pairs)? {
            let (mut rows, model) = explain(project, vec![text], limit, threshold).await?;
            let row = rows.pop().unwrap_or_default();
            return Ok(json_response(
                &serde_json::json!({ "results": explained(&row, model.labels()) }),
            ));
        }
        let (mut rows, model) = rank(project, vec![text], limit, threshold).await?;
        let row = rows.pop().unwrap_or_default();
        Ok::<_, Response>(json_response(&results_json(&row, &model)))
    };
    run.await.unwrap_or_else(|r| r)
}

/// One document of `suggest-batch`; its `document_id`, when given, is a string (Annif's schema).
#[derive(Deserialize)]
struct Document {
    text: String,
    #[serde(default)]
    document_id: Option<String>,
}

/// One answer per document, in order, with its `document_id`: `answer` of the next of `rows`
/// for a document the model was asked about (`asks`), no results for the others.
fn batch_answers<R: Default>(
    docs: Vec<Document>,
    asks: impl Fn(&str) -> bool,
    rows: Vec<R>,
    answer: impl Fn(&R) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    let mut rows = rows.into_iter();
    docs.into_iter()
        .map(|d| {
            let row = if asks(&d.text) {
                rows.next().unwrap_or_default()
            } else {
                R::default()
            };
            let mut v = answer(&row);
            v["document_id"] = d.document_id.map_or(serde_json::Value::Null, Into::into);
            v
        })
        .collect()
}

#[derive(Deserialize)]
struct Documents {
    documents: Vec<Document>,
}

async fn suggest_batch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(project) = state.projects.get(&id) else {
        return project_not_found(&id);
    };
    let run = async {
        let pairs = form_pairs(uri.query().unwrap_or(""))?;
        check_language(&pairs, &state.language)?;
        let (limit, threshold) = limits(&pairs)?;
        let explaining = explain_flag(&pairs)?;
        check_content_type(&headers, "application/json")?;
        let body = read_body(body, &headers, state.max_body, state.body_timeout).await?;
        let docs: Documents = serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("the body is not {{\"documents\": [...]}}: {e}")))?;
        if docs.documents.len() > MAX_DOCUMENTS {
            return Err(bad_request(format!(
                "{} documents: at most {MAX_DOCUMENTS} per request",
                docs.documents.len()
            )));
        }
        // Documents without text (or a limit of 0) get no result without asking the model.
        let asks = |t: &str| limit > 0 && !t.trim().is_empty();
        let texts: Vec<String> = docs
            .documents
            .iter()
            .filter(|d| asks(&d.text))
            .map(|d| d.text.clone())
            .collect();
        let out = if explaining {
            let (rows, model) = if texts.is_empty() {
                (Vec::new(), project.current())
            } else {
                explain(project, texts, limit, threshold).await?
            };
            batch_answers(
                docs.documents,
                asks,
                rows,
                |row| serde_json::json!({ "results": explained(row, model.labels()) }),
            )
        } else {
            let (rows, model) = if texts.is_empty() {
                (Vec::new(), project.current())
            } else {
                rank(project, texts, limit, threshold).await?
            };
            batch_answers(docs.documents, asks, rows, |row| results_json(row, &model))
        };
        Ok::<_, Response>(json_response(&out))
    };
    run.await.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%C3%A5").unwrap(), "a b cå");
        assert!(form_decode("%FF").is_err());
        assert!(form_decode("%G1").is_err());
        assert!(form_decode("abc%2").is_err());
    }

    #[test]
    fn limits_are_checked() {
        let p = |s: &str| form_pairs(s).ok().unwrap();
        assert_eq!(limits(&p("text=x")).ok(), Some((10, 0.0)));
        assert_eq!(limits(&p("limit=3&threshold=0.5")).ok(), Some((3, 0.5)));
        // Issue 27: limit 0 asks for no results (Annif answers 200 with none); a repeated field
        // takes its first value, as `text` does.
        assert_eq!(limits(&p("limit=0")).ok(), Some((0, 0.0)));
        assert_eq!(limits(&p("limit=2&limit=7")).ok(), Some((2, 0.0)));
        assert!(limits(&p("limit=-1")).is_err());
        assert!(limits(&p("limit=x")).is_err());
        assert!(limits(&p("threshold=1.5")).is_err());
    }
}
