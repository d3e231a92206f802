//! The InceptionXML model (MODEL.md §3–5): its layers and [`InceptionXml`], nothing else. The
//! configuration is [`crate::config`]; the fused kernels the layers call are in [`crate::ops`].
//!
//! | module | job |
//! |---|---|
//! | [`init`] | seeded Xavier / uniform / normal initialisers, registration in a `VarMap` |
//! | [`embedding`] | the V×d word table (outside autograd) |
//! | [`spectral_norm`] | spectrally normalised weight with persistent `u`, `v` |
//! | [`batch_norm`] | channels-last BatchNorm with running statistics |
//! | [`attention`] | attention over words and over dimensions, fused into one S×S mixing matrix |
//! | [`projection`] | 1×1 conv S->F (applied as `(W_p M) X`), GELU, BatchNorm |
//! | [`inception`] | the k = 4/8/16 circular branches, merge, final conv (im2col GEMMs) |
//! | [`head`] | residual hidden layer and the L-way classifier |
//! | [`plus`] | InceptionXML+'s meta and extreme heads (MODEL.md §5) |
//! | [`classifier`] | a classifier + BCE as one unit of a step's graph; what a fused head pass returns |
//!
//! Variable names in the `VarMap` (buffers marked *): `embedding.weight` [V, d];
//! `attn_words.{weight [S,S], u*, v*, gamma [1]}`; `attn_dims.{weight [d,d], u*, v*, gamma}`;
//! `proj.{weight [F,S], bias}`; `proj_bn.{weight, bias, running_mean*, running_var*}`;
//! `inception.conv{4,8,16}.{weight [F,F,k], bias}`; `inception_bn.*` (3F);
//! `final_conv.{weight [F,3F,16], bias}`; `final_bn.*`; `head.hidden.{weight [D,D], bias}`;
//! `head.bn.*`; `head.out.{weight [D,L] (in × out), bias [L]}`.
//!
//! ## Cost per sample (forward multiply–adds; S = 32, d = 300, F = 32, L1 = 75, L2 = 15, D = 480)
//! | stage | products | MACs |
//! |---|---|---|
//! | attention over words | `X Xᵀ` S²d, `(XXᵀ)W1` S³ | 0.34 M |
//! | attention over dims | `X W2ᵀ` d²S (one GEMM per batch), `(XW2ᵀ)Xᵀ` dS², `R N`, `(RN)R` 2S³ | 3.25 M |
//! | projection | `W_p M` F·S², `(W_p M) X` F·S·d | 0.34 M |
//! | inception branches | (4+8+16)·F²·L1 | 2.15 M |
//! | final conv | 16·3F·F·L2 | 0.74 M |
//! | head hidden | D² | 0.23 M |
//! | classifier | D·L | 0.35 M (L = 736), 11.0 M (L = 22,933) |
//! | **total** | | 7.05 M + 480·L (7.4 M / 18.1 M) |
//!
//! The textbook order costs 0.92 M (words, `(XXᵀ)(W1X)`) + 3.5 M (dims, after re-associating
//! `(HX)(W2H)` as `H·(X·(W2H))`; 8.6 M as written) + 0.31 M (projection of `O2ᵀ`); the fused form
//! above saves ~0.8 M and never materialises `O1`, `O2`. The backward pass costs about twice the
//! forward. Elementwise work (GELU, BatchNorm, dropout) is O(S·d + F·d + 3F·L1) ≈ 30 k values.
//!
//! Measured timings of these stages are in docs/BENCHMARKS.md (`inceptionxml bench profile`).

pub mod attention;
pub mod batch_norm;
pub mod classifier;
pub mod embedding;
pub mod fused;
pub mod head;
pub mod inception;
pub mod init;
pub mod plus;
pub mod projection;
pub mod spectral_norm;

pub use crate::config::{ModelConfig, PlusConfig, ScoreMode};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xmc::subwords::Subwords;

use crate::error::{Error, Result};
use crate::ops::dropout::Dropout;
use attention::DualAttention;
use embedding::Embedding;
use head::Head;
use inception::Inception;
use plus::PlusHeads;
use projection::Projection;
use xmc::shortlist::ClusterIndex;

/// Name of the word table in the `VarMap`.
pub const EMBEDDING_NAME: &str = "embedding.weight";
/// Name suffixes of the non-trainable buffers in the `VarMap`.
pub const BUFFER_SUFFIXES: [&str; 4] = [".running_mean", ".running_var", ".u", ".v"];

/// The heads on top of the encoder: plain InceptionXML's one-vs-all head, or InceptionXML+'s meta
/// and extreme heads.
#[derive(Debug, Clone)]
pub enum Heads {
    Plain(Head),
    Plus(PlusHeads),
}

