//! How good a label clustering is for InceptionXML+'s shortlist: how often labels that occur
//! together in a training row land in the same cluster, against a random balanced assignment
//! (`inceptionxml cluster` reports it).

use std::fmt;

use rayon::prelude::*;

use crate::cluster::Clustering;
use crate::error::{Error, Result};
use crate::sparse::SparseMatrix;

/// How often labels that co-occur in a training row share a cluster, against the expectation
/// under a uniformly random assignment with the same cluster sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct CooccurrenceQuality {
    /// Co-occurring label pairs counted (each row's pairs; rows capped at [`COOC_ROW_CAP`] labels).
    pub pairs: u64,
    /// Of those, pairs in the same cluster.
    pub same_cluster: u64,
    /// `same_cluster / pairs`.
    pub rate: f64,
    /// `Σ_k s_k (s_k − 1) / (L (L − 1))`: the probability that two distinct labels share a
    /// cluster under a uniformly random assignment with sizes `s_k`.
    pub random_rate: f64,
}

/// Only the first this many labels of a row are paired (bounds the quadratic cost).
pub const COOC_ROW_CAP: usize = 64;

impl CooccurrenceQuality {
    /// `rate / random_rate` (infinite when the random rate is 0).
    pub fn lift(&self) -> f64 {
        if self.random_rate > 0.0 {
            self.rate / self.random_rate
        } else {
            f64::INFINITY
        }
    }
}

impl fmt::Display for CooccurrenceQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "co-occurring label pairs in the same cluster: {:.2}% of {} (random balanced assignment of the same sizes: {:.4}%; {:.0}x)",
            100.0 * self.rate,
            self.pairs,
            100.0 * self.random_rate,
            self.lift()
        )
    }
}

/// Co-occurrence quality of `clustering` on the label matrix `labels` (`N × L`).
pub fn cooccurrence_quality(
    labels: &SparseMatrix,
    clustering: &Clustering,
) -> Result<CooccurrenceQuality> {
    if labels.n_cols != clustering.n_labels() {
        return Err(Error::Shape(format!(
            "co-occurrence: {} label columns but the clustering has {} labels",
            labels.n_cols,
            clustering.n_labels()
        )));
    }
    let (pairs, same) = (0..labels.n_rows)
        .into_par_iter()
        .map(|r| {
            let idx = labels.row_indices(r);
            let idx = &idx[..idx.len().min(COOC_ROW_CAP)];
            let (mut p, mut s) = (0u64, 0u64);
            for (i, &a) in idx.iter().enumerate() {
                for &b in &idx[i + 1..] {
                    p += 1;
                    s += u64::from(clustering.assign[a as usize] == clustering.assign[b as usize]);
                }
            }
            (p, s)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let l = clustering.n_labels() as f64;
    let within: f64 = clustering
        .sizes()
        .iter()
        .map(|&s| s as f64 * (s as f64 - 1.0).max(0.0))
        .sum();
    let random_rate = if l > 1.0 {
        within / (l * (l - 1.0))
    } else {
        1.0
    };
    Ok(CooccurrenceQuality {
        pairs,
        same_cluster: same,
        rate: if pairs > 0 {
            same as f64 / pairs as f64
        } else {
            0.0
        },
        random_rate,
    })
}
