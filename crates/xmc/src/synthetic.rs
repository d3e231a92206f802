//! Seeded, Zipf-distributed synthetic XC datasets for scale tests (never for accuracy claims).
//!
//! Texts are made of pseudo-words `w<id>`; word and label frequencies follow Zipf laws. So that
//! clustering has structure to find, labels come in random *groups* (`group_size` labels each):
//! every group has `group_words` topic words and every label `label_words` words of its own,
//! both drawn Zipf-like (through their own random ranking of the vocabulary, so topic words are
//! not simply the most frequent background words). A text draws its first label by the label
//! Zipf law, each further label from the same group with probability `same_group` (otherwise by
//! the Zipf law again), and each word from its labels' topic words with probability `topic_share`
//! (otherwise a background word by the word Zipf law).
//!
//! Texts are generated in parallel in fixed blocks, each with its own generator seeded from
//! `(seed, block)`: the output depends on the seed only, never on the thread count.

use std::io::Write;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io;
use crate::sparse::SparseMatrix;

/// Generator options.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthParams {
    pub n_labels: usize,
    /// Training texts.
    pub n_train: usize,
    /// Test texts (0: no test split).
    pub n_test: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Mean words per text (uniform in `[⌈w/2⌉, w + w/2]`). Default 8.
    pub words_per_text: usize,
    /// Mean labels per text (uniform in `[1, 2l − 1]`, distinct; fewer only when a group and the
    /// Zipf draws run out of new labels). Default 5.
    pub labels_per_text: usize,
    /// Zipf exponent of word frequencies. Default 1.0.
    pub word_zipf: f64,
    /// Zipf exponent of label frequencies. Default 1.0.
    pub label_zipf: f64,
    /// Labels per group. Default 8.
    pub group_size: usize,
    /// Topic words per group. Default 4.
    pub group_words: usize,
    /// Own words per label. Default 2.
    pub label_words: usize,
    /// Probability that a further label comes from the first label's group. Default 0.7.
    pub same_group: f64,
    /// Probability that a word is a topic word of one of the text's labels. Default 0.6.
    pub topic_share: f64,
    pub seed: u64,
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams {
            n_labels: 1000,
            n_train: 10_000,
            n_test: 0,
            vocab: 10_000,
            words_per_text: 8,
            labels_per_text: 5,
            word_zipf: 1.0,
            label_zipf: 1.0,
            group_size: 8,
            group_words: 4,
            label_words: 2,
            same_group: 0.7,
            topic_share: 0.6,
            seed: 0,
        }
    }
}

impl SynthParams {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: usize, what: &str| {
            if v == 0 {
                Err(Error::param(format!("synthetic: {what} must be >= 1")))
            } else {
                Ok(())
            }
        };
        pos(self.n_labels, "labels")?;
        pos(self.n_train, "training texts")?;
        pos(self.vocab, "vocabulary size")?;
        pos(self.words_per_text, "words per text")?;
        pos(self.labels_per_text, "labels per text")?;
        pos(self.group_size, "group size")?;
        pos(self.group_words, "group words")?;
        pos(self.label_words, "label words")?;
        if self.n_labels > u32::MAX as usize || self.vocab > u32::MAX as usize {
            return Err(Error::param(
                "synthetic: labels and vocabulary must fit in u32",
            ));
        }
        for (v, what) in [
            (self.word_zipf, "word Zipf exponent"),
            (self.label_zipf, "label Zipf exponent"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::param(format!(
                    "synthetic: {what} {v} must be finite and >= 0"
                )));
            }
        }
        for (v, what) in [
            (self.same_group, "same-group probability"),
            (self.topic_share, "topic share"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::param(format!(
                    "synthetic: {what} {v} must be in [0, 1]"
                )));
            }
        }
        Ok(())
    }
}

/// A generated dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthDataset {
    pub train_texts: Vec<String>,
    /// `n_train × n_labels`, values 1.
    pub train_labels: SparseMatrix,
    /// Empty when `n_test` is 0.
    pub test_texts: Vec<String>,
    /// `n_test × n_labels`.
    pub test_labels: SparseMatrix,
}

