//! The `inceptionxml` command-line tool.

mod cli;

use clap::{Parser, Subcommand};

/// Short-text extreme multi-label classification with InceptionXML / InceptionXML+.
#[derive(Parser)]
#[command(name = "inceptionxml", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dataset statistics of an Extreme Classification Repository folder.
    Stats(cli::stats::Args),
    /// Ranking metrics (P@k, nDCG@k, PSP@k, PSnDCG@k, R@k) of a prediction file.
    Eval(cli::eval::Args),
    /// Cluster the labels (TF-IDF -> PIFA -> balanced hierarchical 2-means) for InceptionXML+.
    Cluster(cli::cluster::Args),
    /// Write a seeded Zipf-distributed synthetic dataset (for scale tests).
    Synth(cli::synth::Args),
    /// Train an InceptionXML model on a dataset folder.
    Train(cli::train::Args),
    /// Rank labels for texts with a trained model.
    Predict(cli::predict::Args),
    /// Train on the bundled cooking data and report test metrics.
    Demo(cli::demo::Args),
    /// Benchmarks: tokenisation, training throughput, prediction latency and throughput.
    Bench(cli::bench::Args),
}

fn main() {
    // Before any thread starts: keep freed buffers in the heap, pin candle's thread count.
    inceptionxml::model::alloc::tune_runtime();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stats(a) => cli::stats::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Cluster(a) => cli::cluster::run(a),
        Command::Synth(a) => cli::synth::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Predict(a) => cli::predict::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        // One line, whatever the error chain contains.
        eprintln!("error: {}", format!("{e:#}").replace(['\n', '\r'], " "));
        std::process::exit(1);
    }
}
