//! `inceptionxml demo`: train on the bundled cooking data with defaults tuned for a short CPU
//! run, print the test metrics and keep the model for `predict`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::config::{ModelParams, Preset, TrainConfig};
use inceptionxml::train::{self, TrainJob};
use xmc::dataset::XcDataset;

use crate::progress::Progress;

/// Flags of `inceptionxml demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to save the model.
    #[arg(long, default_value = "runs/demo")]
    pub model: PathBuf,
    /// Dataset folder.
    #[arg(long, default_value = "data/cooking")]
    pub data: PathBuf,
    /// Passes over the training data.
    #[arg(long, default_value_t = TrainConfig::preset(Preset::Demo).epochs)]
    pub epochs: usize,
    /// Seed of shuffles and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
    let config = TrainConfig {
        epochs: args.epochs,
        seed: args.seed,
        ..TrainConfig::preset(Preset::Demo)
    };
    let t0 = std::time::Instant::now();
    let mut progress = Progress::new(!args.quiet);
    let summary = train::train(
        &TrainJob {
            data: &data,
            out: &args.model,
            config,
            model: ModelParams::default(),
            resume: false,
            // The demo's model folder is the demo's own: a rerun replaces it.
            force: true,
            stop_after: None,
            device: args.device.open()?,
        },
        &mut |e| progress.on_event(e),
    )?;
    crate::train::print_summary(&summary, &args.model);
    println!("wall time {:.1}s", t0.elapsed().as_secs_f64());
    println!(
        "try: inceptionxml predict --model {} --texts {} --top-k 5",
        args.model.display(),
        args.data.join("tst_X.txt").display()
    );
    Ok(())
}
