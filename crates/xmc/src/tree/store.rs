//! Saving and loading the sparse model: three files in a folder.
//!
//! - `sparse.json`: the options, the label count, the feature count and the tree count;
//! - `sparse_terms.txt`: the TF-IDF terms, one per line in column order;
//! - `sparse.safetensors`: `idf` (F32, one per term) and per tree `t` the arrays `t.leaf_ptr`,
//!   `t.leaf_labels`, `t.post_groups`, `t.slots`, `t.shifts` (U32), `t.feat_ptr`, `t.post_ptr`
//!   (U64) and `t.weights` (F32) of [`Tree`].
//!
//! Loading checks every array against the others (lengths, monotone pointers, ids in range, sorted
//! features, finite weights, every label in exactly one leaf), so that prediction never indexes
//! out of bounds on a damaged file.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{Shape, SparseModel, SparseParams, Tree};
use crate::error::{Error, Result};
use crate::io::{read_all, write_atomic};
use crate::linear::LinearParams;
use crate::tfidf::TfIdf;

pub const CONFIG_FILE: &str = "sparse.json";
pub const TERMS_FILE: &str = "sparse_terms.txt";
pub const WEIGHTS_FILE: &str = "sparse.safetensors";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    n_labels: usize,
    n_terms: usize,
    n_trees: usize,
    max_leaf: usize,
    #[serde(default = "two")]
    branching: usize,
    beam: usize,
    c: f32,
    eps: f32,
    max_iter: usize,
    weight_threshold: f32,
    bigrams: bool,
    #[serde(default)]
    char_ngrams: usize,
    min_df: usize,
    pifa_top_n: usize,
    seed: u64,
}

fn two() -> usize {
    2
}

fn bytes_of<T: ToLe>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(v));
    for x in v {
        x.put(&mut out);
    }
    out
}

