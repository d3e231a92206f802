//! `inceptionxml split`: the validation rows `train --valid-fraction` holds out, written as a
//! dataset folder, so that ensembles, prediction settings and other tools can be compared on them
//! without touching the test split.

use std::path::PathBuf;

use inceptionxml::train::VALID_SEED;
use xmc::dataset::XcDataset;

use crate::common::outln;

/// Flags of `inceptionxml split`.
#[derive(clap::Args)]
#[command(
    after_help = "The new folder's trn_* are the rows a run with the same --valid-fraction \
trains on and its tst_* the rows it validates on (the hold-out's seed is fixed, whatever the run's \
--seed). Evaluate with `eval --truth OUT/tst_X_Y.txt --train-labels DATA/trn_X_Y.txt`: the \
propensities of PSP@k come from the whole training split, as in `train`."
)]
pub struct Args {
    /// Dataset folder whose training split is divided.
    #[arg(long)]
    pub data: PathBuf,
    /// The new dataset folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the training rows held out, as `train --valid-fraction`.
    #[arg(long, default_value_t = 0.05)]
    pub valid_fraction: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let data = XcDataset::open(&args.data)?;
    let (kept, held) = data.write_hold_out(&args.out, args.valid_fraction, VALID_SEED)?;
    outln!(
        "wrote {}: {kept} training rows (trn_*) and {held} validation rows (tst_*)",
        args.out.display()
    )?;
    Ok(())
}
