//! The NLTK English stop-word list (`nltk.corpus.stopwords.words("english")`, NLTK 3.x: 179
//! words, all lowercase, some with apostrophes such as `don't` and `should've`).
//!
//! The text pipeline drops these words *after* lowercasing (see [`crate::text`]).
//! [`is_stop_word`] packs a word of up to 10 bytes into a `u128` and binary-searches the packed
//! list (sorted at compile time): no allocation, no string comparison.

/// The 179 NLTK English stop words, in NLTK's order.
pub const STOP_WORDS: [&str; 179] = [
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "you're",
    "you've",
    "you'll",
    "you'd",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "she's",
    "her",
    "hers",
    "herself",
    "it",
    "it's",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "that'll",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "don't",
    "should",
    "should've",
    "now",
    "d",
    "ll",
    "m",
    "o",
    "re",
    "ve",
    "y",
    "ain",
    "aren",
    "aren't",
    "couldn",
    "couldn't",
    "didn",
    "didn't",
    "doesn",
    "doesn't",
    "hadn",
    "hadn't",
    "hasn",
    "hasn't",
    "haven",
    "haven't",
    "isn",
    "isn't",
    "ma",
    "mightn",
    "mightn't",
    "mustn",
    "mustn't",
    "needn",
    "needn't",
    "shan",
    "shan't",
    "shouldn",
    "shouldn't",
    "wasn",
    "wasn't",
    "weren",
    "weren't",
    "won",
    "won't",
    "wouldn",
    "wouldn't",
];

/// The longest stop word's length in bytes (`yourselves`, `themselves`).
const MAX_LEN: usize = 10;

/// A word of at most [`MAX_LEN`] bytes as one integer: the bytes from the top down, then the
/// length, so that integer order is (bytes, length) order and equality is word equality.
const fn pack(w: &[u8]) -> u128 {
    let mut k: u128 = 0;
    let mut i = 0;
    while i < MAX_LEN {
        k <<= 8;
        if i < w.len() {
            k |= w[i] as u128;
        }
        i += 1;
    }
    (k << 8) | w.len() as u128
}

/// The packed stop words, sorted, built at compile time.
const KEYS: [u128; 179] = {
    let mut keys = [0u128; 179];
    let mut i = 0;
    while i < 179 {
        keys[i] = pack(STOP_WORDS[i].as_bytes());
        i += 1;
    }
    // Insertion sort (const context).
    let mut i = 1;
    while i < 179 {
        let mut j = i;
        while j > 0 && keys[j - 1] > keys[j] {
            let t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    keys
};

/// Whether `word` is one of the [`STOP_WORDS`]. Case-sensitive: pass a lowercased word.
/// A binary search over integers: no allocation, no string comparison.
#[inline]
pub fn is_stop_word(word: &str) -> bool {
    let b = word.as_bytes();
    if b.is_empty() || b.len() > MAX_LEN {
        return false;
    }
    KEYS.binary_search(&pack(b)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_nltk_english() {
        assert_eq!(STOP_WORDS.len(), 179);
        assert_eq!(STOP_WORDS[0], "i");
        assert_eq!(STOP_WORDS[178], "wouldn't");
        let mut uniq: Vec<&str> = STOP_WORDS.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 179, "no duplicates");
        assert!(STOP_WORDS.iter().all(|w| *w == w.to_lowercase()));
        assert_eq!(STOP_WORDS.iter().map(|w| w.len()).max(), Some(MAX_LEN));
    }

    #[test]
    fn packed_keys_are_distinct_and_sorted() {
        assert!(KEYS.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(pack(b"a"), pack(b"a\0"));
        assert!(pack(b"ab") < pack(b"b"));
    }

    #[test]
    fn membership() {
        for w in STOP_WORDS {
            assert!(is_stop_word(w), "{w}");
        }
        for w in [
            "",
            "The",
            "THE",
            "cheese",
            "i'm",
            "dont",
            "yourselvesx",
            "x",
            "wouldnt",
            "åt",
        ] {
            assert!(!is_stop_word(w), "{w}");
        }
        assert!(is_stop_word("don't") && is_stop_word("should've") && is_stop_word("ma"));
    }
}
