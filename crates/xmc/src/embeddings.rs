//! Pre-trained word vectors (GloVe / word2vec *text* format) and the initial word-embedding
//! table (MODEL.md §2).
//!
//! File format: one word per line followed by its vector, fields separated by spaces (tabs are
//! accepted too); an optional first line `count dim` (word2vec). The dimension is taken from the
//! header or, without one, from the first vector line; every line must have the same. Blank lines
//! are skipped. A word that is not valid UTF-8 is decoded as Windows-1252 instead of failing
//! (files re-saved on Windows contain such bytes; GloVe's `–` shows up as the byte 0x96);
//! numbers must parse as `f32`.
//!
//! Vectors are looked up by the *lowercased* word (the vocabulary is lowercase). When a file
//! holds several spellings of one lowercased word (`Apple`, `apple`), the already-lowercase one
//! wins, otherwise the first in the file; later exact duplicates are ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::error::{Error, Result};
use crate::io::{self, Lines};
use crate::vocab::Vocab;

/// The half-width of the uniform initialisation of words without a pre-trained vector.
pub const INIT_RANGE: f32 = 0.25;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Word vectors read from a text file.
#[derive(Debug, Clone)]
pub struct WordVectors {
    path: PathBuf,
    dim: usize,
    /// Lowercased word -> (row, whether the file's spelling was already lowercase).
    index: FastMap<String, (u32, bool)>,
    /// Rows of `dim` floats.
    data: Vec<f32>,
    /// Vector lines in the file (kept or not).
    n_lines: usize,
}

/// Largest magnitude accepted in a vector (pre-trained vectors stay within a few units).
pub const MAX_ABS_VALUE: f32 = 1e4;

impl WordVectors {
    /// Reads every vector of `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::read(path.as_ref(), None)
    }

    /// Vectors trained on a corpus ([`crate::vectors::train`]; its words are lowercase tokens
    /// already), named `<corpus vectors>` in messages.
    pub fn from_trained(v: crate::vectors::TrainedVectors) -> Self {
        let index = v
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), (i as u32, true)))
            .collect();
        WordVectors {
            path: PathBuf::from("<corpus vectors>"),
            dim: v.dim,
            index,
            n_lines: v.words.len(),
            data: v.data,
        }
    }

    /// Reads only the vectors of `vocab`'s words (the whole file is still checked), which saves
    /// memory with big files.
    pub fn load_for(path: impl AsRef<Path>, vocab: &Vocab) -> Result<Self> {
        Self::read(path.as_ref(), Some(vocab))
    }

    fn read(path: &Path, filter: Option<&Vocab>) -> Result<Self> {
        let mut lines = Lines::new(io::open(path)?, path);
        let mut wv = WordVectors {
            path: path.to_path_buf(),
            dim: 0,
            index: FastMap::default(),
            data: Vec::new(),
            n_lines: 0,
        };
        let mut header: Option<(usize, usize)> = None;
        let mut lower = String::new();
        let mut vec = Vec::new();
        let mut line = 0;
        while let Some(bytes) = lines.next_bytes()? {
            line += 1;
            let mut fields = bytes
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|f| !f.is_empty());
            let Some(word) = fields.next() else {
                continue; // a blank line
            };
            if line == 1 {
                let rest: Vec<&[u8]> = fields.clone().collect();
                if let ([d], Some(n)) = (&rest[..], parse_usize(word)) {
                    if let Some(d) = parse_usize(d) {
                        if d == 0 {
                            return Err(Error::parse(path, 1, "header announces dimension 0"));
                        }
                        header = Some((n, d));
                        wv.dim = d;
                        continue;
                    }
                }
            }
            vec.clear();
            let mut n_fields = 1;
            let mut bad: Option<(usize, &[u8])> = None;
            for f in fields {
                n_fields += 1;
                match std::str::from_utf8(f)
                    .ok()
                    .and_then(|s| s.parse::<f32>().ok())
                    .filter(|x| x.is_finite() && x.abs() <= MAX_ABS_VALUE)
                {
                    Some(x) => vec.push(x),
                    None => {
                        bad.get_or_insert((n_fields, f));
                    }
                }
            }
            if wv.dim == 0 {
                if n_fields < 2 {
                    return Err(Error::parse(path, line, "a word without a vector"));
                }
                wv.dim = n_fields - 1;
            }
            if header.is_some() && line == 2 {
                // Binary floats: control bytes, or high bytes in fields that do not parse (a
                // cp1252 word in a text file parses fine).
                let control = bytes.iter().any(|&b| b < 0x09);
                let high = bytes.iter().any(|&b| b >= 0x80);
                if control || (high && (n_fields != wv.dim + 1 || bad.is_some())) {
                    return Err(Error::parse(
                        path,
                        line,
                        "binary data after the header: this looks like a binary word2vec file; \
                         convert it to the text format (e.g. gensim's \
                         save_word2vec_format(..., binary=False))",
                    ));
                }
            }
            if n_fields != wv.dim + 1 {
                return Err(Error::parse(
                    path,
                    line,
                    format!("{n_fields} fields, expected a word and {} numbers", wv.dim),
                ));
            }
            if let Some((j, f)) = bad {
                return Err(Error::parse(
                    path,
                    line,
                    format!(
                        "field {j}: {:?} is not a finite number within ±{MAX_ABS_VALUE}",
                        String::from_utf8_lossy(f)
                    ),
                ));
            }
            wv.n_lines += 1;
            let word = decode_word(word);
            lower.clear();
            for c in word.chars() {
                lower.extend(c.to_lowercase());
            }
            if let Some(v) = filter {
                if v.id(&lower).is_none() {
                    continue;
                }
            }
            let exact = lower == word;
            match wv.index.get_mut(lower.as_str()) {
                Some((row, was_exact)) => {
                    if exact && !*was_exact {
                        let r = *row as usize * wv.dim;
                        wv.data[r..r + wv.dim].copy_from_slice(&vec);
                        *was_exact = true;
                    }
                }
                None => {
                    let row = (wv.data.len() / wv.dim) as u32;
                    wv.data.extend_from_slice(&vec);
                    wv.index.insert(lower.clone(), (row, exact));
                }
            }
        }
        if let Some((n, _)) = header {
            if n != wv.n_lines {
                return Err(Error::mismatch(
                    path,
                    format!(
                        "the header announces {n} vectors but the file holds {}",
                        wv.n_lines
                    ),
                ));
            }
        }
        if wv.n_lines == 0 {
            return Err(Error::parse(
                path,
                line.max(1),
                "no word vectors in the file",
            ));
        }
        Ok(wv)
    }

    /// The file the vectors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors kept (distinct lowercased words).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no vector was kept (possible with [`WordVectors::load_for`]).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of vector lines in the file, kept or not.
    pub fn n_lines(&self) -> usize {
        self.n_lines
    }

    /// The vector of a word, looked up by its lowercased form.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        let row = match self.index.get(word) {
            Some(&(row, _)) => row,
            None => {
                if word.chars().all(|c| !c.is_uppercase()) {
                    return None;
                }
                self.index.get(word.to_lowercase().as_str())?.0
            }
        } as usize;
        Some(&self.data[row * self.dim..(row + 1) * self.dim])
    }
}

