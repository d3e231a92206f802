//! Model hyper-parameters and shapes (SPEC §3–4), saved as `config.json` in a model directory.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Every hyper-parameter and shape of an InceptionXML model. Defaults follow SPEC §3–4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Rows of the word-embedding table (pad = 0, unknown = last).
    pub vocab_size: usize,
    /// Number of labels L (columns of the label matrix).
    pub n_labels: usize,
    /// Word-embedding dimension d (300).
    pub embed_dim: usize,
    /// Sequence length S: every input is exactly S token ids (32).
    pub seq_len: usize,
    /// Convolution filters F (32).
    pub filters: usize,
    /// Dropout after the embedding lookup (0.25).
    pub dropout_embed: f32,
    /// Dropout after the projection and after the inception merge (0.25).
    pub dropout_conv: f32,
    /// Dropout before the residual head's hidden layer (0.25).
    pub dropout_hidden: f32,
    /// Dropout before the L-way classifier (0.5 for Amazon/WikiSeeAlso, 0.4 for WikiTitles).
    pub dropout_ext: f32,
}

impl ModelConfig {
    /// A configuration with the SPEC's defaults for a vocabulary and label count.
    pub fn new(vocab_size: usize, n_labels: usize) -> Self {
        ModelConfig {
            vocab_size,
            n_labels,
            embed_dim: 300,
            seq_len: 32,
            filters: 32,
            dropout_embed: 0.25,
            dropout_conv: 0.25,
            dropout_hidden: 0.25,
            dropout_ext: 0.5,
        }
    }

    /// Length of each inception branch's output: L1 = ⌊(d − 4)/4⌋ + 1.
    pub fn branch_len(&self) -> usize {
        (self.embed_dim - 4) / 4 + 1
    }

    /// Length after the final convolution: L2 = ⌊(L1 − 16)/4⌋ + 1.
    pub fn final_len(&self) -> usize {
        (self.branch_len() - 16) / 4 + 1
    }

    /// |h_f| = F · L2 (480 for d = 300, F = 32).
    pub fn feature_dim(&self) -> usize {
        self.filters * self.final_len()
    }

    /// Checks every field; returns an error naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidParam(m));
        if self.vocab_size < 2 {
            return bad(format!(
                "vocab_size {} < 2 (pad and unknown)",
                self.vocab_size
            ));
        }
        if self.n_labels == 0 {
            return bad("n_labels must be > 0".into());
        }
        if self.embed_dim < 64 {
            return bad(format!(
                "embed_dim {} < 64: the final convolution needs at least 16 positions",
                self.embed_dim
            ));
        }
        if self.seq_len == 0 || self.filters == 0 {
            return bad("seq_len and filters must be > 0".into());
        }
        for (name, p) in [
            ("dropout_embed", self.dropout_embed),
            ("dropout_conv", self.dropout_conv),
            ("dropout_hidden", self.dropout_hidden),
            ("dropout_ext", self.dropout_ext),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} outside [0, 1)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_dim_matches_spec() {
        let c = ModelConfig::new(100, 10);
        assert_eq!(c.branch_len(), 75);
        assert_eq!(c.final_len(), 15);
        assert_eq!(c.feature_dim(), 480);
        c.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = ModelConfig::new(100, 10);
        c.embed_dim = 32;
        assert!(c.validate().is_err());
        let mut c = ModelConfig::new(100, 10);
        c.dropout_ext = 1.0;
        assert!(c.validate().is_err());
    }
}
