//! The web page at `GET /`: choose a project, type a text, see the ranked labels with their
//! scores and URIs, and the words of the text highlighted by their weight for the label under
//! the pointer (or keyboard focus). One HTML file with its CSS and JavaScript inline
//! (`ui/index.html`, compiled into the binary: no build step, no CDN, works offline); it calls
//! the API already there (`/v1/projects`, `suggest` with `explain=true`, `/ui/examples/{id}`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{json_response, project_not_found, AppState};

/// The page.
const PAGE: &str = include_str!("ui/index.html");

/// Most examples offered, and the longest (in characters) kept.
const MAX_EXAMPLES: usize = 8;
const MAX_EXAMPLE_CHARS: usize = 500;

pub async fn page() -> Response {
    let mut r = PAGE.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    r
}

/// `{"examples": [...]}`: the first lines of the project's `examples.txt` (none when the
/// directory has no such file or it cannot be read).
pub async fn examples(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Some(project) = state.projects.get(&id) else {
        return project_not_found(&id);
    };
    let path = project
        .spec
        .dirs
        .first()
        .map(|d| d.join(inceptionxml::model_dir::EXAMPLES));
    let text = match path {
        Some(p) => tokio::task::spawn_blocking(move || read_examples(&p))
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    json_response(&serde_json::json!({ "examples": text }))
}

fn read_examples(path: &std::path::Path) -> Vec<String> {
    let Ok(text) = xmc::texts::read_texts(path) else {
        return Vec::new();
    };
    text.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .take(MAX_EXAMPLES)
        .map(|t| t.chars().take(MAX_EXAMPLE_CHARS).collect())
        .collect()
}
