//! Prediction: load a model directory, turn texts into top-k `(label, score)` rows with
//! `score = σ(logit)`, scores descending.
//!
//! [`predict_ids`] is the one code path used by the training loop's evaluation and by
//! `inceptionxml predict`, so both report the same rankings. Batches run one after another (the
//! tensor kernels use every core); the top-k selection of a batch's rows runs in parallel.
//!
//! InceptionXML+ models ([`predict_plus_batch`]) score the meta head over all C clusters, keep
//! each row's top-K clusters, and score only those clusters' labels with the extreme head: the
//! work per query is C + K·(L/C) rows of hd values, not L. Labels are ranked by σ(extreme) or,
//! with [`ScoreMode::Combined`], σ(extreme)·σ(meta). [`Ensemble`] averages several models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rayon::prelude::*;
use xmc::predictions::top_k_sparse;
use xmc::shortlist;
use xmc::vocab::Vocab;

use crate::error::{Error, Result};
use crate::model::meta_index::{above_rank, quantize_query, rescore_len, FastIndex, MetaIndex};
use crate::model::{InceptionXml, ScoreMode};
use crate::ops::{candidate_logits, stable_sigmoid, CandidatePlan};
use crate::train::checkpoint::{self, ModelDirConfig};

/// One batch of InceptionXML+ predictions.
pub struct PlusBatch {
    /// Top-k `(label, score)` per row, scores descending.
    pub rows: Vec<Vec<(u32, f32)>>,
    /// The K shortlisted clusters per row, best meta score first.
    pub clusters: Vec<Vec<u32>>,
}

/// Batches up to this size use the int8 indexes ([`FastIndex`], when given); larger ones score
/// the meta head with one f32 GEMM (which reuses each weight across rows) and every candidate
/// exactly.
pub const META_INDEX_MAX_BATCH: usize = 8;

