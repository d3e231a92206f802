//! The sparse lexical model of a model directory ([`xmc::tree`]) and its fusion with the
//! network: `score = (1 − w)·network + w·sparse^p` over the union of both top lists (a label one
//! of them did not return counts 0 there), `w` and `p` (`fusion.json`'s `sparse_weight` and
//! `sparse_power`) chosen on the validation split by `train`. The power brings the sparse
//! model's scores, products of per-node scores along its tree, onto the network's σ scale
//! (on yso_finna_sv's validation split `p = 0.25..0.5` ranks 0.4–0.5 P@1 above `p = 1`). A
//! directory with only the sparse model (`train --sparse`) ranks with it alone.

use std::path::Path;

use serde::{Deserialize, Serialize};
use xmc::metrics::evaluate;
use xmc::predictions::top_k_sparse;
use xmc::sparse::sum_duplicates;
use xmc::sparse::SparseMatrix;
use xmc::tree::SparseModel;

use super::Row;
use crate::error::{Error, Result};

/// `fusion.json`: how the sparse model's scores enter the directory's ranking.
pub const FUSION_FILE: &str = "fusion.json";

/// Labels each of the two models contributes per text: `max(k, POOL)` (the fusion is chosen on
/// the validation split with `POOL` labels from each).
pub const POOL: usize = 100;

/// The labels each model contributes for `k` results.
pub fn pool(k: usize) -> usize {
    k.max(POOL)
}

/// The weights tried on the validation split.
pub const WEIGHT_GRID: [f32; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The powers of the sparse scores tried on the validation split.
pub const POWER_GRID: [f32; 3] = [1.0, 0.5, 0.25];

/// `fusion.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// Weight of the sparse model's scores, in [0, 1] (1: the sparse model alone).
    pub sparse_weight: f32,
    /// Power the sparse model's scores are raised to, in (0, 1] (absent: 1).
    #[serde(default = "one")]
    pub sparse_power: f32,
}

fn one() -> f32 {
    1.0
}

impl FusionConfig {
    /// The sparse model alone.
    pub const SPARSE_ONLY: FusionConfig = FusionConfig {
        sparse_weight: 1.0,
        sparse_power: 1.0,
    };
    /// The fusion when no validation split chose one: what the validation splits measured chose
    /// (yso_finna_sv: w 0.9, p 0.5; cooking: the sparse model alone; docs/BENCHMARKS.md, "The
    /// sparse model and the fusion").
    pub const DEFAULT: FusionConfig = FusionConfig {
        sparse_weight: 0.9,
        sparse_power: 0.5,
    };

    fn check(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.sparse_weight) {
            return Err(format!(
                "sparse_weight {} is not in [0, 1]",
                self.sparse_weight
            ));
        }
        if !(self.sparse_power > 0.0 && self.sparse_power <= 1.0) {
            return Err(format!(
                "sparse_power {} is not in (0, 1]",
                self.sparse_power
            ));
        }
        Ok(())
    }
}

/// A directory's sparse model with its fusion.
pub struct Sparse {
    pub model: SparseModel,
    pub fusion: FusionConfig,
}

fn model_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

impl Sparse {
    /// The sparse model of `dir` and its weight, None when `dir` has none. `fusion.json` is
    /// written last ([`Sparse::save`]): without it the directory has no sparse model (files of
    /// an interrupted save are ignored); with it, every sparse file must load.
    pub fn load(dir: &Path) -> Result<Option<Sparse>> {
        let path = dir.join(FUSION_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = xmc::io::read_all(&path)?;
        let cfg: FusionConfig =
            serde_json::from_slice(&bytes).map_err(|e| model_err(&path, e.to_string()))?;
        cfg.check().map_err(|m| model_err(&path, m))?;
        let model = SparseModel::load(dir)?;
        Ok(Some(Sparse { model, fusion: cfg }))
    }

    /// Writes the sparse model and then `fusion.json`, its commit point, into `dir` (a
    /// previous `fusion.json` is removed first, so that a kill midway leaves the network alone,
    /// never a mix of old and new files).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FUSION_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(xmc::Error::io(&path, e).into()),
        }
        self.model.save(dir)?;
        write_fusion(dir, &self.fusion)
    }
}

/// Writes `fusion.json` of `dir` (atomically).
pub fn write_fusion(dir: &Path, fusion: &FusionConfig) -> Result<()> {
    let path = dir.join(FUSION_FILE);
    let text = serde_json::to_string_pretty(fusion).map_err(|e| model_err(&path, e.to_string()))?;
    xmc::io::write_atomic(&path, |f| {
        use std::io::Write;
        writeln!(f, "{text}")
    })?;
    Ok(())
}

