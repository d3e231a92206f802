//! `inceptionxml stats`: statistics of a dataset folder.

use std::path::PathBuf;
use std::time::Instant;

use xmc::dataset::XcDataset;
use xmc::stats::DatasetStats;

use crate::common::{out, outln};

/// Flags of `inceptionxml stats`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder in the Extreme Classification Repository layout (trn_X.txt, trn_X_Y.txt,
    /// optional tst_X.txt + tst_X_Y.txt and Y.txt).
    #[arg(long, default_value = "data/cooking")]
    pub data: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let ds = XcDataset::open(&args.data)?;
    let stats = DatasetStats::compute(&ds);
    if args.json {
        outln!("{}", serde_json::to_string(&stats)?)?;
    } else {
        outln!("dataset: {}", args.data.display())?;
        out!("{stats}")?;
        outln!("(read and checked in {:.2} s)", t0.elapsed().as_secs_f64())?;
    }
    Ok(())
}