/// Top-k rows of an InceptionXML+ model for ids `[B, S]`, evaluation mode. With `fast` and at
/// most [`META_INDEX_MAX_BATCH`] rows, the clusters are chosen with the int8 meta index and
/// the candidates pre-ranked with the int8 label table, the best `rescore_len(k)` rescored
/// exactly.
pub fn predict_plus_batch(
    model: &InceptionXml,
    ids: &Tensor,
    k: usize,
    score: ScoreMode,
    fast: Option<&FastIndex>,
) -> Result<PlusBatch> {
    let (plus, index) = match (model.plus(), model.clusters()) {
        (Some(p), Some(ix)) => (p, ix),
        (None, _) => {
            return Err(Error::InvalidParam(
                "not an InceptionXML+ model (no meta/extreme heads)".into(),
            ))
        }
        (_, None) => {
            return Err(Error::InvalidParam(
                "InceptionXML+ model without its label clusters".into(),
            ))
        }
    };
    let h = model.encode(&model.embed(ids)?, false)?;
    let top_k = plus.config().top_k;
    // Per row: the chosen clusters, best first, and their meta logits.
    let small = h.dims()[0] <= META_INDEX_MAX_BATCH;
    let (sl, meta_of) = match fast {
        Some(fi) if small => {
            let x: Vec<f32> = plus.meta_features(&h, false)?.flatten_all()?.to_vec1()?;
            let hd = plus.config().hidden_dim;
            let best: Vec<Vec<(u32, f32)>> = x
                .chunks(hd)
                .map(|row| fi.meta.top_clusters(row, top_k))
                .collect();
            let clusters = best
                .iter()
                .map(|r| r.iter().map(|e| e.0).collect())
                .collect();
            let meta_of: Vec<Vec<f32>> = best
                .into_iter()
                .map(|r| r.into_iter().map(|e| e.1).collect())
                .collect();
            (shortlist::from_clusters(clusters, index, None)?, meta_of)
        }
        _ => {
            let meta = plus.meta_logits(&h, false)?;
            let meta: Vec<f32> = meta.flatten_all()?.to_vec1()?;
            // σ is monotone: ranking clusters by logit is ranking them by score.
            let sl = shortlist::build(&meta, index, top_k, None)?;
            let c = index.n_clusters();
            let meta_of = sl
                .clusters
                .iter()
                .enumerate()
                .map(|(r, cs)| cs.iter().map(|&cl| meta[r * c + cl as usize]).collect())
                .collect();
            (sl, meta_of)
        }
    };
    let g = plus.extreme_features(&h, false)?;
    let meta_score = |ml: f32| match score {
        ScoreMode::Extreme => 1.0,
        ScoreMode::Combined => stable_sigmoid(ml),
    };
    let order = index.order();
    let rows = match fast {
        Some(fi) if small => {
            // Approximate scores of every candidate from the int8 table, exact scores of the
            // best rescore_len(k) of them.
            let hd = plus.config().hidden_dim;
            let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let pre = rescore_len(k);
            let positions: Vec<Vec<u32>> = (0..sl.rows)
                .map(|r| {
                    let (qg, sg) = quantize_query(&gv[r * hd..(r + 1) * hd]);
                    // Slot ranges of the row's clusters, then every slot's approximate score
                    // (σ(ext)·σ(meta) in combined mode; the raw logit orders like σ otherwise).
                    let mut starts = Vec::with_capacity(sl.clusters[r].len() + 1);
                    starts.push(0usize);
                    for &cl in &sl.clusters[r] {
                        let n = index.offset(cl as usize + 1) - index.offset(cl as usize);
                        starts.push(starts[starts.len() - 1] + n);
                    }
                    let mut approx = vec![0f32; starts[starts.len() - 1]];
                    let mut parts = Vec::with_capacity(sl.clusters[r].len());
                    let mut rest = approx.as_mut_slice();
                    for w in starts.windows(2) {
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
                        parts.push(head);
                        rest = tail;
                    }
                    let rows = &fi.extreme.rows;
                    parts
                        .into_par_iter()
                        .zip(sl.clusters[r].par_iter().zip(meta_of[r].par_iter()))
                        .with_min_len(16)
                        .for_each(|(out, (&cl, &ml))| {
                            let a = index.offset(cl as usize);
                            for (i, o) in out.iter_mut().enumerate() {
                                let z = rows.approx(a + i, &qg, sg);
                                *o = match score {
                                    ScoreMode::Extreme => z,
                                    ScoreMode::Combined => stable_sigmoid(z) * stable_sigmoid(ml),
                                };
                            }
                        });
                    // Slot -> table position.
                    let slot_pos = |j: usize| {
                        let c = starts.partition_point(|&s| s <= j) - 1;
                        (index.offset(sl.clusters[r][c] as usize) + j - starts[c]) as u32
                    };
                    above_rank(&approx, pre)
                        .into_iter()
                        .map(|j| slot_pos(j as usize))
                        .collect()
                })
                .collect();
            let plan = Arc::new(CandidatePlan::from_positions(&positions));
            let (logits, _) = candidate_logits(&g, plus.table.as_tensor(), plan.clone())?;
            let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let w = plan.width();
            (0..sl.rows)
                .map(|r| {
                    let mut by_cluster: Vec<(u32, f32)> = sl.clusters[r]
                        .iter()
                        .copied()
                        .zip(meta_of[r].iter().copied())
                        .collect();
                    by_cluster.sort_unstable_by_key(|e| e.0);
                    let cand = positions[r]
                        .iter()
                        .enumerate()
                        .map(|(j, &p)| {
                            let l = order[p as usize];
                            let cl = index.assign[l as usize];
                            let ml = by_cluster
                                .binary_search_by_key(&cl, |e| e.0)
                                .map_or(0.0, |i| by_cluster[i].1);
                            (l, stable_sigmoid(logits[r * w + j]) * meta_score(ml))
                        })
                        .collect();
                    top_k_sparse(cand, k)
                })
                .collect()
        }
        _ => {
            let plan = Arc::new(CandidatePlan::new(&sl, index)?);
            let (logits, _) = candidate_logits(&g, plus.table.as_tensor(), plan)?;
            let logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let w = sl.width;
            (0..sl.rows)
                .into_par_iter()
                .map(|r| {
                    let mut cand = Vec::with_capacity(w);
                    let mut slot = 0;
                    for (&cl, &ml) in sl.clusters[r].iter().zip(&meta_of[r]) {
                        let (a, b) = (index.offset(cl as usize), index.offset(cl as usize + 1));
                        let ms = meta_score(ml);
                        for &l in &order[a..b] {
                            cand.push((l, stable_sigmoid(logits[r * w + slot]) * ms));
                            slot += 1;
                        }
                    }
                    top_k_sparse(cand, k)
                })
                .collect()
        }
    };
    Ok(PlusBatch {
        rows,
        clusters: sl.clusters,
    })
}

