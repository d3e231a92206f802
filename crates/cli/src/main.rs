//! The `inceptionxml` command-line tool.

use inceptionxml_cli::{
    bench, cluster, demo, eval, import, plot, predict, serve, split, stats, synth, train, vectors,
};

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
    Stats(stats::Args),
    /// Ranking metrics (P@k, nDCG@k, PSP@k, PSnDCG@k, R@k) of a prediction file.
    Eval(eval::Args),
    /// Cluster the labels (TF-IDF -> PIFA -> balanced hierarchical 2-means) for InceptionXML+.
    Cluster(cluster::Args),
    /// Turn an Annif or fastText corpus into a dataset folder (XC layout, seeded test split).
    Import(import::Args),
    /// Write the validation rows `train --valid-fraction` holds out as a dataset folder (tst_*).
    Split(split::Args),
    /// Write a seeded Zipf-distributed synthetic dataset (for scale tests).
    Synth(synth::Args),
    /// Train word vectors on a corpus (fastText's skip-gram or CBOW with subwords) for --embeddings.
    Vectors(vectors::Args),
    /// Train an InceptionXML model (fused with a sparse lexical model) on a dataset folder.
    Train(Box<train::Args>),
    /// Rank labels for texts with a trained model.
    Predict(predict::Args),
    /// Draw training curves (P@1, PSP@1, loss per epoch) of one or several runs as a PNG.
    Plot(plot::Args),
    /// Train on the bundled cooking data and report test metrics.
    Demo(demo::Args),
    /// Serve models over HTTP with Annif's REST API (suggest, suggest-batch, projects).
    Serve(serve::Args),
    /// Benchmarks: tokenisation, training throughput, prediction latency and throughput.
    Bench(bench::Args),
}

fn main() {
    // Before any thread starts: keep freed buffers in the heap, pin candle's thread count.
    inceptionxml::runtime::tune_runtime();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        quiet_broken_pipe();
    }
    let result = match cli.command {
        Command::Stats(a) => stats::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Import(a) => import::run(a),
        Command::Split(a) => split::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Vectors(a) => vectors::run(a),
        Command::Train(a) => train::run(*a),
        Command::Predict(a) => predict::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// A command whose standard output is closed early (`inceptionxml stats ... | head -1`) ends
/// quietly, as Unix tools do, instead of panicking in `println!`: SIGPIPE gets its default action
/// back (Rust ignores it at start-up). The server keeps ignoring it, so that a client that hangs
/// up only fails its own write.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error chain as one line; a cause already spelled out by the message before it (an OS
/// error that the file's own message quotes) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg.replace(['\n', '\r'], " ")
}
