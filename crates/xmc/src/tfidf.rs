//! TF-IDF bag of words over already-tokenised documents, rows L2-normalised.
//!
//! The vocabulary is every unigram (and, with [`TfIdfParams::bigrams`], every `a b` bigram of
//! adjacent tokens) seen in at least `min_df` documents, ordered by decreasing document frequency
//! then by the term itself, so the column ids do not depend on hashing or on the thread count.
//! Weights: `tf · idf` with `idf = ln((1 + N) / (1 + df)) + 1` (the smoothed idf of
//! scikit-learn) and `tf` the raw count, or `1 + ln(count)` with `sublinear_tf`.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::sparse::{sum_duplicates, SparseMatrix};

/// TF-IDF options.
#[derive(Debug, Clone, PartialEq)]
pub struct TfIdfParams {
    /// Also count bigrams of adjacent tokens (`"a b"`). Default false.
    pub bigrams: bool,
    /// Keep terms that occur in at least this many documents. Default 1.
    pub min_df: usize,
    /// Keep at most this many terms (the most frequent by document frequency). Default: all.
    pub max_features: Option<usize>,
    /// Use `1 + ln(count)` instead of the raw count. Default false.
    pub sublinear_tf: bool,
    /// Also count the character `n`-grams of every token of at least `n` characters, the token
    /// framed by `<` and `>` (fastText's subwords), as terms `#gram` (0: none). Default 0.
    pub char_ngrams: usize,
}

impl Default for TfIdfParams {
    fn default() -> Self {
        TfIdfParams {
            bigrams: false,
            min_df: 1,
            max_features: None,
            sublinear_tf: false,
            char_ngrams: 0,
        }
    }
}

impl TfIdfParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.min_df == 0 {
            return Err(Error::param("tfidf: min_df must be >= 1"));
        }
        if self.max_features == Some(0) {
            return Err(Error::param("tfidf: max_features must be >= 1"));
        }
        Ok(())
    }
}

/// A fitted TF-IDF model: vocabulary and idf weights.
#[derive(Debug, Clone)]
pub struct TfIdf {
    params: TfIdfParams,
    index: HashMap<String, u32>,
    terms: Vec<String>,
    idf: Vec<f32>,
}

/// A document's known terms for its occlusions: `own[i]` word `i`'s (itself and its character
/// n-grams), `adjacent[i]` the pair `(i, i + 1)`, `bridge[i]` the pair `(i − 1, i + 1)` that
/// closes word `i`'s gap.
struct OcclusionTerms {
    own: Vec<Vec<u32>>,
    adjacent: Vec<Option<u32>>,
    bridge: Vec<Option<u32>>,
}

/// A document and its occluded variants as differences ([`TfIdf::occlusion_deltas`]): row `r`
/// (0 the document, `i + 1` without its word `i`) is `(base + changes[r]) · scales[r]`, which is
/// row `r` of [`TfIdf::transform_occlusions`].
#[derive(Debug, Clone, PartialEq)]
pub struct Occluded {
    /// The document's tf·idf values, sorted by term, not normalised.
    pub base: Vec<(u32, f32)>,
    /// Per row: the terms whose value differs from `base` (new minus old), sorted.
    pub changes: Vec<Vec<(u32, f32)>>,
    /// Per row: 1 / its L2 norm (0 for a row without terms).
    pub scales: Vec<f32>,
}

/// Calls `f` on every term of `doc` but its tokens: (optionally) its bigrams, then its
/// character n-grams.
fn for_each_extra(doc: &[String], p: &TfIdfParams, buf: &mut String, mut f: impl FnMut(&str)) {
    if p.bigrams {
        for w in doc.windows(2) {
            buf.clear();
            buf.push_str(&w[0]);
            buf.push(' ');
            buf.push_str(&w[1]);
            f(buf);
        }
    }
    if p.char_ngrams > 0 {
        let mut chars: Vec<char> = Vec::new();
        for t in doc {
            for_each_ngram(t, p.char_ngrams, &mut chars, buf, &mut f);
        }
    }
}

