//! Explanations by occlusion: for a text and each of its top-k labels, a weight per word of the
//! text, the label's score for the text minus its score with that word removed.
//!
//! A short text has few words, so occlusion is exact and cheap: the text and its variants (one
//! per word, that word left out) go through the model as one batch, and only the labels being
//! explained are scored. They are scored exactly ([`Predictor::label_scores`],
//! [`xmc::tree::SparseModel::label_scores`]): removing a word can drop a label's cluster from
//! InceptionXML+'s shortlist or its leaf from the sparse model's beam, and the label must still
//! get its true score, not 0. A fused directory explains its fused score, an ensemble its
//! averaged score. Words are the tokens the models see ([`xmc::text::tokenize`]: cleaned,
//! lowercased, stop words left out), in text order; words the vocabulary does not know are
//! reported too (their weight is the unknown token's, and the sparse model's for their
//! character n-grams).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::ensemble::{Ensemble, Member};
use super::Predictor;
use crate::config::ScoreMode;
use crate::error::{Error, Result};
use crate::ops::stable_sigmoid;

/// Texts explained together (their variants in one forward pass of the network).
pub const EXPLAIN_CHUNK: usize = 32;

/// The most words a text may have to be explained: a text of n words is scored n + 1 times
/// over rows of up to n words, so the work grows as n²; explanations are for short texts.
pub const MAX_EXPLAIN_WORDS: usize = 1024;

/// One word of a text and how much it adds to a label's score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WordWeight {
    pub word: String,
    /// The label's score for the text minus its score with this word removed (negative: the
    /// word lowers the score).
    pub weight: f32,
}

/// A ranked label with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub id: u32,
    /// The ranked score (what `predict` gives).
    pub score: f32,
    /// The label's exact score for the whole text, from which the weights are differences
    /// (equal to `score` unless a member's shortlist or beam had left the label out).
    pub exact: f32,
    /// One entry per word of the text, in text order.
    pub words: Vec<WordWeight>,
}

/// What [`Ensemble::occlusion`] measures for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Occlusion {
    /// The text's words (tokens), in order.
    pub words: Vec<String>,
    /// Each label's exact score for the whole text.
    pub full: Vec<f32>,
    /// `[labels][words]`: the label's score minus its score without the word.
    pub weights: Vec<Vec<f32>>,
}

/// The text and its occluded variants: the whole token list, then one list per word with that
/// word left out.
pub fn occlusions(tokens: &[String]) -> Vec<Vec<String>> {
    let mut v = Vec::with_capacity(tokens.len() + 1);
    v.push(tokens.to_vec());
    for i in 0..tokens.len() {
        let mut t = tokens.to_vec();
        t.remove(i);
        v.push(t);
    }
    v
}

impl Predictor {
    /// The exact score of each of `labels` for each token list (`[lists][labels]`): σ of the
    /// plain model's logit, or InceptionXML+'s σ(extreme) (times σ(meta) of the label's cluster
    /// with [`ScoreMode::Combined`]; `score` None: the model's own ranking), whatever the
    /// shortlist would hold. These are the scores [`super::rank_ids`] gives the labels it ranks.
    pub fn label_scores<T: AsRef<[String]>>(
        &self,
        tokens: &[T],
        labels: &[u32],
        score: Option<ScoreMode>,
    ) -> Result<Vec<Vec<f32>>> {
        let n = tokens.len();
        if n == 0 || labels.is_empty() {
            return Ok(vec![Vec::new(); n]);
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= self.n_labels()) {
            return Err(Error::Config(format!(
                "label {l} is not one of the model's {} labels",
                self.n_labels()
            )));
        }
        let s = self.config.model.seq_len;
        let mut ids = vec![0u32; n * s.max(1)];
        for (row, t) in ids.chunks_mut(s.max(1)).zip(tokens) {
            self.vocab.encode_tokens_into(t.as_ref(), &mut row[..s]);
        }
        let model = &self.model;
        let device = model.embedding_table().device().clone();
        let x = Tensor::from_slice(&ids, (n, s), &device)?;
        let sub = model.subwords_of_tokens(tokens);
        let h = model.encode(&model.embed(&x, sub.as_ref())?, false)?;
        let k = labels.len();
        let host = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let scores = match (model.plus(), model.clusters()) {
            (Some(plus), Some(index)) => {
                let mode = self
                    .config
                    .model
                    .plus
                    .as_ref()
                    .map_or(ScoreMode::Extreme, |p| score.unwrap_or(p.score));
                let pos: Vec<u32> = labels
                    .iter()
                    .map(|&l| index.position_of(l) as u32)
                    .collect();
                let rows = plus
                    .table
                    .as_tensor()
                    .index_select(&Tensor::from_slice(&pos, k, &device)?, 0)?;
                let g = plus.extreme_features(&h, false)?;
                let logits = host(g.matmul(&rows.t()?)?)?;
                let meta = match mode {
                    ScoreMode::Extreme => None,
                    ScoreMode::Combined => Some(host(plus.meta_logits(&h, false)?)?),
                };
                let c = index.n_clusters();
                (0..n)
                    .map(|r| {
                        (0..k)
                            .map(|j| {
                                let m = meta.as_ref().map_or(1.0, |m| {
                                    stable_sigmoid(m[r * c + index.cluster_of(labels[j])])
                                });
                                stable_sigmoid(logits[r * k + j]) * m
                            })
                            .collect()
                    })
                    .collect()
            }
            _ => {
                let head = model.full_head()?;
                let z = head.classifier_input(&h, false)?;
                let (w, b) = head.output_layer();
                let idx = Tensor::from_slice(labels, k, &device)?;
                let logits = z
                    .matmul(&w.index_select(&idx, 1)?)?
                    .broadcast_add(&b.index_select(&idx, 0)?)?;
                host(logits)?
                    .chunks(k)
                    .map(|row| row.iter().map(|&x| stable_sigmoid(x)).collect())
                    .collect()
            }
        };
        Ok(scores)
    }
}

