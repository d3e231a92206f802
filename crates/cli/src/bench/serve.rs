//! `inceptionxml bench serve`: the HTTP server under load on loopback, next to the in-process
//! predictor in the same run. It starts `inceptionxml serve` as a child process (so its memory is
//! measured alone), drives it with closed-loop clients over keep-alive connections, and reports
//! latency percentiles and suggestions/s per client count, an overload phase (only 200 and 503
//! expected) and, optionally, a soak with the server's resident memory sampled over time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use inceptionxml::{Model, PredictOptions};

/// Flags of `inceptionxml bench serve`.
#[derive(clap::Args)]
pub struct ServeBench {
    /// Model directory to serve.
    #[arg(long)]
    pub model: PathBuf,
    /// Query texts, one per line (cycled).
    #[arg(long, default_value = "data/cooking/tst_X.txt")]
    pub texts: PathBuf,
    /// Concurrent clients of each measured phase.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub clients: Vec<usize>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Labels per suggestion request.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// The server's queue (requests) before it sheds load with 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Clients of the overload phase, as a multiple of the largest client count (0: skip).
    #[arg(long, default_value_t = 4)]
    pub overload: usize,
    /// Seconds of a soak at the largest client count, sampling the server's RSS (0: skip).
    #[arg(long, default_value_t = 0.0)]
    pub soak_seconds: f64,
    /// The server's `--max-batch` (texts per forward pass).
    #[arg(long, default_value_t = crate::serve::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Batch size of the in-process throughput measurement.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

/// A keep-alive HTTP/1.1 client for one connection.
struct Client {
    stream: BufReader<TcpStream>,
    port: u16,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream: BufReader::new(s),
            port,
        })
    }

    /// POSTs a suggest request; returns the status (0 for a transport error, after which the
    /// connection is replaced).
    fn suggest(&mut self, body: &str) -> u16 {
        match self.try_suggest(body) {
            Ok(s) => s,
            Err(_) => {
                if let Ok(c) = Client::connect(self.port) {
                    *self = c;
                }
                0
            }
        }
    }

    fn try_suggest(&mut self, body: &str) -> std::io::Result<u16> {
        let req = format!(
            "POST /v1/projects/bench/suggest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(status)
    }
}

/// `text=...` form bodies for the texts.
fn bodies(texts: &[String], limit: usize) -> Vec<String> {
    texts
        .iter()
        .map(|t| {
            let mut out = format!("limit={limit}&text=");
            for b in t.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        })
        .collect()
}

/// What one phase measured.
struct Phase {
    latencies: Vec<f64>,
    ok: usize,
    shed: usize,
    other: usize,
    seconds: f64,
}

