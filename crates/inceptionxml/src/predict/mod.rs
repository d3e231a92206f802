//! Prediction: token ids or texts in, top-k `(label, σ score)` rows out, scores descending.
//!
//! [`rank_ids`] is the one entry point and the one chunking loop: it decides the model kind
//! and the scoring path once, then runs the batches one after another (the tensor kernels use
//! every core; top-k selection runs in parallel over rows). The training loop's evaluation and
//! [`Predictor`] both call it, so both report the same rankings.
//!
//! | file | job |
//! |---|---|
//! | [`exact`] | f32 scoring: the plain model's L-way logits; InceptionXML+'s meta head and candidates |
//! | [`int8`] | int8 copies of the big reads for batches of at most [`INT8_MAX_BATCH`] texts, with exact rescoring |
//! | [`ensemble`] | several models' scores averaged; one member per model directory |
//! | [`fusion`] | a directory's sparse lexical model, fused with its network |
//! | [`explain`] | explanations by occlusion: each word's weight for each ranked label, labels scored exactly |
//!
//! InceptionXML+ scores the meta head over all C clusters, keeps each row's top-K clusters and
//! scores only those clusters' labels with the extreme head: C + K·(L/C) rows of hd values per
//! query, not L. Labels are ranked by σ(extreme) or, with [`ScoreMode::Combined`],
//! σ(extreme)·σ(meta).

pub mod ensemble;
pub mod exact;
pub mod explain;
pub mod fusion;
pub mod int8;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use xmc::labels::Labels;
use xmc::shortlist::{ClusterIndex, Shortlist};
use xmc::subwords::Subwords;
use xmc::vocab::Vocab;

pub use ensemble::{average_rows, Ensemble, Member};
pub use explain::{Explained, WordWeight};
pub use int8::{FastIndex, MetaIndex};

use crate::config::ScoreMode;
use crate::error::{Error, Result};
use crate::model::plus::PlusHeads;
use crate::model::{Heads, InceptionXml};
use crate::model_dir::{self, ModelDirConfig};
use crate::ops::stable_sigmoid;
use crate::profile::{timed, Laps, Stage};

/// One ranked row: `(label, score)`, scores descending.
pub type Row = Vec<(u32, f32)>;

/// Batches of at most this many texts use the int8 indexes (when built); larger ones score
/// the heads with f32 GEMMs, which reuse each weight across rows.
pub const INT8_MAX_BATCH: usize = 8;

/// How a loaded model scores small batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scoring {
    /// Through int8 copies of the big reads with exact rescoring of the best, for batches of at
    /// most [`INT8_MAX_BATCH`] texts on the CPU (larger batches, and other devices, are exact).
    #[default]
    Int8SmallBatches,
    /// Exactly in f32, whatever the batch size.
    Exact,
}

/// The int8 copies of a model's big reads (CPU, small batches).
pub enum Indexes {
    /// The plain model's output layer.
    Plain(MetaIndex),
    /// InceptionXML+'s meta classifier and label table.
    Plus(FastIndex),
}

impl Indexes {
    /// Quantises the model's output layer (plain) or both heads' big tables (InceptionXML+).
    pub fn build(model: &InceptionXml) -> Result<Self> {
        match model.heads() {
            Heads::Plus(p) => Ok(Indexes::Plus(FastIndex::new(p)?)),
            Heads::Plain(head) => {
                let (w, b) = head.output_layer();
                Ok(Indexes::Plain(MetaIndex::from_linear(w, b)?))
            }
        }
    }
}

/// What [`rank_ids`] returns.
#[derive(Debug, Default)]
pub struct Ranked {
    /// Top-k per row.
    pub rows: Vec<Row>,
    /// InceptionXML+: the K shortlisted clusters per row, best meta score first (empty for a
    /// plain model).
    pub clusters: Vec<Vec<u32>>,
}

