//! TEMP stand-in (the real module lands from the `text` branch).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Word <-> id; pad = 0, unknown = last id.
#[derive(Debug, Clone)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    fn from_words(words: Vec<String>) -> Self {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Vocab { words, index }
    }

    /// The `max_size` most frequent words seen at least `min_count` times (plus pad and unknown).
    pub fn build(docs: &[Vec<String>], max_size: usize, min_count: usize) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for d in docs {
            for w in d {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut v: Vec<(&str, usize)> = counts.into_iter().filter(|c| c.1 >= min_count).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(max_size);
        let mut words = vec!["<pad>".to_string()];
        words.extend(v.into_iter().map(|(w, _)| w.to_string()));
        words.push("<unk>".to_string());
        Self::from_words(words)
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn pad_id(&self) -> u32 {
        0
    }

    pub fn unk_id(&self) -> u32 {
        self.words.len() as u32 - 1
    }

    pub fn id(&self, w: &str) -> Option<u32> {
        self.index.get(w).copied()
    }

    pub fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }

    /// Exactly `seq_len` ids for `text`.
    pub fn encode(&self, text: &str, seq_len: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = crate::text::tokenize(text)
            .iter()
            .take(seq_len)
            .map(|w| self.id(w).unwrap_or(self.unk_id()))
            .collect();
        ids.resize(seq_len, 0);
        ids
    }

    /// N×S ids, row-major.
    pub fn encode_all(&self, texts: &[String], seq_len: usize) -> Vec<u32> {
        texts
            .par_iter()
            .flat_map_iter(|t| self.encode(t, seq_len))
            .collect()
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path, |f| {
            for w in &self.words {
                writeln!(f, "{w}")?;
            }
            Ok(())
        })
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let words = crate::texts::read_texts(path)?;
        if words.len() < 2 {
            return Err(Error::parse(path, 1, "a vocabulary needs pad and unknown"));
        }
        Ok(Self::from_words(words))
    }
}
