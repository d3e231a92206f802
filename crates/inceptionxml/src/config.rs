//! Every hyper-parameter, with one default each, and the checks that run before anything is
//! allocated.
//!
//! | type | what it holds | saved |
//! |---|---|---|
//! | [`ModelConfig`] | shapes and dropouts of the encoder and the plain head (MODEL.md §3–4) | `config.json` `model` |
//! | [`PlusConfig`] | InceptionXML+'s heads: C, hd, K, meta dropout, default ranking (§5) | `config.json` `model.plus` |
//! | [`TrainConfig`] | schedule, optimiser constants, batch, epochs, evaluation (§4–5) | `config.json` `train` |
//! | [`ModelParams`], [`PlusParams`] | the choices a user makes before the data is seen; resolved into the two above once the vocabulary and the clustering exist | no |
//! | [`Preset`] | the paper's settings for InceptionXML (`plain`), InceptionXML+ (`plus`) and the short `demo` | no |
//!
//! Sizes are bounded ([`MAX_EMBED_DIM`], [`MAX_SEQ_LEN`], [`MAX_FILTERS`]) so that a mistyped flag
//! or a corrupted `config.json` is an error, never a huge allocation.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Word-embedding dimension d (MODEL.md §3; GloVe 6B 300d).
pub const DEFAULT_EMBED_DIM: usize = 300;
/// Largest accepted d: the attention over dimensions holds a d × d matrix.
pub const MAX_EMBED_DIM: usize = 4096;
/// Largest accepted sequence length S.
pub const MAX_SEQ_LEN: usize = 1024;
/// Largest accepted number of convolution filters F.
pub const MAX_FILTERS: usize = 1024;
/// Largest accepted vocabulary or label count (ids are u32).
pub const MAX_IDS: usize = u32::MAX as usize;

/// Every hyper-parameter and shape of an InceptionXML model. Defaults follow MODEL.md §3–4.
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
    /// InceptionXML+ (MODEL.md §5): meta and extreme heads over label clusters instead of the full
    /// one-vs-all head. Absent for plain InceptionXML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plus: Option<PlusConfig>,
    /// Subwords in the encoder: each word's vector is its own row plus the mean of the rows of
    /// its hashed character n-grams, held after the vocabulary's rows in the word table
    /// ([`xmc::subwords`]). Absent: words only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subwords: Option<SubwordConfig>,
}

/// The n-gram rows of the word table (see [`ModelConfig::subwords`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubwordConfig {
    /// Rows the n-grams are hashed into.
    pub buckets: usize,
    /// Shortest and longest character n-gram of `<word>`.
    pub minn: usize,
    pub maxn: usize,
}

impl SubwordConfig {
    /// The n-gram length of `train --subwords` unless told: the sparse model's (4).
    pub const DEFAULT_N: usize = 4;

    /// The same as [`xmc::subwords::SubwordParams`].
    pub fn params(&self) -> xmc::subwords::SubwordParams {
        xmc::subwords::SubwordParams {
            buckets: self.buckets,
            minn: self.minn,
            maxn: self.maxn,
        }
    }
}

/// How InceptionXML+ ranks the shortlisted labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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

impl FromStr for ScoreMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "extreme" => Ok(ScoreMode::Extreme),
            "combined" => Ok(ScoreMode::Combined),
            _ => Err(Error::Config(format!(
                "score {s:?}: expected extreme or combined"
            ))),
        }
    }
}

/// The InceptionXML+ heads' shapes and settings (MODEL.md §5).
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
    /// The default ranking of `predict` (chosen on the validation split at the end of training,
    /// by the mean of P@1, P@3 and P@5).
    #[serde(default)]
    pub score: ScoreMode,
}

impl PlusConfig {
    /// MODEL.md §5 defaults for `n_labels` labels and features of width `feature_dim`:
    /// [`PlusParams::default`] resolved with the default cluster count.
    pub fn for_labels(n_labels: usize, feature_dim: usize) -> Self {
        PlusParams::default().resolve(xmc::shortlist::default_clusters(n_labels), feature_dim)
    }
}

impl ModelConfig {
    /// A configuration with MODEL.md's defaults for a vocabulary and label count.
    pub fn new(vocab_size: usize, n_labels: usize) -> Self {
        ModelConfig {
            vocab_size,
            n_labels,
            embed_dim: DEFAULT_EMBED_DIM,
            seq_len: 32,
            filters: 32,
            dropout_embed: 0.25,
            dropout_conv: 0.25,
            dropout_hidden: 0.25,
            dropout_ext: 0.5,
            plus: None,
            subwords: None,
        }
    }