/// Calls `f` on every character `n`-gram term (`#` and `n` characters) of `<word>`; a word of
/// fewer than `n` characters has none.
fn for_each_ngram(
    word: &str,
    n: usize,
    chars: &mut Vec<char>,
    buf: &mut String,
    mut f: impl FnMut(&str),
) {
    chars.clear();
    chars.push('<');
    chars.extend(word.chars());
    chars.push('>');
    if n == 0 || chars.len() < n + 2 {
        return;
    }
    for w in chars.windows(n) {
        buf.clear();
        buf.push('#');
        buf.extend(w.iter());
        f(buf);
    }
}

/// Calls `f` on every term of `doc`: its tokens, then [`for_each_extra`]'s.
fn for_each_term(doc: &[String], p: &TfIdfParams, buf: &mut String, mut f: impl FnMut(&str)) {
    for t in doc {
        f(t);
    }
    for_each_extra(doc, p, buf, f);
}

impl TfIdf {
    /// Learns the vocabulary and idf from `docs` (one token list per document).
    pub fn fit(docs: &[Vec<String>], params: TfIdfParams) -> Result<Self> {
        params.validate()?;
        let bigrams = params.bigrams;
        // Document frequencies, counted per chunk in parallel then merged (integer counts: exact).
        let uni: HashMap<&str, u32> = docs
            .par_chunks(4096)
            .map(|chunk| {
                let mut df: HashMap<&str, u32> = HashMap::new();
                let mut terms: Vec<&str> = Vec::new();
                for doc in chunk {
                    terms.clear();
                    terms.extend(doc.iter().map(String::as_str));
                    terms.sort_unstable();
                    terms.dedup();
                    for t in &terms {
                        *df.entry(*t).or_insert(0) += 1;
                    }
                }
                df
            })
            .reduce(HashMap::new, merge);
        let bi: HashMap<String, u32> = if bigrams || params.char_ngrams > 0 {
            docs.par_chunks(4096)
                .map(|chunk| {
                    let mut df: HashMap<String, u32> = HashMap::new();
                    let mut terms: Vec<String> = Vec::new();
                    let mut buf = String::new();
                    for doc in chunk {
                        terms.clear();
                        for_each_extra(doc, &params, &mut buf, |t| terms.push(t.to_owned()));
                        terms.sort_unstable();
                        terms.dedup();
                        for t in terms.drain(..) {
                            *df.entry(t).or_insert(0) += 1;
                        }
                    }
                    df
                })
                .reduce(HashMap::new, merge)
        } else {
            HashMap::new()
        };
        let df = uni.into_iter().map(|(t, c)| (t.to_owned(), c)).chain(bi);
        let mut terms: Vec<(String, u32)> =
            df.filter(|(_, c)| *c as usize >= params.min_df).collect();
        terms.par_sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(m) = params.max_features {
            terms.truncate(m);
        }
        let n = docs.len() as f64;
        let idf = terms
            .iter()
            .map(|(_, c)| (((1.0 + n) / (1.0 + *c as f64)).ln() + 1.0) as f32)
            .collect();
        let index = terms
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        Ok(TfIdf {
            params,
            index,
            terms: terms.into_iter().map(|(t, _)| t).collect(),
            idf,
        })
    }

