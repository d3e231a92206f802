//! `inceptionxml synth`: writes a seeded Zipf-distributed synthetic dataset folder
//! (`xmc::synthetic`), for scale tests only.

use std::path::PathBuf;
use std::time::Instant;

use xmc::synthetic::{generate, SynthParams};

use crate::common::outln;

/// Flags of `inceptionxml synth`.
#[derive(clap::Args)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of labels.
    #[arg(long)]
    pub labels: usize,
    /// Number of training texts.
    #[arg(long)]
    pub texts: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Mean words per text.
    #[arg(long, default_value_t = 8)]
    pub words_per_text: usize,
    /// Mean labels drawn per text.
    #[arg(long, default_value_t = 5)]
    pub labels_per_text: usize,
    /// Number of test texts (0: no test split).
    #[arg(long, default_value_t = 0)]
    pub test: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Never mix a new dataset into an existing one.
    if let Ok(mut entries) = std::fs::read_dir(&args.out) {
        anyhow::ensure!(
            entries.next().is_none(),
            "{}: already exists and is not empty (choose a new folder)",
            args.out.display()
        );
    } else {
        anyhow::ensure!(
            !args.out.exists(),
            "{}: exists and is not a folder",
            args.out.display()
        );
    }
    let p = SynthParams {
        n_labels: args.labels,
        n_train: args.texts,
        n_test: args.test,
        vocab: args.vocab,
        words_per_text: args.words_per_text,
        labels_per_text: args.labels_per_text,
        seed: args.seed,
        ..Default::default()
    };
    let t = Instant::now();
    let d = generate(&p)?;
    outln!(
        "generated {} train + {} test texts, {} labels, {} label entries in {:.2} s",
        d.train_texts.len(),
        d.test_texts.len(),
        p.n_labels,
        d.train_labels.nnz(),
        t.elapsed().as_secs_f64()
    )?;
    let t = Instant::now();
    d.write_dir(&args.out)?;
    outln!(
        "wrote {} in {:.2} s",
        args.out.display(),
        t.elapsed().as_secs_f64()
    )?;
    Ok(())
}
