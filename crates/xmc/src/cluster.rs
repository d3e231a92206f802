//! Balanced hierarchical spherical 2-means over label features (PIFA), as in MODEL.md §6.
//!
//! # Algorithm
//! The labels form the root node of a binary tree of fixed depth `D`, with `2^D` leaves = clusters.
//! Each node of `n` labels is split into a left child of `⌈n/2⌉` labels and a right child of
//! `⌊n/2⌋`, so at every level all node sizes are `⌈L/2^d⌉` or `⌊L/2^d⌋`: cluster sizes differ by at
//! most one label. A node is split by balanced spherical 2-means:
//!
//! 1. two distinct random labels of the node (with different feature rows where possible) are the
//!    initial centroids `c0`, `c1`;
//! 2. each label gets the score `⟨x, c0⟩ − ⟨x, c1⟩`; labels are ordered by decreasing score (ties:
//!    increasing label id) and the first ones go left, the rest right;
//! 3. the centroids become the normalised means of the two sides; the objective
//!    `Σ_left ⟨x, c0⟩ + Σ_right ⟨x, c1⟩` (equal to `‖Σ_left x‖ + ‖Σ_right x‖` after the update)
//!    never decreases; stop when it improves by less than `tol` (relative) or after `max_iter`
//!    assignments.
//!
//! Labels with an all-zero feature row (no training text) do not take part in the 2-means: in
//! increasing id order they alternate left, right, left, … and the remaining room on each side is
//! filled by the 2-means over the other labels, so they spread evenly over the leaves.
//!
//! Randomness: the node at heap position `p` (root 1, children `2p`, `2p + 1`) draws its initial
//! centroids from a ChaCha8 generator seeded with a hash of `(seed, p)`. Subtrees are split in
//! parallel (rayon), and each node's computation is sequential in a fixed order, so the result for
//! a given seed is identical whatever the number of threads.
//!
//! Cost: one assignment costs `O(nnz(node))` (sparse rows against a dense scratch vector that is
//! cleared through its touched indices, one scratch per busy thread), so the whole tree costs
//! `O(nnz · iterations · D)`.
//!
//! # File format (`clusters.txt`)
//! A text file: a header line `n_labels n_clusters`, then one line per label (label 0 first) holding
//! its cluster id in `0..n_clusters`:
//!
//! ```text
//! 5 2
//! 0
//! 1
//! 1
//! 0
//! 0
//! ```
//!
//! Written atomically ([`crate::io::write_atomic`]). [`Clustering::read`] rejects a bad header, a
//! bad or out-of-range id and a line count that disagrees with the header, naming file and line.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::io::{self, Lines};
use crate::sparse::SparseMatrix;

/// Default bound on the labels per cluster when no cluster count is given.
pub const DEFAULT_MAX_LEAF: usize = 16;

/// When to stop splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Exactly this many clusters (a power of two, at most the number of labels).
    Clusters(usize),
    /// The fewest levels such that every cluster has at most this many labels.
    MaxLeaf(usize),
}

/// Clustering options.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterParams {
    /// Number of clusters or bound on their size. Default: `MaxLeaf(16)`.
    pub stop: Stop,
    /// Seed of the initial centroids. Default 0.
    pub seed: u64,
    /// Most assignments per node. Default 20.
    pub max_iter: usize,
    /// Stop a node when the objective improves by less than this fraction. Default 1e-4.
    pub tol: f64,
}

impl Default for ClusterParams {
    fn default() -> Self {
        ClusterParams {
            stop: Stop::MaxLeaf(DEFAULT_MAX_LEAF),
            seed: 0,
            max_iter: 20,
            tol: 1e-4,
        }
    }
}

