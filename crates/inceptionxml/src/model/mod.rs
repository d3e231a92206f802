//! The InceptionXML model: configuration and layers.
//!
//! TEMP stand-in (the real model lands from the `model` branch): mean of word embeddings ->
//! Linear(d -> |h_f|) -> GELU -> dropout -> Linear(|h_f| -> L). Same public API.

pub mod config;

pub use config::ModelConfig;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::Result;

/// The stand-in model.
pub struct InceptionXml {
    cfg: ModelConfig,
    table: Var,
    enc: candle_nn::Linear,
    out: candle_nn::Linear,
    vars: Vec<(String, Var)>,
}

impl InceptionXml {
    pub fn new(cfg: &ModelConfig, varmap: &VarMap, device: &Device, _seed: u64) -> Result<Self> {
        cfg.validate()?;
        let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
        vb.get_with_hints(
            (cfg.vocab_size, cfg.embed_dim),
            "embeddings.weight",
            Init::Const(0.0),
        )?;
        let enc = candle_nn::linear(cfg.embed_dim, cfg.feature_dim(), vb.pp("enc"))?;
        let out = candle_nn::linear(cfg.feature_dim(), cfg.n_labels, vb.pp("out"))?;
        let data = varmap.data().lock().expect("varmap lock");
        let table = data["embeddings.weight"].clone();
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| k.as_str() != "embeddings.weight")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(InceptionXml {
            cfg: cfg.clone(),
            table,
            enc,
            out,
            vars,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn set_embeddings(&self, table: &[f32]) -> Result<()> {
        let t = Tensor::from_slice(
            table,
            (self.cfg.vocab_size, self.cfg.embed_dim),
            self.table.device(),
        )?;
        self.table.set(&t)?;
        Ok(())
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let e = self
            .table
            .as_tensor()
            .detach()
            .index_select(&ids.flatten_all()?, 0)?;
        Ok(e.reshape((b, s, self.cfg.embed_dim))?)
    }

    pub fn encode(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.enc.forward(&x.mean(1)?)?.gelu_erf()?;
        Ok(if train {
            candle_nn::ops::dropout(&h, self.cfg.dropout_ext)?
        } else {
            h
        })
    }

    pub fn head(&self, h: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(self.out.forward(h)?)
    }

    pub fn forward(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.embed(ids)?;
        let h = self.encode(&x, train)?;
        self.head(&h, train)
    }

    pub fn embedding_table(&self) -> &Var {
        &self.table
    }

    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }
}
