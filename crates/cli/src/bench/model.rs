//! `inceptionxml bench`: training throughput and prediction latency / throughput, with peak
//! memory (VmHWM).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use inceptionxml::config::{ClusterSource, ModelParams, PlusParams, ScoreMode, TrainConfig};
use inceptionxml::profile::Stage;
use inceptionxml::train::batches::{epoch_order, Batches};
use inceptionxml::train::{train_step, Setup, TrainEvent};
use inceptionxml::{LoadOptions, Model, PredictOptions};
use xmc::dataset::XcDataset;

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
    #[arg(long, default_value_t = inceptionxml::config::DEFAULT_EMBED_DIM)]
    pub dim: usize,
    #[command(flatten)]
    pub run: crate::common::RunArgs,
    /// InceptionXML+ steps (meta head, shortlist, candidate scoring, lazy table updates).
    #[command(flatten)]
    pub plus: crate::common::PlusArgs,
    /// The implementation of the encoder and the classifier + BCE on the CPU: the fused ops, or
    /// candle's composed ops (the reference, and the path other devices take).
    #[arg(long, value_enum, default_value_t = EncoderPath::Fused)]
    pub encoder: EncoderPath,
}

/// Which encoder implementation a CPU benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EncoderPath {
    Fused,
    Composed,
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
    #[command(flatten)]
    pub run: crate::common::RunArgs,
    /// InceptionXML+ ranking [default: the model's].
    /// `extreme` or `combined`.
    #[arg(long)]
    pub score: Option<ScoreMode>,
    /// Score small batches (at most 8 texts) exactly in f32 instead of with the int8 indexes
    /// (output layer; InceptionXML+: meta classifier and label table), which pre-rank every label
    /// and rescore the best exactly. CPU only.
    #[arg(long)]
    pub exact: bool,
    /// Also print the time of each prediction stage per batch.
    #[arg(long)]
    pub profile: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `, GPU memory in use …` on a CUDA device (the whole device, as the driver reports it).
fn gpu_mem(device: &Device) -> String {
    match inceptionxml::device::gpu_memory_used(device) {
        Some(b) => format!(
            ", GPU memory in use {:.0} MiB",
            b as f64 / (1u64 << 20) as f64
        ),
        None => String::new(),
    }
}

fn rss() -> String {
    crate::common::peak_rss_mib().map_or("n/a".into(), |m| format!("{m:.0} MiB"))
}