/// Like [`predict_ids`] for an InceptionXML+ model, also returning each row's shortlisted
/// clusters (for meta precision and shortlist recall).
pub fn predict_plus_ids(
    model: &InceptionXml,
    ids: &[u32],
    k: usize,
    batch_size: usize,
    score: ScoreMode,
    fast: Option<&FastIndex>,
) -> Result<PlusBatch> {
    let s = check_ids(model, ids)?;
    let device = model.embedding_table().device().clone();
    let mut out = PlusBatch {
        rows: Vec::new(),
        clusters: Vec::new(),
    };
    for chunk in ids.chunks(batch_size.max(1) * s) {
        let t = Tensor::from_slice(chunk, (chunk.len() / s, s), &device)?;
        let b = predict_plus_batch(model, &t, k, score, fast)?;
        out.rows.extend(b.rows);
        out.clusters.extend(b.clusters);
    }
    Ok(out)
}

fn check_ids(model: &InceptionXml, ids: &[u32]) -> Result<usize> {
    let s = model.config().seq_len;
    if s == 0 || ids.len() % s != 0 {
        return Err(Error::InvalidParam(format!(
            "{} ids is not a multiple of the sequence length {s}",
            ids.len()
        )));
    }
    Ok(s)
}

/// Top-k rows of a plain InceptionXML model for ids `[B, S]` through the int8 index of its
/// output layer (`index`, from [`crate::model::head::Head::label_index`]): every label's logit
/// approximated from int8 weights, the best `rescore_len(k)` rescored exactly in f32. Reads a
/// quarter of the output layer's bytes per row: the batch-1 path.
pub fn predict_plain_indexed(
    model: &InceptionXml,
    index: &MetaIndex,
    ids: &Tensor,
    k: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let head = model.full_head()?;
    let h = model.encode(&model.embed(ids)?, false)?;
    let x = head.features(&h, false)?;
    let d = x.dims2()?.1;
    let x: Vec<f32> = x.flatten_all()?.to_vec1()?;
    Ok(x.chunks(d.max(1))
        .map(|row| {
            index
                .top_clusters(row, k)
                .into_iter()
                .map(|(l, z)| (l, stable_sigmoid(z)))
                .collect()
        })
        .collect())
}

/// Top-k rows for N×S token ids (`ids.len()` a multiple of the model's sequence length), in
/// batches of `batch_size`, evaluation mode (no dropout, batch-norm running statistics).
/// InceptionXML+ models rank with `score` (None: the model's configured default).
pub fn predict_ids(
    model: &InceptionXml,
    ids: &[u32],
    k: usize,
    batch_size: usize,
    score: Option<ScoreMode>,
) -> Result<Vec<Vec<(u32, f32)>>> {
    if let Some(p) = &model.config().plus {
        let mode = score.unwrap_or(p.score);
        return Ok(predict_plus_ids(model, ids, k, batch_size, mode, None)?.rows);
    }
    let s = check_ids(model, ids)?;
    let n = ids.len() / s;
    let device = model.embedding_table().device().clone();
    let mut out = Vec::with_capacity(n);
    for chunk in ids.chunks(batch_size.max(1) * s) {
        let b = chunk.len() / s;
        let t = Tensor::from_slice(chunk, (b, s), &device)?;
        let logits = model.forward(&t, false)?;
        out.extend(top_k_rows(&logits, k)?);
    }
    Ok(out)
}