impl ClusterParams {
    /// Checks the ranges that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        match self.stop {
            Stop::Clusters(c) if c == 0 || !c.is_power_of_two() => {
                return Err(Error::param(format!(
                    "clusters: {c} is not a power of two (1, 2, 4, …)"
                )))
            }
            Stop::MaxLeaf(0) => return Err(Error::param("max-leaf must be >= 1")),
            _ => {}
        }
        if self.max_iter == 0 {
            return Err(Error::param("clustering: max_iter must be >= 1"));
        }
        if !(self.tol >= 0.0 && self.tol.is_finite()) {
            return Err(Error::param(format!(
                "clustering: tol {} must be finite and >= 0",
                self.tol
            )));
        }
        Ok(())
    }

    /// The tree depth `D` (clusters = `2^D`) for `n_labels` labels.
    pub fn depth(&self, n_labels: usize) -> Result<u32> {
        self.validate()?;
        if n_labels == 0 {
            return Err(Error::param("clustering: there are no labels to cluster"));
        }
        match self.stop {
            Stop::Clusters(c) => {
                if c > n_labels {
                    return Err(Error::param(format!(
                        "clusters: {c} clusters for only {n_labels} labels; use fewer clusters or --max-leaf"
                    )));
                }
                Ok(c.trailing_zeros())
            }
            Stop::MaxLeaf(m) => {
                let mut d = 0u32;
                while n_labels.div_ceil(1usize << d) > m {
                    d += 1;
                }
                Ok(d)
            }
        }
    }
}

/// A label -> cluster map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clustering {
    /// `assign[label]` is the label's cluster id, `< n_clusters`.
    pub assign: Vec<u32>,
    pub n_clusters: usize,
}

impl Clustering {
    /// Number of labels.
    pub fn n_labels(&self) -> usize {
        self.assign.len()
    }

    /// Number of labels in each cluster.
    pub fn sizes(&self) -> Vec<usize> {
        let mut s = vec![0usize; self.n_clusters];
        for &c in &self.assign {
            s[c as usize] += 1;
        }
        s
    }

    /// The labels of each cluster, in increasing order.
    pub fn members(&self) -> Vec<Vec<u32>> {
        let mut m: Vec<Vec<u32>> = self.sizes().into_iter().map(Vec::with_capacity).collect();
        for (l, &c) in self.assign.iter().enumerate() {
            m[c as usize].push(l as u32);
        }
        m
    }

    /// Errors (naming `path`) unless the clustering covers exactly `n_labels` labels.
    pub fn check_labels(&self, n_labels: usize, path: impl AsRef<Path>) -> Result<()> {
        if self.n_labels() != n_labels {
            return Err(Error::mismatch(
                path,
                format!(
                    "the clustering covers {} labels but the data has {n_labels}",
                    self.n_labels()
                ),
            ));
        }
        Ok(())
    }

    /// Writes the text format (see the module documentation) to `w`.
    pub fn write_to<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        writeln!(w, "{} {}", self.n_labels(), self.n_clusters)?;
        for &c in &self.assign {
            writeln!(w, "{c}")?;
        }
        Ok(())
    }

    /// Writes the text format to `path` atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        io::write_atomic(path, |w| self.write_to(w))
    }

    /// Reads the text format from `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_lines(&mut io::lines(path.as_ref())?)
    }

    /// Reads the text format from any buffered reader; `path` is used in messages.
    pub fn read_from<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Self> {
        Self::read_lines(&mut Lines::new(reader, path))
    }

    fn read_lines<R: BufRead>(lines: &mut Lines<R>) -> Result<Self> {
        let (n_labels, n_clusters) =
            crate::sparse::read_header(lines).map_err(|e| retitle(e, "`n_labels n_clusters`"))?;
        if n_clusters == 0 || n_clusters > u32::MAX as usize {
            return Err(lines.error(format!("bad header: {n_clusters} clusters")));
        }
        // The header's count is not trusted for the allocation: the vector grows with the file.
        let mut assign = Vec::with_capacity(n_labels.min(crate::io::MAX_PREALLOC));
        while let Some(line) = lines.next_line()? {
            let t = line.trim();
            let parsed: std::result::Result<Option<u32>, String> = if assign.len() == n_labels {
                if t.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "more lines than the {n_labels} labels the header states"
                    ))
                }
            } else {
                match t.parse::<u32>() {
                    Err(_) => Err(format!("bad cluster id {t:?}")),
                    Ok(c) if c as usize >= n_clusters => Err(format!(
                        "cluster id {c} out of range: the header states {n_clusters} clusters"
                    )),
                    Ok(c) => Ok(Some(c)),
                }
            };
            if let Some(c) = parsed.map_err(|m| lines.error(m))? {
                assign.push(c);
            }
        }
        if assign.len() != n_labels {
            return Err(lines.error(format!(
                "header states {n_labels} labels but the file has {}",
                assign.len()
            )));
        }
        // Every cluster holds a label: an empty one has no rows in the label table to score.
        let mut used = vec![false; n_clusters];
        for &c in &assign {
            used[c as usize] = true;
        }
        if let Some(c) = used.iter().position(|u| !u) {
            return Err(Error::parse(
                lines.path(),
                1,
                format!(
                    "cluster {c} has no label: each of the {n_clusters} clusters the header states \
                     needs at least one"
                ),
            ));
        }
        Ok(Clustering { assign, n_clusters })
    }
}