/// Windows-1252 code points of the bytes 0x80–0x9F (0 for the five undefined ones).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

/// A word as UTF-8 or, when it is not valid UTF-8, as Windows-1252 (the usual reason: a file
/// re-saved by a Windows editor; an undefined byte becomes U+FFFD). Never fails.
fn decode_word(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => s.into(),
        Err(_) => b
            .iter()
            .map(|&x| match x {
                0x80..=0x9F => match CP1252_HIGH[(x - 0x80) as usize] {
                    0 => char::REPLACEMENT_CHARACTER,
                    u => char::from_u32(u as u32).unwrap_or(char::REPLACEMENT_CHARACTER),
                },
                _ => x as char,
            })
            .collect::<String>()
            .into(),
    }
}

fn parse_usize(b: &[u8]) -> Option<usize> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// How many vocabulary words (`PAD` and `UNK` not counted) got a pre-trained vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    pub found: usize,
    pub total: usize,
}

impl Coverage {
    /// `found / total`, 0 for an empty vocabulary.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.found as f64 / self.total as f64
        }
    }
}

/// `1234567` -> `1,234,567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coverage {} / {} words ({:.1}%)",
            thousands(self.found),
            thousands(self.total),
            100.0 * self.fraction()
        )
    }
}

/// The initial embedding table, `vocab.len()` × `dim` row-major: the pad row is zero, words with a
/// pre-trained vector copy it, every other row (`UNK` included) is drawn from
/// U(-0.25, 0.25) with `ChaCha8Rng::seed_from_u64(seed)`. Random values are drawn for every row in
/// id order whether or not it is then overwritten, so a word's random row depends only on the seed
/// and its id. A `vectors` dimension other than `dim` is an error naming the vector file.
pub fn init_table(
    vocab: &Vocab,
    dim: usize,
    vectors: Option<&WordVectors>,
    seed: u64,
) -> Result<(Vec<f32>, Coverage)> {
    if dim == 0 {
        return Err(Error::param("embedding dimension must be > 0"));
    }
    if let Some(wv) = vectors {
        if wv.dim() != dim {
            return Err(Error::mismatch(
                wv.path(),
                format!(
                    "word vectors have dimension {}, the model expects {dim}",
                    wv.dim()
                ),
            ));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dist = Uniform::new(-INIT_RANGE, INIT_RANGE);
    let mut table: Vec<f32> = (0..vocab.len() * dim)
        .map(|_| dist.sample(&mut rng))
        .collect();
    table[..dim].fill(0.0);
    let mut cov = Coverage {
        found: 0,
        total: vocab.len() - 2,
    };
    if let Some(wv) = vectors {
        for (id, word) in vocab.iter_words() {
            if let Some(v) = wv.get(word) {
                let r = id as usize * dim;
                table[r..r + dim].copy_from_slice(v);
                cov.found += 1;
            }
        }
    }
    Ok((table, cov))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOVE_FRAGMENT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/glove_fragment/glove.6B.50d.first2445.txt"
    );

    fn write(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vec.txt");
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    fn err(content: &[u8]) -> String {
        let (_d, p) = write(content);
        let e = WordVectors::load(&p).unwrap_err().to_string();
        let prefix = format!("{}:", p.display());
        assert!(e.starts_with(&prefix), "{e}");
        e[prefix.len()..].to_owned()
    }

    #[test]
    fn glove_text_without_header() {
        let (_d, p) = write(b"the 0.5 -1 2e-1\nCat 1 2 3\n\ncat 4 5 6\nDog 7 8 9");
        let wv = WordVectors::load(&p).unwrap();
        assert_eq!((wv.dim(), wv.len(), wv.n_lines()), (3, 3, 4));
        assert_eq!(wv.get("the"), Some(&[0.5, -1.0, 0.2][..]));
        // The lowercase spelling wins over an earlier capitalised one.
        assert_eq!(wv.get("cat"), Some(&[4.0, 5.0, 6.0][..]));
        assert_eq!(wv.get("dog"), Some(&[7.0, 8.0, 9.0][..]));
        assert_eq!(wv.get("DOG"), Some(&[7.0, 8.0, 9.0][..]));
        assert_eq!(wv.get("bird"), None);
    }

    #[test]
    fn word2vec_header() {
        let (_d, p) = write(b"2 2\nab 1 2\ncd 3 4\n");
        let wv = WordVectors::load(&p).unwrap();
        assert_eq!((wv.dim(), wv.len()), (2, 2));
        assert_eq!(wv.get("cd"), Some(&[3.0, 4.0][..]));
        assert!(err(b"3 2\nab 1 2\ncd 3 4\n").contains("header announces 3 vectors"));
    }

    #[test]
    fn errors_name_file_and_line() {
        assert!(err(b"a 1 2\nb 1 2 3\n").starts_with("2: 4 fields, expected a word and 2 numbers"));
        assert!(err(b"a 1 2\nb 1 x\n").starts_with("2: field 3: \"x\" is not a finite number"));
        for bad in ["nan", "inf", "-1e30"] {
            let text = format!("a 1 2\nb 1 2\nc 3 {bad}\n");
            assert!(
                err(text.as_bytes()).starts_with("3: field 3:"),
                "{bad}: {}",
                err(text.as_bytes())
            );
        }
        // A binary word2vec file is named as such.
        let mut bin = b"2 3\nthe ".to_vec();
        for x in [0.5f32, -1.0, 2.0] {
            bin.extend(x.to_le_bytes());
        }
        bin.extend(b"\nof ");
        for x in [1.0f32, 0.0, 3.0] {
            bin.extend(x.to_le_bytes());
        }
        assert!(err(&bin).contains("binary word2vec"), "{}", err(&bin));
        assert!(err(b"2 3\na 1 2\n").starts_with("2: 3 fields, expected a word and 3 numbers"));
        assert!(err(b"lonely\n").starts_with("1: a word without a vector"));
        assert!(err(b"").starts_with("1: no word vectors"));
        let e = WordVectors::load("/nonexistent/glove.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/glove.txt: "), "{e}");
    }

    #[test]
    fn non_utf8_word_is_decoded_as_cp1252() {
        let (_d, p) = write(b"ok 1 2\n\x96 3 4\nR\xc9sum\xe9 5 6\n\x81\x92s 7 8\n");
        let wv = WordVectors::load(&p).unwrap();
        assert_eq!(wv.len(), 4);
        assert_eq!(wv.get("\u{2013}"), Some(&[3.0, 4.0][..]));
        assert_eq!(wv.get("résumé"), Some(&[5.0, 6.0][..]));
        assert_eq!(wv.get("\u{fffd}\u{2019}s"), Some(&[7.0, 8.0][..]));
        assert_eq!(decode_word("grön".as_bytes()), "grön");
    }

    #[test]
    fn glove_fragment_fixture_loads() {
        if !Path::new(GLOVE_FRAGMENT).exists() {
            eprintln!("skipping: {GLOVE_FRAGMENT} not found");
            return;
        }
        let wv = WordVectors::load(GLOVE_FRAGMENT).unwrap();
        // 2,446 lines of 51 fields (the last without a newline); five words are cp1252 bytes
        // (0x96 = en dash, 0x92 s = ’s, 0x97, 0x93, 0x94), all distinct once decoded.
        assert_eq!(wv.dim(), 50);
        assert_eq!(wv.n_lines(), 2446);
        assert_eq!(wv.len(), 2446);
        let the = wv.get("the").unwrap();
        assert_eq!(the[0], 0.418);
        assert_eq!(the[49], -0.78581);
        for w in ["–", "’s", "—", "“", "”"] {
            assert!(wv.get(w).is_some(), "{w}");
        }

        let vocab = Vocab::from_words(["the", "cheese", "zzzunknownzzz"]).unwrap();
        let small = WordVectors::load_for(GLOVE_FRAGMENT, &vocab).unwrap();
        assert_eq!((small.len(), small.n_lines()), (1, 2446));
        assert_eq!(small.get("the"), Some(the));
    }

    #[test]
    fn init_table_rows() {
        let (_d, p) = write(b"apple 1 2 3\nPEAR 4 5 6\nkiwi 7 8 9\n");
        let wv = WordVectors::load(&p).unwrap();
        let vocab = Vocab::from_words(["pear", "fig", "apple"]).unwrap();
        let (t, cov) = init_table(&vocab, 3, Some(&wv), 7).unwrap();
        assert_eq!(t.len(), 5 * 3);
        assert_eq!(&t[0..3], &[0.0; 3]);
        assert_eq!(&t[3..6], &[4.0, 5.0, 6.0]);
        assert_eq!(&t[9..12], &[1.0, 2.0, 3.0]);
        for x in t[6..9].iter().chain(&t[12..15]) {
            assert!((-0.25..0.25).contains(x) && *x != 0.0, "{x}");
        }
        assert_eq!(cov, Coverage { found: 2, total: 3 });
        assert_eq!(cov.to_string(), "coverage 2 / 3 words (66.7%)");

        // Deterministic per seed; random rows do not depend on the vectors.
        let (t2, cov2) = init_table(&vocab, 3, None, 7).unwrap();
        assert_eq!(cov2, Coverage { found: 0, total: 3 });
        assert_eq!(&t2[6..9], &t[6..9]);
        assert_eq!(&t2[12..15], &t[12..15]);
        assert_eq!(init_table(&vocab, 3, None, 7).unwrap().0, t2);
        assert_ne!(init_table(&vocab, 3, None, 8).unwrap().0, t2);

        let e = init_table(&vocab, 4, Some(&wv), 7).unwrap_err().to_string();
        assert!(e.contains("dimension 3, the model expects 4"), "{e}");
        assert!(init_table(&vocab, 0, None, 7).is_err());
    }

    #[test]
    fn uniform_range_and_spread() {
        let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let vocab = Vocab::from_words(words).unwrap();
        let (t, _) = init_table(&vocab, 50, None, 1).unwrap();
        let rest = &t[50..];
        assert!(rest.iter().all(|x| (-0.25..0.25).contains(x)));
        let mean = rest.iter().map(|&x| x as f64).sum::<f64>() / rest.len() as f64;
        let var = rest.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / rest.len() as f64;
        // U(-a, a): mean 0, variance a²/3 = 0.0208.
        assert!(mean.abs() < 0.005, "{mean}");
        assert!((var - 0.0625 / 3.0).abs() < 0.001, "{var}");
    }

    #[test]
    fn coverage_display_uses_thousands_separators() {
        let c = Coverage {
            found: 1234,
            total: 5678,
        };
        assert_eq!(c.to_string(), "coverage 1,234 / 5,678 words (21.7%)");
        let c = Coverage { found: 0, total: 0 };
        assert_eq!(c.to_string(), "coverage 0 / 0 words (0.0%)");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }
}
