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
    /// Train an InceptionXML model on a dataset folder.
    Train(cli::train::Args),
    /// Rank labels for texts with a trained model.
    Predict(cli::predict::Args),
    /// Train on the bundled cooking data and report test metrics.
    Demo(cli::demo::Args),
    /// Measure training throughput or prediction latency.
    Bench(cli::bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stats(a) => cli::stats::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Predict(a) => cli::predict::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
