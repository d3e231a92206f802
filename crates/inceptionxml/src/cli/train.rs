//! `inceptionxml train`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::train::{self, ModelOverrides, TrainConfig, TrainJob};
use xmc::dataset::XcDataset;

/// Flags of `inceptionxml train`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder (trn_X.txt, trn_X_Y.txt, optional tst_X.txt, tst_X_Y.txt, Y.txt).
    #[arg(long)]
    pub data: PathBuf,
    /// Model directory to write (config.json, weights.safetensors, vocab.txt, metrics.jsonl, ...).
    #[arg(long)]
    pub model: PathBuf,
    /// Passes over the training data [default: 42].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Rows per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate of the one-cycle schedule.
    #[arg(long, default_value_t = TrainConfig::default().lr_max)]
    pub lr: f64,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Word-embedding dimension.
    #[arg(long, default_value_t = 300)]
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
    /// Largest vocabulary.
    #[arg(long, default_value_t = TrainConfig::default().max_vocab)]
    pub max_vocab: usize,
    /// Train on the first N rows only.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Stop after N epochs of this session as if interrupted (continue with --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::set_threads(args.threads)?;
    let data = XcDataset::open(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    if args.resume {
        if let Some(e) = args.epochs {
            let saved = train::checkpoint::read_config(&args.model)?;
            anyhow::ensure!(
                e == saved.train.epochs,
                "--resume continues the saved schedule of {} epochs; --epochs {e} would change it",
                saved.train.epochs
            );
        }
    }
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(TrainConfig::default().epochs),
        batch_size: args.batch_size,
        lr_max: args.lr,
        seed: args.seed,
        eval_every: args.eval_every,
        max_vocab: args.max_vocab,
        max_train: args.max_train,
        embeddings: args.embeddings.clone(),
        ..TrainConfig::default()
    };
    let summary = train::train(&TrainJob {
        data: &data,
        out: &args.model,
        config,
        model: ModelOverrides {
            embed_dim: args.dim,
            dropout_ext: args.dropout_ext,
        },
        resume: args.resume,
        stop_after: args.stop_after,
        progress: !args.quiet,
    })?;
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
        println!("{}", super::format_metrics(&e.metrics));
    }
    println!("model saved to {}", dir.display());
}
