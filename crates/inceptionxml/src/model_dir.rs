//! The model directory on disk: what a training run writes and what prediction and `--resume`
//! read. Training and prediction both use this module; neither imports the other.
//!
//! | file | content |
//! |---|---|
//! | `config.json` | [`ModelDirConfig`]: the [`ModelConfig`] (shapes, vocabulary size, labels), the [`TrainConfig`] |
//! | `weights.safetensors` | every model tensor (parameters, batch-norm buffers, the word table) by name |
//! | `vocab.txt` | the vocabulary, one word per line (pad first, unknown last) |
//! | `labels.tsv` | every label's URI (if known) and name, Annif's subject-vocabulary TSV form (`xmc::labels`); optional (labels are then named by index) |
//! | `clusters.txt` | InceptionXML+ only: the label -> cluster map (`xmc::cluster` format); the label table's rows are in this clustering's order |
//! | `optimizer.safetensors` | Adam moments of the dense parameters and the lazy row Adam state of the word table (and of the label table, `extreme.*`) |
//! | `trainer_state.json` | [`TrainerState`]: epochs done, global step, schedule length |
//! | `metrics.jsonl` | one JSON line per evaluation (written by the training loop) |
//!
//! Every file is written to a temporary sibling and renamed, so an interrupted save leaves the
//! previous file in place. A checkpoint (weights, optimiser state, `metrics.jsonl`,
//! `trainer_state.json`) is saved as one unit: the new files are written as `.NAME.next`, the
//! trainer state listing them as pending is the commit point, then they are renamed into place
//! ([`save_checkpoint`]); `--resume` first completes or drops an interrupted save ([`recover`]).
//! A fresh run over an existing model builds the new model beside it and swaps it in after the
//! first checkpoint ([`staging_dir`], [`promote`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::model::InceptionXml;
use crate::optim::{Adam, RowAdam};
use std::sync::Arc;
use xmc::labels::Labels;
use xmc::shortlist::ClusterIndex;
use xmc::vocab::Vocab;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const VOCAB: &str = "vocab.txt";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "trainer_state.json";
pub const METRICS: &str = "metrics.jsonl";
pub const CLUSTERS: &str = "clusters.txt";
pub const LABELS: &str = "labels.tsv";
/// A few texts of the test split, one per line, that `serve`'s web page offers as examples
/// (optional; not part of the model).
pub const EXAMPLES: &str = "examples.txt";
/// How many texts [`write_examples`] keeps.
pub const N_EXAMPLES: usize = 6;

/// Writes [`EXAMPLES`] in `dir`: the first [`N_EXAMPLES`] non-empty texts of `test`, if any.
pub fn write_examples(dir: &Path, test: Option<&xmc::dataset::Split>) -> Result<()> {
    let Some(test) = test else { return Ok(()) };
    let texts: Vec<&str> = test
        .texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty() && !t.contains(['\n', '\r']))
        .take(N_EXAMPLES)
        .collect();
    if texts.is_empty() {
        return Ok(());
    }
    xmc::io::write_atomic(dir.join(EXAMPLES), |f| {
        use std::io::Write;
        texts.iter().try_for_each(|t| writeln!(f, "{t}"))
    })?;
    Ok(())
}

/// Format tag of `config.json`.
pub const FORMAT: &str = "inceptionxml/1";

/// Name of the word table in `weights.safetensors` when the model keeps it outside its VarMap.
pub const TABLE_NAME: &str = "embeddings.table";

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDirConfig {
    pub format: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Completed epochs.
    pub epochs_done: usize,
    /// Global optimiser steps done.
    pub step: u64,
    /// Length of the one-cycle schedule.
    pub total_steps: u64,
    pub steps_per_epoch: usize,
    /// Training rows used.
    pub n_train: usize,
    /// Training wall time so far (seconds, excluding evaluation and saving).
    pub elapsed_s: f64,
    /// Position of the dropout generator (a decimal u128), so that a resumed run draws the same
    /// masks as an uninterrupted one; absent in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout_position: Option<String>,
    /// Checkpoint files written as `.NAME.next` but not yet renamed into place (a save that
    /// passed its commit point; see [`save_checkpoint`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

fn model_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Runs `f` on a temporary sibling of `path`, then renames it over `path`.
fn write_path_atomic(path: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = xmc::io::temp_sibling(path)?;
    let r = f(&tmp);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::Xmc(xmc::Error::io(path, e)))
}

