//! `inceptionxml import`: an Annif or fastText corpus -> an XC dataset folder.

use std::path::PathBuf;

use xmc::import::{read_annif_tsv, read_fasttext, Corpus};
use xmc::labels::Labels;

use crate::common::outln;

/// Flags of `inceptionxml import`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub from: From,
}

/// The source format.
#[derive(clap::Subcommand)]
pub enum From {
    /// Annif's document corpus TSV (`text<TAB><URI> <URI> ...`) with its subject vocabulary TSV
    /// (`<URI><TAB>label` per line; the label order of the dataset).
    Annif {
        /// The document corpus.
        #[arg(long)]
        corpus: PathBuf,
        /// The subject vocabulary.
        #[arg(long)]
        vocab: PathBuf,
        #[command(flatten)]
        out: OutArgs,
    },
    /// fastText's supervised format (`__label__a __label__b text ...` per line).
    Fasttext {
        /// The fastText file.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        out: OutArgs,
    },
}

/// Where and how the dataset is written.
#[derive(clap::Args)]
pub struct OutArgs {
    /// The new dataset folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the texts put in the test split (tst_*), chosen at random.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave malformed lines out (and count them) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (corpus, out): (Corpus, OutArgs) = match args.from {
        From::Annif { corpus, vocab, out } => {
            let v = Labels::read_tsv(&vocab)?;
            anyhow::ensure!(!v.is_empty(), "{}: no subjects", vocab.display());
            (read_annif_tsv(&corpus, &v, out.skip_bad)?, out)
        }
        From::Fasttext { input, out } => (read_fasttext(&input, out.skip_bad)?, out),
    };
    let (train, test) = corpus.write_xc(&out.out, out.test_fraction, out.seed)?;
    outln!(
        "wrote {}: {train} training and {test} test texts, {} labels{}",
        out.out.display(),
        corpus.labels.len(),
        match corpus.skipped {
            0 => String::new(),
            n => format!(", {n} malformed lines skipped"),
        }
    )?;
    Ok(())
}