    /// Rows of the word table: the vocabulary's, then the n-gram rows.
    pub fn table_rows(&self) -> usize {
        self.vocab_size + self.subwords.map_or(0, |s| s.buckets)
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
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size > MAX_IDS || self.n_labels > MAX_IDS {
            return bad(format!(
                "vocab_size {} / n_labels {}: at most {MAX_IDS} (ids are 32-bit)",
                self.vocab_size, self.n_labels
            ));
        }
        if self.embed_dim > MAX_EMBED_DIM {
            return bad(format!(
                "embed_dim {} > {MAX_EMBED_DIM} (the attention over dimensions holds d x d values)",
                self.embed_dim
            ));
        }
        if self.seq_len > MAX_SEQ_LEN || self.filters > MAX_FILTERS {
            return bad(format!(
                "seq_len {} / filters {}: at most {MAX_SEQ_LEN} / {MAX_FILTERS}",
                self.seq_len, self.filters
            ));
        }
        if self.vocab_size < 2 {
            return bad(format!(
                "vocab_size {} < 2 (pad and unknown)",
                self.vocab_size
            ));
        }
        if self.n_labels == 0 {
            return bad("n_labels must be > 0".into());
        }
        if let Some(sw) = &self.subwords {
            sw.params()
                .validate()
                .map_err(|e| Error::Config(e.to_string()))?;
            if self.table_rows() > MAX_IDS {
                return bad(format!(
                    "vocab_size {} + {} subword buckets: at most {MAX_IDS} rows",
                    self.vocab_size, sw.buckets
                ));
            }
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

/// Training hyper-parameters (MODEL.md §4 defaults: plain InceptionXML), saved in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training data (42 for AmazonTitles-670K).
    pub epochs: usize,
    /// Rows per optimiser step (128).
    pub batch_size: usize,
    /// Peak learning rate of the one-cycle schedule (5e-3).
    pub lr_max: f64,
    /// Fraction of steps spent warming up (0.3).
    pub pct_start: f64,
    /// Start lr = lr_max / div_factor (10).
    pub div_factor: f64,
    /// End lr = start lr / final_div_factor (1e4).
    pub final_div_factor: f64,
    /// Adam β1 at the ends of the cycle (0.95) and at the peak (0.85).
    pub beta1_max: f64,
    pub beta1_min: f64,
    /// Adam β2 (0.999) and ε (1e-8).
    pub beta2: f64,
    pub eps: f64,
    /// Seed of the shuffles, the embedding initialisation and the model's initialisation.
    pub seed: u64,
    /// Evaluate on the test split every this many epochs (and after the last one); 0 = only
    /// after the last.
    pub eval_every: usize,
    /// Ranks reported: P@1..=eval_k etc. (5).
    pub eval_k: usize,
    /// Rows per evaluation batch.
    pub eval_batch_size: usize,
    /// Largest vocabulary (the most frequent training words; pad and unknown come on top).
    pub max_vocab: usize,
    /// Words seen fewer times in the training texts are unknown.
    pub min_count: usize,
    /// Train on the first N training rows only (quick runs and tests).
    pub max_train: Option<usize>,
    /// Pre-trained word vectors (GloVe / word2vec text format).
    pub embeddings: Option<PathBuf>,
    /// Without `embeddings`: start the word table from vectors trained on the training texts
    /// ([`xmc::vectors`], skip-gram with subwords, the table's dimension).
    pub corpus_vectors: bool,
    /// InceptionXML+: share of the epochs (rounded) during which the encoder output is detached
    /// before the extreme head (0.25).
    pub detach_fraction: f64,
    /// Share of the training rows held out as a validation split (by a fixed seed: runs with
    /// different `seed`s share it): it is evaluated
    /// after every epoch (whatever `eval_every`) and InceptionXML+ chooses its ranking on it (0: none; 0.05 with
    /// InceptionXML+).
    pub valid_fraction: f64,
    /// Initial bias of plain InceptionXML's L-way classifier: each label's log prior odds in the
    /// training rows (the default), or zero as in the paper's code. A `config.json` written
    /// before this field existed was trained from zero.
    #[serde(default = "OutputBias::before_the_field")]
    pub output_bias: OutputBias,
}

/// How plain InceptionXML's classifier bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputBias {
    /// Zero, as in the authors' code: every label starts at probability 1/2 and the first
    /// epochs are spent pushing all L logits down (Adam moves a bias by about lr per step).
    Zero,
    /// `ln(p / (1 - p))` with `p = (n_l + 1/2) / (N + 1)`, label l's share of the N training
    /// rows: the classifier starts at the label prior and learns features from the first step.
    /// The default: measured ahead of zero on cooking (736 labels), goodbooks10k (34,252) and
    /// yso_finna_sv (22,933) (docs/BENCHMARKS.md, "The defaults").
    #[default]
    Prior,
}

impl OutputBias {
    /// What a saved configuration without the field was trained with.
    fn before_the_field() -> Self {
        OutputBias::Zero
    }