    /// A model from its parts (as [`TfIdf::terms`], [`TfIdf::idf`] and its parameters give them):
    /// refuses a length mismatch, a repeated term and a weight that is not finite and positive.
    pub fn from_parts(terms: Vec<String>, idf: Vec<f32>, params: TfIdfParams) -> Result<Self> {
        params.validate()?;
        if terms.len() != idf.len() {
            return Err(Error::Shape(format!(
                "tfidf: {} terms but {} idf weights",
                terms.len(),
                idf.len()
            )));
        }
        if let Some(w) = idf.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::param(format!(
                "tfidf: idf weight {w} is not finite and > 0"
            )));
        }
        let mut index = HashMap::with_capacity(terms.len());
        for (i, t) in terms.iter().enumerate() {
            if index.insert(t.clone(), i as u32).is_some() {
                return Err(Error::param(format!("tfidf: term {t:?} appears twice")));
            }
        }
        Ok(TfIdf {
            params,
            index,
            terms,
            idf,
        })
    }

    /// The options it was fitted with.
    pub fn params(&self) -> &TfIdfParams {
        &self.params
    }

    /// Number of terms (columns of [`TfIdf::transform`]).
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// True when no term was kept.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms, by column id.
    pub fn terms(&self) -> &[String] {
        &self.terms
    }

    /// The idf weights, by column id.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// The column id of `term`, if it is in the vocabulary.
    pub fn term_id(&self, term: &str) -> Option<u32> {
        self.index.get(term).copied()
    }

    /// The TF-IDF matrix of `docs` (`docs.len()` × [`TfIdf::len`]), each non-empty row L2-normalised.
    /// Unknown terms are ignored; a document without known terms is an empty row.
    pub fn transform(&self, docs: &[Vec<String>]) -> SparseMatrix {
        let rows: Vec<Vec<(u32, f32)>> = docs
            .par_iter()
            .map_init(String::new, |buf, doc| {
                let mut row: Vec<(u32, f32)> = Vec::with_capacity(doc.len() * 2);
                for_each_term(doc, &self.params, buf, |t| {
                    if let Some(&id) = self.index.get(t) {
                        row.push((id, 1.0));
                    }
                });
                self.weigh(row)
            })
            .collect();
        from_sorted_rows(self.len(), rows)
    }

    /// A row of `(term, 1)` occurrences as TF-IDF: counts summed, tf (sublinear or not) times
    /// idf, L2-normalised; sorted by term.
    fn weigh(&self, occurrences: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
        let mut row = sum_duplicates(occurrences);
        for e in row.iter_mut() {
            e.1 = self.value(e.0, e.1);
        }
        normalize(&mut row);
        row
    }

    /// The TF-IDF rows of `doc` and of each of its occlusions: row 0 the whole document, row
    /// `i + 1` the document without its word `i`. The same matrix as [`TfIdf::transform`] of
    /// those `doc.len() + 1` token lists, but each term is looked up once: a word's own terms
    /// (itself, its character n-grams) and the word pairs around it are removed, the pair that
    /// closes the gap added (the explanations' occluded variants).
    pub fn transform_occlusions(&self, doc: &[String]) -> SparseMatrix {
        let o = self.occlusion_terms(doc);
        let rows = (0..=doc.len())
            .map(|v| {
                let skip = v.checked_sub(1);
                let mut occ: Vec<(u32, f32)> = Vec::new();
                for (i, own) in o.own.iter().enumerate() {
                    if skip != Some(i) {
                        occ.extend(own.iter().map(|&t| (t, 1.0)));
                    }
                }
                for (i, a) in o.adjacent.iter().enumerate() {
                    if skip != Some(i) && skip != Some(i + 1) {
                        occ.extend(a.map(|t| (t, 1.0)));
                    }
                }
                if let Some(j) = skip {
                    occ.extend(o.bridge[j].map(|t| (t, 1.0)));
                }
                self.weigh(occ)
            })
            .collect();
        from_sorted_rows(self.len(), rows)
    }

    /// The known terms of `doc` by where they come from (each looked up once).
    fn occlusion_terms(&self, doc: &[String]) -> OcclusionTerms {
        let p = &self.params;
        let (mut chars, mut buf) = (Vec::new(), String::new());
        let id = |t: &str| self.index.get(t).copied();
        let own: Vec<Vec<u32>> = doc
            .iter()
            .map(|w| {
                let mut v: Vec<u32> = id(w).into_iter().collect();
                for_each_ngram(w, p.char_ngrams, &mut chars, &mut buf, |t| v.extend(id(t)));
                v
            })
            .collect();
        let mut pair = |a: &str, b: &str| -> Option<u32> {
            if !p.bigrams {
                return None;
            }
            buf.clear();
            buf.push_str(a);
            buf.push(' ');
            buf.push_str(b);
            id(&buf)
        };
        let adjacent: Vec<Option<u32>> = doc.windows(2).map(|w| pair(&w[0], &w[1])).collect();
        let bridge: Vec<Option<u32>> = (0..doc.len())
            .map(|i| match (i.checked_sub(1), doc.get(i + 1)) {
                (Some(a), Some(b)) => pair(&doc[a], b),
                _ => None,
            })
            .collect();
        OcclusionTerms {
            own,
            adjacent,
            bridge,
        }
    }

    /// The TF-IDF value of a term seen `count` times (0 for none).
    fn value(&self, term: u32, count: f32) -> f32 {
        if count <= 0.0 {
            return 0.0;
        }
        let tf = if self.params.sublinear_tf {
            1.0 + count.ln()
        } else {
            count
        };
        tf * self.idf[term as usize]
    }

    /// [`TfIdf::transform_occlusions`] as differences: the document's row before normalisation
    /// and, for it and each occluded variant, the terms whose value changes and the scale that
    /// normalises it. A linear score of row `r` is then `(w·base + w·changes[r]) · scale[r]`,
    /// the base product computed once for all the variants (see [`Occluded`]).
    pub fn occlusion_deltas(&self, doc: &[String]) -> Occluded {
        let o = self.occlusion_terms(doc);
        let mut occ: Vec<(u32, f32)> = o.own.iter().flatten().map(|&t| (t, 1.0)).collect();
        occ.extend(o.adjacent.iter().flatten().map(|&t| (t, 1.0)));
        let counts = sum_duplicates(occ);
        let base: Vec<(u32, f32)> = counts.iter().map(|&(t, c)| (t, self.value(t, c))).collect();
        let norm2: f64 = base.iter().map(|e| e.1 as f64 * e.1 as f64).sum();
        let scale = |n2: f64, nonzero: usize| {
            if nonzero == 0 || n2 <= 0.0 {
                0.0
            } else {
                (1.0 / n2.sqrt()) as f32
            }
        };
        let mut changes = vec![Vec::new()];
        let mut scales = vec![scale(norm2, base.len())];
        for i in 0..doc.len() {
            let mut dc: Vec<(u32, f32)> = o.own[i].iter().map(|&t| (t, -1.0)).collect();
            let before = i.checked_sub(1).and_then(|j| o.adjacent[j]);
            let after = o.adjacent.get(i).copied().flatten();
            dc.extend(before.into_iter().chain(after).map(|t| (t, -1.0)));
            dc.extend(o.bridge[i].map(|t| (t, 1.0)));
            let (mut n2, mut nonzero) = (norm2, base.len());
            let delta: Vec<(u32, f32)> = sum_duplicates(dc)
                .into_iter()
                .filter(|e| e.1 != 0.0)
                .map(|(t, d)| {
                    let c = counts
                        .binary_search_by_key(&t, |e| e.0)
                        .map_or(0.0, |k| counts[k].1);
                    let (old, new) = (self.value(t, c), self.value(t, c + d));
                    n2 += new as f64 * new as f64 - old as f64 * old as f64;
                    nonzero = nonzero + usize::from(new != 0.0) - usize::from(old != 0.0);
                    (t, new - old)
                })
                .collect();
            changes.push(delta);
            scales.push(scale(n2, nonzero));
        }
        Occluded {
            base,
            changes,
            scales,
        }
    }

    /// [`TfIdf::fit`] then [`TfIdf::transform`] on the same documents.
    pub fn fit_transform(
        docs: &[Vec<String>],
        params: TfIdfParams,
    ) -> Result<(Self, SparseMatrix)> {
        let t = Self::fit(docs, params)?;
        let m = t.transform(docs);
        Ok((t, m))
    }
}

