//! The sparse lexical model: TF-IDF word uni- and bigrams scored by a label tree of linear
//! classifiers, as Parabel (Prabhu et al., WWW 2018) and omikuji train it.
//!
//! - **Features.** [`TfIdf`] over [`crate::text::tokenize`]'s tokens (unigrams, bigrams and the
//!   words' character 4-grams, sublinear tf, rows L2-normalised), plus a bias column of value 1
//!   (the last column).
//! - **Tree.** Labels are represented by their PIFA vectors ([`crate::pifa`]) and split by balanced
//!   spherical 2-means ([`crate::cluster`]) until no leaf holds more than
//!   [`SparseParams::max_leaf`] labels: a complete binary tree of depth `D` whose `2^D` leaves hold
//!   the labels. With [`SparseParams::branching`] above 2, levels of that tree are merged into
//!   nodes with that many children (shallower, as Bonsai's trees).
//! - **Classifiers.** Every internal node has one linear classifier per child, trained on the texts
//!   that reach the node (those with a positive label below it; the root sees every text), positive
//!   when the text has a label below that child. Every leaf has one classifier per label, trained on
//!   the texts that reach the leaf. Each is a squared-hinge SVM ([`crate::linear`]) with small
//!   weights pruned. All nodes train in parallel; the result does not depend on the thread count.
//! - **Prediction.** Beam search: a child's log-score is its parent's plus `−max(0, 1 − w·x)²`;
//!   the [`SparseParams::beam`] best nodes of each level are expanded; a label's score is
//!   `exp(log-score)` at its leaf, averaged over the [`SparseParams::n_trees`] trees (a tree that
//!   does not reach the label adds 0).
//!
//! Weights are stored per node ("group" of classifiers) feature-major: the features any of the
//! node's classifiers use, sorted, each with its `(classifier, weight)` entries, so that scoring a
//! short text costs a binary search per word per node visited.

mod store;
#[cfg(test)]
mod tests;
mod train;

use rayon::prelude::*;

use crate::linear::LinearParams;
use crate::predictions::top_k_sparse;
use crate::sparse::{sum_duplicates, SparseMatrix};
use crate::tfidf::{Occluded, TfIdf, TfIdfParams};

pub use store::{CONFIG_FILE, TERMS_FILE, WEIGHTS_FILE};
pub use train::train;

/// Options of the sparse model. [`SparseParams::DEFAULT`] feeds the code and the CLI's help.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseParams {
    /// Trees trained with different seeds, scores averaged.
    pub n_trees: usize,
    /// Most labels in a leaf.
    pub max_leaf: usize,
    /// Children of an internal node: 2 is Parabel's binary tree; more gives a shallower, wider
    /// tree, as Bonsai's (a power of two; the balanced 2-means levels are merged). 16: on
    /// yso_finna_sv's validation split 1.0 P@1 above 2, within 0.3 of 64 at half its training time.
    pub branching: usize,
    /// Nodes kept per level of the beam search.
    pub beam: usize,
    /// The classifiers' options.
    pub linear: LinearParams,
    /// Word bigrams as features besides the words.
    pub bigrams: bool,
    /// Character n-grams of the words as features too (fastText's subwords; 0: none). 4: on
    /// yso_finna_sv (Swedish: inflected and compound words) 8.8 P@1 above words alone on the
    /// validation split, at about three times the training time.
    pub char_ngrams: usize,
    /// Keep terms seen in at least this many training texts.
    pub min_df: usize,
    /// Features kept per label's PIFA vector, for the clustering.
    pub pifa_top_n: usize,
    /// Seed of the clustering and the solvers' visiting order.
    pub seed: u64,
}

impl SparseParams {
    pub const DEFAULT: SparseParams = SparseParams {
        n_trees: 3,
        max_leaf: 100,
        branching: 16,
        beam: 10,
        linear: LinearParams::DEFAULT,
        bigrams: true,
        char_ngrams: 4,
        min_df: 1,
        pifa_top_n: crate::pifa::DEFAULT_TOP_N,
        seed: 0,
    };