    /// The name `config.json` and `--output-bias` use.
    pub fn name(self) -> &'static str {
        match self {
            OutputBias::Zero => "zero",
            OutputBias::Prior => "prior",
        }
    }

    /// The initial bias of each label from its count among `n_rows` training rows.
    pub fn values(self, counts: &[usize], n_rows: usize) -> Vec<f32> {
        match self {
            OutputBias::Zero => vec![0.0; counts.len()],
            OutputBias::Prior => counts
                .iter()
                .map(|&c| {
                    let p = (c as f64 + 0.5) / (n_rows as f64 + 1.0);
                    (p / (1.0 - p)).ln() as f32
                })
                .collect(),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: Preset::Plain.epoch_range().1,
            batch_size: 128,
            lr_max: 5e-3,
            pct_start: 0.3,
            div_factor: 10.0,
            final_div_factor: 1e4,
            beta1_max: 0.95,
            beta1_min: 0.85,
            beta2: 0.999,
            eps: 1e-8,
            seed: 0,
            eval_every: 1,
            eval_k: 5,
            eval_batch_size: 256,
            max_vocab: 200_000,
            min_count: 1,
            max_train: None,
            embeddings: None,
            corpus_vectors: false,
            detach_fraction: 0.25,
            valid_fraction: 0.0,
            output_bias: OutputBias::Prior,
        }
    }
}

impl TrainConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be > 0".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch_size {} < 2 (batch norm needs two rows)",
                self.batch_size
            ));
        }
        if !(self.lr_max > 0.0 && self.lr_max.is_finite()) {
            return bad(format!("lr_max {} must be positive", self.lr_max));
        }
        if !(self.pct_start > 0.0 && self.pct_start < 1.0) {
            return bad(format!("pct_start {} outside (0, 1)", self.pct_start));
        }
        if self.div_factor <= 0.0 || self.final_div_factor <= 0.0 {
            return bad("div_factor and final_div_factor must be positive".into());
        }
        for (n, b) in [
            ("beta1_max", self.beta1_max),
            ("beta1_min", self.beta1_min),
            ("beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{n} {b} outside [0, 1)"));
            }
        }
        if self.eps <= 0.0 {
            return bad("eps must be positive".into());
        }
        if self.eval_k == 0 || self.eval_batch_size == 0 {
            return bad("eval_k and eval_batch_size must be > 0".into());
        }
        if self.max_vocab == 0 {
            return bad("max_vocab must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.detach_fraction) {
            return bad(format!(
                "detach_fraction {} outside [0, 1)",
                self.detach_fraction
            ));
        }
        if self.max_train == Some(0) {
            return bad("max_train must be > 0".into());
        }
        if !(0.0..=xmc::dataset::MAX_VALID_FRACTION).contains(&self.valid_fraction) {
            return bad(format!(
                "valid_fraction {} outside [0, 0.5]",
                self.valid_fraction
            ));
        }
        Ok(())
    }
}

/// Training rows of AmazonTitles-670K, the scale the paper tuned its epoch counts at: from here
/// on [`Preset::epochs_for`] gives the paper's.
pub const PAPER_TRAIN_ROWS: usize = 485_176;

/// Training rows up to which [`Preset::epochs_for`] gives the shorter schedules measured on
/// mid-size and small label sets (yso_finna_sv trains on 200,913 rows; docs/BENCHMARKS.md).
pub const MID_TRAIN_ROWS: usize = 200_000;

