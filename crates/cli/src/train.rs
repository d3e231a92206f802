//! `inceptionxml train`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::config::{ClusterSource, ModelParams, PlusParams, Preset, TrainConfig};
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
    /// Passes over the training data [default: 42; 35 with --plus].
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
    /// With --plus: clusters shortlisted per text, K [default: C/64 within 16..=800].
    #[arg(long, requires = "plus")]
    pub top_k: Option<usize>,
    /// With --plus: share of the epochs during which the encoder is detached from the extreme
    /// head.
    #[arg(long, requires = "plus", default_value_t = TrainConfig::default().detach_fraction)]
    pub detach_fraction: f64,
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
    #[arg(long, default_value_t = inceptionxml::config::DEFAULT_EMBED_DIM)]
    pub dim: usize,
    /// Dropout before the L-way classifier [default: 0.5].
    #[arg(long)]
    pub dropout_ext: Option<f32>,
    /// Seed of shuffles and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate on the test split every N epochs (0: only after the last).
    #[arg(long, default_value_t = 1)]
    pub eval_every: usize,
    /// Continue the run saved in --model (same schedule and step count).
    #[arg(long)]
    pub resume: bool,
    /// Replace a model already in --model (it stays complete and usable until the new model's
    /// first epoch is saved).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Largest vocabulary.
    #[arg(long, default_value_t = TrainConfig::default().max_vocab)]
    pub max_vocab: usize,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.threads)?;
    let data = XcDataset::open(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    if args.resume {
        if let Some(e) = args.epochs {
            let saved = model_dir::read_config(&args.model)?;
            anyhow::ensure!(
                e == saved.train.epochs,
                "--resume continues the saved schedule of {} epochs; --epochs {e} would change it",
                saved.train.epochs
            );
        }
    }
    let plus = args.plus.then(|| PlusParams {
        clusters: ClusterSource::from_arg(args.clusters.as_deref()),
        top_k: args.top_k,
        hidden_dim: args.hidden_dim,
        dropout_meta: args.dropout_meta,
    });
    let preset = TrainConfig::preset(if args.plus {
        Preset::Plus
    } else {
        Preset::Plain
    });
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(preset.epochs),
        batch_size: args.batch_size.unwrap_or(preset.batch_size),
        lr_max: args.lr.unwrap_or(preset.lr_max),
        detach_fraction: args.detach_fraction,
        seed: args.seed,
        eval_every: args.eval_every,
        max_vocab: args.max_vocab,
        max_train: args.max_train,
        embeddings: args.embeddings.clone(),
        ..preset
    };
    let mut progress = Progress::new(!args.quiet);
    let summary = train::train(
        &TrainJob {
            data: &data,
            out: &args.model,
            config,
            model: ModelParams {
                embed_dim: args.dim,
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
    Ok(())
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