    /// The TF-IDF options these parameters imply.
    pub fn tfidf(&self) -> TfIdfParams {
        TfIdfParams {
            bigrams: self.bigrams,
            min_df: self.min_df,
            max_features: None,
            sublinear_tf: true,
            char_ngrams: self.char_ngrams,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::param(format!("sparse model: {m}")));
        if self.n_trees == 0 || self.n_trees > 64 {
            return bad("trees must be in 1..=64");
        }
        if self.max_leaf < 2 {
            return bad("max_leaf must be >= 2");
        }
        if !self.branching.is_power_of_two() || !(2..=1024).contains(&self.branching) {
            return bad("branching must be a power of two within 2..=1024");
        }
        if self.beam == 0 || self.beam > 100_000 {
            return bad("beam must be in 1..=100000");
        }
        let l = &self.linear;
        if !(l.c > 0.0 && l.c.is_finite()) {
            return bad("C must be finite and > 0");
        }
        if !(l.eps > 0.0 && l.eps.is_finite()) {
            return bad("eps must be finite and > 0");
        }
        if l.max_iter == 0 {
            return bad("max_iter must be >= 1");
        }
        if !(l.weight_threshold >= 0.0 && l.weight_threshold.is_finite()) {
            return bad("weight threshold must be finite and >= 0");
        }
        if self.char_ngrams > 16 {
            return bad("char_ngrams must be at most 16");
        }
        if self.pifa_top_n == 0 {
            return bad("pifa_top_n must be >= 1");
        }
        self.tfidf().validate()
    }
}

impl Default for SparseParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The levels of a tree over `2^depth` leaves: level `d` holds the nodes `c >> shifts[d]` of the
/// leaves `c` (the root's shift is `depth`, the leaves' 0), so a node of level `d` has
/// `2^(shifts[d] − shifts[d + 1])` children. Nodes ("groups" of classifiers) are numbered level
/// by level: node `j` of level `d` is group `first[d] + j`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    pub(crate) shifts: Vec<u32>,
    first: Vec<usize>,
}

impl Shape {
    /// `2^depth` leaves, each internal node with `2^branch_bits` children (the root with fewer
    /// when `branch_bits` does not divide `depth`).
    pub(crate) fn new(depth: u32, branch_bits: u32) -> Shape {
        let m = branch_bits.max(1);
        let mut shifts = vec![depth];
        let mut s = depth - depth % m;
        if s == depth && depth > 0 {
            s -= m;
        }
        while shifts.last().is_some_and(|&l| l > 0) {
            shifts.push(s);
            s = s.saturating_sub(m);
        }
        Self::from_shifts(shifts).unwrap_or_else(|_| unreachable!("decreasing shifts to 0"))
    }

    /// Checks that the shifts fall strictly to 0 and at most 31 bits.
    pub(crate) fn from_shifts(shifts: Vec<u32>) -> Result<Shape, String> {
        if shifts.last() != Some(&0) || shifts[0] > 31 || shifts.windows(2).any(|w| w[0] <= w[1]) {
            return Err(format!("levels {shifts:?}: not decreasing to 0"));
        }
        let depth = shifts[0];
        let mut first = vec![0usize];
        for &sh in &shifts {
            let last = *first.last().unwrap_or(&0);
            first.push(last + (1usize << (depth - sh)));
        }
        Ok(Shape { shifts, first })
    }

    pub(crate) fn depth(&self) -> u32 {
        self.shifts[0]
    }

    /// Levels, the leaves' included.
    pub(crate) fn levels(&self) -> usize {
        self.shifts.len()
    }

    pub(crate) fn n_groups(&self) -> usize {
        self.first[self.levels()]
    }

    pub(crate) fn first(&self, level: usize) -> usize {
        self.first[level]
    }

