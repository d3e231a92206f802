//! `import`, `serve` and the Annif REST API end to end, over loopback on ephemeral ports: every
//! endpoint, every class of bad input (status and problem+json body), 64 parallel clients
//! against `predict`, shutdown with requests in flight, reload under load, load shedding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A running `inceptionxml serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let port = listening_port(&mut child);
        Server { child, port }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection.
fn http(
    port: u16,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = ctype {
        req.push_str(&format!("Content-Type: {c}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok(Resp {
        status,
        content_type,
        body: body.to_string(),
    })
}

fn form(text: &str) -> String {
    let mut out = String::from("text=");
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn suggest(port: u16, project: &str, text: &str, extra: &str) -> std::io::Result<Resp> {
    let body = format!("{}{extra}", form(text));
    http(
        port,
        "POST",
        &format!("/v1/projects/{project}/suggest"),
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
}

/// A `suggest-batch` body with `texts` (no document ids).
fn batch_body(texts: &[String]) -> String {
    let docs: Vec<_> = texts
        .iter()
        .map(|t| serde_json::json!({"text": t}))
        .collect();
    serde_json::json!({ "documents": docs }).to_string()
}

/// A `suggest-batch` body with `texts`, document `i` with the id `d{i}`.
fn batch_body_with_ids(texts: &[String]) -> String {
    let docs: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"text": t, "document_id": format!("d{i}")}))
        .collect();
    serde_json::json!({ "documents": docs }).to_string()
}

/// POSTs `body` to the suggest-batch route of project `model`.
fn post_batch(port: u16, body: &str) -> std::io::Result<Resp> {
    http(
        port,
        "POST",
        "/v1/projects/model/suggest-batch",
        Some("application/json"),
        body.as_bytes(),
    )
}

/// A small Annif corpus and vocabulary from the bundled cooking data, imported as an XC folder,
/// and a model trained on it: built once for all tests.
fn fixture() -> &'static (PathBuf, PathBuf) {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let cooking = data_dir();
        let names: Vec<String> = std::fs::read_to_string(cooking.join("Y.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let vocab: String = names
            .iter()
            .map(|n| format!("<http://example.org/tag/{n}>\t{n}\n"))
            .collect();
        std::fs::write(dir.join("vocab.tsv"), vocab).unwrap();
        let texts = std::fs::read_to_string(cooking.join("trn_X.txt")).unwrap();
        let labels = std::fs::read_to_string(cooking.join("trn_X_Y.txt")).unwrap();
        let mut corpus = String::new();
        for (t, l) in texts.lines().zip(labels.lines().skip(1)).take(700) {
            let uris: Vec<String> = l
                .split_whitespace()
                .map(|e| {
                    let i: usize = e.split(':').next().unwrap().parse().unwrap();
                    format!("<http://example.org/tag/{}>", names[i])
                })
                .collect();
            corpus.push_str(&format!("{t}\t{}\n", uris.join(" ")));
        }
        corpus.push_str("a line without subjects or a tab\n");
        std::fs::write(dir.join("corpus.tsv"), corpus).unwrap();
        let data = dir.join("xc");
        let corpus_p = dir.join("corpus.tsv");
        let vocab_p = dir.join("vocab.tsv");
        let args = [
            "import",
            "annif",
            "--corpus",
            corpus_p.to_str().unwrap(),
            "--vocab",
            vocab_p.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
            "--test-fraction",
            "0.1",
        ];
        // A malformed line stops the import, naming the line, and writes nothing.
        fails_with_one_line(&args, "corpus.tsv:701");
        assert!(!data.exists());
        let mut with_skip = args.to_vec();
        with_skip.push("--skip-bad");
        let out = ok(&with_skip);
        assert!(
            out.contains("630 training and 70 test texts") && out.contains("1 malformed"),
            "{out}"
        );
        let model = dir.join("model");
        ok(&strs(&tiny_train_args(&data, &model, &["--epochs", "2"])));
        (data, model)
    })
}

/// `predict --format json` rows for `texts`.
fn predict_json(model: &Path, texts: &[String], k: usize) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("texts.txt");
    std::fs::write(&f, texts.join("\n") + "\n").unwrap();
    let out = ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        f.to_str().unwrap(),
        "--format",
        "json",
        "--top-k",
        &k.to_string(),
    ]);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The same suggestions: scores equal within 1e-6, URIs equal except where neighbouring scores
