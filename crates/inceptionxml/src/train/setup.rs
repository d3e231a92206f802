//! Everything a run needs before its first step, fresh or resumed: configuration, vocabulary,
//! label clusters, encoded data, model and optimisers. `train` and `bench train` share it.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use xmc::dataset::{Split, XcDataset};
use xmc::labels::Labels;
use xmc::shortlist::ClusterIndex;
use xmc::vocab::Vocab;
use xmc::SparseMatrix;

use super::TrainEvent;
use crate::config::{ClusterSource, ModelParams, TrainConfig};
use crate::error::{Error, Result};
use crate::model::{Heads, InceptionXml};
use crate::model_dir::{self, ModelDirConfig, TrainerState};
use crate::optim::{AdamConsts, Optimizers, TrainVars};

/// A run ready to train.
pub struct Setup {
    /// What `config.json` holds: the model's shapes and the training hyper-parameters.
    pub config: ModelDirConfig,
    pub vocab: Vocab,
    /// Every label's name and URI.
    pub labels: Labels,
    /// InceptionXML+: the label clusters (the label table is stored in their order).
    pub index: Option<Arc<ClusterIndex>>,
    /// The checkpoint a resumed run continues from.
    pub state: Option<TrainerState>,
    /// Training rows used (`max_train` applied).
    pub n_train: usize,
    /// N×S token ids of the training rows.
    pub train_ids: Arc<Vec<u32>>,
    /// Their n-gram rows (models with subwords).
    pub train_subwords: Option<Arc<xmc::subwords::Subwords>>,
    pub train_labels: Arc<SparseMatrix>,
    pub model: InceptionXml,
    /// Owns the model's variables.
    pub varmap: VarMap,
    pub opt: Optimizers,
    /// How many vocabulary words got a pre-trained vector (fresh runs only).
    pub coverage: Option<String>,
    /// The rows held out of the training split (`valid_fraction`), when any.
    pub valid: Option<Split>,
}

/// The seed of the validation hold-out: fixed, not the run's `seed`, so that runs on the same
/// data with different seeds (an ensemble's members) share one validation split.
pub const VALID_SEED: u64 = 0;

/// The training rows a configuration uses: the training split less its held-out validation
/// rows ([`VALID_SEED`]), then its first `max_train` rows.
pub(crate) fn training_rows<'a>(
    cfg: &TrainConfig,
    data: &'a XcDataset,
) -> Result<(Cow<'a, Split>, Option<Split>)> {
    let (train, valid) = if cfg.valid_fraction > 0.0 {
        let (rest, held) = data.train.hold_out_valid(cfg.valid_fraction, VALID_SEED)?;
        (Cow::Owned(rest), Some(held))
    } else {
        (Cow::Borrowed(&data.train), None)
    };
    if train.is_empty() {
        return Err(Error::NoTrainingRows);
    }
    Ok((train, valid.filter(|v| !v.is_empty())))
}

/// The first `n` rows of `labels` (no copy of the row selection when that is all of them).
pub(crate) fn first_rows(labels: &SparseMatrix, n: usize) -> SparseMatrix {
    if n == labels.n_rows {
        labels.clone()
    } else {
        labels.select_rows(&(0..n).collect::<Vec<_>>())
    }
}

