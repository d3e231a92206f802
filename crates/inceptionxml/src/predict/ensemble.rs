//! Ensembles: several models over the same labels, their scores averaged (the paper's starred
//! results are 3-model ensembles).

use std::path::PathBuf;

use candle_core::Device;
use rayon::prelude::*;
use xmc::predictions::top_k_sparse;
use xmc::sparse::sum_duplicates;

use xmc::labels::Labels;

use super::fusion::{fuse_rows, pool, Sparse};
use super::{Predictor, Row, Scoring};
use crate::config::ScoreMode;
use crate::error::{Error, Result};

/// One model directory: the network, its sparse model, or both fused.
pub struct Member {
    pub dir: PathBuf,
    /// Every label's name and URI.
    pub labels: Labels,
    pub network: Option<Predictor>,
    pub sparse: Option<Sparse>,
    n_labels: usize,
}

impl Member {
    /// Loads the directory: `config.json` and its files (the network), `sparse.json` and its
    /// files (the sparse model), or both; the two must score the same labels.
    pub fn load(dir: &std::path::Path, device: &Device, scoring: Scoring) -> Result<Member> {
        let sparse = Sparse::load(dir)?;
        let has_network = dir.join(crate::model_dir::CONFIG).exists();
        let network = match (has_network, &sparse) {
            (false, Some(_)) => None,
            _ => Some(Predictor::load(dir, device, scoring)?),
        };
        Self::new(dir, network, sparse)
    }

    /// A member from models already loaded from (or, for the sparse model, about to be saved
    /// in) `dir`: they must score the same labels; a sparse model alone takes its labels' names
    /// from `dir`'s `labels.tsv`.
    pub fn new(
        dir: &std::path::Path,
        network: Option<Predictor>,
        sparse: Option<Sparse>,
    ) -> Result<Member> {
        let model_err = |msg: String| Error::Model {
            path: dir.display().to_string(),
            msg,
        };
        let (labels, n_labels) = match (&network, &sparse) {
            (Some(p), Some(s)) if s.model.n_labels() != p.n_labels() => {
                return Err(model_err(format!(
                    "the sparse model scores {} labels, the network {}",
                    s.model.n_labels(),
                    p.n_labels()
                )))
            }
            (Some(p), _) => (p.labels.clone(), p.n_labels()),
            (None, Some(s)) => {
                let n = s.model.n_labels();
                (crate::model_dir::read_labels_file(dir, n)?, n)
            }
            (None, None) => return Err(model_err("neither a network nor a sparse model".into())),
        };
        Ok(Member {
            dir: dir.to_path_buf(),
            labels,
            network,
            sparse,
            n_labels,
        })
    }

    pub fn n_labels(&self) -> usize {
        self.n_labels
    }

    /// Top-k rows for `texts`.
    pub fn predict_texts<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        batch_size: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<Row>> {
        let pool = pool(k);
        match (&self.network, &self.sparse) {
            (Some(n), None) => n.predict_texts(texts, k, batch_size, score),
            (None, Some(s)) => Ok(s.model.predict(texts, k)),
            (Some(n), Some(s)) => {
                let (a, b) = rayon::join(
                    || n.predict_texts(texts, pool, batch_size, score),
                    || s.model.predict(texts, pool),
                );
                Ok(fuse_rows(&a?, &b, &s.fusion, k))
            }
            (None, None) => Ok(vec![Vec::new(); texts.len()]),
        }
    }