/// A batch's shortlisted clusters with their meta logits (InceptionXML+).
pub struct Shortlisted {
    pub sl: Shortlist,
    /// Per row, the meta logit of each shortlisted cluster, in `sl.clusters` order.
    pub meta_logits: Vec<Vec<f32>>,
}

/// The factor a label's cluster contributes to its score.
pub(crate) fn meta_factor(score: ScoreMode, meta_logit: f32) -> f32 {
    match score {
        ScoreMode::Extreme => 1.0,
        ScoreMode::Combined => stable_sigmoid(meta_logit),
    }
}

fn plus_parts(model: &InceptionXml) -> Result<(&PlusHeads, &ClusterIndex)> {
    match (model.plus(), model.clusters()) {
        (Some(p), Some(ix)) => Ok((p, ix)),
        (None, _) => Err(Error::WrongModelKind(
            "not an InceptionXML+ model (no meta/extreme heads)".into(),
        )),
        (_, None) => Err(Error::WrongModelKind(
            "InceptionXML+ model without its label clusters".into(),
        )),
    }
}

/// Top-k rows for N×S token ids (`ids.len()` a multiple of the model's sequence length), in
/// batches of `batch_size`, evaluation mode (no dropout, batch-norm running statistics).
/// InceptionXML+ ranks with `score` (None: the model's configured default). With `indexes` and
/// batches of at most [`INT8_MAX_BATCH`] texts (`batch_size`, or fewer texts than that in all),
/// the int8 path scores; otherwise everything is exact f32. The choice is made once per call,
/// so a call's last, partial batch ranks as its full ones do. A model with subwords needs the
/// ids' n-gram rows beside them ([`InceptionXml::subwords_of`]).
pub fn rank_ids(
    model: &InceptionXml,
    (ids, subwords): (&[u32], Option<&Subwords>),
    k: usize,
    batch_size: usize,
    score: Option<ScoreMode>,
    indexes: Option<&Indexes>,
) -> Result<Ranked> {
    // The whole call runs on a worker of the thread pool: called from outside it, each parallel
    // stage would otherwise hand its work to the pool and put the caller to sleep until a worker
    // woke and finished it, a round trip per stage that a batch of one pays several times.
    rayon::scope(|_| {
        let s = model.config().seq_len;
        if s == 0 || ids.len() % s != 0 {
            return Err(Error::Shape(format!(
                "{} ids is not a multiple of the sequence length {s}",
                ids.len()
            )));
        }
        let indexes = indexes.filter(|_| batch_size.min(ids.len() / s) <= INT8_MAX_BATCH);
        let mode = model
            .config()
            .plus
            .as_ref()
            .map(|p| score.unwrap_or(p.score));
        let device = model.embedding_table().device().clone();
        let mut out = Ranked::default();
        let per = batch_size.max(1);
        for (c, chunk) in ids.chunks(per * s).enumerate() {
            let h = timed(Stage::PredictEncode, || -> Result<Tensor> {
                let rows = chunk.len() / s;
                let t = Tensor::from_slice(chunk, (rows, s), &device)?;
                let sub = subwords.map(|sw| sw.slice(c * per..c * per + rows));
                model.encode(&model.embed(&t, sub.as_ref())?, false)
            })?;
            match (mode, indexes) {
                (None, None) => out.rows.extend(exact::plain(model, &h, k)?),
                (None, Some(Indexes::Plain(ix))) => out.rows.extend(int8::plain(model, ix, &h, k)?),
                (Some(mode), ix) => {
                    let fast = match ix {
                        Some(Indexes::Plus(f)) => Some(f),
                        _ => None,
                    };
                    let (rows, clusters) = rank_plus(model, &h, k, mode, fast)?;
                    out.rows.extend(rows);
                    out.clusters.extend(clusters);
                }
                (None, Some(Indexes::Plus(_))) => {
                    return Err(Error::WrongModelKind(
                        "InceptionXML+ indexes given for a plain model".into(),
                    ))
                }
            }
        }
        // Finite weights give finite scores; anything else is reported, never written.
        if let Some(r) = out
            .rows
            .iter()
            .position(|row| row.iter().any(|e| !e.1.is_finite()))
        {
            return Err(Error::NonFinite { row: r });
        }
        Ok(out)
    })
}

