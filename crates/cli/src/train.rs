//! `inceptionxml train`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::api::TrainDefaults;
use inceptionxml::config::{OutputBias, Preset, MID_TRAIN_ROWS, PAPER_TRAIN_ROWS};
use inceptionxml::train;
use inceptionxml::{SparseMode, TrainOptions};
use xmc::dataset::XcDataset;

use crate::common::{with_default, PlusArgs, RunArgs};
use crate::progress::Progress;

use crate::common::outln;

/// Flags of `inceptionxml train`: the library's [`TrainOptions`], whose defaults the help texts
/// quote.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder (trn_X.txt, trn_X_Y.txt, optional tst_X.txt, tst_X_Y.txt, Y.txt).
    #[arg(long)]
    pub data: PathBuf,
    /// Model directory to write (config.json, weights.safetensors, vocab.txt, metrics.jsonl, ...).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, help = epochs_help())]
    pub epochs: Option<usize>,
    #[arg(long, help = by_kind("Rows per optimiser step", |c| c.batch_size))]
    pub batch_size: Option<usize>,
    #[arg(long, help = by_kind("Peak learning rate of the one-cycle schedule", |c| c.lr_max))]
    pub lr: Option<f64>,
    #[command(flatten)]
    pub plus: PlusArgs,
    #[arg(long, requires = "plus", help = with_default(
        "With --plus: share of the epochs during which the encoder is detached from the extreme head.",
        TrainDefaults::get().plus.detach_fraction))]
    pub detach_fraction: Option<f64>,
    #[arg(long, requires = "plus", help = with_default(
        "With --plus: dropout before the meta classifier", TrainDefaults::get().dropout_meta))]
    pub dropout_meta: Option<f32>,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    #[arg(long, conflicts_with_all = ["embeddings", "no_corpus_vectors"], help = with_default(
        "Without --embeddings: start the word table from vectors trained on the training texts \
         first (as `inceptionxml vectors` trains them)",
        TrainDefaults::get().corpus_vectors))]
    pub corpus_vectors: bool,
    /// Start the word table from random vectors (no --embeddings)
    #[arg(long)]
    pub no_corpus_vectors: bool,
    #[arg(long, help = with_default("Word-embedding dimension.", TrainDefaults::get().embed_dim))]
    pub dim: Option<usize>,
    #[arg(long, help = with_default(
        "Dropout before the L-way classifier", TrainDefaults::get().dropout_ext))]
    pub dropout_ext: Option<f32>,
    #[arg(long, help = with_default(
        "Seed of shuffles and initialisation.", TrainDefaults::get().plain.seed))]
    pub seed: Option<u64>,
    #[arg(long, help = with_default(
        "Evaluate on the test split every N epochs (0: only after the last).",
        TrainDefaults::get().plain.eval_every))]
    pub eval_every: Option<usize>,
    #[arg(long, help = by_kind(
        "Share of the training rows held out as a validation split (the same rows whatever \
         --seed, so that runs to be ensembled share it), evaluated after every epoch (whatever \
         --eval-every); InceptionXML+ chooses its ranking (extreme or combined) on it, never on \
         the test split. 0: none.",
        |c| c.valid_fraction))]
    pub valid_fraction: Option<f64>,
    #[arg(long, value_enum, conflicts_with = "plus", help = with_default(
        "Plain InceptionXML: the classifier's initial bias, each label's log prior odds in the \
         training rows, or zero (the authors' code; slower to start, and behind the prior on two \
         of the three datasets measured, docs/BENCHMARKS.md).",
        TrainDefaults::get().plain.output_bias.name()))]
    pub output_bias: Option<OutputBiasArg>,
    /// Continue the run saved in --model (same schedule and step count).
    #[arg(long)]
    pub resume: bool,
    /// Replace a model already in --model (it stays complete and usable until the new model's
    /// first epoch is saved).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    #[arg(long, help = with_default("Largest vocabulary.", TrainDefaults::get().plain.max_vocab))]
    pub max_vocab: Option<usize>,
    /// Train on the first N rows only.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Stop after N epochs of this session as if interrupted (continue with --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Train only the sparse lexical model (TF-IDF word uni- and bigrams over a tree of linear
    /// classifiers, as Parabel and omikuji): minutes, no network. By default it is trained after
    /// the network and fused with it, the weight chosen on the validation split
    #[arg(long, conflicts_with_all = ["no_sparse", "resume", "plus"])]
    pub sparse: bool,
    /// The network alone, without the fused sparse model
    #[arg(long)]
    pub no_sparse: bool,
    #[arg(long, help = with_default("Trees of the sparse model (scores averaged)",
        xmc::tree::SparseParams::DEFAULT.n_trees))]
    pub sparse_trees: Option<usize>,
    #[arg(long, help = with_default(
        "Character n-grams of every word as features of the sparse model too (fastText's \
         subwords, for inflected and compound words; 0: words and word pairs only)",
        xmc::tree::SparseParams::DEFAULT.char_ngrams))]
    pub sparse_char_ngrams: Option<usize>,
    #[arg(long, help = with_default(
        "Subwords in the network's encoder: each word's vector is its own plus the mean of its \
         hashed character n-grams' vectors, held in this many rows after the vocabulary's (a \
         word never seen gets a vector from its parts; 0: words only)",
        TrainDefaults::get().subwords))]
    pub subwords: Option<usize>,
    #[arg(long, requires = "subwords", help = with_default(
        "With --subwords: the length of the character n-grams",
        inceptionxml::config::SubwordConfig::DEFAULT_N))]
    pub subword_ngrams: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

