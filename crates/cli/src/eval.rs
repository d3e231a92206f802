//! `inceptionxml eval`: ranking metrics of a prediction file against the test labels.

use std::path::PathBuf;

use anyhow::Context;
use xmc::metrics::{evaluate, inverse_propensity, Propensity};
use xmc::SparseMatrix;

use crate::common::{out, outln};

/// Flags of `inceptionxml eval`.
#[derive(clap::Args)]
#[command(after_long_help = "\
Semantics follow pyxclib (xclib/evaluation/xc_metrics.py). Each prediction row is ranked by score
descending, equal scores keeping the order of the prediction file (another tool's rounded scores
rank as that tool wrote them); a row with fewer than k predictions is padded
with irrelevant entries. Test rows without any true label are KEPT: they count in the denominator
of P@k, nDCG@k and R@k and score 0 there (R@k divides by max(|positives|, 1)); they add nothing to
PSP@k / PSnDCG@k. nDCG@k uses IDCG over min(|positives|, k). PSP@k is the sum over rows of the
propensity-weighted hits divided by the same sum for the best possible ranking; PSnDCG@k divides
each row's weighted DCG by its unweighted IDCG before taking that ratio (as pyxclib does).
Inverse propensities: w_l = 1 + C (N_l + B)^-A, C = (ln N - 1)(B + 1)^A from the training labels.")]
pub struct Args {
    /// True test labels in the sparse text format (`tst_X_Y.txt`).
    #[arg(long)]
    pub truth: PathBuf,
    /// Predictions in the same sparse format (header `rows L`, then `label:score` per row).
    #[arg(long)]
    pub pred: PathBuf,
    /// Training labels (`trn_X_Y.txt`) for the inverse propensities; without it only P@k, nDCG@k
    /// and R@k are reported.
    #[arg(long)]
    pub train_labels: Option<PathBuf>,
    /// Propensity parameters: `amazon` (0.6,2.6), `wikipedia` (0.5,0.4), `default` (0.55,1.5) or
    /// explicit `A,B` [default: default].
    #[arg(long, requires = "train_labels", value_parser = parse_propensity)]
    pub propensity: Option<Propensity>,
    /// Report k = 1..K.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub k: u32,
    /// Print one JSON object (`P@1`…, `nDCG@1`…, `PSP@1`…, `PSnDCG@1`…, `R@1`…; values ×100)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_propensity(s: &str) -> Result<Propensity, String> {
    s.parse().map_err(|e: xmc::Error| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // A truth entry with a value <= 0 is not a positive.
    let truth = SparseMatrix::read(&args.truth)?.positives();
    // Ties keep the order of the file (another tool may have rounded its scores).
    let pred = xmc::predictions::read_predictions_file_order(&args.pred)?;
    if pred.n_rows != truth.n_rows || pred.n_cols != truth.n_cols {
        anyhow::bail!(
            "{} has {} rows x {} labels but {} has {} rows x {} labels",
            args.truth.display(),
            truth.n_rows,
            truth.n_cols,
            args.pred.display(),
            pred.n_rows,
            pred.n_cols
        );
    }
    let inv_psp = match &args.train_labels {
        None => None,
        Some(path) => {
            let train = SparseMatrix::read(path)?.positives();
            if train.n_cols != truth.n_cols {
                anyhow::bail!(
                    "{} has {} labels but {} has {}",
                    path.display(),
                    train.n_cols,
                    args.truth.display(),
                    truth.n_cols
                );
            }
            let p = args.propensity.unwrap_or_default();
            Some(inverse_propensity(&train, p).with_context(|| path.display().to_string())?)
        }
    };
    let m = evaluate(&truth, &pred, inv_psp.as_deref(), args.k as usize)?;
    if args.json {
        outln!("{}", m.to_json())?;
    } else {
        out!("{m}")?;
    }
    Ok(())
}