    pub(crate) fn first_leaf(&self) -> usize {
        self.first[self.levels() - 1]
    }

    /// The level of group `g`.
    pub(crate) fn level_of(&self, g: usize) -> usize {
        self.first.partition_point(|&f| f <= g) - 1
    }

    /// `log2` of the children of a node of level `d` (not the leaves').
    pub(crate) fn child_bits(&self, d: usize) -> u32 {
        self.shifts[d] - self.shifts[d + 1]
    }
}

/// One tree: its leaves' labels and every node's classifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The levels and the numbering of the nodes.
    pub(crate) shape: Shape,
    /// `leaf_labels[leaf_ptr[c]..leaf_ptr[c + 1]]`: the labels of leaf `c`, in classifier order.
    pub(crate) leaf_ptr: Vec<u32>,
    pub(crate) leaf_labels: Vec<u32>,
    /// Feature-major postings: `post_groups[feat_ptr[f]..feat_ptr[f + 1]]` are the groups (nodes)
    /// with a weight on feature `f`, increasing, so that a text's few features point straight at
    /// short lists that stay in cache during its beam search.
    pub(crate) feat_ptr: Vec<u64>,
    pub(crate) post_groups: Vec<u32>,
    /// `post_ptr[k]..post_ptr[k + 1]`: the entries of the `k`-th posting.
    pub(crate) post_ptr: Vec<u64>,
    /// Per entry: the classifier within its group, and its weight.
    pub(crate) slots: Vec<u32>,
    pub(crate) weights: Vec<f32>,
    /// Derived from `leaf_labels` ([`Tree::with_label_places`]): each label's index in
    /// `leaf_labels` (`u32::MAX`: not in this tree).
    pub(crate) label_place: Vec<u32>,
}

impl Tree {
    fn n_groups(&self) -> usize {
        self.shape.n_groups()
    }

    /// Classifiers of group `g`: one per child for an internal node, the leaf's labels for a leaf.
    fn group_len(&self, g: usize) -> usize {
        let first = self.shape.first_leaf();
        if g < first {
            1 << self.shape.child_bits(self.shape.level_of(g))
        } else {
            let c = g - first;
            (self.leaf_ptr[c + 1] - self.leaf_ptr[c]) as usize
        }
    }

    /// `w·x` of every classifier of group `g` into `out[..group_len]`.
    fn score_group(&self, g: usize, x: (&[u32], &[f32]), out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.group_len(g), 0.0);
        self.add_group(g, x, out);
    }

    /// Adds group `g`'s classifier scores of the (sparse) row `x` to `out`.
    fn add_group(&self, g: usize, x: (&[u32], &[f32]), out: &mut [f32]) {
        for (&j, &v) in x.0.iter().zip(x.1) {
            let Some(range) = self.feat_ptr.get(j as usize..j as usize + 2) else {
                continue;
            };
            let (a, b) = (range[0] as usize, range[1] as usize);
            if let Ok(p) = self.post_groups[a..b].binary_search(&(g as u32)) {
                let k = a + p;
                let (e0, e1) = (self.post_ptr[k] as usize, self.post_ptr[k + 1] as usize);
                for e in e0..e1 {
                    out[self.slots[e] as usize] += self.weights[e] * v;
                }
            }
        }
    }

    /// Beam search: `(label, log-score)` of every label of the leaves the beam reaches.
    fn search(&self, x: (&[u32], &[f32]), beam: usize, s: &mut Scratch) -> Vec<(u32, f32)> {
        s.beam.clear();
        s.beam.push((0u32, 0f32));
        for d in 0..self.shape.levels() - 1 {
            s.next.clear();
            let bits = self.shape.child_bits(d);
            for &(j, lp) in &s.beam {
                let g = self.shape.first(d) + j as usize;
                self.score_group(g, x, &mut s.out);
                for (k, &sc) in s.out.iter().enumerate() {
                    s.next.push(((j << bits) + k as u32, lp + log_score(sc)));
                }
            }
            if s.next.len() > beam {
                s.next.select_nth_unstable_by(beam - 1, |a, b| {
                    b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0))
                });
                s.next.truncate(beam);
            }
            std::mem::swap(&mut s.beam, &mut s.next);
        }
        let mut labels = Vec::new();
        for &(c, lp) in &s.beam {
            let g = self.shape.first_leaf() + c as usize;
            self.score_group(g, x, &mut s.out);
            let ls = &self.leaf_labels
                [self.leaf_ptr[c as usize] as usize..self.leaf_ptr[c as usize + 1] as usize];
            for (&l, &sc) in ls.iter().zip(&s.out) {
                labels.push((l, lp + log_score(sc)));
            }
        }
        labels
    }
}

