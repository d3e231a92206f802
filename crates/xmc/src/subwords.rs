//! Subwords for the network's word table (fastText's scheme): besides its own row, each word of a
//! text is given the rows of its hashed character n-grams, so that a word the vocabulary has
//! never seen, or an inflected or compound form of one it has, gets a vector from its parts.
//!
//! The table holds the vocabulary's rows, then [`SubwordParams::buckets`] n-gram rows: the
//! n-gram rows of a word are `vocab_size + hash(n-gram) % buckets` (FNV-1a, as
//! [`crate::vectors::subword_buckets`]). [`Subwords`] lists them per position of an N×S id matrix
//! (a padding position has none), and [`Subwords::lookups`] expands a matrix's positions into the
//! weighted rows a lookup sums: the word's row with weight 1, each of its `m` n-gram rows with
//! weight `1/m` (the word's vector plus the mean of its n-grams').

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::text;
use crate::vectors::subword_buckets;

/// The n-gram rows of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubwordParams {
    /// Rows the n-grams are hashed into.
    pub buckets: usize,
    /// Shortest and longest n-gram of `<word>`.
    pub minn: usize,
    pub maxn: usize,
}

impl SubwordParams {
    /// Most n-gram rows.
    pub const MAX_BUCKETS: usize = 1 << 24;
    /// Longest n-gram.
    pub const MAX_N: usize = 16;

    pub fn validate(&self) -> Result<()> {
        if self.buckets == 0 || self.buckets > Self::MAX_BUCKETS {
            return Err(Error::param(format!(
                "subword buckets {} (1..={})",
                self.buckets,
                Self::MAX_BUCKETS
            )));
        }
        if self.minn == 0 || self.maxn < self.minn || self.maxn > Self::MAX_N {
            return Err(Error::param(format!(
                "subword n-grams {}..={}: need 1 <= min <= max <= {}",
                self.minn,
                self.maxn,
                Self::MAX_N
            )));
        }
        Ok(())
    }

    /// The table rows of `word`'s n-grams, after a vocabulary of `vocab_size` rows.
    pub fn rows_of(&self, word: &str, vocab_size: usize) -> Vec<u32> {
        subword_buckets(word, self.minn, self.maxn, self.buckets)
            .into_iter()
            .map(|b| b + vocab_size as u32)
            .collect()
    }
}

/// The n-gram rows of every position of an N×S id matrix (CSR over the positions).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subwords {
    /// Positions per text.
    pub seq_len: usize,
    /// `rows[ptr[p]..ptr[p + 1]]`: position `p`'s n-gram rows.
    pub ptr: Vec<u32>,
    pub rows: Vec<u32>,
}

impl Subwords {
    /// The subwords of each text's first `seq_len` tokens (the positions [`crate::vocab::Vocab`]
    /// encodes), in parallel.
    pub fn of_texts<S: AsRef<str> + Sync>(
        texts: &[S],
        seq_len: usize,
        p: &SubwordParams,
        vocab_size: usize,
    ) -> Self {
        let per_text: Vec<Vec<Vec<u32>>> = texts
            .par_iter()
            .with_min_len(256)
            .map(|t| {
                let mut out = Vec::with_capacity(seq_len);
                if seq_len > 0 {
                    text::for_each_token(t.as_ref(), |w| {
                        out.push(p.rows_of(w, vocab_size));
                        out.len() < seq_len
                    });
                }
                out
            })
            .collect();
        Self::assemble(per_text, seq_len)
    }

    /// The same for texts already split into tokens.
    pub fn of_tokens<T: AsRef<[String]>>(
        texts: &[T],
        seq_len: usize,
        p: &SubwordParams,
        vocab_size: usize,
    ) -> Self {
        let per_text = texts
            .iter()
            .map(|t| {
                t.as_ref()
                    .iter()
                    .take(seq_len)
                    .map(|w| p.rows_of(w, vocab_size))
                    .collect()
            })
            .collect();
        Self::assemble(per_text, seq_len)
    }

    fn assemble(per_text: Vec<Vec<Vec<u32>>>, seq_len: usize) -> Self {
        let mut ptr = Vec::with_capacity(per_text.len() * seq_len + 1);
        let mut rows = Vec::new();
        ptr.push(0);
        for t in per_text {
            let n = t.len();
            for r in t {
                rows.extend(r);
                ptr.push(rows.len() as u32);
            }
            for _ in n..seq_len {
                ptr.push(rows.len() as u32);
            }
        }
        Subwords { seq_len, ptr, rows }
    }

    /// Number of texts.
    pub fn n_texts(&self) -> usize {
        (self.ptr.len() - 1).checked_div(self.seq_len).unwrap_or(0)
    }