/// Writes `value` as pretty JSON, atomically.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| model_err(path, format!("cannot serialise: {e}")))?;
    xmc::io::write_atomic(path, |f| writeln!(f, "{text}"))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = xmc::io::read_all(path)?;
    serde_json::from_slice(&bytes).map_err(|e| model_err(path, e.to_string()))
}

/// Reads and validates `config.json` of `dir`.
pub fn read_config(dir: &Path) -> Result<ModelDirConfig> {
    let path = dir.join(CONFIG);
    let cfg: ModelDirConfig = read_json(&path)?;
    if cfg.format != FORMAT {
        return Err(model_err(
            &path,
            format!("format {:?}, expected {FORMAT:?}", cfg.format),
        ));
    }
    cfg.model
        .validate()
        .map_err(|e| model_err(&path, e.to_string()))?;
    Ok(cfg)
}

/// Writes `config.json` of `dir` (atomically).
pub fn write_config(dir: &Path, config: &ModelDirConfig) -> Result<()> {
    write_json(&dir.join(CONFIG), config)
}

/// Reads `vocab.txt` of `dir`, checking its size against `config.json`.
pub fn read_vocab(dir: &Path, model: &ModelConfig) -> Result<Vocab> {
    let path = dir.join(VOCAB);
    let vocab = Vocab::load(&path)?;
    if vocab.len() != model.vocab_size {
        return Err(model_err(
            &path,
            format!(
                "{} words, config.json says vocab_size {}",
                vocab.len(),
                model.vocab_size
            ),
        ));
    }
    Ok(vocab)
}

/// Reads `labels.tsv` of `dir`, checking its size against `config.json`; a directory without
/// one (written before labels were kept) names the labels by index.
pub fn read_labels(dir: &Path, model: &ModelConfig) -> Result<Labels> {
    read_labels_file(dir, model.n_labels)
}

/// Reads `labels.tsv` of `dir`, which must name `n_labels` labels (numbered labels when absent).
pub fn read_labels_file(dir: &Path, n_labels: usize) -> Result<Labels> {
    let path = dir.join(LABELS);
    if !path.exists() {
        return Ok(Labels::numbered(n_labels));
    }
    let labels = Labels::read_tsv(&path)?;
    labels.check_len(n_labels, &path)?;
    Ok(labels)
}

/// A model directory loaded and checked: every file agrees with `config.json`.
pub struct Loaded {
    pub config: ModelDirConfig,
    pub vocab: Vocab,
    pub labels: Labels,
    pub model: InceptionXml,
    /// Owns the model's variables.
    pub varmap: VarMap,
}

/// Loads `config.json`, `vocab.txt`, `weights.safetensors` and (InceptionXML+) `clusters.txt`
/// of `dir`, checking that they agree (vocabulary size, tensor names and shapes, label and
/// cluster counts); errors name the offending file. The weights go to `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    if !dir.is_dir() {
        return Err(model_err(dir, "not a model directory"));
    }
    let config = read_config(dir)?;
    let vocab = read_vocab(dir, &config.model)?;
    let labels = read_labels(dir, &config.model)?;
    let varmap = VarMap::new();
    let mut model = InceptionXml::new(&config.model, &varmap, device, config.train.seed)?;
    load_weights(dir, &model, &varmap)?;
    if config.model.plus.is_some() {
        model.set_clusters(read_clusters(dir, &config.model)?)?;
    }
    Ok(Loaded {
        config,
        vocab,
        labels,
        model,
        varmap,
    })
}