trait ToLe: Sized {
    const DTYPE: Dtype;
    const SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

macro_rules! to_le {
    ($t:ty, $d:expr) => {
        impl ToLe for $t {
            const DTYPE: Dtype = $d;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
to_le!(u32, Dtype::U32);
to_le!(u64, Dtype::U64);
to_le!(f32, Dtype::F32);

impl SparseModel {
    /// Writes the model's three files into the folder `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = &self.params;
        let config = Config {
            n_labels: self.n_labels,
            n_terms: self.tfidf.len(),
            n_trees: self.trees.len(),
            max_leaf: p.max_leaf,
            branching: p.branching,
            beam: p.beam,
            c: p.linear.c,
            eps: p.linear.eps,
            max_iter: p.linear.max_iter,
            weight_threshold: p.linear.weight_threshold,
            bigrams: p.bigrams,
            char_ngrams: p.char_ngrams,
            min_df: p.min_df,
            pifa_top_n: p.pifa_top_n,
            seed: p.seed,
        };
        let json = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::param(format!("sparse model config: {e}")))?;
        write_atomic(dir.join(CONFIG_FILE), |f| {
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")
        })?;
        write_atomic(dir.join(TERMS_FILE), |f| {
            for t in self.tfidf.terms() {
                f.write_all(t.as_bytes())?;
                f.write_all(b"\n")?;
            }
            Ok(())
        })?;
        let mut tensors: Vec<(String, Dtype, usize, Vec<u8>)> = Vec::new();
        let mut put = |name: String, dtype: Dtype, n: usize, b: Vec<u8>| {
            tensors.push((name, dtype, n, b));
        };
        put(
            "idf".into(),
            Dtype::F32,
            self.tfidf.len(),
            bytes_of(self.tfidf.idf()),
        );
        for (i, t) in self.trees.iter().enumerate() {
            macro_rules! arr {
                ($field:ident, $ty:ty) => {
                    put(
                        format!("{i}.{}", stringify!($field)),
                        <$ty as ToLe>::DTYPE,
                        t.$field.len(),
                        bytes_of(&t.$field),
                    )
                };
            }
            arr!(leaf_ptr, u32);
            arr!(leaf_labels, u32);
            arr!(feat_ptr, u64);
            arr!(post_groups, u32);
            arr!(post_ptr, u64);
            arr!(slots, u32);
            arr!(weights, f32);
            put(
                format!("{i}.shifts"),
                Dtype::U32,
                t.shape.shifts.len(),
                bytes_of(&t.shape.shifts),
            );
        }
        let path = dir.join(WEIGHTS_FILE);
        let views = tensors
            .iter()
            .map(|(name, dtype, n, b)| {
                TensorView::new(*dtype, vec![*n], b)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::mismatch(&path, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| Error::mismatch(&path, e.to_string()))?;
        write_atomic(&path, |f| f.write_all(&bytes))
    }

    /// Reads and validates the model saved in `dir` by [`SparseModel::save`].
    pub fn load(dir: &Path) -> Result<SparseModel> {
        let cpath = dir.join(CONFIG_FILE);
        let config: Config = serde_json::from_slice(&read_all(&cpath)?)
            .map_err(|e| Error::mismatch(&cpath, e.to_string()))?;
        let params = SparseParams {
            n_trees: config.n_trees,
            max_leaf: config.max_leaf,
            branching: config.branching,
            beam: config.beam,
            linear: LinearParams {
                c: config.c,
                eps: config.eps,
                max_iter: config.max_iter,
                weight_threshold: config.weight_threshold,
            },
            bigrams: config.bigrams,
            char_ngrams: config.char_ngrams,
            min_df: config.min_df,
            pifa_top_n: config.pifa_top_n,
            seed: config.seed,
        };
        params
            .validate()
            .map_err(|e| Error::mismatch(&cpath, e.to_string()))?;
        if config.n_labels == 0 || config.n_labels > u32::MAX as usize {
            return Err(Error::mismatch(&cpath, "n_labels must be in 1..2^32"));
        }
        let tpath = dir.join(TERMS_FILE);
        let mut terms = Vec::with_capacity(config.n_terms.min(crate::io::MAX_PREALLOC));
        let mut lines = crate::io::lines(&tpath)?;
        while let Some(line) = lines.next_line()? {
            terms.push(line.to_owned());
        }
        if terms.len() != config.n_terms {
            return Err(Error::mismatch(
                &tpath,
                format!(
                    "{} terms but {CONFIG_FILE} says {}",
                    terms.len(),
                    config.n_terms
                ),
            ));
        }
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes = read_all(&wpath)?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| Error::mismatch(&wpath, e.to_string()))?;
        let arrays: HashMap<String, TensorView> = st.tensors().into_iter().collect();
        let get = |name: &str| -> Result<&TensorView> {
            arrays
                .get(name)
                .ok_or_else(|| Error::mismatch(&wpath, format!("no array {name:?}")))
        };
        let idf: Vec<f32> = read_array(get("idf")?, "idf", &wpath)?;
        let tfidf = TfIdf::from_parts(terms, idf, params.tfidf())
            .map_err(|e| Error::mismatch(&wpath, e.to_string()))?;
        let n_cols = tfidf.len() + 1;
        let mut trees = Vec::with_capacity(config.n_trees);
        for i in 0..config.n_trees {
            macro_rules! arr {
                ($field:ident) => {{
                    let name = format!("{i}.{}", stringify!($field));
                    read_array(get(&name)?, &name, &wpath)?
                }};
            }
            let shifts_name = format!("{i}.shifts");
            let shifts: Vec<u32> = read_array(get(&shifts_name)?, &shifts_name, &wpath)?;
            let shape = Shape::from_shifts(shifts)
                .map_err(|m| Error::mismatch(&wpath, format!("tree {i}: {m}")))?;
            let t = Tree {
                shape,
                leaf_ptr: arr!(leaf_ptr),
                leaf_labels: arr!(leaf_labels),
                feat_ptr: arr!(feat_ptr),
                post_groups: arr!(post_groups),
                post_ptr: arr!(post_ptr),
                slots: arr!(slots),
                weights: arr!(weights),
                label_place: Vec::new(),
            };
            let t = check_tree(t, config.n_labels, n_cols)
                .map_err(|m| Error::mismatch(&wpath, format!("tree {i}: {m}")))?;
            trees.push(t);
        }
        if arrays.len() != 1 + 8 * config.n_trees {
            return Err(Error::mismatch(
                &wpath,
                format!(
                    "{} arrays where {} trees have {}",
                    arrays.len(),
                    config.n_trees,
                    1 + 8 * config.n_trees
                ),
            ));
        }
        Ok(SparseModel {
            params,
            tfidf,
            trees,
            n_labels: config.n_labels,
        })
    }
}

fn read_array<T: ToLe>(v: &TensorView, name: &str, path: &Path) -> Result<Vec<T>> {
    if v.dtype() != T::DTYPE || v.shape().len() != 1 {
        return Err(Error::mismatch(
            path,
            format!(
                "array {name:?} is {:?} {:?}, expected a {:?} vector",
                v.dtype(),
                v.shape(),
                T::DTYPE
            ),
        ));
    }
    Ok(v.data().chunks_exact(T::SIZE).map(T::get).collect())
}

fn monotone(p: &[u64]) -> bool {
    p.windows(2).all(|w| w[0] <= w[1])
}

/// Checks a loaded tree's arrays against each other and its shape.
fn check_tree(t: Tree, n_labels: usize, n_cols: usize) -> std::result::Result<Tree, String> {
    let n_leaves = t.leaf_ptr.len().saturating_sub(1);
    if n_leaves != 1usize << t.shape.depth() {
        return Err(format!(
            "{n_leaves} leaves where its levels make {}",
            1usize << t.shape.depth()
        ));
    }
    if t.leaf_ptr[0] != 0
        || t.leaf_ptr.windows(2).any(|w| w[0] >= w[1])
        || *t.leaf_ptr.last().unwrap_or(&0) as usize != t.leaf_labels.len()
    {
        return Err("leaf_ptr is not increasing from 0 to the label count".into());
    }
    if t.leaf_labels.len() != n_labels {
        return Err(format!(
            "{} leaf labels for {n_labels} labels",
            t.leaf_labels.len()
        ));
    }
    let mut seen = vec![false; n_labels];
    for &l in &t.leaf_labels {
        match seen.get_mut(l as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(format!("label {l} is out of range or in two leaves")),
        }
    }
    let n_groups = t.n_groups();
    let n_post = t.post_groups.len();
    if t.feat_ptr.len() != n_cols + 1
        || t.feat_ptr[0] != 0
        || !monotone(&t.feat_ptr)
        || t.feat_ptr[n_cols] as usize != n_post
    {
        return Err(format!(
            "feat_ptr does not cover the postings of {n_cols} features"
        ));
    }
    if t.post_ptr.len() != n_post + 1
        || t.post_ptr[0] != 0
        || !monotone(&t.post_ptr)
        || t.post_ptr[n_post] as usize != t.slots.len()
        || t.slots.len() != t.weights.len()
    {
        return Err("post_ptr, slots and weights disagree".into());
    }
    for f in 0..n_cols {
        let ps = &t.post_groups[t.feat_ptr[f] as usize..t.feat_ptr[f + 1] as usize];
        if ps.windows(2).any(|w| w[0] >= w[1]) || ps.last().is_some_and(|&g| g as usize >= n_groups)
        {
            return Err(format!("feature {f}: nodes unsorted or out of range"));
        }
    }
    for (k, &g) in t.post_groups.iter().enumerate() {
        let len = t.group_len(g as usize) as u32;
        let (e0, e1) = (t.post_ptr[k] as usize, t.post_ptr[k + 1] as usize);
        if t.slots[e0..e1].iter().any(|&s| s >= len) {
            return Err(format!("node {g}: a classifier id is out of range"));
        }
    }
    if t.weights.iter().any(|w| !w.is_finite()) {
        return Err("a weight is not finite".into());
    }
    Ok(t.with_label_places())
}