    /// Top-k for one text.
    pub fn predict_one(&self, text: &str, k: usize, score: Option<ScoreMode>) -> Result<Row> {
        let pool = pool(k);
        match (&self.network, &self.sparse) {
            (Some(n), None) => n.predict_one(text, k, score),
            (None, Some(s)) => Ok(s.model.predict(&[text], k).pop().unwrap_or_default()),
            (Some(n), Some(s)) => {
                // One text: the two models side by side on the pool's threads.
                let (a, b) = rayon::join(
                    || n.predict_one(text, pool, score),
                    || s.model.predict(&[text], pool),
                );
                Ok(fuse_rows(&[a?], &b, &s.fusion, k).pop().unwrap_or_default())
            }
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Several models over the same label set whose scores are averaged (the paper's starred
/// results are 3-model ensembles). Each member returns its top `pool` labels per text (a label a
/// member did not return counts 0 for it); the average is ranked and cut to k.
pub struct Ensemble {
    /// At least one (checked by [`Ensemble::load`], the only constructor).
    members: Vec<Member>,
}

impl Ensemble {
    /// Loads every directory, each onto `device` and scoring as `scoring` says
    /// ([`Member::load`]); all must score the same labels.
    pub fn load(dirs: &[PathBuf], device: &Device, scoring: Scoring) -> Result<Self> {
        if dirs.is_empty() {
            return Err(Error::Config("an ensemble needs at least one model".into()));
        }
        let members = dirs
            .iter()
            .map(|d| Member::load(d, device, scoring))
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = members.first() {
            for m in &members[1..] {
                if m.n_labels() != first.n_labels() {
                    return Err(Error::Model {
                        path: m.dir.display().to_string(),
                        msg: format!(
                            "scores {} labels, {} scores {}",
                            m.n_labels(),
                            first.dir.display(),
                            first.n_labels()
                        ),
                    });
                }
                // Numbered labels (a model without labels.tsv) match anything of the same size.
                let numbered = |p: &Member| p.labels == Labels::numbered(p.n_labels());
                if m.labels != first.labels && !numbered(m) && !numbered(first) {
                    return Err(Error::Model {
                        path: m.dir.display().to_string(),
                        msg: format!(
                            "its labels (labels.tsv) differ from those of {}",
                            first.dir.display()
                        ),
                    });
                }
            }
        }
        Ok(Ensemble { members })
    }

    pub fn n_labels(&self) -> usize {
        self.members[0].n_labels()
    }

    /// The labels' names and URIs (the first member's; an ensemble's members agree).
    pub fn labels(&self) -> &Labels {
        &self.members[0].labels
    }

    /// The members, one per directory.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Labels each member contributes per text for `k` results.
    pub fn pool(k: usize) -> usize {
        (4 * k).max(100)
    }

    /// Averaged top-k rows for `texts`.
    pub fn predict_texts<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        batch_size: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        if self.members.len() == 1 {
            return self.members[0].predict_texts(texts, k, batch_size, score);
        }
        let pool = Self::pool(k);
        let per: Vec<Vec<Vec<(u32, f32)>>> = self
            .members
            .iter()
            .map(|m| m.predict_texts(texts, pool, batch_size, score))
            .collect::<Result<_>>()?;
        Ok(average_rows(&per, texts.len(), k))
    }

    /// Averaged top-k for one text.
    pub fn predict_one(
        &self,
        text: &str,
        k: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<(u32, f32)>> {
        if self.members.len() == 1 {
            return self.members[0].predict_one(text, k, score);
        }
        let pool = Self::pool(k);
        let per: Vec<Vec<Vec<(u32, f32)>>> = self
            .members
            .iter()
            .map(|m| m.predict_one(text, pool, score).map(|r| vec![r]))
            .collect::<Result<_>>()?;
        Ok(average_rows(&per, 1, k).pop().unwrap_or_default())
    }
}

/// Row-wise mean of several models' sparse score rows, top-k of the result.
pub fn average_rows(per: &[Vec<Vec<(u32, f32)>>], n: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    let m = per.len().max(1) as f32;
    (0..n)
        .into_par_iter()
        .map(|r| {
            let all: Vec<(u32, f32)> = per
                .iter()
                .filter_map(|rows| rows.get(r))
                .flat_map(|row| row.iter().copied())
                .collect();
            let mut merged = sum_duplicates(all);
            for e in &mut merged {
                e.1 /= m;
            }
            top_k_sparse(merged, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensembles_average_with_missing_labels_as_zero() {
        let a = vec![vec![(1u32, 0.9f32), (2, 0.5)]];
        let b = vec![vec![(2u32, 0.7f32), (3, 0.6)]];
        let r = average_rows(&[a, b], 1, 3);
        assert_eq!(r[0][0].0, 2);
        assert!((r[0][0].1 - 0.6).abs() < 1e-6);
        assert!((r[0][1].1 - 0.45).abs() < 1e-6);
        assert_eq!(r[0][2], (3, 0.3));
    }
}
