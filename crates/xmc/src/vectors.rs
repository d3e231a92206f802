//! Word vectors trained on the user's own corpus, as fastText trains them (Bojanowski et al.,
//! TACL 2017): skip-gram or CBOW with negative sampling, each word's input vector the mean of its
//! own row and the rows of its hashed character n-grams (subwords), so that inflected and
//! compound words share what their parts learn. The result is written in the word2vec text
//! format that [`crate::embeddings::WordVectors`] (and `train --embeddings`) reads.
//!
//! - **Words.** The documents' tokens ([`crate::text::tokenize`]'s, the ones the models see).
//!   Words seen at least [`VectorParams::min_count`] times get a row of their own; every word is
//!   written out, a rarer one with the mean of its n-grams' rows (fastText's vector of an unknown
//!   word).
//! - **Subwords.** The character n-grams of `<word>`, `n` from [`VectorParams::minn`] to
//!   [`VectorParams::maxn`], hashed (FNV-1a) into [`VectorParams::buckets`] rows.
//! - **Training.** fastText's: frequent words subsampled (`√(t/f) + t/f` kept), negatives drawn
//!   from the unigram counts to the power 0.5, the learning rate decaying linearly to 0 over all
//!   epochs, the output rows starting at 0 and the input rows uniform in `±1/dim`. In skip-gram
//!   the gradient of a centre word's input rows is summed over its contexts and applied once per
//!   centre word (fastText applies it after each context), which keeps the subword rows' traffic
//!   at one pass per word.
//! - **Threads.** Each thread trains on its share of the documents and updates the shared rows
//!   without locks (Hogwild, as fastText and word2vec do), through relaxed atomic loads and
//!   stores: concurrent updates of one row may lose each other's increments, never tear a value.
//!   With one thread the result depends only on the seed.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How the vectors learn from a word's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// A word predicts each word of its context (fastText's `skipgram`).
    SkipGram,
    /// The mean of the context predicts the word (fastText's `cbow`).
    Cbow,
}

/// Options of [`train`]. [`VectorParams::DEFAULT`] feeds the code and the CLI's help.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorParams {
    pub objective: Objective,
    /// Vector dimension (the model's embedding dimension: 300 by default).
    pub dim: usize,
    /// Largest distance between a word and its context (each position draws a window of 1 to
    /// this).
    pub window: usize,
    /// Negative samples per positive one.
    pub negative: usize,
    /// Passes over the documents.
    pub epochs: usize,
    /// Occurrences for a word to have a row of its own (rarer words: their n-grams only).
    pub min_count: usize,
    /// Shortest character n-gram (0: no subwords).
    pub minn: usize,
    /// Longest character n-gram.
    pub maxn: usize,
    /// Rows the n-grams are hashed into.
    pub buckets: usize,
    /// Initial learning rate (decays linearly to 0).
    pub lr: f32,
    /// Subsampling threshold `t` of frequent words (0: none).
    pub sample: f64,
    pub seed: u64,
}

impl VectorParams {
    pub const DEFAULT: VectorParams = VectorParams {
        objective: Objective::SkipGram,
        dim: 300,
        window: 5,
        negative: 5,
        epochs: 5,
        min_count: 2,
        minn: 3,
        maxn: 6,
        buckets: 500_000,
        lr: 0.05,
        sample: 1e-4,
        seed: 0,
    };

    /// Most floats the two tables may hold together (16 GiB).
    pub const MAX_FLOATS: usize = 1 << 32;