/// Token lists and the labels to score on them.
pub struct Group {
    pub variants: Vec<Vec<String>>,
    pub labels: Vec<u32>,
    /// The variants are [`occlusions`] of these words (their features can then be derived from
    /// the text's own instead of recomputed).
    pub occluded: bool,
}

/// `scores[rows][labels]` for several groups at once, as `[group][variant][label]`.
type GroupScores = Vec<Vec<Vec<f32>>>;

impl Member {
    /// The exact scores of each group's labels on its variants (the network's, the sparse
    /// model's, or their fusion): the network scores every group's variants in one forward pass
    /// (against the union of their labels), the sparse model each group on its own labels (its
    /// cost is per row and label, so a union would only add work).
    pub fn group_scores(&self, groups: &[Group], score: Option<ScoreMode>) -> Result<GroupScores> {
        let network = |n: &Predictor| -> Result<GroupScores> {
            let mut union: Vec<u32> = groups
                .iter()
                .flat_map(|g| g.labels.iter().copied())
                .collect();
            union.sort_unstable();
            union.dedup();
            let all: Vec<&Vec<String>> = groups.iter().flat_map(|g| &g.variants).collect();
            let scores = n.label_scores(&all, &union, score)?;
            let mut rows = scores.into_iter();
            Ok(groups
                .iter()
                .map(|g| {
                    let at: Vec<usize> = g
                        .labels
                        .iter()
                        .map(|l| union.partition_point(|u| u < l))
                        .collect();
                    rows.by_ref()
                        .take(g.variants.len())
                        .map(|row| at.iter().map(|&j| row[j]).collect())
                        .collect()
                })
                .collect())
        };
        let sparse = |s: &super::fusion::Sparse| -> GroupScores {
            groups
                .par_iter()
                .map(|g| match (g.occluded, g.variants.first()) {
                    (true, Some(words)) => s.model.occlusion_scores(words, &g.labels),
                    _ => s
                        .model
                        .label_scores(&s.model.token_features(&g.variants), &g.labels),
                })
                .collect()
        };
        Ok(match (&self.network, &self.sparse) {
            (Some(n), None) => network(n)?,
            (None, Some(s)) => sparse(s),
            (Some(n), Some(s)) => {
                let (a, b) = rayon::join(|| network(n), || sparse(s));
                let f = &s.fusion;
                a?.into_iter()
                    .zip(b)
                    .map(|(ga, gb)| {
                        ga.into_iter()
                            .zip(gb)
                            .map(|(ra, rb)| {
                                ra.iter()
                                    .zip(&rb)
                                    .map(|(&x, &y)| f.network_part(x) + f.sparse_part(y))
                                    .collect()
                            })
                            .collect()
                    })
                    .collect()
            }
            (None, None) => groups
                .iter()
                .map(|g| vec![vec![0.0; g.labels.len()]; g.variants.len()])
                .collect(),
        })
    }
}

