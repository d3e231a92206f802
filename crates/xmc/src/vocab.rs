//! The word vocabulary: token <-> id, and fixed-length id sequences for the model.
//!
//! Id 0 is the padding token [`PAD`] (`<pad>`), the last id is the unknown-word token [`UNK`]
//! (`<unk>`); the words in between are the most frequent training tokens, most frequent first,
//! ties broken by the word's bytes, so a vocabulary never depends on thread count or hash order.
//!
//! On disk (`vocab.txt`) a vocabulary is one word per line, line `i + 1` holding id `i`, written
//! atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io;
use crate::text;

/// The padding token, id 0.
pub const PAD: &str = "<pad>";
/// The padding token's id: the row of the word table that stays zero and never moves.
pub const PAD_ID: u32 = 0;
/// The unknown-word token, the last id.
pub const UNK: &str = "<unk>";

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A word vocabulary with a padding id (0) and an unknown-word id (the last).
#[derive(Debug, Clone)]
pub struct Vocab {
    /// `words[id]`; `words[0] == PAD`, `words[last] == UNK`.
    words: Vec<String>,
    /// Every word except `PAD` and `UNK` -> its id.
    index: WordIndex,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        self.words == other.words
    }
}

impl Vocab {
    /// A vocabulary of `PAD`, the given words (ids 1..), `UNK`. Duplicates, empty words, words
    /// containing whitespace and the two special tokens are errors.
    pub fn from_words<I, S>(words: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut v = Vocab {
            words: vec![PAD.to_owned()],
            index: WordIndex::default(),
        };
        for w in words {
            let w = w.into();
            if let Some(msg) = invalid_word(&w) {
                return Err(Error::param(format!("vocabulary word {w:?}: {msg}")));
            }
            let id = v.words.len() as u32;
            if v.index.insert(&w, id).is_err() {
                return Err(Error::param(format!("vocabulary word {w:?} appears twice")));
            }
            v.words.push(w);
        }
        v.words.push(UNK.to_owned());
        Ok(v)
    }