/// InceptionXML: embedding, dual attention, projection, inception encoder, one-vs-all head; or,
/// with `cfg.plus`, InceptionXML+: the same encoder with meta and extreme heads.
#[derive(Debug, Clone)]
pub struct InceptionXml {
    cfg: ModelConfig,
    embedding: Embedding,
    attention: DualAttention,
    projection: Projection,
    inception: Inception,
    heads: Heads,
    clusters: Option<Arc<ClusterIndex>>,
    dropout: Dropout,
    trainable: Vec<(String, Var)>,
    /// Whether the fused CPU encoder is used ([`fused`]).
    fused: bool,
    /// Its buffers, reused from step to step.
    workspace: Arc<Mutex<crate::ops::host::encoder::Workspace>>,
    /// The encoder's evaluation parameters on the host, kept by [`Self::freeze_for_inference`]
    /// (a loaded model for prediction); dropped by every training forward.
    frozen: Arc<Mutex<Option<Arc<crate::ops::host::encoder::Params>>>>,
}

impl InceptionXml {
    /// Fresh model; every parameter and buffer (BatchNorm running statistics, spectral-norm `u`,
    /// `v`) registered in `varmap` under stable names, so `varmap.save` / `varmap.load`
    /// round-trip the whole model. Initialised per MODEL.md from `seed` (deterministic).
    pub fn new(cfg: &ModelConfig, varmap: &VarMap, device: &Device, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let before: HashSet<String> = lock(varmap)?.keys().cloned().collect();
        // One ChaCha stream per component, so e.g. the vocabulary size does not shift the
        // initialisation of the dense layers.
        let rng = |stream: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(stream);
            r
        };
        let (d, s, f) = (cfg.embed_dim, cfg.seq_len, cfg.filters);
        let dropout = Dropout::new(seed, 5);
        let embedding = Embedding::new(
            varmap,
            EMBEDDING_NAME,
            (cfg.vocab_size, cfg.table_rows()),
            d,
            &mut rng(0),
            device,
        )?;
        let attention = DualAttention::new(varmap, "attn_", s, d, &mut rng(1), device)?;
        let projection = Projection::new(varmap, "proj", s, f, &mut rng(2), device)?;
        let inception = Inception::new(varmap, "inception", f, &mut rng(3), device)?;
        let heads = match &cfg.plus {
            None => Heads::Plain(Head::new(
                varmap,
                "head",
                cfg.feature_dim(),
                cfg.n_labels,
                cfg.dropout_hidden,
                cfg.dropout_ext,
                dropout.clone(),
                &mut rng(4),
                device,
            )?),
            Some(p) => Heads::Plus(PlusHeads::new(
                varmap,
                p,
                cfg.feature_dim(),
                cfg.n_labels,
                cfg.dropout_hidden,
                cfg.dropout_ext,
                dropout.clone(),
                &mut rng(4),
                device,
            )?),
        };
        let mut trainable: Vec<(String, Var)> = lock(varmap)?
            .iter()
            .filter(|(k, _)| !before.contains(*k))
            .filter(|(k, _)| k.as_str() != EMBEDDING_NAME && k.as_str() != plus::TABLE_NAME)
            .filter(|(k, _)| !BUFFER_SUFFIXES.iter().any(|s| k.ends_with(s)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        trainable.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(InceptionXml {
            cfg: cfg.clone(),
            embedding,
            attention,
            projection,
            inception,
            heads,
            clusters: None,
            dropout,
            trainable,
            fused: true,
            workspace: Arc::default(),
            frozen: Arc::default(),
        })
    }

    /// The model's heads.
    pub fn heads(&self) -> &Heads {
        &self.heads
    }

    /// The InceptionXML+ heads, if this is an InceptionXML+ model.
    pub fn plus(&self) -> Option<&PlusHeads> {
        match &self.heads {
            Heads::Plus(p) => Some(p),
            Heads::Plain(_) => None,
        }
    }

    /// Attaches the label clustering of an InceptionXML+ model (the label table's row order);
    /// its label and cluster counts must match the configuration.
    pub fn set_clusters(&mut self, index: Arc<ClusterIndex>) -> Result<()> {
        let p = self.cfg.plus.as_ref().ok_or_else(|| {
            Error::WrongModelKind("label clusters given to a plain InceptionXML model".into())
        })?;
        if index.n_labels() != self.cfg.n_labels || index.n_clusters() != p.n_clusters {
            return Err(Error::Shape(format!(
                "clustering of {} labels into {} clusters; the model has {} labels and {} clusters",
                index.n_labels(),
                index.n_clusters(),
                self.cfg.n_labels,
                p.n_clusters
            )));
        }
        self.clusters = Some(index);
        Ok(())
    }

    /// The label clustering of an InceptionXML+ model, once attached.
    pub fn clusters(&self) -> Option<&Arc<ClusterIndex>> {
        self.clusters.as_ref()
    }

    /// The configuration the model was built with.
    /// The dropout generator shared by every layer (its position is part of a checkpoint).
    pub fn dropout(&self) -> &Dropout {
        &self.dropout
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Overwrites the embedding table (V×d row-major); the pad row (id 0) is forced to zero.
    pub fn set_embeddings(&self, table: &[f32]) -> Result<()> {
        self.embedding.set(table)
    }

    /// ids `[B, S]` u32 -> x `[B, S, d]` f32, gathered without autograd to the table; with
    /// subwords ([`ModelConfig::subwords`]) `sub` holds each position's n-gram rows (a model
    /// with subwords needs them, one without refuses them).
    pub fn embed(&self, ids: &Tensor, sub: Option<&Subwords>) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        if s != self.cfg.seq_len {
            return Err(Error::Shape(format!(
                "input has {s} tokens per row, the model takes exactly {}",
                self.cfg.seq_len
            )));
        }
        match (sub, self.cfg.subwords.is_some()) {
            (None, false) => self.embedding.lookup(ids),
            (Some(sub), true) => self.embedding.lookup_subwords(ids, sub),
            (None, true) => Err(Error::Shape(
                "the model has subwords: its input needs each word's n-gram rows".into(),
            )),
            (Some(_), false) => Err(Error::Shape(
                "n-gram rows given to a model without subwords".into(),
            )),
        }
    }

    /// The n-gram rows of `texts` for this model (None for a model without subwords).
    pub fn subwords_of<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Option<Subwords> {
        let c = &self.cfg;
        c.subwords
            .map(|sw| Subwords::of_texts(texts, c.seq_len, &sw.params(), c.vocab_size))
    }

    /// The same for texts already split into tokens.
    pub fn subwords_of_tokens<T: AsRef<[String]>>(&self, texts: &[T]) -> Option<Subwords> {
        let c = &self.cfg;
        c.subwords
            .map(|sw| Subwords::of_tokens(texts, c.seq_len, &sw.params(), c.vocab_size))
    }

    /// x `[B, S, d]` -> h_f `[B, cfg.feature_dim()]`. `train`: dropout on, BatchNorm on batch
    /// statistics (running statistics updated), one power iteration per spectral norm, and the
    /// result differentiable through candle's autograd. In evaluation on the CPU this runs the
    /// fused encoder ([`fused`]); training steps call [`Self::encode_fused_train`] themselves.
    pub fn encode(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.uses_fused_encoder() {
            return self.encode_fused_eval(x);
        }
        self.encode_composed(x, train)
    }

    /// The encoder as composed candle ops (autograd; any device): the reference the fused
    /// encoder is tested against.
    pub fn encode_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.cfg;
        let x = self
            .dropout
            .apply(&x.contiguous()?, c.dropout_embed, train)?;
        let mix = self.attention.mixing(&x, train)?;
        let p = self.projection.forward(&x, Some(&mix), train)?; // [B, d, F]
                                                                 // InceptionXML+ has no dropout after the projection (MODEL.md §3).
        let p_drop = if c.plus.is_some() {
            0.0
        } else {
            c.dropout_conv
        };
        let p = self.dropout.apply(&p, p_drop, train)?;
        let h = self.inception.branches(&p, train)?; // [B, L1, 3F]
        let h = self.dropout.apply(&h, c.dropout_conv, train)?;
        self.inception.final_layer(&h, train)
    }