impl Tree {
    /// Fills [`Tree::label_place`] from the leaves' labels.
    pub(crate) fn with_label_places(mut self) -> Self {
        let n = self
            .leaf_labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        self.label_place = vec![u32::MAX; n];
        for (i, &l) in self.leaf_labels.iter().enumerate() {
            self.label_place[l as usize] = i as u32;
        }
        self
    }

    /// The leaf and the slot within it of each of `labels` (None: not in this tree).
    fn places(&self, labels: &[u32]) -> Vec<Option<(usize, usize)>> {
        labels
            .iter()
            .map(|&l| {
                let i = *self.label_place.get(l as usize)?;
                (i != u32::MAX).then(|| {
                    let c = self.leaf_ptr.partition_point(|&p| p <= i) - 1;
                    (c, (i - self.leaf_ptr[c]) as usize)
                })
            })
            .collect()
    }

    /// The groups on the path from the root to leaf `c`, each with the classifier within it
    /// that leads to the leaf's `slot`: one per level, the leaf last.
    fn path(&self, c: usize, slot: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let levels = self.shape.levels();
        (0..levels - 1)
            .map(move |d| {
                let node = c >> self.shape.shifts[d];
                let child = (c >> self.shape.shifts[d + 1]) & ((1 << self.shape.child_bits(d)) - 1);
                (self.shape.first(d) + node, child)
            })
            .chain(std::iter::once((self.shape.first_leaf() + c, slot)))
    }

    /// `log` of the path score of each label placed at `places` ([`Tree::places`]) on each of
    /// `rows` rows, `[rows][labels]`: the sum over the path from the root to the label's leaf of
    /// [`log_score`] of each classifier on it, whether or not a beam search would reach it (what
    /// [`Tree::search`] gives the labels it reaches). `score(g)` gives group `g`'s classifier
    /// scores on every row (`[rows][slots]`); it is asked once per group on the paths.
    fn path_log_scores(
        &self,
        rows: usize,
        places: &[Option<(usize, usize)>],
        mut score: impl FnMut(usize) -> Vec<Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let mut scored: Vec<(usize, Vec<Vec<f32>>)> = Vec::new();
        let mut out = vec![Vec::with_capacity(places.len()); rows];
        for place in places {
            let Some(&(c, slot)) = place.as_ref() else {
                out.iter_mut().for_each(|row| row.push(f32::NEG_INFINITY));
                continue;
            };
            let mut lp = vec![0.0; rows];
            for (g, k) in self.path(c, slot) {
                let i = scored.iter().position(|e| e.0 == g).unwrap_or_else(|| {
                    scored.push((g, score(g)));
                    scored.len() - 1
                });
                for (l, s) in lp.iter_mut().zip(&scored[i].1) {
                    *l += log_score(s[k]);
                }
            }
            for (row, l) in out.iter_mut().zip(lp) {
                row.push(l);
            }
        }
        out
    }