/// Best-of-5 GFLOP/s of a 1024³ f32 matrix product with candle (the `gemm` kernels the model
/// uses) on this device: the practical roofline for the profile.
fn gemm_peak(device: &Device) -> anyhow::Result<f64> {
    let n = 1024;
    let a = candle_core::Tensor::rand(-1f32, 1f32, (n, n), device)?;
    let b = candle_core::Tensor::rand(-1f32, 1f32, (n, n), device)?;
    let mut best = f64::MAX;
    for _ in 0..6 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(c);
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// `bench profile`: the training benchmark with the time of every stage of the step.
pub fn bench_profile(a: TrainBench) -> anyhow::Result<()> {
    bench_train_with(a, true)
}

pub fn bench_train(a: TrainBench) -> anyhow::Result<()> {
    bench_train_with(a, false)
}

fn bench_train_with(a: TrainBench, profile: bool) -> anyhow::Result<()> {
    crate::common::set_threads(a.run.threads.threads)?;
    anyhow::ensure!(a.steps > 0, "--steps must be > 0");
    anyhow::ensure!(a.batch_size >= 2, "--batch-size must be >= 2");
    let data = XcDataset::open(&a.data)
        .with_context(|| format!("reading dataset {}", a.data.display()))?;
    let cfg = TrainConfig {
        batch_size: a.batch_size,
        ..TrainConfig::default()
    };
    let params = ModelParams {
        embed_dim: a.dim,
        dropout_ext: None,
        plus: a.plus.plus.then(|| PlusParams {
            clusters: ClusterSource::from_arg(a.plus.clusters.as_deref()),
            top_k: a.plus.top_k,
            hidden_dim: a.plus.hidden_dim,
            dropout_meta: None,
        }),
        subwords: None,
    };
    let device = a.run.device.open()?;
    // The same setup as `train` (vocabulary, clusters, model, optimisers), seed 0.
    let mut s = Setup::fresh(&data, cfg.clone(), &params, &device, &mut |e| {
        if let TrainEvent::Clustered {
            clusters, seconds, ..
        } = e
        {
            println!("clusters: {clusters} in {seconds:.1}s");
        }
    })?;
    s.opt.make_resident();
    s.model.set_fused(a.encoder == EncoderPath::Fused);
    let mcfg = s.config.model.clone();
    let rss_model = crate::common::current_rss_mib();
    let n = s.n_train;
    let mut times = Vec::with_capacity(a.steps);
    let mut loader_wait = 0f64;
    let mut done = 0usize;
    let (mut cands, mut touched) = (0usize, 0usize);
    let t_all = Instant::now();
    'outer: for epoch in 0.. {
        let batches = Batches::new(
            (s.train_ids.clone(), s.train_subwords.clone()),
            mcfg.seq_len,
            s.train_labels.clone(),
            epoch_order(n, 0, epoch),
            a.batch_size,
            s.index.clone(),
            device.clone(),
        );
        let mut batches = batches.into_iter();
        loop {
            let t_wait = Instant::now();
            let Some(batch) = batches.next() else { break };
            let batch = batch?;
            if batch.len != a.batch_size {
                continue; // time full batches only
            }
            if done >= a.warmup {
                loader_wait += t_wait.elapsed().as_secs_f64();
            }
            inceptionxml::profile::enable(profile && done >= a.warmup);
            let t = Instant::now();
            let (_, st) = train_step(
                &s.model,
                &mut s.opt,
                &batch,
                cfg.lr_max,
                cfg.beta1_max,
                false,
            )?;
            if done >= a.warmup {
                cands += st.candidates;
                touched += st.touched_rows;
            }
            device.synchronize()?; // GPU work is queued: time it to completion
            if done >= a.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            done += 1;
            if times.len() == a.steps {
                break 'outer;
            }
        }
    }
    inceptionxml::profile::enable(false);
    let mean_step = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let med = super::median(&mut times);
    println!(
        "bench train: {}, {} labels, d {}, batch {}, {} timed steps after {} warm-up: median step {:.1} ms, {:.0} samples/s (wall {:.1}s), peak RSS {}{}",
        inceptionxml::device::describe(&device),
        mcfg.n_labels,
        a.dim,
        a.batch_size,
        times.len(),
        a.warmup,
        med * 1e3,
        a.batch_size as f64 / med,
        t_all.elapsed().as_secs_f64(),
        rss(),
        gpu_mem(&device)
    );
    if profile {
        let dims = inceptionxml::ops::host::encoder::Dims::new(
            a.batch_size,
            mcfg.seq_len,
            mcfg.embed_dim,
            mcfg.filters,
        )?;
        // Words per text (up to the last non-padding id) over the training rows.
        let lens = inceptionxml::model::fused::text_lengths(&s.train_ids, mcfg.seq_len);
        let words = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
        println!("profile: {words:.2} words per text (padding rows are skipped)");
        if a.encoder == EncoderPath::Composed {
            println!(
                "profile: composed ops: the encoder's backward runs inside \"heads backward\" (one candle backward)"
            );
        }
        print_profile(
            &inceptionxml::profile::take(),
            times.len(),
            mean_step,
            loader_wait,
            &dims.macs(words),
            gemm_peak(&device)?,
        );
    }
    if let Some(p) = &mcfg.plus {
        let t = times.len().max(1) as f64;
        // Bytes of the tables and their optimiser state (f32): word table + moments, label
        // table + moments, meta classifier + gradient + moments.
        let words = 3 * mcfg.vocab_size * a.dim * 4;
        let label_tab = 3 * mcfg.n_labels * p.hidden_dim * 4;
        let meta = 4 * p.n_clusters * (p.hidden_dim + 1) * 4;
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        println!(
            "plus: C {}, K {}, hd {}: {:.0} candidates/row, {:.0} label rows updated/step; tables: words {:.0} MiB, labels {:.0} MiB ({} B/label), meta {:.0} MiB; RSS with model, tables and optimiser state resident {}, peak {}",
            p.n_clusters,
            p.top_k,
            p.hidden_dim,
            cands as f64 / t / a.batch_size as f64,
            touched as f64 / t,
            mib(words),
            mib(label_tab),
            3 * p.hidden_dim * 4,
            mib(meta),
            rss_model.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
            rss()
        );
    }
    Ok(())
}