    /// Checks every option (before anything is allocated).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::param(m));
        if self.dim == 0 || self.dim > 4096 {
            return bad(format!("dim {} (1..=4096)", self.dim));
        }
        if self.window == 0 || self.window > 100 {
            return bad(format!("window {} (1..=100)", self.window));
        }
        if self.negative == 0 || self.negative > 100 {
            return bad(format!("negative {} (1..=100)", self.negative));
        }
        if self.epochs == 0 || self.epochs > 1000 {
            return bad(format!("epochs {} (1..=1000)", self.epochs));
        }
        if self.min_count == 0 {
            return bad("min_count must be at least 1".into());
        }
        if self.minn > 0 && (self.maxn < self.minn || self.maxn > 32) {
            return bad(format!(
                "n-grams {}..={}: maxn must be within minn..=32",
                self.minn, self.maxn
            ));
        }
        if self.minn > 0 && (self.buckets == 0 || self.buckets > 1 << 28) {
            return bad(format!("buckets {} (1..=2^28)", self.buckets));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return bad(format!("lr {} (in (0, 10])", self.lr));
        }
        if !(self.sample.is_finite() && (0.0..=1.0).contains(&self.sample)) {
            return bad(format!("sample {} (in [0, 1])", self.sample));
        }
        Ok(())
    }
}

impl Default for VectorParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Progress of [`train`], reported from one worker about a hundred times.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Fraction of all the epochs' tokens processed.
    pub done: f64,
    /// Mean logistic loss over the updates since the last report.
    pub loss: f64,
}

/// Trained vectors: every word of the documents, most frequent first.
#[derive(Debug, Clone)]
pub struct TrainedVectors {
    pub words: Vec<String>,
    pub counts: Vec<u64>,
    pub dim: usize,
    /// `words.len()` rows of `dim` floats.
    pub data: Vec<f32>,
    /// Tokens in the documents (one epoch).
    pub tokens: u64,
}