/// `text [default: plain; plus with --plus]` from the two presets.
fn by_kind<T: std::fmt::Display>(
    text: &str,
    f: fn(&inceptionxml::config::TrainConfig) -> T,
) -> String {
    let d = TrainDefaults::get();
    format!(
        "{text} [default: {}; {} with --plus]",
        f(&d.plain),
        f(&d.plus)
    )
}

/// The epochs rule in words, from [`Preset::epoch_range`] and its row counts.
fn epochs_help() -> String {
    let (plain, plus) = (Preset::Plain.epoch_range(), Preset::Plus.epoch_range());
    let (fplain, fplus) = (
        Preset::Plain.fused_epoch_range(),
        Preset::Plus.fused_epoch_range(),
    );
    format!(
        "Passes over the training data [default: by the rows trained on (after the validation \
         hold-out): with the sparse model fused (the default) {} up to {MID_TRAIN_ROWS} rows, {} \
         from {PAPER_TRAIN_ROWS} (AmazonTitles-670K's training split), linear between ({} and {} \
         with --plus); the network alone (--no-sparse) {} and the paper's {} ({} and {} with \
         --plus)]",
        fplain.0, fplain.1, fplus.0, fplus.1, plain.0, plain.1, plus.0, plus.1
    )
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

impl Args {
    /// The library's options: one field per flag.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            plus: self.plus.plus,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            clusters: self.plus.clusters.clone(),
            top_k: self.plus.top_k,
            detach_fraction: self.detach_fraction,
            hidden_dim: self.plus.hidden_dim,
            dropout_meta: self.dropout_meta,
            embeddings: self.embeddings.clone(),
            dim: self.dim,
            dropout_ext: self.dropout_ext,
            seed: self.seed,
            eval_every: self.eval_every,
            valid_fraction: self.valid_fraction,
            output_bias: self.output_bias.map(OutputBias::from),
            resume: self.resume,
            force: self.force,
            max_vocab: self.max_vocab,
            max_train: self.max_train,
            stop_after: self.stop_after,
            device: self.run.device.device,
            threads: self.run.threads.threads,
            sparse: match (self.sparse, self.no_sparse) {
                (true, _) => SparseMode::Only,
                (false, true) => SparseMode::Off,
                (false, false) => SparseMode::Fused,
            },
            sparse_trees: self.sparse_trees,
            sparse_char_ngrams: self.sparse_char_ngrams,
            subwords: self.subwords,
            corpus_vectors: match (self.corpus_vectors, self.no_corpus_vectors) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            subword_ngrams: self.subword_ngrams,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.run.threads.threads)?;
    let data = XcDataset::open(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    let opts = args.options();
    let mut progress = Progress::new(!args.quiet);
    let summary =
        inceptionxml::train_with(&data, &args.model, &opts, &mut |e| progress.on_event(e))
            .map_err(|e| match e {
                // A resume refused by the library: its options named as the flags that set them.
                inceptionxml::Error::ChangedOnResume(changed) => {
                    let flags: Vec<String> = changed
                        .iter()
                        .map(|c| match c.split_once(' ') {
                            Some((name, rest)) => format!("--{} {rest}", name.replace('_', "-")),
                            None => c.clone(),
                        })
                        .collect();
                    anyhow::anyhow!(
                "--resume continues the saved run with its own settings; these flags would \
                 change it: {}",
                flags.join(", ")
            )
                }
                e => e.into(),
            })?;
    print_summary(&summary, &args.model)?;
    if summary.steps > 0 {
        write_curves(&args.model)?;
    }
    Ok(())
}

/// Draws the run's curves into `curves.png` in the model directory; a failure to draw is
/// reported, not fatal (the model is saved).
fn write_curves(dir: &std::path::Path) -> anyhow::Result<()> {
    let out = dir.join("curves.png");
    let drawn =
        crate::plot::read_run(dir).and_then(|run| crate::plot::draw(&[run], &out, (1500, 500)));
    match drawn {
        Ok(()) => outln!("curves drawn in {}", out.display())?,
        Err(e) => eprintln!("warning: no curves: {e:#}"),
    }
    Ok(())
}

/// The end-of-training report on standard output.
pub fn print_summary(s: &train::TrainSummary, dir: &std::path::Path) -> anyhow::Result<()> {
    if let Some(c) = &s.coverage {
        outln!("embeddings: {c}")?;
    }
    if let Some(sp) = s.sparse.as_ref().filter(|_| s.steps == 0) {
        outln!(
            "trained the sparse model on {} rows in {:.1}s ({} weights)",
            s.n_train,
            sp.train_s,
            sp.n_weights
        )?;
        print_sparse(sp)?;
        outln!("model saved to {}", dir.display())?;
        return Ok(());
    }
    outln!(
        "trained {} epochs ({} steps) on {} rows, vocabulary {}, {:.1}s training, {:.0} samples/s",
        s.epochs_done,
        s.steps,
        s.n_train,
        s.vocab_size,
        s.train_s,
        s.samples_per_s
    )?;
    if let Some(v) = &s.last_valid {
        outln!(
            "validation metrics ({} rows held out of training) after epoch {}:",
            s.n_valid,
            v.epoch
        )?;
        outln!("{}", crate::common::format_metrics(&v.metrics))?;
    }
    if let Some(e) = &s.last_eval {
        outln!("test metrics after epoch {}:", e.epoch)?;
        outln!("{}", crate::common::format_metrics(&e.metrics))?;
        if let Some(p) = &e.plus {
            outln!(
                "ranking {}; meta P@1 {:.2}; shortlist recall@{} {:.2}",
                p.score,
                p.meta_p1 * 100.0,
                p.top_k,
                p.shortlist_recall * 100.0
            )?;
        }
    }
    if let Some(sp) = &s.sparse {
        outln!(
            "sparse model trained in {:.1}s ({} weights), fused with weight {} and power {}",
            sp.train_s,
            sp.n_weights,
            sp.fusion.sparse_weight,
            sp.fusion.sparse_power
        )?;
        print_sparse(sp)?;
    }
    outln!("model saved to {}", dir.display())?;
    Ok(())
}

/// The sparse stage's validation choice and the directory's test metrics.
fn print_sparse(sp: &train::SparseSummary) -> anyhow::Result<()> {
    if let Some([net, sparse, fused]) = sp.valid_p1 {
        outln!(
            "validation P@1: network {:.2}, sparse {:.2}, fused {:.2}",
            net * 100.0,
            sparse * 100.0,
            fused * 100.0,
        )?;
    }
    if let Some(m) = &sp.test {
        outln!("test metrics of the saved model (what predict ranks with):")?;
        outln!("{}", crate::common::format_metrics(m))?;
    }
    Ok(())
}
