//! `inceptionxml cluster`: label clustering for InceptionXML+ (MODEL.md §6).
//!
//! Reads `trn_X.txt` and `trn_X_Y.txt` from `--data`, builds TF-IDF features of the training
//! texts (or reads a BOW file given with `--features`), PIFA label features, and splits the labels
//! by balanced hierarchical spherical 2-means. Writes the label -> cluster file (format in
//! `xmc::cluster`), then prints cluster sizes, a co-occurrence quality line, timings per phase and
//! the peak resident memory.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use xmc::cluster::{cluster_labels_with, ClusterParams, Stop, DEFAULT_MAX_LEAF};
use xmc::cluster_quality::cooccurrence_quality;
use xmc::pifa::{pifa, DEFAULT_TOP_N};
use xmc::tfidf::{normalize_rows, TfIdf, TfIdfParams};
use xmc::SparseMatrix;

use crate::common::outln;

/// Flags of `inceptionxml cluster`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("size").args(["clusters", "max_leaf"])))]
pub struct Args {
    /// Dataset folder holding `trn_X.txt` and `trn_X_Y.txt`.
    #[arg(long)]
    pub data: PathBuf,
    /// Output label -> cluster file (text: `n_labels n_clusters`, then one cluster id per label).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of clusters (a power of two, at most the number of labels).
    #[arg(long)]
    pub clusters: Option<usize>,
    /// Split until every cluster has at most this many labels (the default, 16, when
    /// --clusters is not given).
    #[arg(long)]
    pub max_leaf: Option<usize>,
    /// Seed of the initial centroids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bag-of-words features of the training texts (`trn_X_Xf.txt` sparse format) instead of
    /// TF-IDF of `trn_X.txt`.
    #[arg(long)]
    pub features: Option<PathBuf>,
    #[command(flatten)]
    pub threads: crate::common::ThreadsArg,
    /// Features kept per label in PIFA.
    #[arg(long, default_value_t = DEFAULT_TOP_N)]
    pub top_n: usize,
    /// Add bigrams to the TF-IDF vocabulary.
    #[arg(long)]
    pub bigrams: bool,
    /// Most 2-means assignments per node.
    #[arg(long, default_value_t = 20)]
    pub max_iter: usize,
}

/// Prints a phase's wall time and note.
fn phase(name: &str, t: Instant, note: &str) -> anyhow::Result<()> {
    outln!("{name:<9} {:>8.2} s  {note}", t.elapsed().as_secs_f64())?;
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.threads.threads)?;
    run_cluster(&args)
}

fn run_cluster(args: &Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let stop = match (args.clusters, args.max_leaf) {
        (Some(c), _) => Stop::Clusters(c),
        (None, Some(m)) => Stop::MaxLeaf(m),
        (None, None) => Stop::MaxLeaf(DEFAULT_MAX_LEAF),
    };
    let params = ClusterParams {
        stop,
        seed: args.seed,
        max_iter: args.max_iter,
        ..Default::default()
    };
    params.validate()?;
    outln!(
        "cluster: {} threads, seed {}, {:?}",
        rayon::current_num_threads(),
        args.seed,
        stop
    )?;

    let t = Instant::now();
    let y_path = args.data.join("trn_X_Y.txt");
    let labels = SparseMatrix::read(&y_path)?;
    let features = match &args.features {
        Some(f) => {
            let mut x = SparseMatrix::read(f)?;
            if x.n_rows != labels.n_rows {
                return Err(xmc::Error::mismatch(
                    f,
                    format!(
                        "{} feature rows but {} has {} rows",
                        x.n_rows,
                        y_path.display(),
                        labels.n_rows
                    ),
                )
                .into());
            }
            normalize_rows(&mut x);
            phase(
                "read",
                t,
                &format!(
                    "{} rows, {} labels, {} features ({} nnz) from {}",
                    labels.n_rows,
                    labels.n_cols,
                    x.n_cols,
                    x.nnz(),
                    f.display()
                ),
            )?;
            x
        }
        None => {
            let x_path = args.data.join("trn_X.txt");
            let texts = xmc::texts::read_texts(&x_path)?;
            if texts.len() != labels.n_rows {
                return Err(xmc::Error::mismatch(
                    &x_path,
                    format!(
                        "{} texts but {} has {} rows",
                        texts.len(),
                        y_path.display(),
                        labels.n_rows
                    ),
                )
                .into());
            }
            phase(
                "read",
                t,
                &format!("{} texts, {} labels", texts.len(), labels.n_cols),
            )?;
            let t = Instant::now();
            let docs = xmc::text::tokenize_all(&texts);
            drop(texts);
            let tokens: usize = docs.iter().map(Vec::len).sum();
            phase("tokenize", t, &format!("{tokens} tokens"))?;
            let t = Instant::now();
            let tp = TfIdfParams {
                bigrams: args.bigrams,
                ..Default::default()
            };
            let (tfidf, x) = TfIdf::fit_transform(&docs, tp)?;
            drop(docs);
            phase(
                "tfidf",
                t,
                &format!("{} terms, {} nnz", tfidf.len(), x.nnz()),
            )?;
            x
        }
    };

    let t = Instant::now();
    let label_features = pifa(&features, &labels, args.top_n)?;
    drop(features);
    let empty = (0..label_features.n_rows)
        .filter(|&l| label_features.row_len(l) == 0)
        .count();
    phase(
        "pifa",
        t,
        &format!(
            "{} x {}, {} nnz, {} labels without features",
            label_features.n_rows,
            label_features.n_cols,
            label_features.nnz(),
            empty
        ),
    )?;

    let t = Instant::now();
    let depth = params.depth(label_features.n_rows)?;
    let bar = ProgressBar::new(label_features.n_rows as u64 * depth as u64);
    bar.set_style(
        ProgressStyle::with_template("2-means {bar:40} {percent:>3}% {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let inc = |n: u64| bar.inc(n);
    let (clustering, report) = cluster_labels_with(&label_features, &params, &inc)?;
    bar.finish_and_clear();
    phase(
        "2-means",
        t,
        &format!(
            "{} clusters (depth {}), {} nodes, {} assignments ({:.1} per node)",
            clustering.n_clusters,
            report.depth,
            report.nodes,
            report.iterations,
            report.iterations as f64 / report.nodes.max(1) as f64
        ),
    )?;

    let t = Instant::now();
    clustering.write(&args.out)?;
    phase("write", t, &args.out.display().to_string())?;

    let sizes = clustering.sizes();
    let (mn, mx) = (
        sizes.iter().copied().min().unwrap_or(0),
        sizes.iter().copied().max().unwrap_or(0),
    );
    outln!(
        "cluster sizes: min {mn} mean {:.2} max {mx}",
        clustering.n_labels() as f64 / clustering.n_clusters as f64
    )?;
    let t = Instant::now();
    let q = cooccurrence_quality(&labels, &clustering)?;
    outln!("quality: {q}")?;
    phase("quality", t, "")?;
    let rss = crate::common::peak_rss_mib().map_or("n/a".to_owned(), |m| format!("{m:.0} MiB"));
    outln!(
        "total     {:>8.2} s  peak RSS {rss}",
        start.elapsed().as_secs_f64()
    )?;
    Ok(())
}