impl TrainedVectors {
    /// The vector of `word` (a word of the documents).
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        let i = self.words.iter().position(|w| w == word)?;
        Some(&self.data[i * self.dim..(i + 1) * self.dim])
    }

    /// Writes `count dim`, then one `word v1 … vdim` line per word (word2vec's text format).
    pub fn write_word2vec<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        writeln!(out, "{} {}", self.words.len(), self.dim)?;
        let mut line = String::new();
        for (w, v) in self.words.iter().zip(self.data.chunks(self.dim.max(1))) {
            use std::fmt::Write as _;
            line.clear();
            line.push_str(w);
            for x in v {
                // Five significant decimals: what fastText's .vec files keep.
                let _ = write!(line, " {x:.5}");
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// FNV-1a of the bytes of `s`.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// The bucket of each character n-gram of `<word>`, `n` in `minn..=maxn` (none with minn 0).
pub fn subword_buckets(word: &str, minn: usize, maxn: usize, buckets: usize) -> Vec<u32> {
    let mut out = Vec::new();
    if minn == 0 || buckets == 0 {
        return out;
    }
    let framed: Vec<char> = std::iter::once('<')
        .chain(word.chars())
        .chain(std::iter::once('>'))
        .collect();
    let mut buf = String::new();
    for n in minn..=maxn {
        for w in framed.windows(n) {
            buf.clear();
            buf.extend(w);
            out.push((fnv1a(&buf) as usize % buckets) as u32);
        }
    }
    out
}

/// A table of rows shared by the workers without locks: relaxed atomic loads and stores of the
/// floats' bits (Hogwild).
struct Shared {
    cells: Vec<AtomicU32>,
    dim: usize,
}

impl Shared {
    fn new(rows: usize, dim: usize, mut init: impl FnMut() -> f32) -> Self {
        Shared {
            cells: (0..rows * dim)
                .map(|_| AtomicU32::new(init().to_bits()))
                .collect(),
            dim,
        }
    }

    fn row(&self, r: usize) -> &[AtomicU32] {
        &self.cells[r * self.dim..(r + 1) * self.dim]
    }

    /// `out += row r`.
    fn add_to(&self, r: usize, out: &mut [f32]) {
        for (o, c) in out.iter_mut().zip(self.row(r)) {
            *o += f32::from_bits(c.load(Relaxed));
        }
    }

    /// `out = row r`.
    fn read(&self, r: usize, out: &mut [f32]) {
        for (o, c) in out.iter_mut().zip(self.row(r)) {
            *o = f32::from_bits(c.load(Relaxed));
        }
    }

    /// `row r = old + a · x`, `old` the row as [`Shared::read`] gave it (a concurrent update
    /// in between is lost, as Hogwild allows; the row is not read twice).
    fn write_axpy(&self, r: usize, old: &[f32], a: f32, x: &[f32]) {
        for ((c, &o), &x) in self.row(r).iter().zip(old).zip(x) {
            c.store((o + a * x).to_bits(), Relaxed);
        }
    }

    /// `row r += a · x`.
    fn axpy(&self, r: usize, a: f32, x: &[f32]) {
        for (c, &x) in self.row(r).iter().zip(x) {
            c.store((f32::from_bits(c.load(Relaxed)) + a * x).to_bits(), Relaxed);
        }
    }
}

/// The vocabulary: words by decreasing count, each with the input rows it averages.
struct Vocabulary {
    words: Vec<String>,
    counts: Vec<u64>,
    /// Words with a row of their own (the first `n_rows` words).
    n_rows: usize,
    /// Per word: its input rows (its own if it has one, then its n-grams', offset by `n_rows`).
    inputs: Vec<Vec<u32>>,
    tokens: u64,
}

fn vocabulary(docs: &[Vec<String>], p: &VectorParams) -> Result<Vocabulary> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut tokens = 0u64;
    for d in docs {
        for w in d {
            *counts.entry(w.as_str()).or_insert(0) += 1;
            tokens += 1;
        }
    }
    let mut by_count: Vec<(&str, u64)> = counts.into_iter().collect();
    by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let n_rows = by_count.partition_point(|e| e.1 >= p.min_count as u64);
    if n_rows == 0 {
        return Err(Error::param(format!(
            "no word occurs {} times or more: nothing to train on",
            p.min_count
        )));
    }
    let rows = n_rows + if p.minn > 0 { p.buckets } else { 0 };
    if rows.saturating_mul(p.dim).saturating_mul(2) > VectorParams::MAX_FLOATS {
        return Err(Error::param(format!(
            "{n_rows} words and {} buckets of {} floats are more than the {} floats allowed",
            p.buckets,
            p.dim,
            VectorParams::MAX_FLOATS
        )));
    }
    let inputs = by_count
        .iter()
        .enumerate()
        .map(|(i, (w, _))| {
            let mut v: Vec<u32> = if i < n_rows { vec![i as u32] } else { vec![] };
            v.extend(
                subword_buckets(w, p.minn, p.maxn, p.buckets)
                    .into_iter()
                    .map(|b| b + n_rows as u32),
            );
            v
        })
        .collect();
    Ok(Vocabulary {
        words: by_count.iter().map(|e| e.0.to_string()).collect(),
        counts: by_count.iter().map(|e| e.1).collect(),
        n_rows,
        inputs,
        tokens,
    })
}

/// Size of the table negatives are drawn from.
const NEG_TABLE: usize = 10_000_000;

/// The negative-sampling table: word `i` (of those with rows) appears in proportion to
/// `count^0.5`.
fn negative_table(v: &Vocabulary) -> Vec<u32> {
    let weights: Vec<f64> = v.counts[..v.n_rows]
        .iter()
        .map(|&c| (c as f64).sqrt())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut table = Vec::with_capacity(NEG_TABLE);
    for (i, w) in weights.iter().enumerate() {
        let n = (w * NEG_TABLE as f64 / total).ceil() as usize;
        table.extend(std::iter::repeat_n(i as u32, n.max(1)));
    }
    table
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-30.0, 30.0)).exp())
}