    /// The most frequent tokens of `tokenized` (the training texts, see
    /// [`text::tokenize_all`]): at most `max_size` entries *including* `PAD` and `UNK` (so
    /// `max_size - 2` words; `usize::MAX` for no limit), each seen at least `min_count` times.
    /// Ordered by count, descending, then by the word's bytes. Tokens that can never come out of
    /// [`text::tokenize`] (empty, containing whitespace) or that equal `PAD` / `UNK` are skipped.
    pub fn build(tokenized: &[Vec<String>], max_size: usize, min_count: usize) -> Self {
        let counts: FastMap<&str, u64> = tokenized
            .par_iter()
            .fold(FastMap::default, |mut m: FastMap<&str, u64>, doc| {
                for w in doc {
                    *m.entry(w.as_str()).or_insert(0) += 1;
                }
                m
            })
            .reduce(FastMap::default, |a, b| {
                let (mut a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
                for (w, c) in b {
                    *a.entry(w).or_insert(0) += c;
                }
                a
            });
        let min_count = min_count.max(1) as u64;
        let mut ranked: Vec<(&str, u64)> = counts
            .into_iter()
            .filter(|&(w, c)| c >= min_count && invalid_word(w).is_none())
            .collect();
        ranked.par_sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(max_size.saturating_sub(2));
        let mut index = WordIndex::with_capacity(ranked.len());
        let mut words = Vec::with_capacity(ranked.len() + 2);
        words.push(PAD.to_owned());
        for (i, (w, _)) in ranked.into_iter().enumerate() {
            // `ranked` has distinct words.
            let _ = index.insert(w, i as u32 + 1);
            words.push(w.to_owned());
        }
        words.push(UNK.to_owned());
        Vocab { words, index }
    }

    /// Number of ids, `PAD` and `UNK` included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Always false: a vocabulary holds at least `PAD` and `UNK`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The padding id, 0.
    pub fn pad_id(&self) -> u32 {
        0
    }

    /// The unknown-word id, `len() - 1`.
    pub fn unk_id(&self) -> u32 {
        (self.words.len() - 1) as u32
    }

    /// The id of a word, `None` if it is not in the vocabulary (`PAD` and `UNK` included: they
    /// are not words).
    #[inline]
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word)
    }

    /// The id of a word, or [`Vocab::unk_id`].
    #[inline]
    pub fn id_or_unk(&self, word: &str) -> u32 {
        self.id(word).unwrap_or_else(|| self.unk_id())
    }

    /// The word of an id (`PAD` for 0, `UNK` for the last).
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// All entries, by id.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The ordinary words (ids `1..unk_id()`) with their ids.
    pub fn iter_words(&self) -> impl Iterator<Item = (u32, &str)> {
        let n = self.words.len() - 1;
        self.words[1..n]
            .iter()
            .enumerate()
            .map(|(i, w)| (i as u32 + 1, w.as_str()))
    }

    /// Writes the ids of `text`'s tokens into `out`: the first `out.len()` tokens, then `PAD`
    /// (0) up to the end; unknown words get [`Vocab::unk_id`]. Allocates nothing.
    pub fn encode_into(&self, text: &str, out: &mut [u32]) {
        out.fill(0);
        if out.is_empty() {
            return;
        }
        let unk = self.unk_id();
        let mut i = 0;
        text::for_each_token(text, |t| {
            out[i] = self.index.get(t).unwrap_or(unk);
            i += 1;
            i < out.len()
        });
    }

    /// [`Vocab::encode_into`] for a text already split into tokens ([`text::tokenize`]'s), as
    /// the explanations' occluded variants are.
    pub fn encode_tokens_into<S: AsRef<str>>(&self, tokens: &[S], out: &mut [u32]) {
        out.fill(0);
        let unk = self.unk_id();
        for (o, t) in out.iter_mut().zip(tokens) {
            *o = self.index.get(t.as_ref()).unwrap_or(unk);
        }
    }

    /// The ids of `text`'s tokens, truncated or padded with 0 to exactly `seq_len`.
    pub fn encode(&self, text: &str, seq_len: usize) -> Vec<u32> {
        let mut out = vec![0; seq_len];
        self.encode_into(text, &mut out);
        out
    }

    /// [`Vocab::encode`] for every text, in parallel: an N×`seq_len` row-major matrix.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, texts: &[S], seq_len: usize) -> Vec<u32> {
        let mut out = vec![0u32; texts.len() * seq_len];
        if seq_len == 0 {
            return out;
        }
        out.par_chunks_mut(seq_len)
            .zip(texts.par_iter())
            .with_min_len(256)
            .for_each(|(row, t)| self.encode_into(t.as_ref(), row));
        out
    }

    /// Writes `vocab.txt` atomically: one entry per line, line `i + 1` = id `i`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        io::write_atomic(path, |w| {
            for word in &self.words {
                w.write_all(word.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// Reads a `vocab.txt` written by [`Vocab::save`]. The first line must be `PAD`, the last
    /// `UNK`; an empty file, an empty or duplicate word, or a misplaced special token is an
    /// error naming the file and line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut lines = io::lines(path)?;
        let mut words: Vec<String> = Vec::new();
        let mut index = WordIndex::default();
        let mut unk_line = None;
        let mut line = 0;
        while let Some(l) = lines.next_line()? {
            line += 1;
            if let Some(prev) = unk_line {
                return Err(Error::parse(
                    path,
                    line,
                    format!("entry after {UNK} (line {prev}), which must be the last line"),
                ));
            }
            if line == 1 {
                if l != PAD {
                    return Err(Error::parse(
                        path,
                        1,
                        format!("the first line must be {PAD}, found {l:?}"),
                    ));
                }
            } else if l == UNK {
                unk_line = Some(line);
            } else if l == PAD {
                return Err(Error::parse(
                    path,
                    line,
                    format!("{PAD} must be line 1 only"),
                ));
            } else if let Some(msg) = invalid_word(l) {
                return Err(Error::parse(path, line, format!("word {l:?}: {msg}")));
            } else {
                let id = words.len() as u32;
                if let Err(first) = index.insert(l, id) {
                    return Err(Error::parse(
                        path,
                        line,
                        format!("duplicate word {l:?} (first on line {})", first + 1),
                    ));
                }
            }
            words.push(l.to_owned());
        }
        if words.is_empty() {
            return Err(Error::parse(
                path,
                1,
                format!("empty vocabulary file (expected {PAD} … {UNK})"),
            ));
        }
        if unk_line.is_none() {
            return Err(Error::parse(
                path,
                line,
                format!(
                    "the last line must be {UNK}, found {:?}",
                    words[words.len() - 1]
                ),
            ));
        }
        Ok(Vocab { words, index })
    }
}