    /// h_f `[B, D]` -> logits `[B, L]` (plain InceptionXML only; InceptionXML+ scores
    /// shortlists, see [`crate::predict`]).
    pub fn head(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        self.full_head()?.forward(h, train)
    }

    /// The full L-way head (plain InceptionXML only).
    pub fn full_head(&self) -> Result<&Head> {
        match &self.heads {
            Heads::Plain(h) => Ok(h),
            Heads::Plus(_) => Err(Error::WrongModelKind(
                "an InceptionXML+ model has no full L-way head".into(),
            )),
        }
    }

    /// embed + encode + head (a model without subwords).
    pub fn forward(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.embed(ids, None)?;
        let h = self.encode(&x, train)?;
        self.head(&h, train)
    }

    /// The word table `[V, d]` (not in [`Self::trainable_vars`]).
    pub fn embedding_table(&self) -> &Var {
        self.embedding.table()
    }

    /// Trainable dense parameters `(name, Var)`, sorted by name: everything except the
    /// embedding table and the buffers.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.trainable.clone()
    }

    /// The layers, for tests and diagnostics.
    pub fn layers(&self) -> (&DualAttention, &Projection, &Inception, Option<&Head>) {
        (
            &self.attention,
            &self.projection,
            &self.inception,
            match &self.heads {
                Heads::Plain(h) => Some(h),
                Heads::Plus(_) => None,
            },
        )
    }
}

fn lock(
    varmap: &VarMap,
) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<String, Var>>> {
    varmap.data().lock().map_err(|_| Error::Poisoned("VarMap"))
}

#[cfg(test)]
mod tests;
