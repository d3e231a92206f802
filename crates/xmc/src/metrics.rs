//! TEMP stand-in (the real module lands from the `metrics` branch).

use std::str::FromStr;

use crate::error::Error;
use crate::sparse::SparseMatrix;

/// Propensity model parameters A, B.
#[derive(Debug, Clone, Copy)]
pub struct Propensity {
    pub a: f32,
    pub b: f32,
}

impl Default for Propensity {
    fn default() -> Self {
        Propensity { a: 0.55, b: 1.5 }
    }
}

impl FromStr for Propensity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "amazon" => Ok(Propensity { a: 0.6, b: 2.6 }),
            "wikipedia" => Ok(Propensity { a: 0.5, b: 0.4 }),
            "default" => Ok(Propensity::default()),
            _ => {
                let (a, b) = s
                    .split_once(',')
                    .ok_or_else(|| Error::param(format!("bad propensity {s}")))?;
                Ok(Propensity {
                    a: a.trim().parse().map_err(|_| Error::param("bad A"))?,
                    b: b.trim().parse().map_err(|_| Error::param("bad B"))?,
                })
            }
        }
    }
}

/// w_l = 1 + C (N_l + B)^-A.
pub fn inverse_propensity(labels: &SparseMatrix, p: Propensity) -> Vec<f32> {
    let n = labels.n_rows as f32;
    let c = (n.ln() - 1.0) * (p.b + 1.0).powf(p.a);
    labels
        .col_counts()
        .iter()
        .map(|&nl| 1.0 + c * (nl as f32 + p.b).powf(-p.a))
        .collect()
}

/// Metrics at 1..=k, fractions.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub k: usize,
    pub p: Vec<f64>,
    pub ndcg: Vec<f64>,
    pub psp: Vec<f64>,
    pub psndcg: Vec<f64>,
    pub recall: Vec<f64>,
}

impl Metrics {
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (name, v) in [
            ("P", &self.p),
            ("nDCG", &self.ndcg),
            ("PSP", &self.psp),
            ("PSnDCG", &self.psndcg),
            ("R", &self.recall),
        ] {
            for (i, x) in v.iter().enumerate() {
                let r = (x * 10000.0).round() / 100.0;
                m.insert(format!("{name}@{}", i + 1), serde_json::json!(r));
            }
        }
        m
    }
}

/// Ranks each prediction row by score (descending) and scores it against `truth`.
pub fn evaluate(
    truth: &SparseMatrix,
    pred: &SparseMatrix,
    inv_prop: Option<&[f32]>,
    k: usize,
) -> Metrics {
    let n = truth.n_rows.min(pred.n_rows).max(1);
    let w = |l: u32| inv_prop.map_or(1.0, |w| w[l as usize] as f64);
    let mut p = vec![0.0; k];
    let mut ndcg = vec![0.0; k];
    let mut psp_num = vec![0.0; k];
    let mut psp_den = vec![0.0; k];
    let mut psn_num = vec![0.0; k];
    let mut psn_den = vec![0.0; k];
    let mut recall = vec![0.0; k];
    for r in 0..truth.n_rows.min(pred.n_rows) {
        let pos = truth.row_indices(r);
        let (idx, val) = pred.row(r);
        let mut order: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied()).collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut pw: Vec<f64> = pos.iter().map(|&l| w(l)).collect();
        pw.sort_by(|a, b| b.total_cmp(a));
        let (mut hits, mut dcg, mut idcg, mut pn, mut pd, mut sn, mut sd) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..k {
            let disc = 1.0 / ((i + 2) as f64).log2();
            if let Some(&(l, _)) = order.get(i) {
                if pos.binary_search(&l).is_ok() {
                    hits += 1.0;
                    dcg += disc;
                    pn += w(l);
                    sn += w(l) * disc;
                }
            }
            if i < pos.len() {
                idcg += disc;
                pd += pw[i];
                sd += pw[i] * disc;
            }
            p[i] += hits / (i + 1) as f64;
            if idcg > 0.0 {
                ndcg[i] += dcg / idcg;
            }
            psp_num[i] += pn / (i + 1) as f64;
            psp_den[i] += pd / (i + 1) as f64;
            psn_num[i] += sn;
            psn_den[i] += sd;
            if !pos.is_empty() {
                recall[i] += hits / pos.len() as f64;
            }
        }
    }
    let nf = n as f64;
    Metrics {
        k,
        p: p.iter().map(|x| x / nf).collect(),
        ndcg: ndcg.iter().map(|x| x / nf).collect(),
        psp: psp_num
            .iter()
            .zip(&psp_den)
            .map(|(a, b)| if *b > 0.0 { a / b } else { 0.0 })
            .collect(),
        psndcg: psn_num
            .iter()
            .zip(&psn_den)
            .map(|(a, b)| if *b > 0.0 { a / b } else { 0.0 })
            .collect(),
        recall: recall.iter().map(|x| x / nf).collect(),
    }
}