/// A named set of training defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// InceptionXML (MODEL.md §4): 42 epochs (the paper's; [`Preset::epochs_for`] scales them
    /// with the data), batch 128, lr 5e-3, 30 % warm-up.
    Plain,
    /// InceptionXML+ (MODEL.md §5, paper Table 7): 35 epochs (the paper's; scaled by
    /// [`Preset::epochs_for`]), batch 256, lr 0.008, 33 % warm-up.
    Plus,
    /// The bundled-data demo: InceptionXML, 20 epochs (under two minutes on two cores),
    /// evaluated once at the end.
    Demo,
}

impl Preset {
    /// `(epochs up to MID_TRAIN_ROWS, epochs from PAPER_TRAIN_ROWS)`: the ends of
    /// [`Preset::epochs_for`].
    pub fn epoch_range(self) -> (usize, usize) {
        match self {
            Preset::Plain => (20, 42),
            Preset::Plus => (16, 35),
            Preset::Demo => (20, 20),
        }
    }

    /// [`Preset::epoch_range`] when the network is fused with the sparse lexical model (the
    /// default of `train`): the sparse model carries most of the ranking (the validation split
    /// gives the network weight 0.1 on yso_finna_sv and 0 on cooking, docs/BENCHMARKS.md), so
    /// the network gets about a third of its solo schedule, which keeps one default run on
    /// yso_finna_sv within 40 minutes of two cores.
    pub fn fused_epoch_range(self) -> (usize, usize) {
        match self {
            Preset::Plain => (5, 12),
            Preset::Plus => (5, 12),
            Preset::Demo => (20, 20),
        }
    }

    /// The default number of epochs for a run on `n_train` training rows (after the validation
    /// hold-out): the paper's (42, 35 for InceptionXML+) from [`PAPER_TRAIN_ROWS`] on, 20 (16)
    /// up to [`MID_TRAIN_ROWS`], linear between. The paper's schedules overfit smaller data:
    /// InceptionXML+ on yso_finna_sv (200,913 rows) scores 1.4 validation P@1 lower after 35
    /// epochs than after 16, InceptionXML on cooking 1.5 lower after 42 than after 20.
    pub fn epochs_for(self, n_train: usize) -> usize {
        Self::interpolate(self.epoch_range(), n_train)
    }

    /// [`Preset::epochs_for`] for a network fused with the sparse model: the same rule over
    /// [`Preset::fused_epoch_range`].
    pub fn fused_epochs_for(self, n_train: usize) -> usize {
        Self::interpolate(self.fused_epoch_range(), n_train)
    }

    fn interpolate((mid, paper): (usize, usize), n_train: usize) -> usize {
        if n_train <= MID_TRAIN_ROWS {
            mid
        } else if n_train >= PAPER_TRAIN_ROWS {
            paper
        } else {
            let t = (n_train - MID_TRAIN_ROWS) as f64 / (PAPER_TRAIN_ROWS - MID_TRAIN_ROWS) as f64;
            (mid as f64 + t * (paper - mid) as f64).round() as usize
        }
    }
}

impl TrainConfig {
    /// How many rows a run with this configuration trains on when the training split has
    /// `n_rows` (the validation hold-out taken, then `max_train` applied), without reading them:
    /// the count `train` uses (the first that many rows of the split less its hold-out) and the
    /// one the default epochs are chosen by.
    pub fn n_train_rows(&self, n_rows: usize) -> usize {
        let rest = n_rows - xmc::import::n_held_out(n_rows, self.valid_fraction);
        self.max_train.map_or(rest, |m| m.min(rest))
    }

    /// The training defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let plain = TrainConfig::default();
        match preset {
            Preset::Plain => plain,
            Preset::Plus => TrainConfig {
                epochs: Preset::Plus.epoch_range().1,
                batch_size: 256,
                lr_max: 0.008,
                pct_start: 0.33,
                valid_fraction: 0.05,
                ..plain
            },
            Preset::Demo => TrainConfig {
                epochs: Preset::Demo.epoch_range().1,
                eval_every: 0,
                ..plain
            },
        }
    }
}