/// One worker's state.
struct Worker<'a> {
    p: &'a VectorParams,
    v: &'a Vocabulary,
    input: &'a Shared,
    output: &'a Shared,
    table: &'a [u32],
    rng: ChaCha8Rng,
    hidden: Vec<f32>,
    grad: Vec<f32>,
    out_row: Vec<f32>,
    loss: f64,
    updates: u64,
}

impl Worker<'_> {
    /// One positive target and its negatives against `hidden`: updates the output rows and
    /// adds the input gradient to `grad`.
    fn targets(&mut self, target: u32, lr: f32) {
        for n in 0..=self.p.negative {
            let (row, label) = if n == 0 {
                (target, 1.0)
            } else {
                let t = self.table[self.rng.gen_range(0..self.table.len())];
                if t == target {
                    continue;
                }
                (t, 0.0)
            };
            self.output.read(row as usize, &mut self.out_row);
            let s = sigmoid(dot(&self.hidden, &self.out_row));
            self.loss -= if label > 0.0 {
                (s.max(1e-7) as f64).ln()
            } else {
                ((1.0 - s).max(1e-7) as f64).ln()
            };
            self.updates += 1;
            let a = lr * (label - s);
            for (g, &o) in self.grad.iter_mut().zip(&self.out_row) {
                *g += a * o;
            }
            self.output
                .write_axpy(row as usize, &self.out_row, a, &self.hidden);
        }
    }

    /// `hidden` = the mean of the input rows of `words`.
    fn average(&mut self, rows: impl Iterator<Item = u32>) -> usize {
        self.hidden.fill(0.0);
        let mut n = 0;
        for r in rows {
            self.input.add_to(r as usize, &mut self.hidden);
            n += 1;
        }
        if n > 0 {
            let inv = 1.0 / n as f32;
            self.hidden.iter_mut().for_each(|h| *h *= inv);
        }
        n
    }

    /// Trains on one document (word ids, subsampled).
    fn document(&mut self, line: &[u32], lr: f32) {
        let v = self.v;
        for (i, &w) in line.iter().enumerate() {
            let b = self.rng.gen_range(1..=self.p.window);
            let lo = i.saturating_sub(b);
            let hi = (i + b + 1).min(line.len());
            let context = (lo..hi).filter(|&j| j != i);
            match self.p.objective {
                Objective::SkipGram => {
                    if self.average(v.inputs[w as usize].iter().copied()) == 0 {
                        continue;
                    }
                    self.grad.fill(0.0);
                    let mut any = false;
                    for j in context {
                        let t = line[j];
                        if (t as usize) < v.n_rows {
                            self.targets(t, lr);
                            any = true;
                        }
                    }
                    if any {
                        for &r in &v.inputs[w as usize] {
                            self.input.axpy(r as usize, 1.0, &self.grad);
                        }
                    }
                }
                Objective::Cbow => {
                    if (w as usize) >= v.n_rows {
                        continue;
                    }
                    let rows: Vec<u32> = context
                        .flat_map(|j| v.inputs[line[j] as usize].iter().copied())
                        .collect();
                    if self.average(rows.iter().copied()) == 0 {
                        continue;
                    }
                    self.grad.fill(0.0);
                    self.targets(w, lr);
                    for &r in &rows {
                        self.input.axpy(r as usize, 1.0, &self.grad);
                    }
                }
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Trains word vectors on `docs` (token lists), on [`rayon::current_num_threads`] threads.
/// `progress` is called about a hundred times; `stop` returning true (asked as often) ends
/// training early with [`Error::Interrupted`].
pub fn train(
    docs: &[Vec<String>],
    p: &VectorParams,
    progress: &(dyn Fn(Progress) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<TrainedVectors> {
    p.validate()?;
    let v = vocabulary(docs, p)?;
    let index: HashMap<&str, u32> = v
        .words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect();
    let ids: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| d.iter().map(|w| index[w.as_str()]).collect())
        .collect();
    let rows = v.n_rows + if p.minn > 0 { p.buckets } else { 0 };
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let r = 1.0 / p.dim as f32;
    let input = Shared::new(rows, p.dim, || rng.gen_range(-r..r));
    let output = Shared::new(v.n_rows, p.dim, || 0.0);
    let table = negative_table(&v);
    // Probability of keeping each word (subsampling of the frequent ones).
    let keep: Vec<f32> = v
        .counts
        .iter()
        .map(|&c| {
            if p.sample <= 0.0 {
                return 1.0;
            }
            let f = c as f64 / v.tokens.max(1) as f64;
            ((p.sample / f).sqrt() + p.sample / f).min(1.0) as f32
        })
        .collect();

    let threads = rayon::current_num_threads().clamp(1, ids.len().max(1));
    let total = v.tokens.max(1) * p.epochs as u64;
    let done = AtomicU64::new(0);
    let stopped = AtomicBool::new(false);
    let shard = ids.len().div_ceil(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let part = &ids[(t * shard).min(ids.len())..((t + 1) * shard).min(ids.len())];
            let (v, input, output, table, keep) = (&v, &input, &output, &table, &keep);
            let (done, stopped) = (&done, &stopped);
            s.spawn(move || {
                let mut w = Worker {
                    p,
                    v,
                    input,
                    output,
                    table,
                    rng: ChaCha8Rng::seed_from_u64(p.seed.wrapping_add(1 + t as u64)),
                    hidden: vec![0.0; p.dim],
                    grad: vec![0.0; p.dim],
                    out_row: vec![0.0; p.dim],
                    loss: 0.0,
                    updates: 0,
                };
                let mut line = Vec::new();
                let mut next_report = 0.0;
                for _ in 0..p.epochs {
                    for doc in part {
                        if stopped.load(Relaxed) {
                            return;
                        }
                        let d = done.fetch_add(doc.len() as u64, Relaxed);
                        let frac = d as f64 / total as f64;
                        let lr = p.lr * (1.0 - frac as f32).max(1e-4);
                        line.clear();
                        line.extend(
                            doc.iter()
                                .copied()
                                .filter(|&x| w.rng.gen::<f32>() < keep[x as usize]),
                        );
                        w.document(&line, lr);
                        if t == 0 && frac >= next_report {
                            if stop() {
                                stopped.store(true, Relaxed);
                                return;
                            }
                            progress(Progress {
                                done: frac,
                                loss: w.loss / w.updates.max(1) as f64,
                            });
                            (w.loss, w.updates) = (0.0, 0);
                            next_report = frac + 0.01;
                        }
                    }
                }
            });
        }
    });
    if stopped.load(Relaxed) {
        return Err(Error::Interrupted);
    }
    progress(Progress {
        done: 1.0,
        loss: f64::NAN,
    });

    // Every word's vector: the mean of its input rows.
    let mut data = vec![0f32; v.words.len() * p.dim];
    for (i, out) in data.chunks_mut(p.dim).enumerate() {
        let rows = &v.inputs[i];
        for &r in rows {
            input.add_to(r as usize, out);
        }
        let inv = 1.0 / rows.len().max(1) as f32;
        out.iter_mut().for_each(|x| *x *= inv);
    }
    Ok(TrainedVectors {
        words: v.words,
        counts: v.counts,
        dim: p.dim,
        data,
        tokens: v.tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt()).max(1e-12)
    }

    /// Two topics whose words only meet their own.
    fn corpus() -> Vec<Vec<String>> {
        let food = ["soup", "bread", "cheese", "butter", "flour", "oven"];
        let sea = ["boat", "sail", "harbour", "wave", "anchor", "tide"];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..3000)
            .map(|i| {
                let topic = if i % 2 == 0 { &food } else { &sea };
                (0..6)
                    .map(|_| topic[rng.gen_range(0..topic.len())].to_string())
                    .collect()
            })
            .collect()
    }

    fn small() -> VectorParams {
        VectorParams {
            dim: 24,
            epochs: 3,
            buckets: 2000,
            sample: 0.0,
            ..VectorParams::DEFAULT
        }
    }

    fn topics_separate(p: &VectorParams) {
        let docs = corpus();
        let v = train(&docs, p, &|_| {}, &|| false).unwrap();
        assert_eq!(v.words.len(), 12);
        assert_eq!(v.tokens, 18_000);
        let g = |w: &str| v.get(w).unwrap();
        let same = cosine(g("soup"), g("bread")).min(cosine(g("boat"), g("tide")));
        let other = cosine(g("soup"), g("boat")).max(cosine(g("bread"), g("tide")));
        assert!(
            same > other + 0.3,
            "{p:?}: same topic {same}, across {other}"
        );
    }

    #[test]
    fn words_of_a_topic_end_closer_than_words_of_two() {
        topics_separate(&small());
        topics_separate(&VectorParams {
            objective: Objective::Cbow,
            ..small()
        });
        topics_separate(&VectorParams { minn: 0, ..small() });
    }

    #[test]
    fn one_thread_depends_only_on_the_seed() {
        let docs = corpus();
        let run = |seed| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| {
                    train(&docs, &VectorParams { seed, ..small() }, &|_| {}, &|| false)
                        .unwrap()
                        .data
                })
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn rare_words_get_their_ngrams_and_the_file_reads_back() {
        let mut docs = corpus();
        docs.push(vec!["soups".into(), "boat".into()]);
        // One thread: the vectors depend on the seed alone, so the values whose printed
        // decimals are checked below are the same on every run.
        let v = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| train(&docs, &small(), &|_| {}, &|| false))
            .unwrap();
        // Seen once (below min_count 2): no row of its own, its n-grams' mean, close to `soup`.
        let soups = v.get("soups").unwrap();
        assert!(soups.iter().any(|&x| x != 0.0));
        assert!(cosine(soups, v.get("soup").unwrap()) > cosine(soups, v.get("anchor").unwrap()));
        let mut buf = Vec::new();
        v.write_word2vec(&mut buf).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.vec");
        std::fs::write(&path, &buf).unwrap();
        let back = crate::embeddings::WordVectors::load(&path).unwrap();
        assert_eq!((back.len(), back.dim()), (13, 24));
        for (a, b) in back.get("oven").unwrap().iter().zip(v.get("oven").unwrap()) {
            assert!((a - b).abs() <= 5e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn ngrams_are_those_of_the_framed_word() {
        // `<ab>`: 3-grams `<ab`, `ab>`, the 4-gram `<ab>`.
        assert_eq!(subword_buckets("ab", 3, 6, 1 << 20).len(), 3);
        assert_eq!(subword_buckets("ab", 0, 6, 1 << 20), Vec::<u32>::new());
        let b = subword_buckets("kakor", 3, 3, 1 << 20);
        assert_eq!(b.len(), 5);
        assert_eq!(b[1], fnv1a("kak") % (1 << 20));
    }

    #[test]
    fn bad_options_are_refused_before_allocating() {
        let docs = corpus();
        for p in [
            VectorParams { dim: 0, ..small() },
            VectorParams {
                window: 0,
                ..small()
            },
            VectorParams {
                minn: 4,
                maxn: 3,
                ..small()
            },
            VectorParams {
                lr: f32::NAN,
                ..small()
            },
            VectorParams {
                dim: 4096,
                buckets: 1 << 28,
                ..small()
            },
            VectorParams {
                min_count: 1_000_000,
                ..small()
            },
        ] {
            assert!(train(&docs, &p, &|_| {}, &|| false).is_err(), "{p:?}");
        }
        let stopped = train(&docs, &small(), &|_| {}, &|| true);
        assert!(matches!(stopped, Err(Error::Interrupted)), "{stopped:?}");
    }
}
