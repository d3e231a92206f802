//! TEMP stand-in (the real module lands from the `text` branch): lowercase, keep ASCII
//! alphanumerics, split on everything else.

use rayon::prelude::*;

/// Lowercased alphanumeric words of `s`.
pub fn tokenize(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// [`tokenize`] over many texts.
pub fn tokenize_all(texts: &[String]) -> Vec<Vec<String>> {
    texts.par_iter().map(|t| tokenize(t)).collect()
}