    /// Position `p`'s n-gram rows.
    pub fn at(&self, p: usize) -> &[u32] {
        &self.rows[self.ptr[p] as usize..self.ptr[p + 1] as usize]
    }

    /// The texts `texts` (a range of them).
    pub fn slice(&self, texts: Range<usize>) -> Subwords {
        let (a, b) = (texts.start * self.seq_len, texts.end * self.seq_len);
        let base = self.ptr[a];
        Subwords {
            seq_len: self.seq_len,
            ptr: self.ptr[a..=b].iter().map(|&x| x - base).collect(),
            rows: self.rows[base as usize..self.ptr[b] as usize].to_vec(),
        }
    }

    /// The texts `texts` (any of them, in that order).
    pub fn select(&self, texts: &[usize]) -> Subwords {
        let mut out = Subwords {
            seq_len: self.seq_len,
            ptr: vec![0],
            rows: Vec::new(),
        };
        for &t in texts {
            for p in t * self.seq_len..(t + 1) * self.seq_len {
                out.rows.extend_from_slice(self.at(p));
                out.ptr.push(out.rows.len() as u32);
            }
        }
        out
    }

    /// Every row a lookup of `ids` (the same N×S positions, word ids) sums, as `(rows,
    /// positions, weights)`: each non-padding position's word row (weight 1) and its `m` n-gram
    /// rows (weight `1/m`). Padding positions (id 0) have none. Errors when `ids` and these
    /// subwords disagree in length.
    pub fn lookups(&self, ids: &[u32]) -> Result<Lookups> {
        if ids.len() + 1 != self.ptr.len() {
            return Err(Error::Shape(format!(
                "{} ids for the subwords of {} positions",
                ids.len(),
                self.ptr.len() - 1
            )));
        }
        let mut l = Lookups::default();
        for (p, &id) in ids.iter().enumerate() {
            if id == 0 {
                continue;
            }
            l.rows.push(id);
            l.positions.push(p as u32);
            l.weights.push(1.0);
            let grams = self.at(p);
            let w = 1.0 / grams.len().max(1) as f32;
            for &r in grams {
                l.rows.push(r);
                l.positions.push(p as u32);
                l.weights.push(w);
            }
        }
        Ok(l)
    }
}

/// The weighted table rows of a lookup ([`Subwords::lookups`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lookups {
    pub rows: Vec<u32>,
    pub positions: Vec<u32>,
    pub weights: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SubwordParams = SubwordParams {
        buckets: 1000,
        minn: 4,
        maxn: 4,
    };

    #[test]
    fn positions_follow_the_vocabulary_s_tokens() {
        let texts = ["Kakor och bullar", "", "a b c d e f"];
        let s = Subwords::of_texts(&texts, 3, &P, 50);
        assert_eq!(s.n_texts(), 3);
        assert_eq!(s.ptr.len(), 10);
        // `och` is a Swedish stop word? Whatever the tokeniser keeps, positions match its tokens.
        let toks: Vec<Vec<String>> = texts.iter().map(|t| text::tokenize(t)).collect();
        assert_eq!(Subwords::of_tokens(&toks, 3, &P, 50), s);
        // `<kakor>`: 4 4-grams, rows after the vocabulary.
        assert_eq!(s.at(0).len(), 4);
        assert!(s.at(0).iter().all(|&r| (50..1050).contains(&r)));
        // Words of one letter have no 4-gram; the empty text has nothing.
        assert!((3..6).all(|p| s.at(p).is_empty()));
        assert_eq!(s.select(&[2, 0]).select(&[1]), s.slice(0..1));
        assert_eq!(s.slice(1..3).at(0), s.at(3));
        assert_eq!(s.slice(2..3), s.select(&[2]));
    }

    #[test]
    fn lookups_weigh_a_word_s_ngrams_by_their_count() {
        let s = Subwords::of_texts(&["kakor x"], 3, &P, 50);
        let l = s.lookups(&[7, 9, 0]).unwrap();
        assert_eq!(l.rows[0], 7);
        assert_eq!(&l.rows[1..5], s.at(0));
        assert_eq!(l.weights, vec![1.0, 0.25, 0.25, 0.25, 0.25, 1.0]);
        assert_eq!(l.positions, vec![0, 0, 0, 0, 0, 1]);
        assert!(s.lookups(&[7, 9]).is_err());
        for bad in [
            SubwordParams { buckets: 0, ..P },
            SubwordParams { minn: 0, ..P },
            SubwordParams {
                minn: 5,
                maxn: 4,
                ..P
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