/// Per row of a `[B, L]` logit tensor, the `k` best labels with their σ scores, descending.
pub fn top_k_rows(logits: &Tensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    let (_, l) = logits.dims2()?;
    let flat: Vec<f32> = logits
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(flat
        .par_chunks(l.max(1))
        .map(|row| {
            xmc::predictions::top_k(row, k)
                .into_iter()
                .map(|(c, x)| (c, stable_sigmoid(x)))
                .collect()
        })
        .collect())
}

/// A loaded model directory.
pub struct Predictor {
    pub dir: PathBuf,
    pub config: ModelDirConfig,
    pub vocab: Vocab,
    pub model: InceptionXml,
    /// InceptionXML+: the int8 meta and label-table indexes for small batches.
    pub fast: Option<FastIndex>,
    /// InceptionXML: the int8 index of the output layer for small batches.
    pub labels: Option<MetaIndex>,
    // Owns the model's variables.
    _varmap: VarMap,
}

impl Predictor {
    /// Loads `config.json`, `vocab.txt` and `weights.safetensors` of `dir`, checking that they
    /// agree (vocabulary size, tensor names and shapes); errors name the offending file. The
    /// weights go to `device`. With `indexes` (and on the CPU only) the int8 copies for small
    /// batches are built; without, small batches are scored exactly like large ones.
    pub fn load(dir: impl AsRef<Path>, device: &Device, indexes: bool) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir.display().to_string(),
                msg: "not a model directory".into(),
            });
        }
        let config = checkpoint::read_config(&dir)?;
        let vocab_path = dir.join(checkpoint::VOCAB);
        let vocab = Vocab::load(&vocab_path)?;
        if vocab.len() != config.model.vocab_size {
            return Err(Error::Model {
                path: vocab_path.display().to_string(),
                msg: format!(
                    "{} words, config.json says vocab_size {}",
                    vocab.len(),
                    config.model.vocab_size
                ),
            });
        }
        let varmap = VarMap::new();
        let mut model = InceptionXml::new(&config.model, &varmap, device, config.train.seed)?;
        checkpoint::load_weights(&dir, &model, &varmap)?;
        let indexes = indexes && device.is_cpu();
        let mut fast = None;
        let mut labels = None;
        if let (Some(head), true) = (model.layers().3, indexes) {
            labels = Some(head.label_index()?);
        }
        if config.model.plus.is_some() {
            model.set_clusters(checkpoint::read_clusters(&dir, &config.model)?)?;
            if let (Some(p), true) = (model.plus(), indexes) {
                fast = Some(FastIndex {
                    meta: p.meta_index()?,
                    extreme: p.extreme_index()?,
                });
            }
        }
        Ok(Predictor {
            dir,
            config,
            vocab,
            model,
            fast,
            labels,
            _varmap: varmap,
        })
    }

    /// Number of labels the model scores.
    pub fn n_labels(&self) -> usize {
        self.config.model.n_labels
    }

    /// Top-k rows for `texts`, in batches of `batch_size` (`score`: InceptionXML+ ranking,
    /// None for the model's default).
    pub fn predict_texts(
        &self,
        texts: &[String],
        k: usize,
        batch_size: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let ids = self.vocab.encode_all(texts, self.config.model.seq_len);
        if let Some(p) = &self.config.model.plus {
            let mode = score.unwrap_or(p.score);
            let fast = self.fast.as_ref();
            return Ok(predict_plus_ids(&self.model, &ids, k, batch_size, mode, fast)?.rows);
        }
        match &self.labels {
            Some(index) if batch_size <= META_INDEX_MAX_BATCH => {
                let s = self.config.model.seq_len;
                let mut out = Vec::with_capacity(texts.len());
                for chunk in ids.chunks(batch_size.max(1) * s) {
                    let t = Tensor::from_slice(chunk, (chunk.len() / s, s), self.device())?;
                    out.extend(predict_plain_indexed(&self.model, index, &t, k)?);
                }
                Ok(out)
            }
            _ => predict_ids(&self.model, &ids, k, batch_size, score),
        }
    }

    fn device(&self) -> &Device {
        self.model.embedding_table().device()
    }

    /// Top-k for one text: a batch of one, no thread hand-offs.
    pub fn predict_one(
        &self,
        text: &str,
        k: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<(u32, f32)>> {
        let s = self.config.model.seq_len;
        let ids = self.vocab.encode(text, s);
        let t = Tensor::from_slice(&ids, (1, s), self.device())?;
        if let Some(p) = &self.config.model.plus {
            let mode = score.unwrap_or(p.score);
            let b = predict_plus_batch(&self.model, &t, k, mode, self.fast.as_ref())?;
            return Ok(b.rows.into_iter().next().unwrap_or_default());
        }
        if let Some(index) = &self.labels {
            let rows = predict_plain_indexed(&self.model, index, &t, k)?;
            return Ok(rows.into_iter().next().unwrap_or_default());
        }
        let logits = self.model.forward(&t, false)?;
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        Ok(xmc::predictions::top_k(&row, k)
            .into_iter()
            .map(|(c, x)| (c, stable_sigmoid(x)))
            .collect())
    }
}

