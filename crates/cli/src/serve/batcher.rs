//! Micro-batching: requests to one project wait in a bounded queue; a fixed pool of worker
//! threads (never the async runtime's) takes what is queued, up to `max_batch` texts, and ranks
//! it in one forward pass. When the queue is full a request is refused at once (the caller
//! answers 503): memory stays bounded under overload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inceptionxml::Model;
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// One ranked row: `(label, score)`, best first.
pub type Row = Vec<(u32, f32)>;

/// A job's rows and the model snapshot that produced them.
pub type Ranked = (Vec<Row>, Arc<Model>);

/// A request's texts and where its answer goes.
pub struct Job {
    pub texts: Vec<String>,
    /// Labels per text.
    pub limit: usize,
    /// Scores below this are left out.
    pub threshold: f32,
    /// The rows, with the model that ranked them (its labels name the rows' label ids).
    pub reply: oneshot::Sender<Result<Ranked, String>>,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchParams {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more requests while other requests are on their way.
    pub max_wait: Duration,
    /// Queued requests before new ones are refused.
    pub queue: usize,
    /// Worker threads of the project.
    pub workers: usize,
}

/// The queue and workers of one project.
pub struct Batcher {
    tx: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Requests queued and not yet taken by a worker.
    pub depth: Arc<AtomicUsize>,
    /// Requests between arrival and answer (the handler counts them); a worker waits for more
    /// only while some of them are not in its batch yet.
    pub in_flight: Arc<AtomicUsize>,
}

/// Why a job was not queued.
pub enum Refused {
    /// The queue is full.
    Full,
    /// The server is shutting down.
    Closed,
}

impl Batcher {
    /// Starts the workers of a project whose current model is `model`.
    pub fn start(
        project: &str,
        model: Arc<RwLock<Arc<Model>>>,
        params: BatchParams,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(params.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let workers = (0..params.workers.max(1))
            .map(|i| {
                let (rx, model, metrics) = (rx.clone(), model.clone(), metrics.clone());
                let (depth, in_flight) = (depth.clone(), in_flight.clone());
                std::thread::Builder::new()
                    .name(format!("{project}-worker-{i}"))
                    .spawn(move || {
                        // As rayon's workers (crate::common::set_threads): subnormals flushed.
                        inceptionxml::runtime::flush_denormals();
                        worker(&rx, &model, params, &metrics, &depth, &in_flight)
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Batcher {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            depth,
            in_flight,
        })
    }

    /// Queues `job`, or says why not (at once: never waits for room).
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(Refused::Closed);
        };
        self.depth.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => Refused::Full,
                    TrySendError::Disconnected(_) => Refused::Closed,
                })
            }
        }
    }

    /// Stops taking jobs, lets the workers finish what is queued, and joins them.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

fn worker(
    rx: &Mutex<Receiver<Job>>,
    model: &RwLock<Arc<Model>>,
    params: BatchParams,
    metrics: &Metrics,
    depth: &AtomicUsize,
    in_flight: &AtomicUsize,
) {
    loop {
        let mut jobs = Vec::new();
        {
            // One worker gathers a batch at a time; the others wait for the lock.
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = rx.recv() else {
                return; // closed and drained
            };
            depth.fetch_sub(1, Ordering::SeqCst);
            let mut texts = first.texts.len();
            jobs.push(first);
            let deadline = Instant::now() + params.max_wait;
            while texts < params.max_batch {
                // Take what is queued; wait only while more requests are on their way.
                let next = match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(_) if in_flight.load(Ordering::SeqCst) > jobs.len() => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        rx.recv_timeout(left).ok()
                    }
                    Err(_) => None,
                };
                let Some(j) = next else { break };
                depth.fetch_sub(1, Ordering::SeqCst);
                texts += j.texts.len();
                jobs.push(j);
            }
        }
        run_batch(jobs, model, metrics);
    }
}

/// Ranks every job's texts in one pass and answers each job.
fn run_batch(jobs: Vec<Job>, model: &RwLock<Arc<Model>>, metrics: &Metrics) {
    // The model as it is now: a reload swaps the Arc, never the model under a running batch.
    let ens = model.read().unwrap_or_else(|e| e.into_inner()).clone();
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    let k = jobs.iter().map(|j| j.limit).max().unwrap_or(1).max(1);
    metrics.observe_batch(texts.len());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let opts = inceptionxml::PredictOptions {
            batch_size: texts.len().max(1),
            ..Default::default()
        };
        ens.rank(&texts, k, &opts)
    }));
    let rows = match result {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            let msg = e.to_string();
            for j in jobs {
                let _ = j.reply.send(Err(msg.clone()));
            }
            return;
        }
        Err(_) => {
            for j in jobs {
                let _ = j.reply.send(Err("the model failed on this batch".into()));
            }
            return;
        }
    };
    let mut rows = rows.into_iter();
    for j in jobs {
        let mine: Vec<Row> = rows
            .by_ref()
            .take(j.texts.len())
            .map(|r| {
                r.into_iter()
                    .filter(|&(_, s)| s >= j.threshold)
                    .take(j.limit)
                    .collect()
            })
            .collect();
        // The client may have gone; nothing to do then.
        let _ = j.reply.send(Ok((mine, ens.clone())));
    }
}