fn merge<K: std::hash::Hash + Eq>(a: HashMap<K, u32>, b: HashMap<K, u32>) -> HashMap<K, u32> {
    let (mut a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    for (t, c) in b {
        *a.entry(t).or_insert(0) += c;
    }
    a
}

/// Scales `(index, value)` entries to unit L2 norm (an all-zero row is left as is).
pub(crate) fn normalize(row: &mut [(u32, f32)]) {
    let norm = row
        .iter()
        .map(|e| e.1 as f64 * e.1 as f64)
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        for e in row.iter_mut() {
            e.1 *= inv;
        }
    }
}

/// Assembles rows whose indices are already sorted, unique and `< n_cols`.
pub(crate) fn from_sorted_rows(n_cols: usize, rows: Vec<Vec<(u32, f32)>>) -> SparseMatrix {
    let nnz = rows.iter().map(Vec::len).sum();
    let mut m = SparseMatrix {
        n_rows: rows.len(),
        n_cols,
        indptr: Vec::with_capacity(rows.len() + 1),
        indices: Vec::with_capacity(nnz),
        values: Vec::with_capacity(nnz),
    };
    m.indptr.push(0);
    for r in rows {
        m.indices.extend(r.iter().map(|e| e.0));
        m.values.extend(r.iter().map(|e| e.1));
        m.indptr.push(m.indices.len());
    }
    m
}

