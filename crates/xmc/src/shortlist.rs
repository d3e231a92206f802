//! Cluster shortlists for InceptionXML+ (MODEL.md §5): from meta scores over C label clusters, pick each
//! row's top-K clusters (at training time every cluster holding a positive label is forced in, up to
//! K), expand them to their labels, and lay the candidates of a whole batch out as one padded
//! `rows × width` block of label ids with a validity mask and 0/1 targets — built for all rows in
//! parallel, with no per-row tensor work. Padding slots carry label 0, mask 0 and target 0, so they
//! contribute neither loss nor gradient once the loss is masked.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::predictions::top_k;
use crate::sparse::SparseMatrix;

/// The labels of each cluster (CSR): `members(c)` lists cluster `c`'s labels in increasing order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterIndex {
    /// Label -> cluster.
    pub assign: Vec<u32>,
    offsets: Vec<usize>,
    labels: Vec<u32>,
}

impl ClusterIndex {
    /// Builds the index from a label -> cluster assignment with `n_clusters` clusters.
    pub fn new(assign: Vec<u32>, n_clusters: usize) -> Result<ClusterIndex> {
        let mut counts = vec![0usize; n_clusters];
        for (l, &c) in assign.iter().enumerate() {
            let slot = counts.get_mut(c as usize).ok_or_else(|| {
                Error::Shape(format!("label {l} assigned to cluster {c} >= {n_clusters}"))
            })?;
            *slot += 1;
        }
        if let Some(c) = counts.iter().position(|&n| n == 0) {
            return Err(Error::Shape(format!("cluster {c} has no label")));
        }
        let mut offsets = Vec::with_capacity(n_clusters + 1);
        offsets.push(0);
        for c in &counts {
            offsets.push(offsets[offsets.len() - 1] + c);
        }
        let mut next = offsets[..n_clusters].to_vec();
        let mut labels = vec![0u32; assign.len()];
        for (l, &c) in assign.iter().enumerate() {
            labels[next[c as usize]] = l as u32;
            next[c as usize] += 1;
        }
        Ok(ClusterIndex {
            assign,
            offsets,
            labels,
        })
    }

    pub fn n_clusters(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn n_labels(&self) -> usize {
        self.assign.len()
    }

    /// Cluster `c`'s labels.
    pub fn members(&self, c: usize) -> &[u32] {
        &self.labels[self.offsets[c]..self.offsets[c + 1]]
    }

    /// First position of cluster `c` in the cluster order ([`Self::order`]); `offset(C)` = L.
    pub fn offset(&self, c: usize) -> usize {
        self.offsets[c]
    }

    /// All labels in cluster order: cluster 0's members, then cluster 1's, … Position `p` of a
    /// table stored in this order holds label `order()[p]`; cluster `c` owns the contiguous
    /// positions `offset(c)..offset(c + 1)`.
    pub fn order(&self) -> &[u32] {
        &self.labels
    }

    /// The inverse of [`Self::order`]: label -> position.
    pub fn positions(&self) -> Vec<u32> {
        let mut pos = vec![0u32; self.labels.len()];
        for (p, &l) in self.labels.iter().enumerate() {
            pos[l as usize] = p as u32;
        }
        pos
    }

    /// The cluster of label `l` (`l < n_labels`).
    pub fn cluster_of(&self, l: u32) -> usize {
        self.assign[l as usize] as usize
    }

    /// The position of label `l` in the cluster order ([`Self::order`]): a cluster's members are
    /// stored in increasing label order, so this is a binary search within the cluster.
    pub fn position_of(&self, l: u32) -> usize {
        let c = self.cluster_of(l);
        let at = self.members(c).partition_point(|&m| m < l);
        self.offsets[c] + at
    }

    /// The largest cluster size.
    pub fn max_size(&self) -> usize {
        (0..self.n_clusters())
            .map(|c| self.offsets[c + 1] - self.offsets[c])
            .max()
            .unwrap_or(0)
    }

    /// The cluster-level label matrix (rows × C, binary): which clusters hold each row's positives.
    pub fn cluster_targets(&self, labels: &SparseMatrix) -> Result<SparseMatrix> {
        if labels.n_cols != self.n_labels() {
            return Err(Error::Shape(format!(
                "label matrix has {} columns, clustering has {} labels",
                labels.n_cols,
                self.n_labels()
            )));
        }
        let rows: Vec<Vec<u32>> = (0..labels.n_rows)
            .map(|r| {
                let mut cs: Vec<u32> = labels
                    .row_indices(r)
                    .iter()
                    .map(|&l| self.assign[l as usize])
                    .collect();
                cs.sort_unstable();
                cs.dedup();
                cs
            })
            .collect();
        SparseMatrix::from_index_rows(self.n_clusters(), &rows)
    }
}

/// MODEL.md §5's default number of clusters for `n_labels` labels: L/10 rounded to the nearest power
/// of two (at least 2, at most the largest power of two ≤ L).
pub fn default_clusters(n_labels: usize) -> usize {
    let target = (n_labels as f64 / 10.0).max(2.0);
    let lo = 1usize << (target.log2().floor() as u32);
    let c = if target / lo as f64 > (2 * lo) as f64 / target {
        2 * lo
    } else {
        lo
    };
    let cap = if n_labels >= 2 {
        1usize << (usize::BITS - 1 - n_labels.leading_zeros())
    } else {
        1
    };
    c.clamp(1, cap)
}

/// The smallest default shortlist: [`default_top_k`] never goes below it (nor above C).
///
/// MODEL.md §5's C/64 is the paper's proportion at 670K labels (C 65,536 -> the paper's K 800).
/// At 20K labels it gives K 32, whose ~350 candidate labels per text hold only ~42 % of the
/// positives (yso_finna_sv); K 128 holds ~60 % and trains to a better model on the validation
/// split (docs/BENCHMARKS.md, "Converged accuracy on yso_finna_sv").
pub const MIN_DEFAULT_TOP_K: usize = 128;

/// The default shortlist size for `n_clusters` clusters: C/64 within
/// [`MIN_DEFAULT_TOP_K`]..=800, never more than C (below 128 clusters: all of them).
pub fn default_top_k(n_clusters: usize) -> usize {
    (n_clusters / 64)
        .clamp(MIN_DEFAULT_TOP_K, 800)
        .min(n_clusters)
}

/// One batch's candidates, padded to a common width.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortlist {
    pub rows: usize,
    pub width: usize,
    /// `rows × width` label ids (0 in padding slots).
    pub labels: Vec<u32>,
    /// `rows × width`: 1 for a real candidate, 0 for padding.
    pub mask: Vec<f32>,
    /// `rows × width`: 1 where the candidate is a positive of the row.
    pub targets: Vec<f32>,
    /// `rows × k`: the chosen clusters, best first.
    pub clusters: Vec<Vec<u32>>,
}