/// tie within that tolerance.
fn assert_same_results(got: &serde_json::Value, want: &serde_json::Value) {
    let (g, w) = (
        got["results"].as_array().unwrap(),
        want["results"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len(), "{got} vs {want}");
    let score = |v: &serde_json::Value| v["score"].as_f64().unwrap();
    for (i, (a, b)) in g.iter().zip(w).enumerate() {
        assert!((score(a) - score(b)).abs() <= 1e-6, "{got} vs {want}");
        let tied = |j: usize| j < w.len() && (score(&w[j]) - score(b)).abs() <= 1e-6;
        if a["uri"] != b["uri"] && !(tied(i + 1) || (i > 0 && tied(i - 1))) {
            panic!("position {i}: {got} vs {want}");
        }
    }
}

fn test_texts(n: usize) -> Vec<String> {
    let (data, _) = fixture();
    std::fs::read_to_string(data.join("tst_X.txt"))
        .unwrap()
        .lines()
        .chain(
            std::fs::read_to_string(data.join("trn_X.txt"))
                .unwrap()
                .lines(),
        )
        .take(n)
        .map(str::to_string)
        .collect()
}

#[test]
fn import_train_serve_suggest_matches_predict() {
    let (data, model) = fixture();
    // URIs and names travel from the vocabulary into the model directory.
    assert!(model.join("labels.tsv").exists());
    assert!(data.join("Y.tsv").exists());
    let srv = Server::start(&["--model", model.to_str().unwrap(), "--exact"]);
    let texts = test_texts(20);
    let want = predict_json(model, &texts, 5);
    for (t, w) in texts.iter().zip(&want) {
        let r = suggest(srv.port, "model", t, "&limit=5").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.content_type.starts_with("application/json"));
        let got = r.json();
        assert_same_results(&got, w);
        let first = &got["results"][0];
        assert!(first["uri"]
            .as_str()
            .unwrap()
            .starts_with("http://example.org/tag/"));
        assert_eq!(
            first["uri"].as_str().unwrap().rsplit('/').next(),
            first["label"].as_str()
        );
    }
    // suggest-batch answers the same, with the document ids.
    let body = batch_body_with_ids(&texts);
    let r = http(
        srv.port,
        "POST",
        "/v1/projects/model/suggest-batch?limit=5",
        Some("application/json"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    for (i, w) in want.iter().enumerate() {
        assert_eq!(got[i]["document_id"], format!("d{i}"));
        assert_same_results(&got[i], w);
    }
    // threshold and limit.
    let r = suggest(srv.port, "model", &texts[0], "&limit=2&threshold=0.0001").unwrap();
    let res = r.json()["results"].as_array().unwrap().clone();
    assert!(res.len() <= 2 && res.iter().all(|s| s["score"].as_f64().unwrap() >= 0.0001));
    // The projects, as Annif's http backend reads them.
    let p = http(srv.port, "GET", "/v1/projects/model", None, b"")
        .unwrap()
        .json();
    assert_eq!(p["project_id"], "model");
    assert_eq!(p["is_trained"], true);
    assert!(p["modification_time"].as_str().unwrap().ends_with('Z'));
    let all = http(srv.port, "GET", "/v1/projects", None, b"")
        .unwrap()
        .json();
    assert_eq!(all["projects"].as_array().unwrap().len(), 1);
    assert_eq!(
        http(srv.port, "GET", "/health", None, b"").unwrap().status,
        200
    );
    let m = http(srv.port, "GET", "/metrics", None, b"").unwrap();
    assert!(m.body.contains(
        "inceptionxml_requests_total{route=\"/v1/projects/{id}/suggest\",status=\"200\"}"
    ));
    assert!(m.body.contains("inceptionxml_batch_size_count"));
    assert!(m
        .body
        .contains("inceptionxml_queue_depth{project=\"model\"}"));

    // fastText files import too.
    let dir = tempfile::tempdir().unwrap();
    let ft = dir.path().join("ft.txt");
    std::fs::write(
        &ft,
        "__label__bread __label__baking knead dough\n__label__knives sharpen a knife\n",
    )
    .unwrap();
    let out = dir.path().join("ftxc");
    ok(&[
        "import",
        "fasttext",
        "--input",
        ft.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--test-fraction",
        "0",
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("Y.txt")).unwrap(),
        "bread\nbaking\nknives\n"
    );
}

#[test]
fn explain_adds_word_weights_and_leaves_other_answers_unchanged() {
    let (data, model) = fixture();
    let srv = Server::start(&["--model", model.to_str().unwrap()]);
    let texts = test_texts(8);
    let check = |got: &serde_json::Value, want: &serde_json::Value, text: &str| {
        let (g, w) = (
            got["results"].as_array().unwrap(),
            want["results"].as_array().unwrap(),
        );
        assert_eq!(g.len(), w.len(), "{got} vs {want}");
        let words = xmc::text::tokenize(text);
        for (a, b) in g.iter().zip(w) {
            assert_eq!((&a["uri"], &a["label"]), (&b["uri"], &b["label"]));
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-6);
            let ex = a["explanation"].as_array().unwrap();
            let got: Vec<&str> = ex.iter().map(|x| x["word"].as_str().unwrap()).collect();
            assert_eq!(got, words);
            assert!(ex
                .iter()
                .all(|x| x["weight"].as_f64().is_some_and(f64::is_finite)));
        }
    };
    for t in &texts {
        let plain = suggest(srv.port, "model", t, "&limit=4").unwrap();
        let off = suggest(srv.port, "model", t, "&limit=4&explain=false").unwrap();
        // Without explain=true, the answer is byte for byte what it was.
        assert_eq!(plain.body, off.body);
        assert!(!plain.body.contains("explanation"));
        let on = suggest(srv.port, "model", t, "&limit=4&explain=true").unwrap();
        assert_eq!(on.status, 200, "{}", on.body);
        check(&on.json(), &plain.json(), t);
    }
    // suggest-batch: the same explanations, with the document ids.
    let body = batch_body_with_ids(&texts);
    let batch = |q: &str| {
        let r = http(
            srv.port,
            "POST",
            &format!("/v1/projects/model/suggest-batch?limit=3{q}"),
            Some("application/json"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r
    };
    let (plain, off, on) = (batch(""), batch("&explain=0"), batch("&explain=1"));
    assert_eq!(plain.body, off.body);
    for (i, (a, b)) in on
        .json()
        .as_array()
        .unwrap()
        .iter()
        .zip(plain.json().as_array().unwrap())
        .enumerate()
    {
        assert_eq!(a["document_id"], format!("d{i}"));
        check(a, b, &texts[i]);
    }
    // A long text is refused for explanation (the work grows as its words squared), not ranked.
    let long = vec!["salt pepper"; 520].join(" ");
    let r = suggest(srv.port, "model", &long, "&explain=true").unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("at most 1024 words"), "{}", r.body);
    assert_eq!(suggest(srv.port, "model", &long, "").unwrap().status, 200);
    let bad = suggest(srv.port, "model", &texts[0], "&explain=maybe").unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("explain"), "{}", bad.body);
    // The web page and its examples (the first test texts, written by train).
    let page = http(srv.port, "GET", "/", None, b"").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("explain") && page.body.contains("/v1/projects"));
    let ex = http(srv.port, "GET", "/ui/examples/model", None, b"")
        .unwrap()
        .json();
    let first: Vec<String> = std::fs::read_to_string(data.join("tst_X.txt"))
        .unwrap()
        .lines()
        .take(2)
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(ex["examples"][0], first[0]);
    assert_eq!(ex["examples"][1], first[1]);
    assert_eq!(
        http(srv.port, "GET", "/ui/examples/nope", None, b"")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn bad_requests_get_their_status_and_a_problem() {
    let (_, model) = fixture();
    let srv = Server::start(&[
        "--model",
        &format!("cook={}", model.display()),
        "--max-body",
        "2000",
    ]);
    let p = srv.port;
    let form_ct = Some("application/x-www-form-urlencoded");
    let json_ct = Some("application/json");
    let many: Vec<_> = (0..33)
        .map(|i| serde_json::json!({"text": format!("t{i}")}))
        .collect();
    let many = serde_json::json!({ "documents": many }).to_string();
    // (method, path, content type, body, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/projects/nope/suggest",
            form_ct,
            b"text=x".to_vec(),
            404,
        ),
        ("GET", "/v1/projects/nope", None, vec![], 404),
        ("GET", "/no/such/route", None, vec![], 404),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            b"limit=3".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            b"text=%FF%FE".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            b"text=x&limit=-1".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch",
            json_ct,
            b"{\"documents\":[{\"text\":\"x\",\"document_id\":7}]}".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            b"text=x&limit=abc".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            b"text=x&threshold=1.5".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            json_ct,
            b"{\"text\":\"x\"}".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            None,
            b"text=x".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            vec![b'a'; 5000],
            413,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch",
            json_ct,
            many.into_bytes(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch",
            json_ct,
            b"{\"docs\":[]}".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch",
            json_ct,
            b"not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch",
            form_ct,
            b"{\"documents\":[]}".to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/projects/cook/suggest-batch?limit=-1",
            json_ct,
            b"{\"documents\":[]}".to_vec(),
            400,
        ),
        ("GET", "/v1/projects/cook/suggest", None, vec![], 405),
    ];
    for (method, path, ct, body, want) in cases {
        let r = http(p, method, path, ct, &body).unwrap();
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
        assert_eq!(
            r.content_type, "application/problem+json",
            "{method} {path}"
        );
        let j = r.json();
        assert_eq!(j["status"], want);
        assert!(j["title"].is_string() && j["detail"].is_string() && j["type"].is_string());
    }
    // Still serving after all that.
    assert_eq!(suggest(p, "cook", "bread", "").unwrap().status, 200);
    let empty = http(
        p,
        "POST",
        "/v1/projects/cook/suggest-batch",
        json_ct,
        b"{\"documents\":[]}",
    )
    .unwrap();
    assert_eq!((empty.status, empty.body.as_str()), (200, "[]"));

    // Issue 27, Annif's semantics: limit 0 and an empty text give 200 with no results (an empty
    // text got ten prior-driven labels); a repeated field takes its first value, `limit` as
    // `text` (limit took the last); a string document_id is echoed.
    let none = serde_json::json!({"results": []});
    for body in ["text=bread&limit=0", "text=", "text=+++&limit=5"] {
        let r = http(
            p,
            "POST",
            "/v1/projects/cook/suggest",
            form_ct,
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!((r.status, r.json()), (200, none.clone()), "{body}");
    }
    let r = http(
        p,
        "POST",
        "/v1/projects/cook/suggest",
        form_ct,
        b"text=bread&text=knife&limit=2&limit=5",
    )
    .unwrap();
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2, "{}", r.body);
    let first = suggest(p, "cook", "bread", "&limit=2").unwrap().json();
    assert_eq!(first["results"].as_array().unwrap(), &results);
    let docs = br#"{"documents":[{"text":"bread","document_id":"a"},{"text":"  ","document_id":"b"},{"text":"knife"}]}"#;
    let r = http(
        p,
        "POST",
        "/v1/projects/cook/suggest-batch?limit=3",
        json_ct,
        docs,
    )
    .unwrap();
    let out = r.json();
    assert_eq!(out.as_array().unwrap().len(), 3, "{}", r.body);
    assert_eq!(out[0]["document_id"], "a");
    assert_eq!(
        out[1],
        serde_json::json!({"results": [], "document_id": "b"})
    );
    assert!(out[2]["document_id"].is_null());
    assert_eq!(out[0]["results"].as_array().unwrap().len(), 3);
    assert_eq!(out[2]["results"].as_array().unwrap().len(), 3);
}