/// Several models over the same label set whose scores are averaged (the paper's starred
/// results are 3-model ensembles). Each member returns its top `pool` labels per text (a label a
/// member did not return counts 0 for it); the average is ranked and cut to k.
pub struct Ensemble {
    pub members: Vec<Predictor>,
}

impl Ensemble {
    /// Loads every directory; all must score the same number of labels. `exact`: no int8
    /// indexes ([`Predictor::load`]). Every member goes to `device`.
    pub fn load(dirs: &[PathBuf], exact: bool, device: &Device) -> Result<Self> {
        let members = dirs
            .iter()
            .map(|d| Predictor::load(d, device, !exact))
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
            }
        }
        Ok(Ensemble { members })
    }

    pub fn n_labels(&self) -> usize {
        self.members.first().map_or(0, Predictor::n_labels)
    }

    /// Labels each member contributes per text for `k` results.
    pub fn pool(k: usize) -> usize {
        (4 * k).max(100)
    }

    /// Averaged top-k rows for `texts`.
    pub fn predict_texts(
        &self,
        texts: &[String],
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
            let mut all: Vec<(u32, f32)> = per
                .iter()
                .filter_map(|rows| rows.get(r))
                .flat_map(|row| row.iter().copied())
                .collect();
            all.sort_unstable_by_key(|e| e.0);
            let mut merged: Vec<(u32, f32)> = Vec::with_capacity(all.len());
            for (l, s) in all {
                match merged.last_mut() {
                    Some(last) if last.0 == l => last.1 += s,
                    _ => merged.push((l, s)),
                }
            }
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
    fn top_k_rows_are_sigmoid_scores_descending() {
        let l =
            Tensor::from_slice(&[0.0f32, 3.0, -2.0, 1.0, -5.0, 2.0], (2, 3), &Device::Cpu).unwrap();
        let r = top_k_rows(&l, 2).unwrap();
        assert_eq!(r[0].iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 0]);
        assert!((r[0][0].1 - stable_sigmoid(3.0)).abs() < 1e-7);
        assert_eq!(r[1].iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 0]);
        assert!(r[1][0].1 >= r[1][1].1);
    }

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