/// The model choices made before the data is seen (the rest follow from the vocabulary, the
/// labels and the clustering).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    /// Word-embedding dimension d.
    pub embed_dim: usize,
    /// Dropout before the L-way classifier (None: [`ModelConfig::new`]'s 0.5).
    pub dropout_ext: Option<f32>,
    /// Train InceptionXML+ instead of InceptionXML.
    pub plus: Option<PlusParams>,
    /// Subwords in the encoder ([`ModelConfig::subwords`]).
    pub subwords: Option<SubwordConfig>,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            embed_dim: DEFAULT_EMBED_DIM,
            dropout_ext: None,
            plus: None,
            subwords: None,
        }
    }
}

impl ModelParams {
    /// The model configuration for a vocabulary of `vocab_size` words and `n_labels` labels
    /// grouped into `n_clusters` clusters (InceptionXML+ only), validated.
    pub fn resolve(
        &self,
        vocab_size: usize,
        n_labels: usize,
        n_clusters: Option<usize>,
    ) -> Result<ModelConfig> {
        let mut m = ModelConfig::new(vocab_size, n_labels);
        m.embed_dim = self.embed_dim;
        m.subwords = self.subwords;
        if let Some(p) = self.dropout_ext {
            m.dropout_ext = p;
        }
        // Shapes first: the feature width below is only meaningful for a valid d.
        m.validate()?;
        m.plus = match (&self.plus, n_clusters) {
            (Some(p), Some(c)) => Some(p.resolve(c, m.feature_dim())),
            (None, None) => None,
            _ => {
                return Err(Error::WrongModelKind(
                    "label clusters belong to InceptionXML+ models only".into(),
                ))
            }
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks what can be checked before the data is read (sizes included).
    pub fn validate(&self) -> Result<()> {
        ModelParams::resolve(
            &ModelParams {
                plus: None,
                ..self.clone()
            },
            2,
            1,
            None,
        )?;
        if let Some(p) = &self.plus {
            p.validate()?;
        }
        Ok(())
    }
}

/// Where InceptionXML+'s label clusters come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ClusterSource {
    #[default]
    /// MODEL.md §5's default count (L/10 as a power of two), clustered from the training data.
    Default,
    /// This many clusters (a power of two), clustered from the training data (PIFA on TF-IDF,
    /// balanced 2-means, MODEL.md §6).
    Count(usize),
    /// A label -> cluster file written by `inceptionxml cluster`.
    File(PathBuf),
}

impl ClusterSource {
    /// A number of clusters, or else a file path; None is the default count.
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            None => ClusterSource::Default,
            Some(s) => match s.parse::<usize>() {
                Ok(n) => ClusterSource::Count(n),
                Err(_) => ClusterSource::File(s.into()),
            },
        }
    }
}

/// InceptionXML+ choices (None: MODEL.md §5's defaults, which depend on C and |h_f|).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlusParams {
    pub clusters: ClusterSource,
    /// Clusters shortlisted per row (default: C/64 within 128..=800, at most C).
    pub top_k: Option<usize>,
    /// Hidden width hd of both heads (default: |h_f|).
    pub hidden_dim: Option<usize>,
    /// Dropout before the meta classifier (default 0.3).
    pub dropout_meta: Option<f32>,
}

/// Dropout before InceptionXML+'s meta classifier (AmazonTitles-670K's 0.3).
pub const DEFAULT_DROPOUT_META: f32 = 0.3;

impl PlusParams {
    /// The heads' configuration for `n_clusters` clusters and encoder features of width
    /// `feature_dim`: K = the given value or C/64 within 128..=800, always capped at C (the one
    /// place K is decided).
    pub fn resolve(&self, n_clusters: usize, feature_dim: usize) -> PlusConfig {
        PlusConfig {
            n_clusters,
            hidden_dim: self.hidden_dim.unwrap_or(feature_dim),
            top_k: self
                .top_k
                .unwrap_or_else(|| xmc::shortlist::default_top_k(n_clusters))
                .min(n_clusters),
            dropout_meta: self.dropout_meta.unwrap_or(DEFAULT_DROPOUT_META),
            score: ScoreMode::Extreme,
        }
    }