impl Shortlist {
    /// Number of real (unpadded) candidates in row `r`.
    pub fn row_count(&self, r: usize) -> usize {
        self.mask[r * self.width..(r + 1) * self.width]
            .iter()
            .filter(|&&m| m > 0.0)
            .count()
    }

    /// Share of the given positives that fall inside the shortlist (shortlist recall), as
    /// `(hits, positives)`.
    pub fn recall(&self, positives: &[&[u32]], index: &ClusterIndex) -> (usize, usize) {
        recall(&self.clusters, positives, index)
    }
}

/// Shortlist recall of chosen clusters (`clusters[r]`: row r's clusters): how many of the rows'
/// positive labels lie in a chosen cluster, as `(hits, positives)`.
pub fn recall(clusters: &[Vec<u32>], positives: &[&[u32]], index: &ClusterIndex) -> (usize, usize) {
    let mut hits = 0;
    let mut total = 0;
    for (chosen, pos) in clusters.iter().zip(positives) {
        for &l in pos.iter() {
            total += 1;
            if chosen.contains(&index.assign[l as usize]) {
                hits += 1;
            }
        }
    }
    (hits, total)
}

/// Picks the top-`k` clusters of each row of `scores` (`rows × C`, row-major) and expands them.
/// With `positives` (training), each row's positive clusters get +1 so they are always chosen (up to
/// `k`), and `targets` marks the row's positive labels; without (prediction) targets are all 0.
pub fn build(
    scores: &[f32],
    index: &ClusterIndex,
    k: usize,
    positives: Option<&[&[u32]]>,
) -> Result<Shortlist> {
    let c = index.n_clusters();
    if c == 0 || scores.len() % c != 0 {
        return Err(Error::Shape(format!(
            "{} scores is not a multiple of {c} clusters",
            scores.len()
        )));
    }
    let rows = scores.len() / c;
    if let Some(p) = positives {
        if p.len() != rows {
            return Err(Error::Shape(format!(
                "{} positive rows for {rows} score rows",
                p.len()
            )));
        }
    }
    let k = k.min(c);
    if k == 0 {
        return Err(Error::param("shortlist size k must be > 0"));
    }
    let clusters: Vec<Vec<u32>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let row = &scores[r * c..(r + 1) * c];
            let ranked = match positives {
                None => top_k(row, k),
                Some(p) => {
                    let mut boosted = row.to_vec();
                    for &l in p[r] {
                        let cl = index.assign[l as usize] as usize;
                        // Applied once per cluster even when several positives share it.
                        if boosted[cl] < row[cl] + 1.0 {
                            boosted[cl] = row[cl] + 1.0;
                        }
                    }
                    top_k(&boosted, k)
                }
            };
            ranked.into_iter().map(|e| e.0).collect()
        })
        .collect();
    from_clusters(clusters, index, positives)
}