fn retitle(e: Error, what: &str) -> Error {
    match e {
        Error::Parse { path, line, msg } => Error::Parse {
            path,
            line,
            msg: msg.replace("`rows cols`", what),
        },
        other => other,
    }
}

/// Counters from one clustering run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Tree depth (clusters = `2^depth`).
    pub depth: u32,
    /// Nodes split by 2-means.
    pub nodes: u64,
    /// Assignments computed, over all nodes.
    pub iterations: u64,
    /// Labels with an all-zero feature row.
    pub empty_labels: usize,
}

/// Clusters the rows of `features` (`L × V`, rows L2-normalised, e.g. [`crate::pifa::pifa`]).
pub fn cluster_labels(features: &SparseMatrix, params: &ClusterParams) -> Result<Clustering> {
    cluster_labels_with(features, params, &|_| {}).map(|(c, _)| c)
}

/// [`cluster_labels`] with a progress callback (called with increments; the total is
/// `L × depth` label-levels) and run counters.
pub fn cluster_labels_with(
    features: &SparseMatrix,
    params: &ClusterParams,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Clustering, ClusterReport)> {
    let n = features.n_rows;
    let depth = params.depth(n)?;
    if depth > 31 {
        return Err(Error::param("clustering: more than 2^31 clusters"));
    }
    let ctx = Ctx {
        n_cols: features.n_cols,
        params,
        depth,
        pool: Mutex::new(Vec::new()),
        progress,
        nodes: AtomicU64::new(0),
        iterations: AtomicU64::new(0),
    };
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut lens: Vec<u32> = (0..n).map(|r| features.row_len(r) as u32).collect();
    let mut idx = features.indices.clone();
    let mut val = features.values.clone();
    let nnz = features.indptr[n];
    let root = Block {
        ids: &mut perm,
        lens: &mut lens,
        idx: &mut idx[features.indptr[0]..nnz],
        val: &mut val[features.indptr[0]..nnz],
    };
    recurse(&ctx, root, 1, 0);
    drop((idx, val, lens));
    // Leaves are contiguous ranges of `perm`, left to right.
    let mut assign = vec![0u32; n];
    let mut start = 0usize;
    for (c, size) in leaf_sizes(n, depth).into_iter().enumerate() {
        for &l in &perm[start..start + size] {
            assign[l as usize] = c as u32;
        }
        start += size;
    }
    let report = ClusterReport {
        depth,
        nodes: ctx.nodes.load(Ordering::Relaxed),
        iterations: ctx.iterations.load(Ordering::Relaxed),
        empty_labels: (0..n).filter(|&r| features.row_len(r) == 0).count(),
    };
    Ok((
        Clustering {
            assign,
            n_clusters: 1usize << depth,
        },
        report,
    ))
}

