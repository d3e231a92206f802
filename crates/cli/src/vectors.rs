//! `inceptionxml vectors`: word vectors trained on the user's own corpus (fastText's skip-gram or
//! CBOW with subwords, [`xmc::vectors`]), written in the word2vec text format that
//! `train --embeddings` reads.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use xmc::vectors::{Objective, VectorParams};

use crate::common::{outln, with_default};

const D: VectorParams = VectorParams::DEFAULT;

/// Flags of `inceptionxml vectors`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["data", "texts"]).multiple(true).required(true)))]
pub struct Args {
    /// Dataset folder: its training texts (`trn_X.txt`) are the corpus (never the test split's).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// More texts, one per line (repeatable): unlabelled titles of the same kind.
    #[arg(long)]
    pub texts: Vec<PathBuf>,
    /// Output file (word2vec text format: `count dim`, then `word v1 … vdim` per line).
    #[arg(long)]
    pub out: PathBuf,
    /// CBOW instead of skip-gram.
    #[arg(long)]
    pub cbow: bool,
    #[arg(long, help = with_default(
        "Vector dimension (train's --dim must be the same).", D.dim))]
    pub dim: Option<usize>,
    #[arg(long, help = with_default("Largest context window.", D.window))]
    pub window: Option<usize>,
    #[arg(long, help = with_default("Negative samples per positive one.", D.negative))]
    pub negative: Option<usize>,
    #[arg(long, help = with_default("Passes over the corpus.", D.epochs))]
    pub epochs: Option<usize>,
    #[arg(long, help = with_default(
        "Occurrences for a word to have its own vector (rarer words: their n-grams only).",
        D.min_count))]
    pub min_count: Option<usize>,
    #[arg(long, help = with_default("Shortest character n-gram (0: no subwords).", D.minn))]
    pub minn: Option<usize>,
    #[arg(long, help = with_default("Longest character n-gram.", D.maxn))]
    pub maxn: Option<usize>,
    #[arg(long, help = with_default("Rows the n-grams are hashed into.", D.buckets))]
    pub buckets: Option<usize>,
    #[arg(long, help = with_default("Initial learning rate.", D.lr))]
    pub lr: Option<f32>,
    #[arg(long, help = with_default("Subsampling threshold of frequent words.", D.sample))]
    pub sample: Option<f64>,
    #[arg(long, help = with_default("Seed (with --threads 1 the vectors depend only on it).", D.seed))]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub threads: crate::common::ThreadsArg,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    fn params(&self) -> VectorParams {
        VectorParams {
            objective: if self.cbow {
                Objective::Cbow
            } else {
                Objective::SkipGram
            },
            dim: self.dim.unwrap_or(D.dim),
            window: self.window.unwrap_or(D.window),
            negative: self.negative.unwrap_or(D.negative),
            epochs: self.epochs.unwrap_or(D.epochs),
            min_count: self.min_count.unwrap_or(D.min_count),
            minn: self.minn.unwrap_or(D.minn),
            maxn: self.maxn.unwrap_or(D.maxn),
            buckets: self.buckets.unwrap_or(D.buckets),
            lr: self.lr.unwrap_or(D.lr),
            sample: self.sample.unwrap_or(D.sample),
            seed: self.seed.unwrap_or(D.seed),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.threads.threads)?;
    let params = args.params();
    params.validate()?;
    let start = Instant::now();
    let mut files: Vec<PathBuf> = args.data.iter().map(|d| d.join("trn_X.txt")).collect();
    files.extend(args.texts.iter().cloned());
    let mut docs = Vec::new();
    for f in &files {
        let texts = xmc::texts::read_texts(f)?;
        docs.extend(xmc::text::tokenize_all(&texts));
    }
    let read = start.elapsed().as_secs_f64();
    let bar = (!args.quiet).then(|| {
        let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("vectors [{bar:30}] {percent}% {msg} (eta {eta})")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    });
    let t = Instant::now();
    let v = xmc::vectors::train(
        &docs,
        &params,
        &|p| {
            if let Some(b) = &bar {
                b.set_position((p.done * 1000.0) as u64);
                if p.loss.is_finite() {
                    b.set_message(format!("loss {:.3}", p.loss));
                }
            }
        },
        &|| false,
    )?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let trained = t.elapsed().as_secs_f64();
    xmc::io::write_atomic(&args.out, |f| v.write_word2vec(f))?;
    outln!(
        "{} texts, {} tokens, {} words ({} with {} or more occurrences), dim {}, {} epochs of {}",
        docs.len(),
        v.tokens,
        v.words.len(),
        v.counts
            .iter()
            .filter(|&&c| c >= params.min_count as u64)
            .count(),
        params.min_count,
        params.dim,
        params.epochs,
        if args.cbow { "CBOW" } else { "skip-gram" },
    )?;
    outln!(
        "read {read:.1}s, trained {trained:.1}s ({:.0} tokens/s on {} threads), wrote {} in {:.1}s total",
        (v.tokens * params.epochs as u64) as f64 / trained.max(1e-9),
        rayon::current_num_threads(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    )?;
    Ok(())
}
