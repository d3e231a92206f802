//! Prometheus text exposition (`GET /metrics`): requests and errors by route and status, request
//! latency, batch sizes and queue depth.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];
/// Upper bounds of the batch-size histogram's buckets (texts per forward pass).
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A cumulative histogram.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in micro-units (µs for latency, texts for batches).
    sum: AtomicU64,
    count: AtomicU64,
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum
            .fetch_add((v * self.scale).round() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

/// The server's counters.
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Histogram,
    batches: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(&LATENCY_BUCKETS, 1e6),
            batches: Histogram::new(&BATCH_BUCKETS, 1.0),
        }
    }
}

impl Metrics {
    /// One answered request on `route` (the matched path pattern) with `status`.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.latency.observe(seconds);
    }

    /// One forward pass over `texts` texts.
    pub fn observe_batch(&self, texts: usize) {
        self.batches.observe(texts as f64);
    }

    /// Requests answered with `status` so far, over all routes.
    pub fn count_status(&self, status: u16) -> u64 {
        let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// The exposition text; `queues` gives each project's queue depth.
    pub fn render(&self, queues: &[(String, usize)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP inceptionxml_requests_total HTTP requests answered, by route and status.\n# TYPE inceptionxml_requests_total counter\n");
        let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "inceptionxml_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                route.replace(['"', '\\', '\n'], "_")
            );
        }
        out.push_str("# HELP inceptionxml_errors_total HTTP requests answered with a 4xx or 5xx status.\n# TYPE inceptionxml_errors_total counter\n");
        let errors: u64 = map
            .iter()
            .filter(|((_, s), _)| *s >= 400)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "inceptionxml_errors_total {errors}");
        drop(map);
        self.latency.render(
            &mut out,
            "inceptionxml_request_duration_seconds",
            "Time from request to response.",
        );
        self.batches.render(
            &mut out,
            "inceptionxml_batch_size",
            "Texts ranked per forward pass.",
        );
        out.push_str("# HELP inceptionxml_queue_depth Requests waiting for a worker.\n# TYPE inceptionxml_queue_depth gauge\n");
        for (p, d) in queues {
            let _ = writeln!(out, "inceptionxml_queue_depth{{project=\"{p}\"}} {d}");
        }
        out
    }
}