/// A fresh, empty staging folder beside `out` (`.NAME.partial`; a leftover of a killed run is
/// removed), for a model built before it replaces `out`.
pub fn staging_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| model_err(out, "not a folder name"))?
        .to_string_lossy()
        .into_owned();
    let stage = out.with_file_name(format!(".{name}.partial"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| Error::Xmc(xmc::Error::io(&stage, e)))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| Error::Xmc(xmc::Error::io(&stage, e)))?;
    Ok(stage)
}

/// Moves the complete model in `stage` to `out`, replacing what `out` held: `out` is renamed
/// aside, `stage` renamed into place, the old folder removed. At every instant `out` is either
/// the old model or the new one (or briefly absent, with the old one beside it as `.NAME.old`).
pub fn promote(stage: &Path, out: &Path) -> Result<()> {
    let io = |p: &Path, e| Error::Xmc(xmc::Error::io(p, e));
    let name = out
        .file_name()
        .ok_or_else(|| model_err(out, "not a folder name"))?
        .to_string_lossy()
        .into_owned();
    let old = out.with_file_name(format!(".{name}.old"));
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    let had = out.exists();
    if had {
        std::fs::rename(out, &old).map_err(|e| io(out, e))?;
    }
    std::fs::rename(stage, out).map_err(|e| io(out, e))?;
    if had {
        // The new model is in place; a failure to delete the old one loses nothing.
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// The files a checkpoint replaces together with `trainer_state.json`.
const CHECKPOINT_FILES: [&str; 3] = [WEIGHTS, OPTIMIZER, METRICS];

/// `.NAME.next`: a checkpoint file written, not yet in place.
fn next_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.next"))
}

/// Saves a checkpoint as one unit: weights, optimiser state and `metrics.jsonl` (with `line`)
/// are written beside their files as `.NAME.next`; `trainer_state.json`, listing them as
/// pending, is the commit point; then each is renamed into place and the state rewritten clean.
/// A kill before the commit leaves the previous checkpoint whole; after it, [`recover`] rolls
/// the renames forward.
pub fn save_checkpoint(
    dir: &Path,
    model: (&InceptionXml, &VarMap),
    optimizer: (&Adam, &[&RowAdam]),
    line: &serde_json::Value,
    state: &TrainerState,
) -> Result<()> {
    save_weights_to(&next_path(dir, WEIGHTS), model.0, model.1)?;
    save_optimizer_to(&next_path(dir, OPTIMIZER), optimizer.0, optimizer.1)?;
    append_metrics_line_to(dir, &next_path(dir, METRICS), line)?;
    let mut committed = state.clone();
    committed.pending = CHECKPOINT_FILES.iter().map(|s| s.to_string()).collect();
    write_state(dir, &committed)?;
    finish_pending(dir, &committed)
}

/// Renames the pending files of `state` into place, then rewrites the state without them.
fn finish_pending(dir: &Path, state: &TrainerState) -> Result<()> {
    for name in &state.pending {
        if !CHECKPOINT_FILES.contains(&name.as_str()) {
            return Err(model_err(
                &dir.join(STATE),
                format!("unknown pending file {name:?}"),
            ));
        }
        let next = next_path(dir, name);
        if next.exists() {
            std::fs::rename(&next, dir.join(name))
                .map_err(|e| Error::Xmc(xmc::Error::io(&next, e)))?;
        }
    }
    if state.pending.is_empty() {
        return Ok(());
    }
    let mut clean = state.clone();
    clean.pending.clear();
    write_state(dir, &clean)
}

/// Brings a checkpoint interrupted by a kill to a consistent state: renames committed pending
/// files into place, and removes `.next` files of a save that never reached its commit point.
pub fn recover(dir: &Path) -> Result<()> {
    let path = dir.join(STATE);
    if !path.exists() {
        return Ok(());
    }
    let state = read_state(dir)?;
    finish_pending(dir, &state)?;
    for name in CHECKPOINT_FILES {
        let next = next_path(dir, name);
        if next.exists() {
            std::fs::remove_file(&next).map_err(|e| Error::Xmc(xmc::Error::io(&next, e)))?;
        }
    }
    Ok(())
}

/// Reads `trainer_state.json` of `dir`.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    read_json(&dir.join(STATE))
}