impl SynthDataset {
    /// Writes `trn_X.txt`, `trn_X_Y.txt` and, with a test split, `tst_X.txt`, `tst_X_Y.txt` into
    /// `dir` (created if missing), each atomically.
    pub fn write_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let texts = |name: &str, t: &[String]| {
            io::write_atomic(dir.join(name), |w| {
                for s in t {
                    w.write_all(s.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                Ok(())
            })
        };
        texts("trn_X.txt", &self.train_texts)?;
        self.train_labels.write(dir.join("trn_X_Y.txt"))?;
        if !self.test_texts.is_empty() {
            texts("tst_X.txt", &self.test_texts)?;
            self.test_labels.write(dir.join("tst_X_Y.txt"))?;
        }
        Ok(())
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(stream)))
}

/// The fixed structure of a synthetic problem: rankings, groups and topic words.
struct World {
    label_zipf: Zipf<f64>,
    word_zipf: Zipf<f64>,
    /// Label of each popularity rank.
    label_of_rank: Vec<u32>,
    /// Background word of each frequency rank.
    word_of_rank: Vec<u32>,
    /// Labels ordered by group: group `g` is `grouped[g·gs .. (g+1)·gs]`.
    grouped: Vec<u32>,
    /// Position of each label in `grouped`.
    pos: Vec<u32>,
    group_words: Vec<u32>,
    label_words: Vec<u32>,
}

impl World {
    fn new(p: &SynthParams) -> Result<Self> {
        let zerr = |e: rand_distr::ZipfError| Error::param(format!("synthetic: {e}"));
        let label_zipf = Zipf::new(p.n_labels as u64, p.label_zipf).map_err(zerr)?;
        let word_zipf = Zipf::new(p.vocab as u64, p.word_zipf).map_err(zerr)?;
        let mut rng = rng_for(p.seed, u64::MAX);
        let perm = |n: usize, rng: &mut ChaCha8Rng| {
            let mut v: Vec<u32> = (0..n as u32).collect();
            v.shuffle(rng);
            v
        };
        let label_of_rank = perm(p.n_labels, &mut rng);
        let word_of_rank = perm(p.vocab, &mut rng);
        let grouped = perm(p.n_labels, &mut rng);
        let mut pos = vec![0u32; p.n_labels];
        for (i, &l) in grouped.iter().enumerate() {
            pos[l as usize] = i as u32;
        }
        // Topic words: Zipf-like through their own ranking of the vocabulary.
        let topic_rank = perm(p.vocab, &mut rng);
        let mut topic = |n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| topic_rank[word_zipf.sample(&mut rng) as usize - 1])
                .collect()
        };
        let n_groups = p.n_labels.div_ceil(p.group_size);
        let group_words = topic(n_groups * p.group_words);
        let label_words = topic(p.n_labels * p.label_words);
        Ok(World {
            label_zipf,
            word_zipf,
            label_of_rank,
            word_of_rank,
            grouped,
            pos,
            group_words,
            label_words,
        })
    }

    fn zipf_label(&self, rng: &mut ChaCha8Rng) -> u32 {
        self.label_of_rank
            [(self.label_zipf.sample(rng) as usize - 1).min(self.label_of_rank.len() - 1)]
    }

    /// One text: its words (as a line) and its sorted, distinct labels.
    fn text(&self, p: &SynthParams, rng: &mut ChaCha8Rng, line: &mut String) -> Vec<u32> {
        let first = self.zipf_label(rng);
        let n_lab = rng.gen_range(1..=2 * p.labels_per_text - 1);
        let mut labels = Vec::with_capacity(n_lab);
        labels.push(first);
        let g = self.pos[first as usize] as usize / p.group_size;
        let members =
            &self.grouped[g * p.group_size..((g + 1) * p.group_size).min(self.grouped.len())];
        // Distinct labels: a duplicate draw is redrawn (a bounded number of times).
        let mut tries = 0;
        while labels.len() < n_lab && tries < 8 * n_lab {
            tries += 1;
            let l = if rng.gen_bool(p.same_group) {
                members[rng.gen_range(0..members.len())]
            } else {
                self.zipf_label(rng)
            };
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        let w = p.words_per_text;
        let n_words = rng.gen_range(w.div_ceil(2)..=w + w / 2);
        line.clear();
        for k in 0..n_words {
            let word = if rng.gen_bool(p.topic_share) {
                let l = labels[rng.gen_range(0..labels.len())] as usize;
                if rng.gen_bool(0.5) {
                    let g = self.pos[l] as usize / p.group_size;
                    self.group_words[g * p.group_words + rng.gen_range(0..p.group_words)]
                } else {
                    self.label_words[l * p.label_words + rng.gen_range(0..p.label_words)]
                }
            } else {
                self.word_of_rank
                    [(self.word_zipf.sample(rng) as usize - 1).min(self.word_of_rank.len() - 1)]
            };
            if k > 0 {
                line.push(' ');
            }
            line.push('w');
            line.push_str(itoa(word, &mut [0u8; 10]));
        }
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    fn split(&self, p: &SynthParams, n: usize, stream: u64) -> Result<(Vec<String>, SparseMatrix)> {
        const BLOCK: usize = 2048;
        let blocks: Vec<(Vec<String>, Vec<Vec<u32>>)> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut rng = rng_for(p.seed, (stream << 40) | b as u64);
                let m = BLOCK.min(n - b * BLOCK);
                let mut texts = Vec::with_capacity(m);
                let mut labels = Vec::with_capacity(m);
                let mut line = String::new();
                for _ in 0..m {
                    labels.push(self.text(p, &mut rng, &mut line));
                    texts.push(line.clone());
                }
                (texts, labels)
            })
            .collect();
        let mut texts = Vec::with_capacity(n);
        let mut y = SparseMatrix::new(p.n_labels);
        for (t, ls) in blocks {
            texts.extend(t);
            for l in ls {
                y.indices.extend_from_slice(&l);
                y.values.extend(std::iter::repeat_n(1.0f32, l.len()));
                y.indptr.push(y.indices.len());
                y.n_rows += 1;
            }
        }
        Ok((texts, y))
    }
}

