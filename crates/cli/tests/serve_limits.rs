//! `serve` against hostile clients (issue 27): stalled heads, idle keep-alives and stalled bodies
//! are cut off by their timeouts; at the connection cap the longest-idle connection gives way
//! and busy ones never do; with 2,000 stalled connections under a 1,024-descriptor limit normal
//! clients are answered at their usual latency; SIGTERM exits 0 within the drain deadline
//! whatever the clients do; and the Annif details: `GET /v1/`, `language`, compressed bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A small sparse-only model (fast to train), built once.
fn model() -> &'static PathBuf {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let m = dir.join("sp");
        let data = data_dir();
        ok(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--sparse",
            "--sparse-trees",
            "1",
            "--max-train",
            "800",
        ]);
        m
    })
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `serve` with `args`; `nofile`: the server's open-file limit (soft and hard).
    fn start(args: &[&str], nofile: Option<u64>) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--model", &format!("m={}", model().display())])
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and only touches the child's limits.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("the binary runs");
        let port = listening_port(&mut child);
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends `req` on a new connection and reads until the server closes it.
    fn exchange(&self, req: &[u8]) -> String {
        let mut s = self.connect();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds until the server closes `s` (reading and dropping whatever it sends first).
fn seconds_until_closed(mut s: TcpStream) -> f64 {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed().as_secs_f64(),
            Ok(_) => {}
        }
    }
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[test]
fn stalled_heads_idle_connections_and_stalled_bodies_time_out() {
    let srv = Server::start(&["--header-timeout", "1", "--body-timeout", "1"], None);
    // A head that never ends.
    let mut s = srv.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = seconds_until_closed(s);
    assert!((0.8..5.0).contains(&t), "partial head closed after {t}s");
    // A kept-alive connection that goes quiet after one answer.
    let mut s = srv.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = seconds_until_closed(s);
    assert!((0.8..5.0).contains(&t), "idle keep-alive closed after {t}s");
    // A body that stops halfway: 408 with a problem.
    let mut s = srv.connect();
    s.write_all(
        b"POST /v1/projects/m/suggest HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\ntext=sal",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), 408, "{out}");
    assert!(out.contains("application/problem+json"), "{out}");
    // The server still answers.
    assert_eq!(status_of(&srv.exchange(HEALTH)), 200);
}

/// A connection whose request is in progress: its body stops halfway.
fn stalled_body(srv: &Server) -> TcpStream {
    let mut s = srv.connect();
    s.write_all(
        b"POST /v1/projects/m/suggest HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\ntext=sal",
    )
    .unwrap();
    s
}