impl Ensemble {
    /// [`Member::group_scores`] averaged over the members.
    pub fn group_scores(&self, groups: &[Group], score: Option<ScoreMode>) -> Result<GroupScores> {
        let members = self.members();
        let mut sum: Option<GroupScores> = None;
        for m in members {
            let s = m.group_scores(groups, score)?;
            sum = Some(match sum {
                None => s,
                Some(mut acc) => {
                    for (a, b) in acc.iter_mut().flatten().zip(s.iter().flatten()) {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x += y;
                        }
                    }
                    acc
                }
            });
        }
        let mut sum = sum.unwrap_or_default();
        let inv = 1.0 / members.len().max(1) as f32;
        sum.iter_mut().flatten().flatten().for_each(|x| *x *= inv);
        Ok(sum)
    }

    /// The exact score of each of `labels` for each token list, averaged over the members
    /// (a member with a sparse model: the fusion `(1 − w)·net + w·sparse^p`).
    pub fn label_scores(
        &self,
        tokens: &[Vec<String>],
        labels: &[u32],
        score: Option<ScoreMode>,
    ) -> Result<Vec<Vec<f32>>> {
        let group = Group {
            variants: tokens.to_vec(),
            labels: labels.to_vec(),
            occluded: false,
        };
        Ok(self
            .group_scores(&[group], score)?
            .pop()
            .unwrap_or_default())
    }

    /// The occlusion weights of the words of `text` for each of `labels`.
    pub fn occlusion(
        &self,
        text: &str,
        labels: &[u32],
        score: Option<ScoreMode>,
    ) -> Result<Occlusion> {
        let mut o = self.occlusions(&[text], &[labels.to_vec()], score)?;
        Ok(o.pop().unwrap_or_else(|| Occlusion {
            words: Vec::new(),
            full: Vec::new(),
            weights: Vec::new(),
        }))
    }

    /// [`Ensemble::occlusion`] of several texts, each with its labels, scored together.
    pub fn occlusions<S: AsRef<str>>(
        &self,
        texts: &[S],
        labels: &[Vec<u32>],
        score: Option<ScoreMode>,
    ) -> Result<Vec<Occlusion>> {
        let mut groups = Vec::with_capacity(texts.len());
        for (i, (t, l)) in texts.iter().zip(labels).enumerate() {
            let words = xmc::text::tokenize(t.as_ref());
            if words.len() > MAX_EXPLAIN_WORDS {
                return Err(Error::Config(format!(
                    "text {}: {} words; explanations take texts of at most {MAX_EXPLAIN_WORDS} \
                     words",
                    i + 1,
                    words.len()
                )));
            }
            groups.push(Group {
                variants: occlusions(&words),
                labels: l.clone(),
                occluded: true,
            });
        }
        let scores = self.group_scores(&groups, score)?;
        Ok(groups
            .into_iter()
            .zip(scores)
            .map(|(g, s)| {
                let full = s[0].clone();
                let weights = (0..g.labels.len())
                    .map(|j| s[1..].iter().map(|v| full[j] - v[j]).collect())
                    .collect();
                let mut words = g.variants;
                Occlusion {
                    words: words.swap_remove(0),
                    full,
                    weights,
                }
            })
            .collect())
    }

    /// The top `k` labels of each text with the occlusion weight of each of its words, in
    /// chunks of [`EXPLAIN_CHUNK`] texts whose variants the network scores in one batch.
    pub fn explain<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        batch_size: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<Vec<Explained>>> {
        let ranked = self.predict_texts(texts, k, batch_size, score)?;
        let mut out = Vec::with_capacity(texts.len());
        // Texts in chunks: the network scores a chunk's variants in one forward pass.
        for (tc, rc) in texts
            .chunks(EXPLAIN_CHUNK)
            .zip(ranked.chunks(EXPLAIN_CHUNK))
        {
            let labels: Vec<Vec<u32>> = rc
                .iter()
                .map(|row| row.iter().map(|e| e.0).collect())
                .collect();
            let occ = self.occlusions(tc, &labels, score)?;
            for (row, o) in rc.iter().zip(occ) {
                out.push(
                    row.iter()
                        .zip(o.full)
                        .zip(o.weights)
                        .map(|((&(id, s), exact), w)| Explained {
                            id,
                            score: s,
                            exact,
                            words: o
                                .words
                                .iter()
                                .zip(w)
                                .map(|(word, weight)| WordWeight {
                                    word: word.clone(),
                                    weight,
                                })
                                .collect(),
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_leaves_out_one_word() {
        let t: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        let v = occlusions(&t);
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], t);
        assert_eq!(v[1], ["b", "a"]);
        assert_eq!(v[2], ["a", "a"]);
        assert_eq!(v[3], ["a", "b"]);
        assert_eq!(occlusions(&[]), vec![Vec::<String>::new()]);
    }
}