impl Setup {
    /// A fresh run: checks the parameters, builds the vocabulary from the training texts,
    /// clusters the labels (InceptionXML+), initialises the model (word vectors from
    /// `config.embeddings` when given) and zero optimiser state.
    pub fn fresh(
        data: &XcDataset,
        config: TrainConfig,
        params: &ModelParams,
        device: &Device,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<Self> {
        config.validate()?;
        params.validate()?;
        let (train, valid) = training_rows(&config, data)?;
        let n = config.n_train_rows(data.train.len());
        let tokens = xmc::text::tokenize_all(&train.texts[..n]);
        let vocab = Vocab::build(&tokens, config.max_vocab, config.min_count);
        let train_labels = first_rows(&train.labels, n);
        let index = match &params.plus {
            Some(p) => {
                let c = label_clusters(&p.clusters, &tokens, &train_labels, config.seed, on_event)?;
                Some(Arc::new(ClusterIndex::new(c.assign, c.n_clusters)?))
            }
            None => None,
        };
        drop(tokens);
        let n_clusters = index.as_ref().map(|ix| ix.n_clusters());
        let model_cfg = params.resolve(vocab.len(), data.n_labels, n_clusters)?;
        let config = ModelDirConfig {
            format: model_dir::FORMAT.to_string(),
            model: model_cfg,
            train: config,
        };
        let labels = data.labels();
        let mut setup = Self::build(
            &train.texts[..n],
            config,
            (vocab, labels),
            index,
            None,
            train_labels,
            device,
        )?;
        setup.valid = valid;
        let cfg = &setup.config;
        let vectors = match &cfg.train.embeddings {
            Some(p) => Some(xmc::embeddings::WordVectors::load(p)?),
            None if cfg.train.corpus_vectors => {
                let t = Instant::now();
                let tokens = xmc::text::tokenize_all(&train.texts[..n]);
                let params = xmc::vectors::VectorParams {
                    dim: cfg.model.embed_dim,
                    seed: cfg.train.seed,
                    ..xmc::vectors::VectorParams::DEFAULT
                };
                let v = xmc::vectors::train(&tokens, &params, &|_| {}, &|| false)?;
                on_event(TrainEvent::CorpusVectors {
                    words: v.words.len(),
                    tokens: v.tokens,
                    seconds: t.elapsed().as_secs_f64(),
                });
                Some(xmc::embeddings::WordVectors::from_trained(v))
            }
            None => None,
        };
        let (table, cov) = xmc::embeddings::init_table(
            &setup.vocab,
            cfg.model.embed_dim,
            vectors.as_ref(),
            cfg.train.seed,
        )?;
        setup.model.set_embeddings(&table)?;
        if let Heads::Plain(head) = setup.model.heads() {
            let bias = cfg
                .train
                .output_bias
                .values(&setup.train_labels.col_counts(), setup.n_train);
            let var = &head.out_bias;
            var.set(&candle_core::Tensor::from_vec(bias, var.dims(), device)?)?;
        }
        // Reported only when pre-trained vectors were given (without them it is always 0 %).
        setup.coverage = vectors.is_some().then(|| cov.to_string());
        Ok(setup)
    }

    /// The run saved in model directory `dir`, at its last checkpoint: configuration,
    /// vocabulary, clusters, weights and optimiser state as saved (checked against `data`).
    pub fn resume(data: &XcDataset, dir: &Path, device: &Device) -> Result<Self> {
        // A checkpoint a kill interrupted is completed (or its unfinished save dropped) first.
        model_dir::recover(dir)?;
        let config = model_dir::read_config(dir)?;
        let vocab = model_dir::read_vocab(dir, &config.model)?;
        let labels = model_dir::read_labels(dir, &config.model)?;
        if config.model.n_labels != data.n_labels {
            return Err(Error::Model {
                path: dir.join(model_dir::CONFIG).display().to_string(),
                msg: format!(
                    "trained for {} labels, the data has {}",
                    config.model.n_labels, data.n_labels
                ),
            });
        }
        let index = match config.model.plus {
            Some(_) => Some(model_dir::read_clusters(dir, &config.model)?),
            None => None,
        };
        let state = model_dir::read_state(dir)?;
        let (train, valid) = training_rows(&config.train, data)?;
        let n = config.train.n_train_rows(data.train.len());
        let train_labels = first_rows(&train.labels, n);
        let step = state.step;
        let dropout_position = match &state.dropout_position {
            Some(p) => Some(p.parse::<u128>().map_err(|_| Error::Model {
                path: dir.join(model_dir::STATE).display().to_string(),
                msg: format!("dropout_position {p:?} is not a number"),
            })?),
            None => None,
        };
        let words = (vocab, labels);
        let texts = &train.texts[..n];
        let mut s = Self::build(
            texts,
            config,
            words,
            index,
            Some(state),
            train_labels,
            device,
        )?;
        s.valid = valid;
        model_dir::load_weights(dir, &s.model, &s.varmap)?;
        if let Some(p) = dropout_position {
            s.model.dropout().set_position(p)?;
        }
        let (adam, mut tables) = s.opt.parts_mut();
        model_dir::load_optimizer(dir, adam, &mut tables, step)?;
        Ok(s)
    }

    fn build(
        texts: &[String],
        config: ModelDirConfig,
        (vocab, labels): (Vocab, Labels),
        index: Option<Arc<ClusterIndex>>,
        state: Option<TrainerState>,
        train_labels: SparseMatrix,
        device: &Device,
    ) -> Result<Self> {
        let n_train = texts.len();
        let train_ids = vocab.encode_all(texts, config.model.seq_len);
        let varmap = VarMap::new();
        let mut model = InceptionXml::new(&config.model, &varmap, device, config.train.seed)?;
        if let Some(ix) = &index {
            model.set_clusters(ix.clone())?;
        }
        let consts = AdamConsts {
            beta2: config.train.beta2,
            eps: config.train.eps,
        };
        let opt = optimizers_for(&model, consts)?;
        Ok(Setup {
            config,
            vocab,
            labels,
            index,
            state,
            n_train,
            train_ids: Arc::new(train_ids),
            train_subwords: model.subwords_of(texts).map(Arc::new),
            train_labels: Arc::new(train_labels),
            model,
            varmap,
            opt,
            coverage: None,
            valid: None,
        })
    }
}

/// The label clustering of a fresh InceptionXML+ run: read from a file, or PIFA features of
/// the training texts (TF-IDF) clustered by balanced 2-means (MODEL.md §6).
pub fn label_clusters(
    source: &ClusterSource,
    tokens: &[Vec<String>],
    labels: &SparseMatrix,
    seed: u64,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<xmc::cluster::Clustering> {
    use xmc::cluster::{cluster_labels, ClusterParams, Clustering, Stop};
    let n = match source {
        ClusterSource::File(path) => {
            let c = Clustering::read(path)?;
            c.check_labels(labels.n_cols, path)?;
            return Ok(c);
        }
        ClusterSource::Count(n) => *n,
        ClusterSource::Default => xmc::shortlist::default_clusters(labels.n_cols),
    };
    let t0 = Instant::now();
    let (_, features) = xmc::pifa::pifa_from_tokens(
        tokens,
        labels,
        xmc::tfidf::TfIdfParams::default(),
        xmc::pifa::DEFAULT_TOP_N,
    )?;
    let params = ClusterParams {
        stop: Stop::Clusters(n),
        seed,
        ..Default::default()
    };
    let c = cluster_labels(&features, &params)?;
    on_event(TrainEvent::Clustered {
        labels: labels.n_cols,
        clusters: c.n_clusters,
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(c)
}

/// Fresh optimisers bound to `model`'s variables: its dense parameters, its word table and,
/// for InceptionXML+, its label table.
pub fn optimizers_for(model: &InceptionXml, consts: AdamConsts) -> Result<Optimizers> {
    let vars = TrainVars {
        dense: model.trainable_vars(),
        words: model.embedding_table().clone(),
        labels: model.plus().map(|p| p.table.clone()),
    };
    Optimizers::new(vars, consts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OutputBias, DEFAULT_EMBED_DIM};

    /// A fresh plain run's classifier bias: zero, or each label's log prior odds over the
    /// training rows (label 0 in all 4 rows, label 1 in one, label 2 in none).
    #[test]
    fn output_bias_starts_at_zero_or_the_label_log_odds() {
        let labels =
            SparseMatrix::from_index_rows(3, &[vec![0], vec![0, 1], vec![0], vec![0]]).unwrap();
        let texts = ["a b", "b c", "c d", "d e"].map(String::from).to_vec();
        let data = XcDataset {
            dir: std::path::PathBuf::new(),
            train: Split { texts, labels },
            test: None,
            label_names: None,
            label_uris: None,
            n_labels: 3,
        };
        let odds = |n: f64| {
            let p = (n + 0.5) / 5.0;
            (p / (1.0 - p)).ln() as f32
        };
        for (bias, want) in [
            (OutputBias::Zero, vec![0.0; 3]),
            (OutputBias::Prior, vec![odds(4.0), odds(1.0), odds(0.0)]),
        ] {
            let config = TrainConfig {
                output_bias: bias,
                ..TrainConfig::default()
            };
            let params = ModelParams {
                embed_dim: DEFAULT_EMBED_DIM,
                dropout_ext: None,
                plus: None,
                subwords: None,
            };
            let s = Setup::fresh(&data, config, &params, &Device::Cpu, &mut |_| {}).unwrap();
            let got: Vec<f32> = s.model.full_head().unwrap().out_bias.to_vec1().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{bias:?}: {got:?} vs {want:?}");
            }
        }
    }
}