/// Sizes of the `2^depth` leaves, left to right, when every node of `n` splits `⌈n/2⌉ + ⌊n/2⌋`.
pub fn leaf_sizes(n: usize, depth: u32) -> Vec<usize> {
    let mut sizes = vec![n];
    for _ in 0..depth {
        sizes = sizes.iter().flat_map(|&s| [s.div_ceil(2), s / 2]).collect();
    }
    sizes
}

struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    mark: Vec<bool>,
    touched: Vec<u32>,
    /// `(score, local row)` of the node's non-empty rows.
    scores: Vec<(f32, u32)>,
    tmp_idx: Vec<u32>,
    tmp_val: Vec<f32>,
}

impl Scratch {
    fn new(v: usize) -> Self {
        Scratch {
            a: vec![0.0; v],
            b: vec![0.0; v],
            mark: vec![false; v],
            touched: Vec::new(),
            scores: Vec::new(),
            tmp_idx: Vec::new(),
            tmp_val: Vec::new(),
        }
    }

    /// `dst += s · row`, recording first touches.
    fn add(
        dst: &mut [f32],
        mark: &mut [bool],
        touched: &mut Vec<u32>,
        row: (&[u32], &[f32]),
        s: f32,
    ) {
        for (&j, &v) in row.0.iter().zip(row.1) {
            let ju = j as usize;
            if !mark[ju] {
                mark[ju] = true;
                touched.push(j);
            }
            dst[ju] += s * v;
        }
    }

    /// Zeroes `a`, `b` and the marks through the touched list.
    fn clear(&mut self) {
        for &j in &self.touched {
            let j = j as usize;
            self.a[j] = 0.0;
            self.b[j] = 0.0;
            self.mark[j] = false;
        }
        self.touched.clear();
    }
}

struct Ctx<'a> {
    n_cols: usize,
    params: &'a ClusterParams,
    depth: u32,
    pool: Mutex<Vec<Scratch>>,
    progress: &'a (dyn Fn(u64) + Sync),
    nodes: AtomicU64,
    iterations: AtomicU64,
}

/// The labels of one node with their feature rows stored contiguously (in label id order), so
/// that every pass over a node streams through memory. Children are disjoint sub-slices.
struct Block<'a> {
    ids: &'a mut [u32],
    lens: &'a mut [u32],
    idx: &'a mut [u32],
    val: &'a mut [f32],
}

/// Row offsets of a block.
fn offsets(lens: &[u32]) -> Vec<usize> {
    let mut o = Vec::with_capacity(lens.len() + 1);
    o.push(0usize);
    let mut acc = 0usize;
    for &l in lens {
        acc += l as usize;
        o.push(acc);
    }
    o
}

/// Below this many labels a node's two children are split on the current thread.
const PAR_MIN: usize = 256;

fn recurse(ctx: &Ctx, block: Block, node: u64, level: u32) {
    if level == ctx.depth {
        return;
    }
    let n = block.ids.len();
    let mut s = ctx
        .pool
        .lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_else(|| Scratch::new(ctx.n_cols));
    let mut block = block;
    let n_left_nnz = split(ctx, &mut s, &mut block, node);
    if let Ok(mut p) = ctx.pool.lock() {
        p.push(s);
    }
    (ctx.progress)(n as u64);
    let k0 = n.div_ceil(2);
    let Block {
        ids,
        lens,
        idx,
        val,
    } = block;
    let (ids0, ids1) = ids.split_at_mut(k0);
    let (lens0, lens1) = lens.split_at_mut(k0);
    let (idx0, idx1) = idx.split_at_mut(n_left_nnz);
    let (val0, val1) = val.split_at_mut(n_left_nnz);
    let left = Block {
        ids: ids0,
        lens: lens0,
        idx: idx0,
        val: val0,
    };
    let right = Block {
        ids: ids1,
        lens: lens1,
        idx: idx1,
        val: val1,
    };
    if n >= PAR_MIN {
        rayon::join(
            || recurse(ctx, left, 2 * node, level + 1),
            || recurse(ctx, right, 2 * node + 1, level + 1),
        );
    } else {
        recurse(ctx, left, 2 * node, level + 1);
        recurse(ctx, right, 2 * node + 1, level + 1);
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Orders scores: larger first, then smaller row (= smaller label id).
fn by_score(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1))
}

