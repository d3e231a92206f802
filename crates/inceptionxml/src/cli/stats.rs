//! `inceptionxml stats`.

use std::path::PathBuf;

/// Flags of `inceptionxml stats`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset folder in the Extreme Classification Repository layout.
    #[arg(long, default_value = "data/cooking")]
    pub data: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("stats: not yet implemented")
}
