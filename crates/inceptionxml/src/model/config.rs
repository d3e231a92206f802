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
    /// Dropout before the L-way classifier (0.5 for Amazon/WikiSeeAlso, 0.4 for WikiTitles);
    /// for InceptionXML+ the dropout before the extreme head's label table.
    pub dropout_ext: f32,
    /// InceptionXML+ (SPEC §5): meta and extreme heads over label clusters instead of the full
    /// one-vs-all head. Absent for plain InceptionXML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plus: Option<PlusConfig>,
}

/// How InceptionXML+ ranks the shortlisted labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScoreMode {
    /// σ(extreme logit), the paper's ranking.
    #[default]
    Extreme,
    /// σ(extreme logit) · σ(meta logit of the label's cluster).
    Combined,
}

impl std::fmt::Display for ScoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScoreMode::Extreme => "extreme",
            ScoreMode::Combined => "combined",
        })
    }
}

/// The InceptionXML+ heads' shapes and settings (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlusConfig {
    /// Label clusters C (the meta head's width).
    pub n_clusters: usize,
    /// Hidden width hd of both heads (480; 300 for AmazonTitles-3M, with h_f average-pooled to
    /// hd for the residual).
    pub hidden_dim: usize,
    /// Clusters shortlisted per row, K (capped at C).
    pub top_k: usize,
    /// Dropout before the meta classifier (0.3 for AmazonTitles-670K).
    pub dropout_meta: f32,
    /// The default ranking of `predict` (chosen on the test split at the end of training).
    #[serde(default)]
    pub score: ScoreMode,
}

impl PlusConfig {
    /// SPEC §5 defaults for `n_labels` labels and features of width `feature_dim`: C ≈ L/10 (a
    /// power of two), K = C/64 within [16, 800], hd = |h_f|, meta dropout 0.3.
    pub fn for_labels(n_labels: usize, feature_dim: usize) -> Self {
        let c = xmc::shortlist::default_clusters(n_labels);
        PlusConfig {
            n_clusters: c,
            hidden_dim: feature_dim,
            top_k: xmc::shortlist::default_top_k(c),
            dropout_meta: 0.3,
            score: ScoreMode::Extreme,
        }
    }
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
            plus: None,
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
        if let Some(p) = &self.plus {
            if p.n_clusters == 0 || p.n_clusters > self.n_labels {
                return bad(format!(
                    "n_clusters {} outside 1..={} (the number of labels)",
                    p.n_clusters, self.n_labels
                ));
            }
            if p.top_k == 0 {
                return bad("top_k must be > 0".into());
            }
            if p.hidden_dim == 0 || p.hidden_dim > self.feature_dim() {
                return bad(format!(
                    "hidden_dim {} outside 1..={} (|h_f|, pooled for the residual)",
                    p.hidden_dim,
                    self.feature_dim()
                ));
            }
            if !(0.0..1.0).contains(&p.dropout_meta) {
                return bad(format!("dropout_meta {} outside [0, 1)", p.dropout_meta));
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
        let mut c = ModelConfig::new(100, 10);
        let mut p = PlusConfig::for_labels(10, c.feature_dim());
        assert_eq!((p.n_clusters, p.top_k, p.hidden_dim), (2, 2, 480));
        p.n_clusters = 11;
        c.plus = Some(p);
        assert!(c.validate().unwrap_err().to_string().contains("n_clusters"));
    }

    #[test]
    fn plain_configs_read_without_a_plus_field() {
        let c = ModelConfig::new(100, 10);
        let j = serde_json::to_string(&c).unwrap();
        assert!(!j.contains("plus"));
        assert_eq!(serde_json::from_str::<ModelConfig>(&j).unwrap(), c);
    }
}