/// Splits a block (rows in increasing label id order) in place into `⌈n/2⌉` left rows then
/// `⌊n/2⌋` right rows, each side in increasing label id order. Returns the left side's nnz.
fn split(ctx: &Ctx, s: &mut Scratch, block: &mut Block, node: u64) -> usize {
    let n = block.ids.len();
    let offs = offsets(block.lens);
    if n < 2 {
        return offs[n.min(1)];
    }
    ctx.nodes.fetch_add(1, Ordering::Relaxed);
    let k0 = n.div_ceil(2);
    let mut zeros0 = Vec::new();
    let mut zeros1 = Vec::new();
    s.scores.clear();
    for k in 0..n as u32 {
        if block.lens[k as usize] == 0 {
            if (zeros0.len() + zeros1.len()) % 2 == 0 {
                zeros0.push(k);
            } else {
                zeros1.push(k);
            }
        } else {
            s.scores.push((0.0, k));
        }
    }
    let nz = s.scores.len();
    // Room for non-empty rows on the left (zeros0.len() = ⌈z/2⌉ <= ⌈n/2⌉).
    let left = k0 - zeros0.len();
    if left > 0 && left < nz {
        let rows = Rows {
            offs: &offs,
            idx: block.idx,
            val: block.val,
        };
        two_means(ctx, s, &rows, left, node);
    }
    let mut order: Vec<u32> = s.scores[..left].iter().map(|e| e.1).collect();
    order.extend_from_slice(&zeros0);
    order.sort_unstable();
    let mut right: Vec<u32> = s.scores[left..].iter().map(|e| e.1).collect();
    right.extend_from_slice(&zeros1);
    right.sort_unstable();
    order.extend_from_slice(&right);
    permute(s, block, &offs, &order)
}

/// Reorders the block's rows to `order` (local row numbers); returns the nnz of the first
/// `⌈n/2⌉` rows.
fn permute(s: &mut Scratch, block: &mut Block, offs: &[usize], order: &[u32]) -> usize {
    let n = order.len();
    let k0 = n.div_ceil(2);
    s.tmp_idx.clear();
    s.tmp_val.clear();
    let mut ids = Vec::with_capacity(n);
    let mut lens = Vec::with_capacity(n);
    let mut left_nnz = 0usize;
    for (pos, &k) in order.iter().enumerate() {
        let (a, b) = (offs[k as usize], offs[k as usize + 1]);
        s.tmp_idx.extend_from_slice(&block.idx[a..b]);
        s.tmp_val.extend_from_slice(&block.val[a..b]);
        ids.push(block.ids[k as usize]);
        lens.push(block.lens[k as usize]);
        if pos + 1 == k0 {
            left_nnz = s.tmp_idx.len();
        }
    }
    block.idx.copy_from_slice(&s.tmp_idx);
    block.val.copy_from_slice(&s.tmp_val);
    block.ids.copy_from_slice(&ids);
    block.lens.copy_from_slice(&lens);
    left_nnz
}

/// A node's rows.
struct Rows<'a> {
    offs: &'a [usize],
    idx: &'a [u32],
    val: &'a [f32],
}