    /// [`Tree::path_log_scores`] of every row of `o`, rows given as differences from a base row
    /// ([`crate::tfidf::TfIdf::occlusion_deltas`], plus the bias column `bias` of value 1): each
    /// node's product with the base row is computed once, then only the terms a row changes.
    fn occluded_path_log_scores(
        &self,
        o: &Occluded,
        bias: u32,
        places: &[Option<(usize, usize)>],
    ) -> Vec<Vec<f32>> {
        let rows = o.scales.len();
        let split = |row: &[(u32, f32)]| -> (Vec<u32>, Vec<f32>) { row.iter().copied().unzip() };
        let (bi, bv) = split(&o.base);
        let changes: Vec<_> = o.changes.iter().map(|c| split(c)).collect();
        self.path_log_scores(rows, places, |g| {
            let n = self.group_len(g);
            let (mut base, mut b) = (vec![0.0; n], vec![0.0; n]);
            self.add_group(g, (&bi, &bv), &mut base);
            self.add_group(g, (&[bias], &[1.0]), &mut b);
            (0..rows)
                .map(|r| {
                    let mut s = base.clone();
                    self.add_group(g, (&changes[r].0, &changes[r].1), &mut s);
                    for (x, b) in s.iter_mut().zip(&b) {
                        *x = *x * o.scales[r] + b;
                    }
                    s
                })
                .collect()
        })
    }
}

/// The log of a classifier's probability-like score: `−max(0, 1 − s)²` (Parabel's transform of a
/// squared-hinge margin).
#[inline]
fn log_score(s: f32) -> f32 {
    let m = (1.0 - s).max(0.0);
    -m * m
}

#[derive(Default)]
struct Scratch {
    beam: Vec<(u32, f32)>,
    next: Vec<(u32, f32)>,
    out: Vec<f32>,
}

/// A trained sparse model: the TF-IDF vocabulary and the trees.
#[derive(Debug, Clone)]
pub struct SparseModel {
    pub(crate) params: SparseParams,
    pub(crate) tfidf: TfIdf,
    pub(crate) trees: Vec<Tree>,
    pub(crate) n_labels: usize,
}

impl SparseModel {
    /// Number of labels.
    pub fn n_labels(&self) -> usize {
        self.n_labels
    }

    /// The options it was trained with (the beam can be changed with [`SparseModel::set_beam`]).
    pub fn params(&self) -> &SparseParams {
        &self.params
    }

