//! `inceptionxml demo`: train on the bundled cooking data with defaults tuned for a short CPU
//! run, print the test metrics and keep the model for `predict`.

use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::train::{self, ModelOverrides, TrainConfig, TrainJob};
use xmc::dataset::XcDataset;

/// Demo defaults: chosen so the run fits in about ten minutes on two cores (see the README).
pub const DEMO_EPOCHS: usize = 20;
pub const DEMO_BATCH: usize = 128;
pub const DEMO_LR: f64 = 5e-3;
pub const DEMO_DROPOUT_EXT: f32 = 0.5;

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
    #[arg(long, default_value_t = DEMO_EPOCHS)]
    pub epochs: usize,
    /// Seed of shuffles and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: super::DeviceArg,
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
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: DEMO_BATCH,
        lr_max: DEMO_LR,
        seed: args.seed,
        eval_every: 0,
        ..TrainConfig::default()
    };
    let t0 = std::time::Instant::now();
    let summary = train::train(&TrainJob {
        data: &data,
        out: &args.model,
        config,
        model: ModelOverrides {
            embed_dim: 300,
            dropout_ext: Some(DEMO_DROPOUT_EXT),
            plus: None,
        },
        resume: false,
        stop_after: None,
        progress: !args.quiet,
        device: args.device.open()?,
    })?;
    super::train::print_summary(&summary, &args.model);
    println!("wall time {:.1}s", t0.elapsed().as_secs_f64());
    println!(
        "try: inceptionxml predict --model {} --texts {} --top-k 5",
        args.model.display(),
        args.data.join("tst_X.txt").display()
    );
    Ok(())
}
