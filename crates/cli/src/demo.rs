//! `inceptionxml demo`: train on the bundled cooking data with defaults tuned for a short CPU
//! run, print the test metrics and keep the model for `predict`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::config::{Preset, TrainConfig};
use inceptionxml::TrainOptions;
use xmc::dataset::XcDataset;

use crate::common::RunArgs;
use crate::progress::Progress;

use crate::common::outln;

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
    #[arg(long, default_value_t = TrainConfig::preset(Preset::Demo).seed)]
    pub seed: u64,
    #[command(flatten)]
    pub run: RunArgs,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.run.threads.threads)?;
    let data = XcDataset::open(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    // The demo preset: plain InceptionXML, evaluated once at the end.
    let demo = TrainConfig::preset(Preset::Demo);
    let opts = TrainOptions {
        epochs: Some(args.epochs),
        seed: Some(args.seed),
        eval_every: Some(demo.eval_every),
        // The demo's model folder is the demo's own: a rerun replaces it.
        force: true,
        device: args.run.device.device,
        threads: args.run.threads.threads,
        ..TrainOptions::default()
    };
    let t0 = std::time::Instant::now();
    let mut progress = Progress::new(!args.quiet);
    let summary =
        inceptionxml::train_with(&data, &args.model, &opts, &mut |e| progress.on_event(e))?;
    crate::train::print_summary(&summary, &args.model)?;
    outln!("wall time {:.1}s", t0.elapsed().as_secs_f64())?;
    outln!(
        "try: inceptionxml predict --model {} --texts {} --top-k 5",
        args.model.display(),
        args.data.join("tst_X.txt").display()
    )?;
    Ok(())
}