    /// Checks the values that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        match self.clusters {
            ClusterSource::Count(n) if n == 0 || !n.is_power_of_two() => {
                return bad(format!("clusters {n}: must be a power of two"))
            }
            _ => {}
        }
        if self.top_k == Some(0) {
            return bad("top_k must be > 0".into());
        }
        if self.hidden_dim == Some(0) {
            return bad("hidden_dim must be > 0".into());
        }
        if let Some(p) = self.dropout_meta {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("dropout_meta {p} outside [0, 1)"));
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

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&j).unwrap(), c);
        let mut b = c.clone();
        b.batch_size = 1;
        assert!(b.validate().is_err());
    }

    #[test]
    fn output_bias_defaults_to_prior_but_older_configs_read_as_zero() {
        let c = TrainConfig::default();
        assert_eq!(c.output_bias, OutputBias::Prior);
        let mut j: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(j["output_bias"], "prior");
        j.as_object_mut().unwrap().remove("output_bias");
        let old: TrainConfig = serde_json::from_value(j).unwrap();
        assert_eq!(old.output_bias, OutputBias::Zero);
    }

    #[test]
    fn presets_and_k_resolved_once() {
        assert_eq!(TrainConfig::preset(Preset::Plain), TrainConfig::default());
        let p = TrainConfig::preset(Preset::Plus);
        assert_eq!(
            (p.epochs, p.batch_size, p.lr_max, p.pct_start),
            (35, 256, 0.008, 0.33)
        );
        let d = TrainConfig::preset(Preset::Demo);
        assert_eq!((d.epochs, d.batch_size, d.eval_every), (20, 128, 0));
    }

    #[test]
    fn epochs_scale_with_the_training_rows() {
        for (preset, mid, paper) in [(Preset::Plain, 20, 42), (Preset::Plus, 16, 35)] {
            // The paper's at its scale and above, the measured mid-size value at and below.
            assert_eq!(preset.epochs_for(PAPER_TRAIN_ROWS), paper);
            assert_eq!(preset.epochs_for(3_000_000), paper);
            assert_eq!(preset.epochs_for(0), mid);
            assert_eq!(preset.epochs_for(11_784), mid);
            assert_eq!(preset.epochs_for(MID_TRAIN_ROWS), mid);
            // Monotone between.
            let between: Vec<usize> = (MID_TRAIN_ROWS..=PAPER_TRAIN_ROWS)
                .step_by(5_000)
                .map(|n| preset.epochs_for(n))
                .collect();
            assert!(between.windows(2).all(|w| w[0] <= w[1]), "{between:?}");
            assert!(between.iter().all(|&e| (mid..=paper).contains(&e)));
        }
        // Half-way (342,588 rows): 31 plain, 25.5 -> 26 plus.
        assert_eq!(Preset::Plain.epochs_for(342_588), 31);
        assert_eq!(Preset::Plus.epochs_for(342_588), 26);
        assert_eq!(Preset::Demo.epochs_for(PAPER_TRAIN_ROWS), 20);
        // The preset's own count is the paper's.
        assert_eq!(TrainConfig::preset(Preset::Plus).epochs, 35);
    }

    #[test]
    fn training_rows_follow_the_hold_out_and_max_train() {
        let plain = TrainConfig::default();
        assert_eq!(plain.n_train_rows(211_487), 211_487);
        let plus = TrainConfig::preset(Preset::Plus);
        assert_eq!(plus.n_train_rows(211_487), 200_913);
        let capped = TrainConfig {
            max_train: Some(1_000),
            ..plus
        };
        assert_eq!(capped.n_train_rows(211_487), 1_000);
        assert_eq!(capped.n_train_rows(100), 95);
        // K: the default rule and an explicit value are both capped at C.
        let plus = PlusParams::default();
        assert_eq!(plus.resolve(2048, 480).top_k, 128);
        assert_eq!(plus.resolve(8, 480).top_k, 8);
        let k900 = PlusParams {
            top_k: Some(900),
            ..PlusParams::default()
        };
        assert_eq!(k900.resolve(64, 480).top_k, 64);
        assert_eq!(PlusConfig::for_labels(10, 480), plus.resolve(2, 480));
    }

    #[test]
    fn sizes_are_checked_before_allocation() {
        let huge = ModelParams {
            embed_dim: 100_000,
            ..ModelParams::default()
        };
        assert!(huge
            .validate()
            .unwrap_err()
            .to_string()
            .contains("embed_dim"));
        let mut c = ModelConfig::new(100, 10);
        c.seq_len = 1 << 40;
        assert!(c.validate().unwrap_err().to_string().contains("seq_len"));
        let bad = PlusParams {
            clusters: ClusterSource::Count(3),
            ..PlusParams::default()
        };
        assert!(bad.validate().is_err());
        assert!(ModelParams::default().validate().is_ok());
    }
}