/// Lays out the candidates of already chosen clusters (`clusters[r]`: row r's clusters, best
/// first) exactly like [`build`]; with `positives`, marks the targets.
pub fn from_clusters(
    clusters: Vec<Vec<u32>>,
    index: &ClusterIndex,
    positives: Option<&[&[u32]]>,
) -> Result<Shortlist> {
    let rows = clusters.len();
    if let Some(&bad) = clusters
        .iter()
        .flatten()
        .find(|&&c| c as usize >= index.n_clusters())
    {
        return Err(Error::Shape(format!(
            "cluster {bad} >= {} clusters",
            index.n_clusters()
        )));
    }
    let counts: Vec<usize> = clusters
        .iter()
        .map(|cs| cs.iter().map(|&cl| index.members(cl as usize).len()).sum())
        .collect();
    let width = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut labels = vec![0u32; rows * width];
    let mut mask = vec![0f32; rows * width];
    let mut targets = vec![0f32; rows * width];
    labels
        .par_chunks_mut(width)
        .zip(mask.par_chunks_mut(width))
        .zip(targets.par_chunks_mut(width))
        .enumerate()
        .for_each(|(r, ((lab, m), t))| {
            let mut j = 0;
            for &cl in &clusters[r] {
                for &l in index.members(cl as usize) {
                    lab[j] = l;
                    m[j] = 1.0;
                    if let Some(p) = positives {
                        // Positives are few per row: a linear scan beats a set.
                        if p[r].contains(&l) {
                            t[j] = 1.0;
                        }
                    }
                    j += 1;
                }
            }
        });
    Ok(Shortlist {
        rows,
        width,
        labels,
        mask,
        targets,
        clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ClusterIndex {
        // 6 labels in 3 clusters: {0,3}, {1,4}, {2,5}
        ClusterIndex::new(vec![0, 1, 2, 0, 1, 2], 3).unwrap()
    }

    #[test]
    fn index_lists_members() {
        let ix = index();
        assert_eq!(ix.members(1), &[1, 4]);
        assert_eq!(ix.max_size(), 2);
        assert!(ClusterIndex::new(vec![0, 3], 3).is_err());
        // An empty cluster (cluster 1 here) has no table rows to score: refused.
        assert!(ClusterIndex::new(vec![0, 2, 0], 3).is_err());
    }

    #[test]
    fn picks_top_clusters_and_pads() {
        let ix = index();
        let scores = [0.1, 0.9, 0.5, /* row 1 */ 0.8, 0.2, 0.3];
        let s = build(&scores, &ix, 1, None).unwrap();
        assert_eq!(s.width, 2);
        assert_eq!(s.clusters, vec![vec![1], vec![0]]);
        assert_eq!(&s.labels, &[1, 4, 0, 3]);
        assert!(s.targets.iter().all(|&t| t == 0.0));
        assert_eq!(s.row_count(0), 2);
    }

    #[test]
    fn positives_are_forced_in_with_targets() {
        let ix = index();
        let scores = [0.1, 0.9, 0.5, 0.8, 0.2, 0.3];
        let pos: Vec<&[u32]> = vec![&[5], &[]];
        let s = build(&scores, &ix, 1, Some(&pos)).unwrap();
        // Row 0: cluster 2 (label 5) forced in although its score is lower.
        assert_eq!(s.clusters[0], vec![2]);
        assert_eq!(&s.labels[..2], &[2, 5]);
        assert_eq!(&s.targets[..2], &[0.0, 1.0]);
        assert_eq!(s.recall(&pos, &ix), (1, 1));
    }

    #[test]
    fn uneven_clusters_get_masked_padding() {
        let ix = ClusterIndex::new(vec![0, 0, 0, 1], 2).unwrap();
        let scores = [1.0, 0.0, 0.0, 1.0];
        let s = build(&scores, &ix, 1, None).unwrap();
        assert_eq!(s.width, 3);
        assert_eq!(&s.mask[3..], &[1.0, 0.0, 0.0]);
        assert_eq!(&s.labels[3..], &[3, 0, 0]);
    }

    #[test]
    fn defaults_keep_the_paper_proportions() {
        assert_eq!(default_clusters(22_933), 2048);
        assert_eq!(default_clusters(670_091), 65_536);
        assert_eq!(default_clusters(2_812_281), 262_144);
        assert_eq!(default_clusters(736), 64);
        assert_eq!(default_clusters(3), 2);
        assert_eq!(default_top_k(2048), 128);
        assert_eq!(default_top_k(16_384), 256);
        assert_eq!(default_top_k(65_536), 800);
        assert_eq!(default_top_k(256), 128);
        assert_eq!(default_top_k(64), 64);
        assert_eq!(default_top_k(8), 8);
    }

    #[test]
    fn order_and_positions_are_inverse() {
        let ix = index();
        assert_eq!(ix.order(), &[0, 3, 1, 4, 2, 5]);
        assert_eq!((ix.offset(1), ix.offset(3)), (2, 6));
        let pos = ix.positions();
        for (p, &l) in ix.order().iter().enumerate() {
            assert_eq!(pos[l as usize] as usize, p);
        }
    }

    #[test]
    fn cluster_targets_dedups() {
        let ix = index();
        let y = SparseMatrix::from_index_rows(6, &[vec![0, 3, 4], vec![]]).unwrap();
        let t = ix.cluster_targets(&y).unwrap();
        assert_eq!(t.row_indices(0), &[0, 1]);
        assert_eq!(t.row_len(1), 0);
    }
}