/// The stage table of `bench profile`: milliseconds per step, share of the step, and for the
/// encoder's matrix-product stages GFLOP per step, GFLOP/s and the share of the GEMM peak.
fn print_profile(
    spans: &[(Stage, std::time::Duration, u64)],
    steps: usize,
    mean_step: f64,
    loader_wait: f64,
    macs: &[(Stage, f64)],
    peak: f64,
) {
    let steps = steps.max(1) as f64;
    println!(
        "profile: mean step {:.1} ms over {} steps; GEMM peak here {:.0} GFLOP/s (best 1024³ f32 product)",
        mean_step * 1e3,
        steps,
        peak
    );
    println!(
        "{:<36} {:>9} {:>7} {:>11} {:>9} {:>8}",
        "stage", "ms/step", "share", "GFLOP/step", "GFLOP/s", "of peak"
    );
    let row = |name: &str, secs: f64, indent: bool| {
        let ms = secs / steps * 1e3;
        let label = if indent {
            format!("  {name}")
        } else {
            name.to_string()
        };
        let mut line = format!(
            "{:<36} {:>9.2} {:>6.1}%",
            label,
            ms,
            100.0 * secs / steps / mean_step
        );
        if let Some((_, m)) = macs.iter().find(|(n, _)| n.name() == name) {
            let gflop = 2.0 * m / 1e9;
            let rate = gflop / (ms / 1e3);
            line += &format!(
                " {:>11.2} {:>9.1} {:>7.0}%",
                gflop,
                rate,
                100.0 * rate / peak
            );
        }
        println!("{line}");
    };
    row("loader wait", loader_wait, false);
    let mut accounted = 0.0;
    for (stage, dt, _) in spans {
        let top = stage.is_top();
        if top {
            accounted += dt.as_secs_f64();
        }
        row(stage.name(), dt.as_secs_f64(), !top);
    }
    row(
        "other (outside the stages)",
        (mean_step * steps - accounted).max(0.0),
        false,
    );
    if spans
        .iter()
        .any(|(stage, _, _)| stage.name().starts_with('‖'))
    {
        println!(
            "(stages marked ‖ run at the same time as the other side of their stage: their times overlap)"
        );
    }
}

pub fn bench_predict(a: PredictBench) -> anyhow::Result<()> {
    crate::common::set_threads(a.run.threads.threads)?;
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be > 0");
    anyhow::ensure!(a.top_k > 0, "--top-k must be > 0");
    let device = a.run.device.open()?;
    let load = LoadOptions {
        device: a.run.device.device,
        exact: a.exact,
        threads: a.run.threads.threads,
    };
    let p = Model::load_with(std::slice::from_ref(&a.model), &load)?;
    let opts = PredictOptions {
        batch_size: a.batch_size,
        score: a.score,
        ..PredictOptions::default()
    };
    let mut texts = xmc::texts::read_texts(&a.texts)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no texts", a.texts.display());
    texts.truncate(a.queries.max(1));
    if a.batch_size == 1 {
        for t in texts.iter().take(10) {
            p.rank_one(t, a.top_k, a.score)?; // warm-up
        }
        let mut lat = Vec::with_capacity(texts.len());
        inceptionxml::profile::enable(a.profile);
        let t_all = Instant::now();
        for t in &texts {
            let t0 = Instant::now();
            p.rank_one(t, a.top_k, a.score)?;
            lat.push(t0.elapsed().as_secs_f64());
        }
        let total = t_all.elapsed().as_secs_f64();
        inceptionxml::profile::enable(false);
        let med = super::median(&mut lat);
        println!(
            "bench predict: {}, batch 1, {} queries, top-{}: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, {:.0} queries/s, peak RSS {}{}",
            inceptionxml::device::describe(&device),
            lat.len(),
            a.top_k,
            med * 1e3,
            percentile(&lat, 0.9) * 1e3,
            percentile(&lat, 0.99) * 1e3,
            lat.len() as f64 / total,
            rss(),
            gpu_mem(&device)
        );
    } else {
        let warm = texts.len().min(a.batch_size);
        p.rank(&texts[..warm], a.top_k, &opts)?;
        inceptionxml::profile::enable(a.profile);
        let t0 = Instant::now();
        let rows = p.rank(&texts, a.top_k, &opts)?;
        let total = t0.elapsed().as_secs_f64();
        inceptionxml::profile::enable(false);
        println!(
            "bench predict: {}, batch {}, {} queries, top-{}: {:.0} queries/s ({:.2} ms per batch), peak RSS {}{}",
            inceptionxml::device::describe(&device),
            a.batch_size,
            rows.len(),
            a.top_k,
            rows.len() as f64 / total,
            total * 1e3 / rows.len().div_ceil(a.batch_size) as f64,
            rss(),
            gpu_mem(&device)
        );
    }
    if a.profile {
        let batches = texts.len().div_ceil(a.batch_size) as f64;
        for (name, dt, _) in inceptionxml::profile::take() {
            println!(
                "  {name:<36} {:>8.3} ms per batch",
                dt.as_secs_f64() * 1e3 / batches
            );
        }
    }
    Ok(())
}
