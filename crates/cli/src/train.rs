//! `inceptionxml train`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::config::{
    ClusterSource, ModelParams, OutputBias, PlusParams, Preset, TrainConfig,
};
use inceptionxml::model_dir;
use inceptionxml::train::{self, TrainJob};
use xmc::dataset::XcDataset;

use crate::progress::Progress;

/// Flags of `inceptionxml train`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder (trn_X.txt, trn_X_Y.txt, optional tst_X.txt, tst_X_Y.txt, Y.txt).
    #[arg(long)]
    pub data: PathBuf,
    /// Model directory to write (config.json, weights.safetensors, vocab.txt, metrics.jsonl, ...).
    #[arg(long)]
    pub model: PathBuf,
    /// Passes over the training data [default: by the rows trained on (after the validation
    /// hold-out): 20 up to 200,000 rows, the paper's 42 from 485,176 (AmazonTitles-670K's
    /// training split), linear between; with --plus 16 and 35].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Rows per optimiser step [default: 128; 256 with --plus].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of the one-cycle schedule [default: 0.005; 0.008 with --plus].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Train InceptionXML+ (meta head over label clusters, extreme head over each row's
    /// shortlisted clusters) instead of the full one-vs-all head.
    #[arg(long)]
    pub plus: bool,
    /// With --plus: a label -> cluster file (from `inceptionxml cluster`), or a number of
    /// clusters (a power of two) to compute from the training data [default: L/10 as a power
    /// of two].
    #[arg(long, requires = "plus")]
    pub clusters: Option<String>,
    /// With --plus: clusters shortlisted per text, K [default: C/64 within 128..=800, at most C].
    #[arg(long, requires = "plus")]
    pub top_k: Option<usize>,
    /// With --plus: share of the epochs during which the encoder is detached from the extreme
    /// head.
    /// [default: 0.25]
    #[arg(long, requires = "plus")]
    pub detach_fraction: Option<f64>,
    /// With --plus: hidden width of the heads [default: 480, the encoder's output].
    #[arg(long, requires = "plus")]
    pub hidden_dim: Option<usize>,
    /// With --plus: dropout before the meta classifier [default: 0.3].
    #[arg(long, requires = "plus")]
    pub dropout_meta: Option<f32>,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Word-embedding dimension.
    /// [default: 300]
    #[arg(long)]
    pub dim: Option<usize>,
    /// Dropout before the L-way classifier [default: 0.5].
    #[arg(long)]
    pub dropout_ext: Option<f32>,
    /// Seed of shuffles and initialisation.
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate on the test split every N epochs (0: only after the last).
    /// [default: 1]
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Share of the training rows held out as a validation split (the same rows whatever
    /// --seed, so that runs to be ensembled share it), evaluated after
    /// every epoch (whatever --eval-every); InceptionXML+ chooses its ranking (extreme or combined) on it, never on the test
    /// split. 0: none.
    /// [default: 0; 0.05 with --plus]
    #[arg(long)]
    pub valid_fraction: Option<f64>,
    /// Plain InceptionXML: the classifier's initial bias, each label's log prior odds in the
    /// training rows, or zero (the authors' code; slower to start, and behind the prior on two of
    /// the three datasets measured, docs/BENCHMARKS.md).
    /// [default: prior]
    #[arg(long, value_enum, conflicts_with = "plus")]
    pub output_bias: Option<OutputBiasArg>,
    /// Continue the run saved in --model (same schedule and step count).
    #[arg(long)]
    pub resume: bool,
    /// Replace a model already in --model (it stays complete and usable until the new model's
    /// first epoch is saved).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Largest vocabulary.
    /// [default: 200000]
    #[arg(long)]
    pub max_vocab: Option<usize>,
    /// Train on the first N rows only.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Stop after N epochs of this session as if interrupted (continue with --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub device: crate::common::DeviceArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

/// `--output-bias`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputBiasArg {
    Zero,
    Prior,
}