/// L2-normalises every row of `m` in place (empty rows stay empty).
pub fn normalize_rows(m: &mut SparseMatrix) {
    let indptr = &m.indptr;
    let mut parts: Vec<&mut [f32]> = Vec::with_capacity(m.n_rows);
    let mut rest: &mut [f32] = &mut m.values;
    for r in 0..m.n_rows {
        let (a, b) = rest.split_at_mut(indptr[r + 1] - indptr[r]);
        parts.push(a);
        rest = b;
    }
    parts.into_par_iter().for_each(|v| {
        let norm = v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            v.iter_mut().for_each(|x| *x *= inv);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(v: &[&str]) -> Vec<Vec<String>> {
        v.iter()
            .map(|d| d.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn vocabulary_order_idf_and_normalisation() {
        let d = docs(&["a b a", "b c", "b"]);
        let (t, m) = TfIdf::fit_transform(&d, TfIdfParams::default()).unwrap();
        // df: b=3, a=1, c=1 -> order b, a, c.
        assert_eq!(t.terms(), &["b", "a", "c"]);
        let idf_b = ((4.0f64 / 4.0).ln() + 1.0) as f32;
        let idf_a = ((4.0f64 / 2.0).ln() + 1.0) as f32;
        assert!((t.idf()[0] - idf_b).abs() < 1e-6 && (t.idf()[1] - idf_a).abs() < 1e-6);
        // Row 0: a twice, b once.
        let (i, v) = m.row(0);
        assert_eq!(i, &[0, 1]);
        let (x, y) = (idf_b, 2.0 * idf_a);
        let n = (x * x + y * y).sqrt();
        assert!((v[0] - x / n).abs() < 1e-6 && (v[1] - y / n).abs() < 1e-6);
        for r in 0..m.n_rows {
            let s: f32 = m.row(r).1.iter().map(|x| x * x).sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn bigrams_min_df_unknown_and_empty() {
        let d = docs(&["x y z", "x y", ""]);
        let p = TfIdfParams {
            bigrams: true,
            min_df: 2,
            ..Default::default()
        };
        let t = TfIdf::fit(&d, p).unwrap();
        assert_eq!(t.terms(), &["x", "x y", "y"]);
        let m = t.transform(&docs(&["q x y", "", "zzz"]));
        assert_eq!(m.row_indices(0), &[0, 1, 2]);
        assert_eq!(m.row_len(1), 0);
        assert_eq!(m.row_len(2), 0);
        assert!(TfIdf::fit(
            &d,
            TfIdfParams {
                min_df: 0,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn character_ngrams_frame_each_word_and_skip_short_ones() {
        let params = TfIdfParams {
            char_ngrams: 3,
            ..TfIdfParams::default()
        };
        let t = TfIdf::fit(&docs(&["kaka ab", "kakor"]), params).unwrap();
        let has = |x: &str| t.term_id(x).is_some();
        // <kaka>: <ka kak aka ka>; <kakor>: <ka kak ako kor or>; "ab" (<ab>) is too short.
        for g in ["#<ka", "#kak", "#aka", "#ka>", "#ako", "#kor", "#or>"] {
            assert!(has(g), "{g}");
        }
        assert!(!has("#<ab") && !has("#ab>"));
        assert!(has("kaka") && has("ab"), "the words themselves stay");
        assert_eq!(t.len(), 3 + 7);
        // A word never seen shares its n-grams with those seen: a row, not an empty one.
        let m = t.transform(&docs(&["kakan"]));
        assert!(m.row_len(0) >= 3, "{:?}", m.row(0));
    }

    #[test]
    fn occlusion_rows_are_the_transform_of_each_occluded_document() {
        for sublinear_tf in [false, true] {
            occlusions_match(TfIdfParams {
                char_ngrams: 3,
                bigrams: true,
                sublinear_tf,
                ..TfIdfParams::default()
            });
        }
    }

    fn occlusions_match(params: TfIdfParams) {
        let train = docs(&[
            "kaka ab kakor",
            "ab kakor tea",
            "tea kaka ab",
            "kakor kakor ab tea",
        ]);
        let t = TfIdf::fit(&train, params).unwrap();
        for d in [
            "kaka ab kakor tea",
            "ab ab kakor",
            "kakor",
            "",
            "unknown kaka zzz ab",
            "tea kaka ab tea kaka",
        ] {
            let doc: Vec<String> = d.split_whitespace().map(str::to_string).collect();
            let mut variants = vec![doc.clone()];
            for i in 0..doc.len() {
                let mut v = doc.clone();
                v.remove(i);
                variants.push(v);
            }
            let m = t.transform_occlusions(&doc);
            assert_eq!(m, t.transform(&variants), "{d:?}");
            // The differences rebuild the same rows.
            let o = t.occlusion_deltas(&doc);
            assert_eq!(o.changes.len(), doc.len() + 1);
            assert!(o.changes[0].is_empty());
            for r in 0..=doc.len() {
                let mut row = o.base.clone();
                row.extend(o.changes[r].iter().copied());
                let row: Vec<(u32, f32)> = sum_duplicates(row)
                    .into_iter()
                    .filter(|e| e.1.abs() > 1e-6)
                    .map(|(j, v)| (j, v * o.scales[r]))
                    .collect();
                let (idx, val) = m.row(r);
                assert_eq!(
                    row.iter().map(|e| e.0).collect::<Vec<_>>(),
                    idx,
                    "{d:?} row {r}"
                );
                for (a, b) in row.iter().zip(val) {
                    assert!((a.1 - b).abs() < 1e-5, "{d:?} row {r}: {a:?} vs {b}");
                }
            }
        }
    }

    #[test]
    fn same_result_whatever_the_thread_count() {
        let d: Vec<Vec<String>> = (0..10_000)
            .map(|i| {
                (0..6)
                    .map(|k| format!("w{}", (i * 7 + k * 13) % 997))
                    .collect()
            })
            .collect();
        let run = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(|| TfIdf::fit_transform(&d, TfIdfParams::default()).unwrap().1)
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn normalize_rows_in_place() {
        let mut m = SparseMatrix::from_rows(3, vec![vec![(0, 3.0), (2, 4.0)], vec![]]).unwrap();
        normalize_rows(&mut m);
        assert_eq!(m.row(0).1, &[0.6, 0.8]);
        assert_eq!(m.row_len(1), 0);
    }
}