impl FusionConfig {
    /// The network's part of a fused score: `(1 − w)·a`.
    pub fn network_part(&self, a: f32) -> f32 {
        (1.0 - self.sparse_weight) * a
    }

    /// The sparse model's part of a fused score: `w·b^p`.
    pub fn sparse_part(&self, b: f32) -> f32 {
        let p = self.sparse_power;
        self.sparse_weight * if p == 1.0 { b } else { b.powf(p) }
    }
}

/// `(1 − w)·a + w·b^p` of each pair of rows, top-k (ties: lower label id first).
pub fn fuse_rows(a: &[Row], b: &[Row], f: &FusionConfig, k: usize) -> Vec<Row> {
    a.iter()
        .zip(b)
        .map(|(ra, rb)| {
            let all: Vec<(u32, f32)> = ra
                .iter()
                .map(|&(l, s)| (l, f.network_part(s)))
                .chain(rb.iter().map(|&(l, s)| (l, f.sparse_part(s))))
                .collect();
            top_k_sparse(sum_duplicates(all), k)
        })
        .collect()
}

/// The fusion of [`WEIGHT_GRID`] × [`POWER_GRID`] with the best mean of P@1, P@3 and P@5 on
/// `truth` (the rule InceptionXML+ chooses its ranking by: three precisions are steadier on a
/// validation split of some thousand rows than P@1 alone; ties: the earlier in the grids), with
/// its P@1 and P@5 (fractions).
pub fn choose_fusion(
    network: &[Row],
    sparse: &[Row],
    truth: &SparseMatrix,
) -> Result<(FusionConfig, f64, f64)> {
    let mut best: Option<(FusionConfig, f64, f64, f64)> = None;
    for &sparse_power in &POWER_GRID {
        for &sparse_weight in &WEIGHT_GRID {
            let f = FusionConfig {
                sparse_weight,
                sparse_power,
            };
            let rows = fuse_rows(network, sparse, &f, 5);
            let pred = SparseMatrix::from_rows(truth.n_cols, rows)?;
            let m = evaluate(truth, &pred, None, 5)?;
            let mean = (m.p[0] + m.p[2] + m.p[4]) / 3.0;
            if best.is_none_or(|b| mean > b.3) {
                best = Some((f, m.p[0], m.p[4], mean));
            }
        }
    }
    best.map(|b| (b.0, b.1, b.2))
        .ok_or_else(|| Error::Config("no fusion to try".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_weights_both_lists_and_counts_missing_labels_as_zero() {
        let a = vec![vec![(1u32, 0.8f32), (2, 0.4)]];
        let b = vec![vec![(2u32, 1.0f32), (3, 0.9)]];
        let f = |w: f32| FusionConfig {
            sparse_weight: w,
            sparse_power: 1.0,
        };
        let r = fuse_rows(&a, &b, &f(0.25), 3);
        // 1: 0.6; 2: 0.3 + 0.25 = 0.55; 3: 0.225.
        assert_eq!(r[0].iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!((r[0][1].1 - 0.55).abs() < 1e-6);
        assert_eq!(fuse_rows(&a, &b, &f(0.0), 2)[0], a[0]);
        assert_eq!(fuse_rows(&a, &b, &f(1.0), 2)[0], b[0]);
        // The power lifts small sparse scores: 0.25^0.5 = 0.5.
        let half = FusionConfig {
            sparse_weight: 0.5,
            sparse_power: 0.5,
        };
        let r = fuse_rows(&[vec![(1, 0.3)]], &[vec![(2, 0.25)]], &half, 2);
        assert_eq!(r[0][0].0, 2);
        assert!((r[0][0].1 - 0.25).abs() < 1e-6);
    }

    #[test]
    fn the_weight_is_chosen_by_its_precision() {
        // The network is right on row 0, the sparse model on rows 1 and 2: a sparse-leaning
        // weight wins P@1.
        let truth = SparseMatrix::from_index_rows(4, &[vec![0], vec![1], vec![2]]).unwrap();
        let net = vec![
            vec![(0u32, 0.9f32), (3, 0.5)],
            vec![(3, 0.6), (1, 0.5)],
            vec![(3, 0.6), (2, 0.1)],
        ];
        let sp = vec![
            vec![(3u32, 0.5f32), (0, 0.4)],
            vec![(1, 0.9)],
            vec![(2, 0.9)],
        ];
        let (f, p1, _) = choose_fusion(&net, &sp, &truth).unwrap();
        assert!((p1 - 1.0).abs() < 1e-9, "{f:?} {p1}");
        assert!(f.sparse_weight > 0.3 && f.sparse_weight < 0.8, "{f:?}");
        assert_eq!(f.sparse_power, 1.0, "the first power reaching the best P@1");
        let (_, p1_net, _) = choose_fusion(&net, &net, &truth).unwrap();
        assert!(p1_net < 0.5);
    }
}