    /// Sets the beam width used by prediction (at least 1).
    pub fn set_beam(&mut self, beam: usize) {
        self.params.beam = beam.max(1);
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Stored weights over all trees.
    pub fn n_weights(&self) -> usize {
        self.trees.iter().map(|t| t.weights.len()).sum()
    }

    /// The feature rows of `texts` (TF-IDF plus the bias column).
    pub fn features<S: AsRef<str> + Sync>(&self, texts: &[S]) -> SparseMatrix {
        let tokens: Vec<Vec<String>> = texts
            .par_iter()
            .map(|t| crate::text::tokenize(t.as_ref()))
            .collect();
        with_bias(&self.tfidf.transform(&tokens))
    }

    /// The `k` best labels of every feature row of `x`, scores in `(0, 1]` descending
    /// (ties: lower label id first).
    pub fn predict_features(&self, x: &SparseMatrix, k: usize) -> Vec<Vec<(u32, f32)>> {
        (0..x.n_rows)
            .into_par_iter()
            .with_min_len(8)
            .map_init(Scratch::default, |s, r| self.predict_row(x.row(r), k, s))
            .collect()
    }

    /// The `k` best labels of every text.
    pub fn predict<S: AsRef<str> + Sync>(&self, texts: &[S], k: usize) -> Vec<Vec<(u32, f32)>> {
        self.predict_features(&self.features(texts), k)
    }

    /// The feature rows of texts already split into tokens ([`crate::text::tokenize`]'s).
    pub fn token_features(&self, tokens: &[Vec<String>]) -> SparseMatrix {
        with_bias(&self.tfidf.transform(tokens))
    }

    /// The feature rows of a tokenised text and of each of its occlusions (row `i + 1`: without
    /// word `i`): [`SparseModel::token_features`] of those token lists, each term looked up once
    /// ([`crate::tfidf::TfIdf::transform_occlusions`]).
    pub fn occlusion_features(&self, tokens: &[String]) -> SparseMatrix {
        with_bias(&self.tfidf.transform_occlusions(tokens))
    }

    /// The score of each of `labels` for each feature row of `x` (`[rows][labels]`): the mean
    /// over the trees of each label's path score, computed whether or not the beam reaches the
    /// label. For the labels a search ranks, it is the score [`SparseModel::predict_features`]
    /// gives when every tree's beam reaches them; the explanations score labels this way so that
    /// removing a word never drops a label out of the beam.
    pub fn label_scores(&self, x: &SparseMatrix, labels: &[u32]) -> Vec<Vec<f32>> {
        let inv = 1.0 / self.trees.len().max(1) as f32;
        let places: Vec<_> = self.trees.iter().map(|t| t.places(labels)).collect();
        (0..x.n_rows)
            .into_par_iter()
            .map(|r| {
                let mut sum = vec![0f32; labels.len()];
                for (t, at) in self.trees.iter().zip(&places) {
                    let lps = t.path_log_scores(1, at, |g| {
                        let mut v = Vec::new();
                        t.score_group(g, x.row(r), &mut v);
                        vec![v]
                    });
                    for (s, lp) in sum.iter_mut().zip(lps.iter().flatten()) {
                        *s += lp.exp() * inv;
                    }
                }
                sum
            })
            .collect()
    }

    /// [`SparseModel::label_scores`] of [`SparseModel::occlusion_features`]`(tokens)` (row 0
    /// the text, row `i + 1` the text without its word `i`), computed from the differences
    /// between the rows ([`crate::tfidf::TfIdf::occlusion_deltas`]): each node's product with
    /// the text's row once, then per variant only the few terms its word brings. Equal to
    /// within float rounding.
    pub fn occlusion_scores(&self, tokens: &[String], labels: &[u32]) -> Vec<Vec<f32>> {
        let o = self.tfidf.occlusion_deltas(tokens);
        let bias = self.tfidf.len() as u32;
        let inv = 1.0 / self.trees.len().max(1) as f32;
        let mut sum = vec![vec![0f32; labels.len()]; o.scales.len()];
        for t in &self.trees {
            let lps = t.occluded_path_log_scores(&o, bias, &t.places(labels));
            for (srow, lrow) in sum.iter_mut().zip(lps) {
                for (s, lp) in srow.iter_mut().zip(lrow) {
                    *s += lp.exp() * inv;
                }
            }
        }
        sum
    }

    fn predict_row(&self, x: (&[u32], &[f32]), k: usize, s: &mut Scratch) -> Vec<(u32, f32)> {
        let mut acc = Vec::new();
        let inv = 1.0 / self.trees.len() as f32;
        for t in &self.trees {
            for (l, lp) in t.search(x, self.params.beam, s) {
                acc.push((l, lp.exp() * inv));
            }
        }
        // Sum each label's scores over the trees.
        top_k_sparse(sum_duplicates(acc), k)
    }
}

/// `x` with one more column, the bias, of value 1 in every row.
pub fn with_bias(x: &SparseMatrix) -> SparseMatrix {
    let bias = x.n_cols as u32;
    let mut m = SparseMatrix {
        n_rows: x.n_rows,
        n_cols: x.n_cols + 1,
        indptr: Vec::with_capacity(x.n_rows + 1),
        indices: Vec::with_capacity(x.nnz() + x.n_rows),
        values: Vec::with_capacity(x.nnz() + x.n_rows),
    };
    m.indptr.push(0);
    for r in 0..x.n_rows {
        let (i, v) = x.row(r);
        m.indices.extend_from_slice(i);
        m.values.extend_from_slice(v);
        m.indices.push(bias);
        m.values.push(1.0);
        m.indptr.push(m.indices.len());
    }
    m
}