/// Writes `trainer_state.json` of `dir` (last of a checkpoint's files).
pub fn write_state(dir: &Path, state: &TrainerState) -> Result<()> {
    write_json(&dir.join(STATE), state)
}

/// Every tensor of the model by name: the VarMap's variables, plus the word table if the model
/// keeps it outside the VarMap.
pub fn named_tensors(model: &InceptionXml, varmap: &VarMap) -> Vec<(String, Tensor)> {
    let table_id = model.embedding_table().as_tensor().id();
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    if !out.iter().any(|(_, t)| t.id() == table_id) {
        out.push((
            TABLE_NAME.to_string(),
            model.embedding_table().as_tensor().clone(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn save_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Result<()> {
    write_path_atomic(path, |tmp| {
        // The mode a new file gets under the umask: safetensors itself creates 0600 files.
        let mode = std::fs::File::create(tmp)
            .and_then(|f| f.metadata())
            .map(|m| m.permissions());
        candle_core::safetensors::save(&tensors, tmp)
            .map_err(|e| model_err(path, format!("cannot write: {e}")))?;
        if let Ok(mode) = mode {
            std::fs::set_permissions(tmp, mode).map_err(|e| Error::Xmc(xmc::Error::io(tmp, e)))?;
        }
        Ok(())
    })
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(model_err(path, "missing"));
    }
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| model_err(path, format!("unreadable safetensors: {e}")))
}

/// Writes `weights.safetensors`.
pub fn save_weights(dir: &Path, model: &InceptionXml, varmap: &VarMap) -> Result<()> {
    save_weights_to(&dir.join(WEIGHTS), model, varmap)
}

fn save_weights_to(path: &Path, model: &InceptionXml, varmap: &VarMap) -> Result<()> {
    save_tensors(path, named_tensors(model, varmap).into_iter().collect())
}

/// Loads `weights.safetensors` into the model, checking that the file holds exactly the model's
/// tensors with the model's shapes; errors name the file and the tensor.
pub fn load_weights(dir: &Path, model: &InceptionXml, varmap: &VarMap) -> Result<()> {
    let path = dir.join(WEIGHTS);
    let mut file = load_tensors(&path)?;
    let table_id = model.embedding_table().as_tensor().id();
    let mut pending = Vec::new();
    for (name, t) in named_tensors(model, varmap) {
        let src = file
            .remove(&name)
            .ok_or_else(|| model_err(&path, format!("missing tensor {name}")))?;
        let finite = crate::ops::storage::with_host_f32(&src, |v| v.iter().all(|x| x.is_finite()))?;
        if !finite {
            return Err(model_err(
                &path,
                format!("tensor {name} holds NaN or infinite values"),
            ));
        }
        if src.shape() != t.shape() {
            return Err(model_err(
                &path,
                format!(
                    "tensor {name} has shape {:?}, the model (config.json) needs {:?}",
                    src.dims(),
                    t.dims()
                ),
            ));
        }
        pending.push((name, t, src));
    }
    if let Some(extra) = file.keys().min() {
        return Err(model_err(
            &path,
            format!("unexpected tensor {extra} (a different model?)"),
        ));
    }
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, t, src) in pending {
        let src = src.to_dtype(t.dtype())?.to_device(t.device())?;
        if t.id() == table_id {
            model.embedding_table().set(&src)?;
        } else if let Some(var) = data.get(&name) {
            var.set(&src)?;
        }
    }
    Ok(())
}

/// Reads `clusters.txt` of an InceptionXML+ model directory, checking it against the model's
/// label and cluster counts.
pub fn read_clusters(dir: &Path, model: &ModelConfig) -> Result<Arc<ClusterIndex>> {
    let path = dir.join(CLUSTERS);
    let c = xmc::cluster::Clustering::read(&path)?;
    let want = model.plus.as_ref().map_or(0, |p| p.n_clusters);
    if c.n_labels() != model.n_labels || c.n_clusters != want {
        return Err(model_err(
            &path,
            format!(
                "{} labels in {} clusters; config.json says {} labels in {want} clusters",
                c.n_labels(),
                c.n_clusters,
                model.n_labels
            ),
        ));
    }
    Ok(Arc::new(ClusterIndex::new(c.assign, c.n_clusters)?))
}

/// Writes `clusters.txt`.
pub fn save_clusters(dir: &Path, index: &ClusterIndex) -> Result<()> {
    let c = xmc::cluster::Clustering {
        assign: index.assign.clone(),
        n_clusters: index.n_clusters(),
    };
    Ok(c.write(dir.join(CLUSTERS))?)
}

/// Writes the optimiser state to `path` (`tables`: the row-Adam states of the big tables).
fn save_optimizer_to(path: &Path, adam: &Adam, tables: &[&RowAdam]) -> Result<()> {
    let mut all = adam.state_tensors()?;
    for t in tables {
        all.extend(t.state_tensors()?);
    }
    save_tensors(path, all)
}

/// Loads `optimizer.safetensors`, checking it belongs to the checkpoint at `step`.
pub fn load_optimizer(
    dir: &Path,
    adam: &mut Adam,
    tables: &mut [&mut RowAdam],
    step: u64,
) -> Result<()> {
    let path = dir.join(OPTIMIZER);
    let file = load_tensors(&path)?;
    let name = path.display().to_string();
    adam.load_state(&file, &name)?;
    for t in tables.iter_mut() {
        t.load_state(&file, &name)?;
    }
    let Some(rows) = tables.first() else {
        return Ok(());
    };
    if rows.steps() != step {
        return Err(model_err(
            &path,
            format!(
                "optimizer state is at step {}, {STATE} at step {step}: incomplete checkpoint",
                rows.steps()
            ),
        ));
    }
    Ok(())
}

/// `metrics.jsonl` of `dir` plus `line`, written to `to` (a read-modify-rename, so no file is
/// ever torn).
fn append_metrics_line_to(dir: &Path, to: &Path, line: &serde_json::Value) -> Result<()> {
    let path = dir.join(METRICS);
    let mut old = if path.exists() {
        xmc::io::read_all(&path)?
    } else {
        Vec::new()
    };
    if !old.is_empty() && old.last() != Some(&b'\n') {
        old.push(b'\n');
    }
    let text = line.to_string();
    xmc::io::write_atomic(to, |f| {
        f.write_all(&old)?;
        writeln!(f, "{text}")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pending: &[&str]) -> TrainerState {
        TrainerState {
            epochs_done: 1,
            step: 10,
            total_steps: 20,
            steps_per_epoch: 10,
            n_train: 5,
            elapsed_s: 1.0,
            dropout_position: None,
            pending: pending.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn recover_rolls_a_committed_save_forward_and_drops_an_uncommitted_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // Killed after the commit point: the weights' rename had not happened yet.
        std::fs::write(dir.join(WEIGHTS), "old").unwrap();
        std::fs::write(next_path(dir, WEIGHTS), "new").unwrap();
        std::fs::write(dir.join(OPTIMIZER), "new-opt").unwrap(); // already renamed
        write_state(dir, &state(&[WEIGHTS, OPTIMIZER, METRICS])).unwrap();
        recover(dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(WEIGHTS)).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(dir.join(OPTIMIZER)).unwrap(),
            "new-opt"
        );
        assert!(read_state(dir).unwrap().pending.is_empty());
        assert!(!next_path(dir, WEIGHTS).exists());
        // Killed before the commit point: the half-made save is dropped, the old one stays.
        std::fs::write(next_path(dir, OPTIMIZER), "half").unwrap();
        recover(dir).unwrap();
        assert!(!next_path(dir, OPTIMIZER).exists());
        assert_eq!(
            std::fs::read_to_string(dir.join(OPTIMIZER)).unwrap(),
            "new-opt"
        );
    }
}
