//! Training of the sparse model (the module doc of [`super`]).

use rayon::prelude::*;

use super::{with_bias, Shape, SparseModel, SparseParams, Tree};
use crate::cluster::{cluster_labels, ClusterParams, Stop};
use crate::error::{Error, Result};
use crate::linear::Solver;
use crate::pifa::pifa;
use crate::shortlist::ClusterIndex;
use crate::sparse::SparseMatrix;
use crate::tfidf::TfIdf;

/// Trains the sparse model on `texts` and their labels (`texts.len() × L`). `progress` is called
/// with the number of classifier groups (tree nodes) just trained; the total is
/// [`SparseModel::n_trees`] × (2^(D+1) − 1).
pub fn train(
    texts: &[String],
    labels: &SparseMatrix,
    params: &SparseParams,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SparseModel> {
    params.validate()?;
    if texts.len() != labels.n_rows {
        return Err(Error::Shape(format!(
            "sparse model: {} texts but {} label rows",
            texts.len(),
            labels.n_rows
        )));
    }
    if labels.n_cols == 0 {
        return Err(Error::param("sparse model: there are no labels"));
    }
    let tokens = crate::text::tokenize_all(texts);
    let tfidf = TfIdf::fit(&tokens, params.tfidf())?;
    let xt = tfidf.transform(&tokens);
    drop(tokens);
    let label_features = pifa(&xt, labels, params.pifa_top_n)?;
    let x = with_bias(&xt);
    drop(xt);
    let sq_norms: Vec<f32> = (0..x.n_rows)
        .map(|r| x.row(r).1.iter().map(|v| v * v).sum())
        .collect();
    let mut trees = Vec::with_capacity(params.n_trees);
    for t in 0..params.n_trees {
        let seed = params.seed.wrapping_add(t as u64);
        trees.push(train_tree(
            &x,
            &sq_norms,
            labels,
            &label_features,
            params,
            seed,
            progress,
        )?);
    }
    Ok(SparseModel {
        params: params.clone(),
        tfidf,
        trees,
        n_labels: labels.n_cols,
    })
}

/// One weight of a node: `(feature, classifier within the node, weight)`.
type Entry = (u32, u32, f32);

/// Mixes a seed with a node and a classifier into the classifier's own seed.
fn classifier_seed(seed: u64, group: usize, slot: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (group as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (slot as u64).wrapping_mul(0x1656_67B1_9E37_79F9)
}

fn train_tree(
    x: &SparseMatrix,
    sq_norms: &[f32],
    labels: &SparseMatrix,
    label_features: &SparseMatrix,
    params: &SparseParams,
    seed: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Tree> {
    let n_labels = labels.n_cols;
    let clustering = if n_labels <= params.max_leaf {
        crate::cluster::Clustering {
            assign: vec![0; n_labels],
            n_clusters: 1,
        }
    } else {
        cluster_labels(
            label_features,
            &ClusterParams {
                stop: Stop::MaxLeaf(params.max_leaf),
                seed,
                ..ClusterParams::default()
            },
        )?
    };
    let depth = clustering.n_clusters.trailing_zeros();
    let shape = Shape::new(depth, params.branching.trailing_zeros());
    let members = clustering.members();
    let mut leaf_ptr = vec![0u32];
    let mut leaf_labels = Vec::with_capacity(n_labels);
    for m in &members {
        leaf_labels.extend_from_slice(m);
        leaf_ptr.push(leaf_labels.len() as u32);
    }
    // Each row's leaves, sorted and unique.
    let row_leaves = ClusterIndex::new(clustering.assign.clone(), clustering.n_clusters)?
        .cluster_targets(labels)?;
    // The rows reaching each group: every row at the root; below, the rows with a leaf there.
    let n_groups = shape.n_groups();
    let mut group_rows: Vec<Vec<u32>> = vec![Vec::new(); n_groups];
    group_rows[0] = (0..labels.n_rows as u32).collect();
    for d in 1..shape.levels() {
        let first = shape.first(d);
        let shift = shape.shifts[d];
        for r in 0..labels.n_rows {
            let leaves = row_leaves.row_indices(r);
            let mut last = u32::MAX;
            for &c in leaves {
                let j = c >> shift;
                if j != last {
                    group_rows[first + j as usize].push(r as u32);
                    last = j;
                }
            }
        }
    }
    let first_leaf = shape.first_leaf();
    let bias = (x.n_cols - 1) as u32;
    // Largest groups first, so that the long ones do not start last.
    let mut order: Vec<usize> = (0..n_groups).collect();
    order.sort_by_key(|&g| {
        let k = if g < first_leaf {
            1 << shape.child_bits(shape.level_of(g))
        } else {
            members[g - first_leaf].len()
        };
        std::cmp::Reverse(group_rows[g].len() * k)
    });
    let trained: Vec<(usize, Vec<Entry>)> = order
        .par_iter()
        .with_max_len(1)
        .map_init(
            || (Solver::new(0), vec![u32::MAX; x.n_cols]),
            |(solver, pos), &g| {
                let rows = &group_rows[g];
                // The node's rows with their columns renumbered 0.. in increasing feature order:
                // the solver's weights are then a short dense vector that stays in cache.
                let mut features = Vec::new();
                for &r in rows {
                    for &j in x.row_indices(r as usize) {
                        if pos[j as usize] == u32::MAX {
                            pos[j as usize] = 0;
                            features.push(j);
                        }
                    }
                }
                features.sort_unstable();
                for (i, &j) in features.iter().enumerate() {
                    pos[j as usize] = i as u32;
                }
                let mut local = SparseMatrix::new(features.len());
                local.indptr.reserve(rows.len());
                for &r in rows {
                    let (idx, val) = x.row(r as usize);
                    local.indices.extend(idx.iter().map(|&j| pos[j as usize]));
                    local.values.extend_from_slice(val);
                    local.indptr.push(local.indices.len());
                }
                local.n_rows = rows.len();
                for &j in &features {
                    pos[j as usize] = u32::MAX;
                }
                let local_rows: Vec<u32> = (0..rows.len() as u32).collect();
                let local_norms: Vec<f32> = rows.iter().map(|&r| sq_norms[r as usize]).collect();
                let local_features: Vec<u32> = (0..features.len() as u32).collect();
                let local_bias = features.binary_search(&bias).ok().map(|i| i as u32);
                let mut entries: Vec<Entry> = Vec::new();
                let mut positive = vec![false; rows.len()];
                let mut fit = |slot: usize, positive: &[bool]| {
                    let w = solver.train(
                        &local,
                        &local_norms,
                        &local_rows,
                        positive,
                        &local_features,
                        local_bias,
                        &params.linear,
                        classifier_seed(seed, g, slot),
                    );
                    entries.extend(
                        w.into_iter()
                            .map(|(f, v)| (features[f as usize], slot as u32, v)),
                    );
                };
                if g < first_leaf {
                    let d = shape.level_of(g);
                    let j = (g - shape.first(d)) as u32;
                    let (bits, shift) = (shape.child_bits(d), shape.shifts[d + 1]);
                    for k in 0..1u32 << bits {
                        let child = (j << bits) + k;
                        for (p, &r) in positive.iter_mut().zip(rows) {
                            *p = row_leaves
                                .row_indices(r as usize)
                                .iter()
                                .any(|&c| c >> shift == child);
                        }
                        fit(k as usize, &positive);
                    }
                } else {
                    for (slot, &l) in members[g - first_leaf].iter().enumerate() {
                        for (p, &r) in positive.iter_mut().zip(rows) {
                            *p = labels.row_indices(r as usize).binary_search(&l).is_ok();
                        }
                        fit(slot, &positive);
                    }
                }
                entries.sort_unstable_by_key(|e| (e.0, e.1));
                progress(1);
                (g, entries)
            },
        )
        .collect();
    let mut by_group: Vec<Vec<Entry>> = vec![Vec::new(); n_groups];
    for (g, e) in trained {
        by_group[g] = e;
    }
    Ok(assemble(shape, leaf_ptr, leaf_labels, x.n_cols, by_group))
}

/// The feature-major tree from each group's `(feature, classifier, weight)` entries (sorted by
/// feature, then classifier), by counting: no sort of the whole tree.
fn assemble(
    shape: Shape,
    leaf_ptr: Vec<u32>,
    leaf_labels: Vec<u32>,
    n_cols: usize,
    by_group: Vec<Vec<Entry>>,
) -> Tree {
    let total: usize = by_group.iter().map(Vec::len).sum();
    // Postings per feature (one per group that uses it), then their entry counts.
    let mut feat_ptr = vec![0u64; n_cols + 1];
    for entries in &by_group {
        let mut last = u32::MAX;
        for &(f, _, _) in entries {
            if f != last {
                feat_ptr[f as usize + 1] += 1;
                last = f;
            }
        }
    }
    for f in 0..n_cols {
        feat_ptr[f + 1] += feat_ptr[f];
    }
    let n_post = feat_ptr[n_cols] as usize;
    let mut post_groups = vec![0u32; n_post];
    let mut post_len = vec![0u64; n_post];
    let mut next = feat_ptr.clone();
    // Groups in increasing order: each feature's postings come out sorted by group.
    for (g, entries) in by_group.iter().enumerate() {
        let mut last = u32::MAX;
        let mut k = 0usize;
        for &(f, _, _) in entries {
            if f != last {
                k = next[f as usize] as usize;
                next[f as usize] += 1;
                post_groups[k] = g as u32;
                last = f;
            }
            post_len[k] += 1;
        }
    }
    let mut post_ptr = Vec::with_capacity(n_post + 1);
    post_ptr.push(0u64);
    for &n in &post_len {
        let last = *post_ptr.last().unwrap_or(&0);
        post_ptr.push(last + n);
    }
    let mut slots = vec![0u32; total];
    let mut weights = vec![0f32; total];
    let mut next = feat_ptr.clone();
    for entries in &by_group {
        let mut last = u32::MAX;
        let mut e = 0usize;
        for &(f, slot, w) in entries {
            if f != last {
                let k = next[f as usize] as usize;
                next[f as usize] += 1;
                e = post_ptr[k] as usize;
                last = f;
            }
            slots[e] = slot;
            weights[e] = w;
            e += 1;
        }
    }
    Tree {
        shape,
        leaf_ptr,
        leaf_labels,
        feat_ptr,
        post_groups,
        post_ptr,
        slots,
        weights,
        label_place: Vec::new(),
    }
    .with_label_places()
}