impl From<OutputBiasArg> for OutputBias {
    fn from(a: OutputBiasArg) -> Self {
        match a {
            OutputBiasArg::Zero => OutputBias::Zero,
            OutputBiasArg::Prior => OutputBias::Prior,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.threads)?;
    let data = XcDataset::open(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    if args.resume {
        let saved = model_dir::read_config(&args.model)?;
        let changed = changed_on_resume(&args, &saved);
        anyhow::ensure!(
            changed.is_empty(),
            "--resume continues the saved run with its own settings; these flags would change it: {}",
            changed.join(", ")
        );
    }
    let plus = args.plus.then(|| PlusParams {
        clusters: ClusterSource::from_arg(args.clusters.as_deref()),
        top_k: args.top_k,
        hidden_dim: args.hidden_dim,
        dropout_meta: args.dropout_meta,
    });
    let kind = if args.plus {
        Preset::Plus
    } else {
        Preset::Plain
    };
    let preset = TrainConfig::preset(kind);
    let mut config = TrainConfig {
        batch_size: args.batch_size.unwrap_or(preset.batch_size),
        lr_max: args.lr.unwrap_or(preset.lr_max),
        detach_fraction: args.detach_fraction.unwrap_or(preset.detach_fraction),
        seed: args.seed.unwrap_or(preset.seed),
        eval_every: args.eval_every.unwrap_or(preset.eval_every),
        max_vocab: args.max_vocab.unwrap_or(preset.max_vocab),
        max_train: args.max_train,
        valid_fraction: args.valid_fraction.unwrap_or(preset.valid_fraction),
        embeddings: args.embeddings.clone(),
        output_bias: args
            .output_bias
            .map_or(preset.output_bias, OutputBias::from),
        ..preset
    };
    if let Some(e) = args.epochs {
        config.epochs = e;
    } else if !args.resume {
        let rows = config.n_train_rows(data.train.len());
        config.epochs = kind.epochs_for(rows);
        if !args.quiet {
            println!(
                "epochs {} (the default for {rows} training rows; --epochs to change)",
                config.epochs
            );
        }
    }
    let mut progress = Progress::new(!args.quiet);
    let summary = train::train(
        &TrainJob {
            data: &data,
            out: &args.model,
            config,
            model: ModelParams {
                embed_dim: args.dim.unwrap_or(inceptionxml::config::DEFAULT_EMBED_DIM),
                dropout_ext: args.dropout_ext,
                plus,
            },
            resume: args.resume,
            force: args.force,
            stop_after: args.stop_after,
            device: args.device.open()?,
        },
        &mut |e| progress.on_event(e),
    )?;
    print_summary(&summary, &args.model);
    write_curves(&args.model);
    Ok(())
}

/// Draws the run's curves into `curves.png` in the model directory; a failure is reported, not
/// fatal (the model is saved).
fn write_curves(dir: &std::path::Path) {
    let out = dir.join("curves.png");
    let drawn =
        crate::plot::read_run(dir).and_then(|run| crate::plot::draw(&[run], &out, (1500, 500)));
    match drawn {
        Ok(()) => println!("curves drawn in {}", out.display()),
        Err(e) => eprintln!("warning: no curves: {e:#}"),
    }
}

/// The end-of-training report on standard output.
pub fn print_summary(s: &train::TrainSummary, dir: &std::path::Path) {
    if let Some(c) = &s.coverage {
        println!("embeddings: {c}");
    }
    println!(
        "trained {} epochs ({} steps) on {} rows, vocabulary {}, {:.1}s training, {:.0} samples/s",
        s.epochs_done, s.steps, s.n_train, s.vocab_size, s.train_s, s.samples_per_s
    );
    if let Some(v) = &s.last_valid {
        println!(
            "validation metrics ({} rows held out of training) after epoch {}:",
            s.n_valid, v.epoch
        );
        println!("{}", crate::common::format_metrics(&v.metrics));
    }
    if let Some(e) = &s.last_eval {
        println!("test metrics after epoch {}:", e.epoch);
        println!("{}", crate::common::format_metrics(&e.metrics));
        if let Some(p) = &e.plus {
            println!(
                "ranking {}; meta P@1 {:.2}; shortlist recall@{} {:.2}",
                p.score,
                p.meta_p1 * 100.0,
                p.top_k,
                p.shortlist_recall * 100.0
            );
        }
    }
    println!("model saved to {}", dir.display());
}

/// The flags given with `--resume` whose values differ from the saved run's (a resumed run keeps
/// its own settings: silently ignoring a changed flag would mislead).
fn changed_on_resume(a: &Args, saved: &model_dir::ModelDirConfig) -> Vec<String> {
    let (t, m) = (&saved.train, &saved.model);
    let p = m.plus.as_ref();
    let mut out = Vec::new();
    let mut check = |flag: &str, given: Option<String>, was: String| {
        if let Some(g) = given {
            if g != was {
                out.push(format!("{flag} {g} (saved {was})"));
            }
        }
    };
    let s = |v: &dyn std::fmt::Display| v.to_string();
    check("--epochs", a.epochs.map(|v| s(&v)), s(&t.epochs));
    check(
        "--batch-size",
        a.batch_size.map(|v| s(&v)),
        s(&t.batch_size),
    );
    check("--lr", a.lr.map(|v| s(&v)), s(&t.lr_max));
    check("--dim", a.dim.map(|v| s(&v)), s(&m.embed_dim));
    check("--seed", a.seed.map(|v| s(&v)), s(&t.seed));
    check(
        "--eval-every",
        a.eval_every.map(|v| s(&v)),
        s(&t.eval_every),
    );
    check(
        "--valid-fraction",
        a.valid_fraction.map(|v| s(&v)),
        s(&t.valid_fraction),
    );
    check(
        "--output-bias",
        a.output_bias.map(|v| s(&OutputBias::from(v).name())),
        s(&t.output_bias.name()),
    );
    check("--max-vocab", a.max_vocab.map(|v| s(&v)), s(&t.max_vocab));
    check(
        "--max-train",
        a.max_train.map(|v| s(&v)),
        t.max_train.map_or("all".into(), |v| s(&v)),
    );
    check(
        "--dropout-ext",
        a.dropout_ext.map(|v| s(&v)),
        s(&m.dropout_ext),
    );
    check(
        "--embeddings",
        a.embeddings.as_ref().map(|v| v.display().to_string()),
        t.embeddings
            .as_ref()
            .map_or("none".into(), |v| v.display().to_string()),
    );
    check(
        "--detach-fraction",
        a.detach_fraction.map(|v| s(&v)),
        s(&t.detach_fraction),
    );
    let plus = |f: fn(&inceptionxml::config::PlusConfig) -> String| p.map_or("none".into(), f);
    check(
        "--plus",
        a.plus.then(|| "on".into()),
        p.map_or("off".into(), |_| "on".into()),
    );
    check(
        "--top-k",
        a.top_k.map(|v| s(&v)),
        plus(|p| p.top_k.to_string()),
    );
    check(
        "--hidden-dim",
        a.hidden_dim.map(|v| s(&v)),
        plus(|p| p.hidden_dim.to_string()),
    );
    check(
        "--dropout-meta",
        a.dropout_meta.map(|v| s(&v)),
        plus(|p| p.dropout_meta.to_string()),
    );
    check(
        "--clusters",
        a.clusters.clone().filter(|c| c.parse::<usize>().is_ok()),
        plus(|p| p.n_clusters.to_string()),
    );
    out
}