fn itoa(mut v: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Generates a dataset.
pub fn generate(p: &SynthParams) -> Result<SynthDataset> {
    p.validate()?;
    let world = World::new(p)?;
    let (train_texts, train_labels) = world.split(p, p.n_train, 1)?;
    let (test_texts, test_labels) = world.split(p, p.n_test, 2)?;
    Ok(SynthDataset {
        train_texts,
        train_labels,
        test_texts,
        test_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SynthParams {
        SynthParams {
            n_labels: 500,
            n_train: 5000,
            n_test: 300,
            vocab: 2000,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn shapes_means_and_zipf_skew() {
        let d = generate(&small(1)).unwrap();
        assert_eq!(d.train_texts.len(), 5000);
        assert_eq!((d.train_labels.n_rows, d.train_labels.n_cols), (5000, 500));
        assert_eq!((d.test_labels.n_rows, d.test_texts.len()), (300, 300));
        let words: usize = d.train_texts.iter().map(|t| t.split(' ').count()).sum();
        let mean_words = words as f64 / 5000.0;
        assert!((6.5..=9.0).contains(&mean_words), "{mean_words}");
        let mean_labels = d.train_labels.nnz() as f64 / 5000.0;
        assert!((4.3..=5.5).contains(&mean_labels), "{mean_labels}");
        assert!(d
            .train_texts
            .iter()
            .all(|t| t.split(' ').all(|w| w.starts_with('w'))));
        let mut c = d.train_labels.col_counts();
        c.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            c[0] > 20 * c[250].max(1),
            "head {} vs median {}",
            c[0],
            c[250]
        );
    }

    #[test]
    fn seeded_and_independent_of_threads() {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| generate(&small(3)).unwrap());
        assert_eq!(one, generate(&small(3)).unwrap());
        assert_ne!(one.train_texts, generate(&small(4)).unwrap().train_texts);
    }

    #[test]
    fn writes_a_readable_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = generate(&small(5)).unwrap();
        d.write_dir(dir.path()).unwrap();
        let t = crate::texts::read_texts(dir.path().join("trn_X.txt")).unwrap();
        assert_eq!(t, d.train_texts);
        let y = SparseMatrix::read(dir.path().join("trn_X_Y.txt")).unwrap();
        assert_eq!(y, d.train_labels);
        assert!(dir.path().join("tst_X_Y.txt").exists());
        assert!(generate(&SynthParams {
            vocab: 0,
            ..small(1)
        })
        .is_err());
    }
}
