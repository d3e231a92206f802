//! `inceptionxml bench <what>`: benchmarks of the pipeline's stages. Each benchmark is one variant
//! of [`BenchWhat`] with its own flags struct and `run` function.

pub mod explain;
pub mod model;
pub mod serve;
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
    /// Training step per stage: time, share, GFLOP/s against this machine's GEMM peak.
    Profile(model::TrainBench),
    /// Prediction: batch-1 latency, or queries/s at a larger batch.
    Predict(model::PredictBench),
    /// The HTTP server under load (latency, suggestions/s, overload, soak), beside `predict`.
    Serve(serve::ServeBench),
    /// Explanations: the deletion test (AOPC against random orders), the randomisation test,
    /// batch-1 cost and explained throughput against plain prediction.
    Explain(explain::ExplainBench),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Tokenize(a) => tokenize::run_tokenize(a),
        BenchWhat::Train(a) => model::bench_train(a),
        BenchWhat::Profile(a) => model::bench_profile(a),
        BenchWhat::Predict(a) => model::bench_predict(a),
        BenchWhat::Serve(a) => serve::bench_serve(a),
        BenchWhat::Explain(a) => explain::bench_explain(a),
    }
}

/// The median of `v` (sorted in place); NaN when empty.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