impl Rows<'_> {
    fn row(&self, k: u32) -> (&[u32], &[f32]) {
        let (a, b) = (self.offs[k as usize], self.offs[k as usize + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }
}

/// Balanced 2-means over `s.scores` (non-empty rows, `(_, row)` in increasing row order): on
/// return its first `left` entries are the left side.
fn two_means(ctx: &Ctx, s: &mut Scratch, x: &Rows, left: usize, node: u64) {
    let nz = s.scores.len();
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(ctx.params.seed ^ splitmix64(node)));
    // Initial centroids: two distinct labels, with different rows if a few tries find them.
    let a = s.scores[rng.gen_range(0..nz)].1;
    let mut b = a;
    for _ in 0..16 {
        let k = rng.gen_range(0..nz - 1);
        let cand = s.scores[if s.scores[k].1 >= a { k + 1 } else { k }].1;
        b = cand;
        if x.row(cand) != x.row(a) {
            break;
        }
    }
    // w = c0 - c1 lives in `a`.
    Scratch::add(&mut s.a, &mut s.mark, &mut s.touched, x.row(a), 1.0);
    Scratch::add(&mut s.a, &mut s.mark, &mut s.touched, x.row(b), -1.0);
    let mut prev = 0f64;
    for it in 0..ctx.params.max_iter {
        ctx.iterations.fetch_add(1, Ordering::Relaxed);
        for e in s.scores.iter_mut() {
            let (idx, val) = x.row(e.1);
            let mut d = 0f32;
            for (&j, &v) in idx.iter().zip(val) {
                d += v * s.a[j as usize];
            }
            e.0 = d;
        }
        s.clear();
        s.scores.select_nth_unstable_by(left, by_score);
        // Sums of both sides, in the (deterministic) order of `scores`.
        for (k, e) in s.scores.iter().enumerate() {
            let row = x.row(e.1);
            let dst = if k < left { &mut s.a } else { &mut s.b };
            Scratch::add(dst, &mut s.mark, &mut s.touched, row, 1.0);
        }
        let (mut n0, mut n1) = (0f64, 0f64);
        for &j in &s.touched {
            let (p, q) = (s.a[j as usize] as f64, s.b[j as usize] as f64);
            n0 += p * p;
            n1 += q * q;
        }
        let (n0, n1) = (n0.sqrt(), n1.sqrt());
        let obj = n0 + n1;
        let converged = it > 0 && obj - prev <= ctx.params.tol * prev;
        if converged || it + 1 == ctx.params.max_iter {
            s.clear();
            break;
        }
        let inv0 = if n0 > 0.0 { (1.0 / n0) as f32 } else { 0.0 };
        let inv1 = if n1 > 0.0 { (1.0 / n1) as f32 } else { 0.0 };
        for &j in &s.touched {
            let j = j as usize;
            s.a[j] = s.a[j] * inv0 - s.b[j] * inv1;
            s.b[j] = 0.0;
        }
        prev = obj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_quality::cooccurrence_quality;
    use crate::pifa::pifa;
    use crate::synthetic::{generate, SynthParams};
    use crate::tfidf::{TfIdf, TfIdfParams};

    /// PIFA of a small synthetic problem, with its training label matrix.
    fn problem(n_labels: usize, seed: u64) -> (SparseMatrix, SparseMatrix) {
        let p = SynthParams {
            n_labels,
            n_train: n_labels * 4,
            n_test: 0,
            vocab: 5000,
            seed,
            ..Default::default()
        };
        let d = generate(&p).unwrap();
        let docs: Vec<Vec<String>> = d
            .train_texts
            .iter()
            .map(|t| t.split(' ').map(str::to_owned).collect())
            .collect();
        let (_, x) = TfIdf::fit_transform(&docs, TfIdfParams::default()).unwrap();
        (pifa(&x, &d.train_labels, 1000).unwrap(), d.train_labels)
    }

    fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn same_seed_same_result_whatever_the_thread_count() {
        let (x, _) = problem(3000, 1);
        let p = ClusterParams {
            stop: Stop::Clusters(64),
            seed: 7,
            ..Default::default()
        };
        let one = with_threads(1, || cluster_labels(&x, &p).unwrap());
        for t in [2, 3, 8] {
            assert_eq!(
                with_threads(t, || cluster_labels(&x, &p).unwrap()),
                one,
                "{t} threads"
            );
        }
        let mut a = Vec::new();
        one.write_to(&mut a).unwrap();
        let mut b = Vec::new();
        with_threads(4, || cluster_labels(&x, &p).unwrap())
            .write_to(&mut b)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_give_different_clusters() {
        let (x, _) = problem(2000, 2);
        let run = |seed| {
            cluster_labels(
                &x,
                &ClusterParams {
                    stop: Stop::Clusters(32),
                    seed,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let (a, b) = (run(1), run(2));
        assert_ne!(a.assign, b.assign);
        // Both are still balanced.
        assert_eq!(
            a.sizes().iter().max().unwrap() - a.sizes().iter().min().unwrap(),
            1 - (2000 % 32 == 0) as usize
        );
    }

    #[test]
    fn balanced_at_every_level() {
        let (x, _) = problem(1237, 3);
        for depth in 0..=10u32 {
            let c = cluster_labels(
                &x,
                &ClusterParams {
                    stop: Stop::Clusters(1 << depth),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(c.n_clusters, 1 << depth);
            let sizes = c.sizes();
            let (mn, mx) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
            assert!(mx - mn <= 1, "depth {depth}: sizes {mn}..{mx}");
            assert_eq!(sizes, leaf_sizes(1237, depth));
            assert_eq!(sizes.iter().sum::<usize>(), 1237);
        }
        // A deep tree is also balanced at each inner level: the leaves of the depth-d tree merged
        // pairwise give the level d-1 nodes.
        let c = cluster_labels(
            &x,
            &ClusterParams {
                stop: Stop::Clusters(256),
                ..Default::default()
            },
        )
        .unwrap();
        let mut sizes = c.sizes();
        while sizes.len() > 1 {
            let (mn, mx) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
            assert!(mx - mn <= 1);
            sizes = sizes.chunks(2).map(|p| p[0] + p[1]).collect();
        }
    }

    #[test]
    fn max_leaf_picks_the_fewest_levels() {
        let p = |m| ClusterParams {
            stop: Stop::MaxLeaf(m),
            ..Default::default()
        };
        assert_eq!(p(16).depth(16).unwrap(), 0);
        assert_eq!(p(16).depth(17).unwrap(), 1);
        assert_eq!(p(16).depth(22_933).unwrap(), 11); // 22933 / 2048 -> 12 labels max
        assert_eq!(p(1).depth(5).unwrap(), 3);
        let (x, _) = problem(1000, 4);
        let c = cluster_labels(&x, &p(10)).unwrap();
        assert!(
            c.sizes().iter().all(|s| (7..=10).contains(s)),
            "{:?}",
            c.sizes()
        );
        assert_eq!(c.n_clusters, 128);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let x = SparseMatrix::from_index_rows(3, &[vec![0], vec![1]]).unwrap();
        let run = |stop| {
            cluster_labels(
                &x,
                &ClusterParams {
                    stop,
                    ..Default::default()
                },
            )
        };
        assert!(run(Stop::Clusters(3)).is_err());
        assert!(run(Stop::Clusters(0)).is_err());
        assert!(run(Stop::Clusters(4))
            .unwrap_err()
            .to_string()
            .contains("only 2 labels"));
        assert!(run(Stop::MaxLeaf(0)).is_err());
        let empty = SparseMatrix::new(3);
        assert!(cluster_labels(&empty, &ClusterParams::default()).is_err());
    }

    #[test]
    fn co_occurring_labels_share_clusters_far_more_than_random() {
        let (x, y) = problem(4000, 5);
        let c = cluster_labels(
            &x,
            &ClusterParams {
                stop: Stop::Clusters(256),
                ..Default::default()
            },
        )
        .unwrap();
        let q = cooccurrence_quality(&y, &c).unwrap();
        assert!(q.pairs > 1000);
        assert!(q.lift() > 10.0, "{q}");
        // The analytic random rate matches a shuffled assignment of the same sizes.
        let mut shuffled = c.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        rand::seq::SliceRandom::shuffle(&mut shuffled.assign[..], &mut rng);
        let r = cooccurrence_quality(&y, &shuffled).unwrap();
        assert!(r.rate < 3.0 * q.random_rate + 0.01, "{r}");
        assert!(q.rate > 10.0 * r.rate, "{q} vs shuffled {r}");
    }

    #[test]
    fn labels_without_features_are_spread_and_nothing_divides_by_zero() {
        // 6 labels with features in two obvious groups, 10 empty labels.
        let mut rows = vec![vec![]; 16];
        for (l, r) in rows.iter_mut().enumerate().take(6) {
            *r = if l < 3 {
                vec![(0u32, 1.0f32)]
            } else {
                vec![(1, 1.0)]
            };
        }
        let x = SparseMatrix::from_rows(2, rows).unwrap();
        let c = cluster_labels(
            &x,
            &ClusterParams {
                stop: Stop::Clusters(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.sizes(), vec![8, 8]);
        // The two groups end up on different sides.
        assert_eq!(c.assign[0], c.assign[1]);
        assert_eq!(c.assign[1], c.assign[2]);
        assert_eq!(c.assign[3], c.assign[4]);
        assert_ne!(c.assign[0], c.assign[3]);
        // Empty labels: 5 on each side.
        let empties0 = (6..16).filter(|&l| c.assign[l] == 0).count();
        assert_eq!(empties0, 5);
        // All labels empty: still a balanced, deterministic answer.
        let z = SparseMatrix::from_rows(4, vec![vec![]; 9]).unwrap();
        let c = cluster_labels(
            &z,
            &ClusterParams {
                stop: Stop::Clusters(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.sizes(), leaf_sizes(9, 2));
        // Identical rows: ties broken by label id.
        let same = SparseMatrix::from_rows(1, vec![vec![(0, 1.0)]; 5]).unwrap();
        let c = cluster_labels(
            &same,
            &ClusterParams {
                stop: Stop::Clusters(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.assign, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn file_roundtrip_and_errors_name_the_line() {
        let c = Clustering {
            assign: vec![0, 1, 1, 0, 0],
            n_clusters: 2,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clusters.txt");
        c.write(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "5 2\n0\n1\n1\n0\n0\n");
        assert_eq!(Clustering::read(&p).unwrap(), c);
        assert_eq!(c.members(), vec![vec![0, 3, 4], vec![1, 2]]);
        let err = |s: &str| {
            Clustering::read_from(s.as_bytes(), "c.txt")
                .unwrap_err()
                .to_string()
        };
        assert!(err("").starts_with("c.txt:1: empty file"), "{}", err(""));
        assert!(
            err("2\n").contains("`n_labels n_clusters`"),
            "{}",
            err("2\n")
        );
        assert!(err("2 0\n").starts_with("c.txt:1: bad header"));
        assert!(err("2 2\n0\nx\n").starts_with("c.txt:3: bad cluster id"));
        assert!(err("2 2\n0\n2\n").starts_with("c.txt:3: cluster id 2 out of range"));
        assert!(
            err("3 2\n0\n1\n").starts_with("c.txt:3: header states 3 labels but the file has 2")
        );
        assert!(err("1 2\n0\n1\n").starts_with("c.txt:3: more lines"));
        assert!(Clustering::read_from("2 2\n0\n1\n\n".as_bytes(), "c").is_ok());
        // Issue 27 D1: a cluster without a label (here cluster 1) is refused at read, naming
        // the file, instead of panicking at prediction.
        assert!(err("2 2\n0\n0\n").starts_with("c.txt:1: cluster 1 has no label"));
        assert!(c
            .check_labels(6, "c.txt")
            .unwrap_err()
            .to_string()
            .contains("covers 5 labels"));
    }
}