/// A hash table from word to id, tuned for [`Vocab::encode`]'s lookups, which are bound by memory
/// latency. Open addressing with linear probing over 8-byte slots (a 32-bit hash tag and the id;
/// 2 MB for 100,000 words, a quarter of a `HashMap<String, u32>`'s buckets), and the words
/// themselves stored by id (frequent words, having small ids, share cache lines), up to 20 bytes
/// inline, longer ones in an arena. A lookup compares bytes only when the tags agree.
#[derive(Debug, Clone, Default)]
struct WordIndex {
    /// `tag << 32 | id`; 0 marks an empty slot (tags have their lowest bit set).
    slots: Vec<u64>,
    /// The word of each id (ids not in the table: empty).
    keys: Vec<Key>,
    /// The bytes of words longer than [`INLINE`].
    arena: Vec<u8>,
    len: usize,
}

const INLINE: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Key {
    len: u32,
    /// The word (`len <= INLINE`, zero-padded) or its offset in the arena (first 4 bytes,
    /// little-endian).
    data: [u8; INLINE],
}

#[inline]
fn word_hash(w: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x1f2e_3d4c_5b6a_7988).hash_one(w)
}

impl WordIndex {
    fn with_capacity(n: usize) -> Self {
        let mut t = WordIndex::default();
        t.grow_to(n);
        t.keys.reserve(n + 1);
        t
    }

    #[inline]
    fn tag(h: u64) -> u32 {
        (h >> 32) as u32 | 1
    }

