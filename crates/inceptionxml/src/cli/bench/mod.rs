//! `inceptionxml bench <what>`: benchmarks of the pipeline's stages. Each benchmark is one variant
//! of [`BenchWhat`] with its own flags struct and `run` function.

pub mod model;
pub mod tokenize;

/// Flags of `inceptionxml bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// What to benchmark.
#[derive(clap::Subcommand)]
pub enum BenchWhat {
    /// Texts -> fixed-length id sequences (`Vocab::encode_all`) on a dataset's training texts.
    Tokenize(tokenize::TokenizeArgs),
    /// Training samples/s: median optimiser-step time after warm-up.
    Train(model::TrainBench),
    /// Prediction: batch-1 latency, or queries/s at a larger batch.
    Predict(model::PredictBench),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Tokenize(a) => tokenize::run_tokenize(a),
        BenchWhat::Train(a) => model::bench_train(a),
        BenchWhat::Predict(a) => model::bench_predict(a),
    }
}