/// `clients` closed-loop clients for `seconds`.
fn phase(port: u16, bodies: &[String], clients: usize, seconds: f64) -> anyhow::Result<Phase> {
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let per: Vec<(Vec<f64>, [usize; 3])> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let stop = &stop;
                s.spawn(move || -> std::io::Result<(Vec<f64>, [usize; 3])> {
                    let mut client = Client::connect(port)?;
                    let (mut lat, mut counts) = (Vec::new(), [0usize; 3]);
                    let mut i = c * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let status = client.suggest(&bodies[i % bodies.len()]);
                        i += 1;
                        match status {
                            200 => {
                                lat.push(t.elapsed().as_secs_f64());
                                counts[0] += 1;
                            }
                            503 => counts[1] += 1,
                            _ => counts[2] += 1,
                        }
                    }
                    Ok((lat, counts))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Ok((Vec::new(), [0, 0, 1]))))
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut p = Phase {
        latencies: Vec::new(),
        ok: 0,
        shed: 0,
        other: 0,
        seconds,
    };
    for (lat, c) in per {
        p.latencies.extend(lat);
        p.ok += c[0];
        p.shed += c[1];
        p.other += c[2];
    }
    p.latencies.sort_by(f64::total_cmp);
    Ok(p)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bench_serve(a: ServeBench) -> anyhow::Result<()> {
    anyhow::ensure!(a.seconds > 0.0, "--seconds must be > 0");
    anyhow::ensure!(
        !a.clients.is_empty() && a.clients.iter().all(|&c| (1..=4096).contains(&c)),
        "--clients: counts within 1..=4096"
    );
    anyhow::ensure!(
        a.limit > 0 && a.batch_size > 0,
        "--limit and --batch-size must be > 0"
    );
    let texts = xmc::texts::read_texts(&a.texts)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no texts", a.texts.display());

    // The in-process predictor first, alone on the machine.
    {
        let p = Model::load(&a.model)?;
        let n = texts.len().min(1000);
        for t in texts.iter().take(10) {
            p.rank_one(t, a.limit, None)?;
        }
        let mut lat: Vec<f64> = texts[..n]
            .iter()
            .map(|t| {
                let t0 = Instant::now();
                p.rank_one(t, a.limit, None)
                    .map(|_| t0.elapsed().as_secs_f64())
            })
            .collect::<inceptionxml::Result<_>>()?;
        lat.sort_by(f64::total_cmp);
        let t0 = Instant::now();
        let opts = PredictOptions {
            batch_size: a.batch_size,
            ..Default::default()
        };
        let rows = p.rank(&texts, a.limit, &opts)?;
        let qps = rows.len() as f64 / t0.elapsed().as_secs_f64();
        println!(
            "predict (in process): batch 1 p50 {:.2} ms, p99 {:.2} ms; batch {} {:.0} queries/s",
            pct(&lat, 0.5) * 1e3,
            pct(&lat, 0.99) * 1e3,
            a.batch_size,
            qps
        );
    }

    let exe = std::env::current_exe().context("locating the inceptionxml binary")?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--queue",
            &a.queue.to_string(),
            "--max-batch",
            &a.max_batch.to_string(),
        ])
        .arg("--model")
        .arg(format!("bench={}", a.model.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let server = ServerChild(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("the server did not start: {line:?}"))?;
    let pid = server.0.id();
    let bodies = bodies(&texts, a.limit);
    // Warm-up.
    phase(port, &bodies, 1, 1.0)?;
    for &c in &a.clients {
        let p = phase(port, &bodies, c, a.seconds)?;
        println!(
            "serve: {c} clients, {:.0}s: {} ok ({:.0} suggestions/s), p50 {:.2} ms, p99 {:.2} ms, {} shed (503), {} other errors, server RSS {:.0} MiB",
            p.seconds,
            p.ok,
            p.ok as f64 / p.seconds,
            pct(&p.latencies, 0.5) * 1e3,
            pct(&p.latencies, 0.99) * 1e3,
            p.shed,
            p.other,
            rss_mib(pid).unwrap_or(f64::NAN)
        );
    }
    let most = a.clients.iter().copied().max().unwrap_or(1);
    if a.overload > 0 {
        let c = most * a.overload;
        let p = phase(port, &bodies, c, a.seconds)?;
        println!(
            "overload: {c} clients ({}x), {:.0}s: {} ok ({:.0}/s), {} shed (503), {} other errors, p99 of answered {:.1} ms",
            a.overload,
            p.seconds,
            p.ok,
            p.ok as f64 / p.seconds,
            p.shed,
            p.other,
            pct(&p.latencies, 0.99) * 1e3
        );
    }
    if a.soak_seconds > 0.0 {
        let samples = (a.soak_seconds / 5.0).ceil().max(1.0) as usize;
        let mut rss = Vec::new();
        let (mut ok, mut shed, mut other) = (0, 0, 0);
        for _ in 0..samples {
            let p = phase(port, &bodies, most, a.soak_seconds / samples as f64)?;
            ok += p.ok;
            shed += p.shed;
            other += p.other;
            rss.push(rss_mib(pid).unwrap_or(f64::NAN));
        }
        let show: Vec<String> = rss.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "soak: {most} clients, {:.0}s: {ok} ok, {shed} shed, {other} other errors; server RSS (MiB) every {:.0}s: {}",
            a.soak_seconds,
            a.soak_seconds / samples as f64,
            show.join(" ")
        );
    }
    Ok(())
}
