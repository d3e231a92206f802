//! `inceptionxml bench`: training throughput and prediction latency / throughput, with peak
//! memory (VmHWM).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use candle_nn::VarMap;
use inceptionxml::model::{InceptionXml, ModelConfig};
use inceptionxml::ops::{Adam, AdamConsts, RowAdam};
use inceptionxml::predict::Predictor;
use inceptionxml::train::batches::{epoch_order, Batches};
use inceptionxml::train::epoch_loop::{dense_vars, train_step};
use inceptionxml::train::TrainConfig;
use xmc::dataset::XcDataset;
use xmc::vocab::Vocab;

#[derive(clap::Args)]
pub struct TrainBench {
    /// Dataset folder.
    #[arg(long, default_value = "data/cooking")]
    pub data: PathBuf,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 300)]
    pub dim: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(clap::Args)]
pub struct PredictBench {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Query texts, one per line.
    #[arg(long, default_value = "data/cooking/tst_X.txt")]
    pub texts: PathBuf,
    /// 1: per-query latency; larger: throughput in batches of this size.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Queries to time (at most the number of texts).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn rss() -> String {
    crate::cli::peak_rss_mib().map_or("n/a".into(), |m| format!("{m:.0} MiB"))
}

pub fn bench_train(a: TrainBench) -> anyhow::Result<()> {
    crate::cli::set_threads(a.threads)?;
    anyhow::ensure!(a.steps > 0, "--steps must be > 0");
    anyhow::ensure!(a.batch_size >= 2, "--batch-size must be >= 2");
    let data = XcDataset::open(&a.data)
        .with_context(|| format!("reading dataset {}", a.data.display()))?;
    let cfg = TrainConfig::default();
    let tokens = xmc::text::tokenize_all(&data.train.texts);
    let vocab = Vocab::build(&tokens, cfg.max_vocab, cfg.min_count);
    let mut mcfg = ModelConfig::new(vocab.len(), data.n_labels);
    mcfg.embed_dim = a.dim;
    mcfg.validate()?;
    let ids = Arc::new(vocab.encode_all(&data.train.texts, mcfg.seq_len));
    let labels = Arc::new(data.train.labels.clone());
    let varmap = VarMap::new();
    let model = InceptionXml::new(&mcfg, &varmap, &Device::Cpu, 0)?;
    let (table, _) = xmc::embeddings::init_table(&vocab, a.dim, None, 0)?;
    model.set_embeddings(&table)?;
    let mut adam = Adam::new(dense_vars(&model), AdamConsts::default())?;
    let mut rows = RowAdam::new(mcfg.vocab_size, a.dim, AdamConsts::default());
    let n = data.train.texts.len();
    let mut times = Vec::with_capacity(a.steps);
    let mut done = 0usize;
    let t_all = Instant::now();
    'outer: for epoch in 0.. {
        let batches = Batches::new(
            ids.clone(),
            mcfg.seq_len,
            labels.clone(),
            epoch_order(n, 0, epoch),
            a.batch_size,
            Device::Cpu,
        );
        for batch in batches {
            let batch = batch?;
            if batch.len != a.batch_size {
                continue; // time full batches only
            }
            let t = Instant::now();
            train_step(
                &model,
                &mut adam,
                &mut rows,
                &batch,
                cfg.lr_max,
                cfg.beta1_max,
            )?;
            if done >= a.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            done += 1;
            if times.len() == a.steps {
                break 'outer;
            }
        }
    }
    let med = super::median(&mut times);
    println!(
        "bench train: {} labels, d {}, batch {}, {} timed steps after {} warm-up: median step {:.1} ms, {:.0} samples/s (wall {:.1}s), peak RSS {}",
        mcfg.n_labels,
        a.dim,
        a.batch_size,
        times.len(),
        a.warmup,
        med * 1e3,
        a.batch_size as f64 / med,
        t_all.elapsed().as_secs_f64(),
        rss()
    );
    Ok(())
}

pub fn bench_predict(a: PredictBench) -> anyhow::Result<()> {
    crate::cli::set_threads(a.threads)?;
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be > 0");
    anyhow::ensure!(a.top_k > 0, "--top-k must be > 0");
    let p = Predictor::load(&a.model)?;
    let mut texts = xmc::texts::read_texts(&a.texts)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no texts", a.texts.display());
    texts.truncate(a.queries.max(1));
    if a.batch_size == 1 {
        for t in texts.iter().take(10) {
            p.predict_one(t, a.top_k)?; // warm-up
        }
        let mut lat = Vec::with_capacity(texts.len());
        let t_all = Instant::now();
        for t in &texts {
            let t0 = Instant::now();
            p.predict_one(t, a.top_k)?;
            lat.push(t0.elapsed().as_secs_f64());
        }
        let total = t_all.elapsed().as_secs_f64();
        let med = super::median(&mut lat);
        println!(
            "bench predict: batch 1, {} queries, top-{}: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, {:.0} queries/s, peak RSS {}",
            lat.len(),
            a.top_k,
            med * 1e3,
            percentile(&lat, 0.9) * 1e3,
            percentile(&lat, 0.99) * 1e3,
            lat.len() as f64 / total,
            rss()
        );
    } else {
        let warm = texts.len().min(a.batch_size);
        p.predict_texts(&texts[..warm], a.top_k, a.batch_size)?;
        let t0 = Instant::now();
        let rows = p.predict_texts(&texts, a.top_k, a.batch_size)?;
        let total = t0.elapsed().as_secs_f64();
        println!(
            "bench predict: batch {}, {} queries, top-{}: {:.0} queries/s ({:.2} ms per batch), peak RSS {}",
            a.batch_size,
            rows.len(),
            a.top_k,
            rows.len() as f64 / total,
            total * 1e3 / rows.len().div_ceil(a.batch_size) as f64,
            rss()
        );
    }
    Ok(())
}
