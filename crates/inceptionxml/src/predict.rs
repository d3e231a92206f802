//! Prediction: load a model directory, turn texts into top-k `(label, score)` rows with
//! `score = σ(logit)`, scores descending.
//!
//! [`predict_ids`] is the one code path used by the training loop's evaluation and by
//! `inceptionxml predict`, so both report the same rankings. Batches run one after another (the
//! tensor kernels use every core); the top-k selection of a batch's rows runs in parallel.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rayon::prelude::*;
use xmc::vocab::Vocab;

use crate::error::{Error, Result};
use crate::model::InceptionXml;
use crate::ops::stable_sigmoid;
use crate::train::checkpoint::{self, ModelDirConfig};

/// Top-k rows for N×S token ids (`ids.len()` a multiple of the model's sequence length), in
/// batches of `batch_size`, evaluation mode (no dropout, batch-norm running statistics).
pub fn predict_ids(
    model: &InceptionXml,
    ids: &[u32],
    k: usize,
    batch_size: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let s = model.config().seq_len;
    if s == 0 || ids.len() % s != 0 {
        return Err(Error::InvalidParam(format!(
            "{} ids is not a multiple of the sequence length {s}",
            ids.len()
        )));
    }
    let n = ids.len() / s;
    let device = model.embedding_table().device().clone();
    let mut out = Vec::with_capacity(n);
    for chunk in ids.chunks(batch_size.max(1) * s) {
        let b = chunk.len() / s;
        let t = Tensor::from_slice(chunk, (b, s), &device)?;
        let logits = model.forward(&t, false)?;
        out.extend(top_k_rows(&logits, k)?);
    }
    Ok(out)
}

/// Per row of a `[B, L]` logit tensor, the `k` best labels with their σ scores, descending.
pub fn top_k_rows(logits: &Tensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    let (_, l) = logits.dims2()?;
    let flat: Vec<f32> = logits
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(flat
        .par_chunks(l.max(1))
        .map(|row| {
            xmc::predictions::top_k(row, k)
                .into_iter()
                .map(|(c, x)| (c, stable_sigmoid(x)))
                .collect()
        })
        .collect())
}

/// A loaded model directory.
pub struct Predictor {
    pub dir: PathBuf,
    pub config: ModelDirConfig,
    pub vocab: Vocab,
    pub model: InceptionXml,
    // Owns the model's variables.
    _varmap: VarMap,
}

impl Predictor {
    /// Loads `config.json`, `vocab.txt` and `weights.safetensors` of `dir`, checking that they
    /// agree (vocabulary size, tensor names and shapes); errors name the offending file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir.display().to_string(),
                msg: "not a model directory".into(),
            });
        }
        let config = checkpoint::read_config(&dir)?;
        let vocab_path = dir.join(checkpoint::VOCAB);
        let vocab = Vocab::load(&vocab_path)?;
        if vocab.len() != config.model.vocab_size {
            return Err(Error::Model {
                path: vocab_path.display().to_string(),
                msg: format!(
                    "{} words, config.json says vocab_size {}",
                    vocab.len(),
                    config.model.vocab_size
                ),
            });
        }
        let varmap = VarMap::new();
        let model = InceptionXml::new(&config.model, &varmap, &Device::Cpu, config.train.seed)?;
        checkpoint::load_weights(&dir, &model, &varmap)?;
        Ok(Predictor {
            dir,
            config,
            vocab,
            model,
            _varmap: varmap,
        })
    }

    /// Number of labels the model scores.
    pub fn n_labels(&self) -> usize {
        self.config.model.n_labels
    }

    /// Top-k rows for `texts`, in batches of `batch_size`.
    pub fn predict_texts(
        &self,
        texts: &[String],
        k: usize,
        batch_size: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let ids = self.vocab.encode_all(texts, self.config.model.seq_len);
        predict_ids(&self.model, &ids, k, batch_size)
    }

    /// Top-k for one text: a batch of one, no thread hand-offs.
    pub fn predict_one(&self, text: &str, k: usize) -> Result<Vec<(u32, f32)>> {
        let s = self.config.model.seq_len;
        let ids = self.vocab.encode(text, s);
        let t = Tensor::from_slice(&ids, (1, s), &Device::Cpu)?;
        let logits = self.model.forward(&t, false)?;
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        Ok(xmc::predictions::top_k(&row, k)
            .into_iter()
            .map(|(c, x)| (c, stable_sigmoid(x)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_rows_are_sigmoid_scores_descending() {
        let l =
            Tensor::from_slice(&[0.0f32, 3.0, -2.0, 1.0, -5.0, 2.0], (2, 3), &Device::Cpu).unwrap();
        let r = top_k_rows(&l, 2).unwrap();
        assert_eq!(r[0].iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 0]);
        assert!((r[0][0].1 - stable_sigmoid(3.0)).abs() < 1e-7);
        assert_eq!(r[1].iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 0]);
        assert!(r[1][0].1 >= r[1][1].1);
    }
}