#[test]
fn parallel_clients_get_what_predict_gives() {
    let (_, model) = fixture();
    let srv = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--exact",
        "--max-batch",
        "16",
    ]);
    let texts = test_texts(64);
    let want = predict_json(model, &texts, 10);
    let port = srv.port;
    let got: Vec<serde_json::Value> = std::thread::scope(|s| {
        let hs: Vec<_> = texts
            .iter()
            .map(|t| s.spawn(move || suggest(port, "model", t, "").unwrap()))
            .collect();
        hs.into_iter()
            .map(|h| {
                let r = h.join().unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                r.json()
            })
            .collect()
    });
    for (g, w) in got.iter().zip(&want) {
        assert_same_results(g, w);
    }
    // The requests were batched.
    let m = http(port, "GET", "/metrics", None, b"").unwrap().body;
    let count = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
            .unwrap()
    };
    assert!(count("inceptionxml_batch_size_count ") < 64.0, "{m}");
}

#[test]
fn shutdown_answers_every_request_in_flight() {
    let (_, model) = fixture();
    let mut srv = Server::start(&["--model", model.to_str().unwrap(), "--max-batch", "1"]);
    let port = srv.port;
    let texts = test_texts(32);
    let body = batch_body(&texts);
    let signalled = std::sync::OnceLock::new();
    let results: Vec<(u16, Instant)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|_| {
                let body = body.clone();
                s.spawn(move || {
                    let r = post_batch(port, &body).map(|r| r.status).unwrap_or(0);
                    (r, Instant::now())
                })
            })
            .collect();
        // Let every request reach the server, then ask it to stop.
        std::thread::sleep(Duration::from_millis(100));
        srv.signal("-TERM");
        let _ = signalled.set(Instant::now());
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    let t = signalled.get().unwrap();
    let late = results.iter().filter(|r| r.1 > *t).count();
    assert!(
        late > 0,
        "every request finished before the signal: the test proves nothing"
    );
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn reload_swaps_models_under_load_and_keeps_a_good_one() {
    let (data, model) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("m");
    copy_dir(model, &served);
    // A second model of the same labels (another seed).
    let other = dir.path().join("other");
    let args = ["--epochs", "1", "--seed", "7"];
    ok(&strs(&tiny_train_args(data, &other, &args)));
    let srv = Server::start(&["--model", served.to_str().unwrap(), "--exact"]);
    let port = srv.port;
    let probe = test_texts(3);
    let before = predict_json(&served, &probe, 5);
    let after = predict_json(&other, &probe, 5);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses: Vec<Vec<u16>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (stop, t) = (&stop, probe[i % 3].clone());
                s.spawn(move || {
                    let mut v = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        v.push(suggest(port, "m", &t, "").map_or(0, |r| r.status));
                    }
                    v
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // Swap the directory in one rename, then reload.
        let old = dir.path().join("m.old");
        std::fs::rename(&served, &old).unwrap();
        std::fs::rename(&other, &served).unwrap();
        let r = http(port, "POST", "/v1/reload", None, b"").unwrap();
        assert_eq!(r.json()["m"], "reloaded", "{}", r.body);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<u16> = statuses.concat();
    assert!(!all.is_empty() && all.iter().all(|&s| s == 200), "{all:?}");
    for (t, w) in probe.iter().zip(&after) {
        assert_same_results(&suggest(port, "m", t, "&limit=5").unwrap().json(), w);
    }
    assert_ne!(before, after);
    // A broken model directory fails to load and the good model keeps serving.
    std::fs::write(served.join("config.json"), "{ not json").unwrap();
    let r = http(port, "POST", "/v1/reload", None, b"").unwrap();
    assert!(
        r.json()["m"]["failed"]
            .as_str()
            .unwrap()
            .contains("config.json"),
        "{}",
        r.body
    );
    assert_same_results(
        &suggest(port, "m", &probe[0], "&limit=5").unwrap().json(),
        &after[0],
    );
    // SIGHUP reloads too (still broken: still the good model).
    srv.signal("-HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(suggest(port, "m", &probe[0], "").unwrap().status, 200);
}

#[test]
fn overload_is_shed_with_503_only() {
    let (_, model) = fixture();
    let srv = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--queue",
        "1",
        "--max-batch",
        "1",
    ]);
    let port = srv.port;
    let texts = test_texts(32);
    let body = batch_body(&texts);
    let t0 = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..48)
            .map(|_| {
                let body = body.clone();
                s.spawn(move || {
                    let r = post_batch(port, &body).unwrap();
                    if r.status == 503 {
                        assert_eq!(r.content_type, "application/problem+json");
                    }
                    r.status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "nothing was shed: {statuses:?}");
    assert!(statuses.contains(&200));
    assert!(t0.elapsed() < Duration::from_secs(60));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