    /// Makes room for `n` words at a load factor of at most 1/2.
    fn grow_to(&mut self, n: usize) {
        let cap = (2 * n).max(16).next_power_of_two();
        if cap <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0; cap]);
        for s in old.into_iter().filter(|&s| s != 0) {
            let h = word_hash(self.bytes(s as u32));
            let i = self.probe_empty(h);
            self.slots[i] = s;
        }
    }

    /// The word stored for `id`.
    fn bytes(&self, id: u32) -> &[u8] {
        let k = &self.keys[id as usize];
        let n = k.len as usize;
        if n <= INLINE {
            &k.data[..n]
        } else {
            let off = u32::from_le_bytes([k.data[0], k.data[1], k.data[2], k.data[3]]) as usize;
            &self.arena[off..off + n]
        }
    }

    fn probe_empty(&self, h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        i
    }

    /// The id of `w` (hash `h`), if present.
    #[inline]
    fn find(&self, w: &[u8], h: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = Self::tag(h);
        let mut i = h as usize & mask;
        // Short words are compared as zero-padded fixed-size arrays (no `memcmp` call).
        let inline = w.len() <= INLINE;
        let mut padded = [0u8; INLINE];
        if inline {
            padded[..w.len()].copy_from_slice(w);
        }
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if (s >> 32) as u32 == tag {
                let id = s as u32;
                let k = &self.keys[id as usize];
                if k.len as usize == w.len()
                    && (if inline {
                        k.data == padded
                    } else {
                        self.bytes(id) == w
                    })
                {
                    return Some(id);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The id of `word`.
    #[inline]
    fn get(&self, word: &str) -> Option<u32> {
        let w = word.as_bytes();
        self.find(w, word_hash(w))
    }

    /// Adds `word` with `id` (each id at most once); `Err(existing id)` if the word is already
    /// present.
    fn insert(&mut self, word: &str, id: u32) -> Result<(), u32> {
        let w = word.as_bytes();
        let h = word_hash(w);
        if let Some(existing) = self.find(w, h) {
            return Err(existing);
        }
        self.grow_to(self.len + 1);
        let mut k = Key {
            len: w.len() as u32,
            data: [0; INLINE],
        };
        if w.len() <= INLINE {
            k.data[..w.len()].copy_from_slice(w);
        } else {
            let off = self.arena.len() as u32;
            k.data[..4].copy_from_slice(&off.to_le_bytes());
            self.arena.extend_from_slice(w);
        }
        if self.keys.len() <= id as usize {
            self.keys.resize(id as usize + 1, Key::default());
        }
        self.keys[id as usize] = k;
        let i = self.probe_empty(h);
        self.slots[i] = (Self::tag(h) as u64) << 32 | id as u64;
        self.len += 1;
        Ok(())
    }
}

/// Why `w` cannot be a vocabulary word, if it cannot.
fn invalid_word(w: &str) -> Option<&'static str> {
    if w.is_empty() {
        Some("empty word")
    } else if w.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if w == PAD || w == UNK {
        Some("reserved token")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{tokenize, tokenize_all};

    fn docs(texts: &[&str]) -> Vec<Vec<String>> {
        texts
            .iter()
            .map(|t| t.split(' ').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn build_orders_by_count_then_word() {
        let d = docs(&["b a c", "c b", "c d", "e"]);
        let v = Vocab::build(&d, usize::MAX, 1);
        assert_eq!(v.words(), ["<pad>", "c", "b", "a", "d", "e", "<unk>"]);
        assert_eq!((v.pad_id(), v.unk_id(), v.len()), (0, 6, 7));
        assert_eq!(v.id("c"), Some(1));
        assert_eq!(v.id("zzz"), None);
        assert_eq!(v.id(UNK), None);
        assert_eq!(v.id_or_unk("zzz"), 6);
        assert_eq!(v.word(6), Some(UNK));
    }

    #[test]
    fn max_size_counts_specials_and_min_count_filters() {
        let d = docs(&["b a c", "c b", "c d", "e"]);
        let v = Vocab::build(&d, 4, 1);
        assert_eq!(v.words(), ["<pad>", "c", "b", "<unk>"]);
        let v = Vocab::build(&d, usize::MAX, 2);
        assert_eq!(v.words(), ["<pad>", "c", "b", "<unk>"]);
        let v = Vocab::build(&d, 0, 1);
        assert_eq!(v.words(), ["<pad>", "<unk>"]);
    }

    #[test]
    fn build_skips_reserved_and_impossible_tokens() {
        let d = vec![vec![
            "<pad>".into(),
            "<unk>".into(),
            "".into(),
            "a b".into(),
            "x".into(),
        ]];
        assert_eq!(Vocab::build(&d, 100, 1).words(), ["<pad>", "x", "<unk>"]);
    }

    #[test]
    fn build_is_independent_of_thread_count() {
        let texts: Vec<String> = (0..5000)
            .map(|i| format!("w{} w{} w{} common", i % 97, i % 13, (i * 7) % 31))
            .collect();
        let tok = tokenize_all(&texts);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Vocab::build(&tok, 50, 1));
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap()
            .install(|| Vocab::build(&tok, 50, 1));
        assert_eq!(one, four);
        assert_eq!(one.len(), 50);
    }

    #[test]
    fn encode_pads_truncates_and_marks_unknown() {
        let v = Vocab::from_words(["potato", "cheese", "sauce"]).unwrap();
        assert_eq!(v.unk_id(), 4);
        assert_eq!(
            v.encode("The potato and the CHEESE pie", 6),
            vec![1, 2, 4, 0, 0, 0]
        );
        assert_eq!(v.encode("sauce sauce sauce potato", 2), vec![3, 3]);
        assert_eq!(v.encode("", 3), vec![0, 0, 0]);
        assert!(v.encode("sauce", 0).is_empty());
        // Fallback tokens (only stop words) are looked up too.
        assert_eq!(v.encode("The", 2), vec![4, 0]);
    }

    #[test]
    fn encode_all_is_row_major() {
        let v = Vocab::from_words(["a1", "b2"]).unwrap();
        let texts = vec!["b2".to_owned(), "x a1 b2 q".to_owned(), String::new()];
        // "b2" cleans to "b 2", "a1" to "a 1": the tokens are unknown.
        assert_eq!(v.encode_all(&texts, 3), vec![3, 3, 0, 3, 3, 3, 0, 0, 0]);
        let v = Vocab::from_words(["alpha", "beta"]).unwrap();
        let texts = vec!["beta".to_owned(), "x alpha beta q".to_owned()];
        assert_eq!(v.encode_all(&texts, 3), vec![2, 0, 0, 3, 1, 2]);
        assert!(v.encode_all(&texts, 0).is_empty());
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.txt");
        let v = Vocab::build(&docs(&["x y z y", "grön y"]), 10, 1);
        v.save(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "<pad>\ny\ngrön\nx\nz\n<unk>\n"
        );
        let w = Vocab::load(&p).unwrap();
        assert_eq!(v, w);
        assert_eq!(w.id("grön"), Some(2));
        assert_eq!(w.unk_id(), 5);
    }

    fn load_err(content: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.txt");
        std::fs::write(&p, content).unwrap();
        let e = Vocab::load(&p).unwrap_err().to_string();
        let prefix = format!("{}:", p.display());
        assert!(e.starts_with(&prefix), "{e}");
        e[prefix.len()..].to_owned()
    }

    #[test]
    fn load_errors_name_file_and_line() {
        assert!(load_err("").starts_with("1: empty vocabulary"));
        assert!(load_err("a\n<unk>\n").starts_with("1: the first line must be <pad>"));
        assert!(load_err("<pad>\na\nb\na\n<unk>\n")
            .starts_with("4: duplicate word \"a\" (first on line 2)"));
        assert!(load_err("<pad>\na\n\n<unk>\n").starts_with("3: word \"\": empty word"));
        assert!(load_err("<pad>\na\n").starts_with("2: the last line must be <unk>"));
        assert!(load_err("<pad>\n<unk>\na\n").starts_with("3: entry after <unk>"));
        assert!(load_err("<pad>\na b\n<unk>\n").starts_with("2: word \"a b\": contains whitespace"));
    }

    #[test]
    fn word_index_short_long_and_growth() {
        let mut ix = WordIndex::default();
        let words: Vec<String> = (0..5000)
            .map(|i| {
                if i % 3 == 0 {
                    format!("a-rather-long-word-beyond-inline-{i}")
                } else {
                    format!("w{i}")
                }
            })
            .collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(ix.insert(w, i as u32), Ok(()));
        }
        assert_eq!(ix.insert(&words[42], 9), Err(42));
        assert_eq!(ix.insert(&words[3], 9), Err(3));
        for (i, w) in words.iter().enumerate() {
            assert_eq!(ix.get(w), Some(i as u32), "{w}");
        }
        assert_eq!(ix.get("w"), None);
        assert_eq!(ix.get("a-rather-long-word-beyond-inline-1"), None);
        assert_eq!(ix.get(""), None);
        assert_eq!(WordIndex::default().get("x"), None);
        // 20 bytes is stored inline, 21 in the arena.
        let mut ix = WordIndex::default();
        ix.insert("exactly-twenty-bytes", 1).unwrap();
        ix.insert("exactly-twenty-one-by", 2).unwrap();
        assert_eq!(ix.get("exactly-twenty-bytes"), Some(1));
        assert_eq!(ix.get("exactly-twenty-one-by"), Some(2));
        assert_eq!(ix.arena.len(), 21);
    }

    #[test]
    fn from_words_rejects_duplicates() {
        assert!(Vocab::from_words(["a", "a"]).is_err());
        assert!(Vocab::from_words(["<unk>"]).is_err());
    }

    /// `encode` and `tokenize` must produce the same token sequence on real data.
    fn check_encode_matches_tokenize(path: &str) {
        let p = Path::new(path);
        if !p.exists() {
            eprintln!("skipping: {path} not found");
            return;
        }
        let texts = crate::texts::read_texts(p).unwrap();
        let tok = tokenize_all(&texts);
        let v = Vocab::build(&tok, usize::MAX, 1);
        let s = 64;
        let ids = v.encode_all(&texts, s);
        let mut n_tokens = 0usize;
        for (i, t) in tok.iter().enumerate() {
            let mut expect: Vec<u32> = t.iter().take(s).map(|w| v.id_or_unk(w)).collect();
            n_tokens += expect.len();
            expect.resize(s, 0);
            assert_eq!(
                &ids[i * s..(i + 1) * s],
                &expect[..],
                "line {}: {:?}",
                i + 1,
                texts[i]
            );
            // With the full vocabulary every token is known, so decoding gives the tokens back.
            let back: Vec<&str> = ids[i * s..(i + 1) * s]
                .iter()
                .take_while(|&&id| id != 0)
                .map(|&id| v.word(id).unwrap())
                .collect();
            assert_eq!(
                back,
                t.iter().take(s).map(String::as_str).collect::<Vec<_>>()
            );
            assert_eq!(tokenize(&texts[i]), *t);
        }
        assert!(n_tokens > texts.len(), "{path}: suspiciously few tokens");
    }

    #[test]
    fn encode_matches_tokenize_on_cooking() {
        check_encode_matches_tokenize(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/cooking/trn_X.txt"
        ));
    }

    #[test]
    fn encode_matches_tokenize_on_yso_finna_sv() {
        check_encode_matches_tokenize(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/yso_finna_sv/xc/trn_X.txt"
        ));
    }
}