/// One InceptionXML+ batch of encoder features `h`: meta head -> top-K clusters -> candidates
/// -> ranking; each step exact or through the int8 indexes (`fast`).
fn rank_plus(
    model: &InceptionXml,
    h: &Tensor,
    k: usize,
    score: ScoreMode,
    fast: Option<&FastIndex>,
) -> Result<(Vec<Row>, Vec<Vec<u32>>)> {
    let (plus, index) = plus_parts(model)?;
    let mut laps = Laps::start(Stage::PredictShortlist);
    let shortlisted = match fast {
        Some(fi) => int8::shortlist(plus, index, h, fi)?,
        None => exact::shortlist(plus, index, h)?,
    };
    laps.next(Stage::PredictExtremeFeatures);
    let g = plus.extreme_features(h, false)?;
    laps.next(Stage::PredictCandidates);
    let rows = match fast {
        Some(fi) => int8::rank_candidates(plus, index, &shortlisted, &g, fi, k, score)?,
        None => exact::rank_candidates(plus, index, &shortlisted, &g, k, score)?,
    };
    Ok((rows, shortlisted.sl.clusters))
}

/// A loaded model directory.
pub struct Predictor {
    pub dir: PathBuf,
    pub config: ModelDirConfig,
    pub vocab: Vocab,
    /// Every label's name and URI.
    pub labels: Labels,
    pub model: InceptionXml,
    /// The int8 copies for small batches (CPU only; None with `--exact`).
    pub indexes: Option<Indexes>,
    // Owns the model's variables.
    _varmap: VarMap,
}

impl Predictor {
    /// Loads and validates the model directory `dir` ([`model_dir::load`]); the weights go to
    /// `device`. With [`Scoring::Int8SmallBatches`] (and on the CPU only) the int8 copies for
    /// small batches are built; with [`Scoring::Exact`], small batches are scored exactly like
    /// large ones.
    pub fn load(dir: impl AsRef<Path>, device: &Device, scoring: Scoring) -> Result<Self> {
        let loaded = model_dir::load(dir.as_ref(), device)?;
        loaded.model.freeze_for_inference()?;
        let indexes = match scoring == Scoring::Int8SmallBatches && device.is_cpu() {
            true => Some(Indexes::build(&loaded.model)?),
            false => None,
        };
        Ok(Predictor {
            dir: dir.as_ref().to_path_buf(),
            config: loaded.config,
            vocab: loaded.vocab,
            labels: loaded.labels,
            model: loaded.model,
            indexes,
            _varmap: loaded.varmap,
        })
    }

    /// Number of labels the model scores.
    pub fn n_labels(&self) -> usize {
        self.config.model.n_labels
    }

    /// Top-k rows for `texts`, in batches of `batch_size` (`score`: InceptionXML+ ranking,
    /// None for the model's default).
    pub fn predict_texts<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        k: usize,
        batch_size: usize,
        score: Option<ScoreMode>,
    ) -> Result<Vec<Row>> {
        let ids = self.vocab.encode_all(texts, self.config.model.seq_len);
        let sub = self.model.subwords_of(texts);
        let indexes = self.indexes.as_ref();
        let input = (ids.as_slice(), sub.as_ref());
        Ok(rank_ids(&self.model, input, k, batch_size, score, indexes)?.rows)
    }

    /// Top-k for one text: a batch of one.
    pub fn predict_one(&self, text: &str, k: usize, score: Option<ScoreMode>) -> Result<Row> {
        let ids = self.vocab.encode(text, self.config.model.seq_len);
        let sub = self.model.subwords_of(&[text]);
        let indexes = self.indexes.as_ref();
        let ranked = rank_ids(&self.model, (&ids, sub.as_ref()), k, 1, score, indexes)?;
        Ok(ranked.rows.into_iter().next().unwrap_or_default())
    }
}