#[test]
fn at_the_cap_an_idle_connection_gives_way_and_busy_ones_never_do() {
    let srv = Server::start(
        &[
            "--max-connections",
            "4",
            "--header-timeout",
            "30",
            "--body-timeout",
            "30",
        ],
        None,
    );
    // Four idle connections (heads never finished): a new client takes the oldest one's place.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = srv.connect();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect();
    let t = Instant::now();
    assert_eq!(status_of(&srv.exchange(HEALTH)), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let first = idle.remove(0);
    assert!(
        seconds_until_closed(first) < 2.0,
        "the oldest idle one was closed"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    // Four requests in progress: none is cut, the new connection gets a 503.
    let busy: Vec<TcpStream> = (0..4).map(|_| stalled_body(&srv)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let resp = srv.exchange(HEALTH);
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(resp.contains("application/problem+json") && resp.contains("retry-after"));
    drop(busy);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_of(&srv.exchange(HEALTH)), 200);
}

/// Raises this process's open-file limit to its hard limit; returns the soft limit.
fn raise_own_fd_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid, exclusively borrowed rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn two_thousand_stalled_connections_under_1024_descriptors_do_not_lock_clients_out() {
    if raise_own_fd_limit() < 2_200 {
        eprintln!("skipped: this process cannot open 2,000 sockets");
        return;
    }
    let timeout = 2.0;
    let srv = Server::start(&["--header-timeout", "2"], Some(1024));
    // The usual latency of a normal client, before the attack.
    let t = Instant::now();
    assert_eq!(status_of(&srv.exchange(HEALTH)), 200);
    let usual = t.elapsed().as_secs_f64();
    let stalled: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", srv.port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(stalled.len() >= 1_900, "only {} connected", stalled.len());
    // With them all open (the newest within the cap still held), normal clients are answered
    // at once: each takes the place of the longest-stalled connection.
    for _ in 0..20 {
        let t = Instant::now();
        let r = srv.exchange(HEALTH);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(status_of(&r), 200, "{r}");
        assert!(secs < usual + 0.5, "answered in {secs}s (usual {usual}s)");
    }
    // Every stalled connection is closed: the oldest as they gave way, the rest by the header
    // timeout.
    let closed: Vec<f64> = std::thread::scope(|sc| {
        let hs: Vec<_> = stalled
            .into_iter()
            .map(|s| sc.spawn(move || seconds_until_closed(s)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let slowest = closed.iter().cloned().fold(0.0, f64::max);
    assert!(
        slowest < timeout + 5.0,
        "a stalled connection lived {slowest}s more"
    );
    assert_eq!(status_of(&srv.exchange(HEALTH)), 200);
}

#[test]
fn sigterm_exits_zero_within_the_drain_deadline_despite_stalled_clients() {
    let mut srv = Server::start(
        &[
            "--header-timeout",
            "60",
            "--body-timeout",
            "60",
            "--shutdown-timeout",
            "2",
        ],
        None,
    );
    let mut body = srv.connect();
    body.write_all(
        b"POST /v1/projects/m/suggest HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\ntext=sal",
    )
    .unwrap();
    let mut head = srv.connect();
    head.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = srv.child.wait().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(status.success(), "exit {status:?}");
    assert!((1.5..8.0).contains(&secs), "exited after {secs}s");
}

#[test]
fn annif_details_v1_language_and_compressed_bodies() {
    let srv = Server::start(&["--language", "en"], None);
    let info = srv.exchange(b"GET /v1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&info), 200, "{info}");
    assert!(info.contains("\"title\":\"Annif REST API\""), "{info}");
    let project =
        srv.exchange(b"GET /v1/projects/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(project.contains("\"language\":\"en\""), "{project}");
    let suggest = |extra: &str, headers: &str| {
        let body = format!("text=salt+and+pepper{extra}");
        srv.exchange(
            format!(
                "POST /v1/projects/m/suggest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n{headers}\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    assert_eq!(status_of(&suggest("&language=en", "")), 200);
    let wrong = suggest("&language=fi", "");
    assert_eq!(status_of(&wrong), 400, "{wrong}");
    assert!(wrong.contains("not supported by vocabulary"), "{wrong}");
    let gz = suggest("", "Content-Encoding: gzip\r\n");
    assert_eq!(status_of(&gz), 415, "{gz}");
    assert!(gz.contains("application/problem+json"), "{gz}");
    let batch = srv.exchange(
        b"POST /v1/projects/m/suggest-batch?language=sv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"documents\":[]}",
    );
    assert_eq!(status_of(&batch), 400, "{batch}");
}

#[test]
fn requests_hyper_refuses_get_problem_bodies_too() {
    let srv = Server::start(&[], None);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let many_fields: String = (0..200).map(|i| format!("X{i}: y\r\n")).collect();
    let many = format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_fields}\r\n");
    for (req, status) in [
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (long_uri.into_bytes(), 414),
        (many.into_bytes(), 431),
        (b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n".to_vec(), 400),
    ] {
        let resp = srv.exchange(&req);
        assert_eq!(status_of(&resp), status, "{resp}");
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], status);
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    // A well-formed request on the same server is answered as before.
    let ok = srv.exchange(HEALTH);
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert!(ok.ends_with("{\"status\":\"ok\"}"), "{ok}");
}
