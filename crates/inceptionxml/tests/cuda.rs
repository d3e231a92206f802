//! CPU vs GPU agreement: every fused op, every layer, and whole training steps of InceptionXML
//! and InceptionXML+ give the same numbers on both devices (relative error ≤ 1e-4 in f32:
//! ‖gpu − cpu‖∞ ≤ 1e-4 · max(‖cpu‖∞, 1e-3)).
//!
//! Built only with the `cuda` feature; each test returns early (saying so on stderr) when no GPU
//! can be opened. On a GPU machine:
//! `cargo test --release --features cuda --test cuda`.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use inceptionxml::config::{ModelConfig, PlusConfig, ScoreMode};
use inceptionxml::model::InceptionXml;
use inceptionxml::ops::{bce_with_logits, bce_with_logits_masked, candidate_logits, CandidatePlan};
use inceptionxml::optim::{Adam, AdamConsts, RowAdam, RowGroups};
use inceptionxml::train::batches::make_batch;
use inceptionxml::train::optimizers_for;
use inceptionxml::train::step::{train_step_plain, train_step_plus};
use xmc::shortlist::{build, ClusterIndex};
use xmc::sparse::SparseMatrix;

const TOL: f32 = 1e-4;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("no CUDA device ({e}): skipped");
            None
        }
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts ‖gpu − cpu‖∞ ≤ TOL · max(‖cpu‖∞, 1e-3).
fn agree(what: &str, cpu: &Tensor, gpu: &Tensor) {
    assert_eq!(cpu.dims(), gpu.dims(), "{what}: shapes");
    let (a, b) = (host(cpu), host(gpu));
    let scale = a.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= TOL * scale,
        "{what}: max |gpu - cpu| = {worst:e}, max |cpu| = {scale:e}"
    );
}

fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * scale)
        .collect()
}

fn pair(data: &[f32], shape: (usize, usize), gpu: &Device) -> (Var, Var) {
    (
        Var::from_slice(data, shape, &Device::Cpu).unwrap(),
        Var::from_slice(data, shape, gpu).unwrap(),
    )
}

#[test]
fn bce_loss_and_gradient_agree() {
    let Some(dev) = gpu() else { return };
    let (r, c) = (37, 301);
    let x = values(r * c, 1, 30.0); // large logits: the stable form matters
    let y: Vec<f32> = (0..r * c).map(|i| (i % 7 == 0) as u8 as f32).collect();
    let m: Vec<f32> = (0..r * c).map(|i| (i % 5 != 0) as u8 as f32).collect();
    for masked in [false, true] {
        let (xc, xg) = pair(&x, (r, c), &dev);
        let yc = Tensor::from_slice(&y, (r, c), &Device::Cpu).unwrap();
        let yg = yc.to_device(&dev).unwrap();
        let (lc, lg) = if masked {
            let mc = Tensor::from_slice(&m, (r, c), &Device::Cpu).unwrap();
            let mg = mc.to_device(&dev).unwrap();
            (
                bce_with_logits_masked(xc.as_tensor(), &yc, &mc).unwrap(),
                bce_with_logits_masked(xg.as_tensor(), &yg, &mg).unwrap(),
            )
        } else {
            (
                bce_with_logits(xc.as_tensor(), &yc).unwrap(),
                bce_with_logits(xg.as_tensor(), &yg).unwrap(),
            )
        };
        agree("bce loss", &lc, &lg);
        let (gc, gg) = (lc.backward().unwrap(), lg.backward().unwrap());
        agree(
            "bce gradient",
            gc.get(xc.as_tensor()).unwrap(),
            gg.get(xg.as_tensor()).unwrap(),
        );
    }
}

#[test]
fn adam_and_row_adam_agree() {
    let Some(dev) = gpu() else { return };
    let (r, c) = (50, 33);
    let p0 = values(r * c, 2, 0.5);
    let (pc, pg) = pair(&p0, (r, c), &dev);
    let mut ac = Adam::new(vec![("p".into(), pc.clone())], AdamConsts::default()).unwrap();
    let mut ag = Adam::new(vec![("p".into(), pg.clone())], AdamConsts::default()).unwrap();
    let ids: Vec<u32> = vec![0, 3, 4, 17, 49];
    let mut rc = RowAdam::new(r, c, AdamConsts::default());
    let mut rg = RowAdam::new(r, c, AdamConsts::default()).on(&dev).unwrap();
    let (tc, tg) = pair(&p0, (r, c), &dev);
    for step in 0..3 {
        let w = values(r * c, 10 + step, 1.0);
        for (p, opt) in [(&pc, &mut ac), (&pg, &mut ag)] {
            let wt = Tensor::from_slice(&w, (r, c), p.device()).unwrap();
            let loss = (p.as_tensor().sqr().unwrap() * wt)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), 1e-2, 0.9).unwrap();
        }
        let g = values(ids.len() * c, 20 + step, 1.0);
        rc.step(&tc, &ids, &g, 1e-2, 0.9).unwrap();
        rg.step(&tg, &ids, &g, 1e-2, 0.9).unwrap();
    }
    agree("adam parameters", pc.as_tensor(), pg.as_tensor());
    agree("row adam table", tc.as_tensor(), tg.as_tensor());
    let row0: Vec<f32> = host(&tg.as_tensor().narrow(0, 0, 1).unwrap());
    assert_eq!(row0, p0[..c].to_vec(), "the pad row moved on the GPU");
}

#[test]
fn segment_sum_and_dropout_agree() {
    let Some(dev) = gpu() else { return };
    let ids: Vec<u32> = (0..300).map(|i| (i * 37 % 41) as u32).collect();
    let groups = RowGroups::new(&ids);
    let g = values(300 * 24, 3, 1.0);
    let gc = Tensor::from_slice(&g, (300, 24), &Device::Cpu).unwrap();
    let gg = gc.to_device(&dev).unwrap();
    agree(
        "segment sum",
        &groups.sum(&gc).unwrap(),
        &groups.sum(&gg).unwrap(),
    );
    // The same seed drops the same values on both devices.
    let d1 = inceptionxml::ops::dropout::Dropout::new(7, 1);
    let d2 = inceptionxml::ops::dropout::Dropout::new(7, 1);
    let x = Tensor::ones((64, 300), DType::F32, &Device::Cpu).unwrap();
    let a = host(&d1.apply(&x, 0.4, true).unwrap());
    let b = host(&d2.apply(&x.to_device(&dev).unwrap(), 0.4, true).unwrap());
    assert_eq!(a, b);
}

#[test]
fn candidate_scores_and_gradients_agree() {
    let Some(dev) = gpu() else { return };
    let (labels, n_clusters, rows, hd) = (500usize, 40usize, 9usize, 48usize);
    let assign: Vec<u32> = (0..labels)
        .map(|l| ((l * 13) % n_clusters) as u32)
        .collect();
    let ix = ClusterIndex::new(assign, n_clusters).unwrap();
    let meta = values(rows * n_clusters, 4, 1.0);
    let sl = build(&meta, &ix, 5, None).unwrap();
    let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
    let table = values(labels * hd, 5, 0.3);
    let g = values(rows * hd, 6, 1.0);
    let (gc, gg) = pair(&g, (rows, hd), &dev);
    let tc = Tensor::from_slice(&table, (labels, hd), &Device::Cpu).unwrap();
    let tg = tc.to_device(&dev).unwrap();
    let (lc, sc) = candidate_logits(gc.as_tensor(), &tc, plan.clone()).unwrap();
    let (lg, sg) = candidate_logits(gg.as_tensor(), &tg, plan).unwrap();
    agree("candidate logits", &lc, &lg);
    let y = Tensor::from_slice(&sl.targets, (rows, sl.width), &Device::Cpu).unwrap();
    let m = Tensor::from_slice(&sl.mask, (rows, sl.width), &Device::Cpu).unwrap();
    let lossc = bce_with_logits_masked(&lc, &y, &m).unwrap();
    let lossg = bce_with_logits_masked(
        &lg,
        &y.to_device(&dev).unwrap(),
        &m.to_device(&dev).unwrap(),
    )
    .unwrap();
    let (dc, dg) = (lossc.backward().unwrap(), lossg.backward().unwrap());
    agree(
        "candidate input gradient",
        dc.get(gc.as_tensor()).unwrap(),
        dg.get(gg.as_tensor()).unwrap(),
    );
    let ((pc, rc), (pg, rg)) = (sc.take().unwrap(), sg.take().unwrap());
    assert_eq!(pc, pg);
    agree("candidate table gradient", &rc, &rg);
}

fn config(plus: bool) -> ModelConfig {
    let mut cfg = ModelConfig::new(60, 24);
    cfg.embed_dim = 64;
    if plus {
        cfg.plus = Some(PlusConfig {
            n_clusters: 6,
            hidden_dim: cfg.feature_dim(),
            top_k: 2,
            dropout_meta: 0.3,
            score: ScoreMode::Extreme,
        });
    }
    cfg
}

/// The same model (same seed) on the CPU and on `dev`.
fn twins(cfg: &ModelConfig, dev: &Device) -> [(InceptionXml, VarMap); 2] {
    let make = |d: &Device| {
        let vm = VarMap::new();
        let mut m = InceptionXml::new(cfg, &vm, d, 11).unwrap();
        if cfg.plus.is_some() {
            let assign: Vec<u32> = (0..cfg.n_labels as u32).map(|l| l % 6).collect();
            m.set_clusters(Arc::new(ClusterIndex::new(assign, 6).unwrap()))
                .unwrap();
        }
        (m, vm)
    };
    [make(&Device::Cpu), make(dev)]
}

fn data(cfg: &ModelConfig, rows: usize) -> (Vec<u32>, SparseMatrix) {
    let ids: Vec<u32> = (0..rows * cfg.seq_len)
        .map(|i| {
            if i % 9 == 8 {
                0
            } else {
                1 + (i * 31 % 59) as u32
            }
        })
        .collect();
    let labels: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            let mut l = vec![(r * 5 % 24) as u32, (r * 7 % 24) as u32];
            l.sort_unstable();
            l.dedup();
            l
        })
        .collect();
    (
        ids,
        SparseMatrix::from_index_rows(cfg.n_labels, &labels).unwrap(),
    )
}

#[test]
fn every_layer_and_every_gradient_agree() {
    let Some(dev) = gpu() else { return };
    let cfg = config(false);
    let [(mc, _vc), (mg, _vg)] = twins(&cfg, &dev);
    let (ids, labels) = data(&cfg, 16);
    let rows: Vec<usize> = (0..16).collect();
    let bc = make_batch(&ids, cfg.seq_len, &labels, &rows, None, &Device::Cpu).unwrap();
    let bg = make_batch(&ids, cfg.seq_len, &labels, &rows, None, &dev).unwrap();
    // Evaluation mode, stage by stage.
    let (xc, xg) = (
        mc.embed(&bc.ids, None).unwrap(),
        mg.embed(&bg.ids, None).unwrap(),
    );
    agree("embedding", &xc, &xg);
    let (hc, hg) = (
        mc.encode(&xc, false).unwrap(),
        mg.encode(&xg, false).unwrap(),
    );
    agree("encoder (eval)", &hc, &hg);
    agree(
        "head (eval)",
        &mc.head(&hc, false).unwrap(),
        &mg.head(&hg, false).unwrap(),
    );
    // Training mode (dropout with the same seeds, batch statistics): loss and every gradient.
    let run = |m: &InceptionXml, b: &inceptionxml::train::batches::Batch| {
        let x = Var::from_tensor(&m.embed(&b.ids, None).unwrap()).unwrap();
        let h = m.encode(x.as_tensor(), true).unwrap();
        let loss = bce_with_logits(&m.head(&h, true).unwrap(), &b.targets).unwrap();
        let grads = loss.backward().unwrap();
        (x, loss, grads)
    };
    let (xc, lc, gc) = run(&mc, &bc);
    let (xg, lg, gg) = run(&mg, &bg);
    agree("training loss", &lc, &lg);
    agree(
        "input gradient",
        gc.get(xc.as_tensor()).unwrap(),
        gg.get(xg.as_tensor()).unwrap(),
    );
    for ((name, vc), (_, vg)) in mc.trainable_vars().iter().zip(mg.trainable_vars()) {
        match (gc.get(vc.as_tensor()), gg.get(vg.as_tensor())) {
            (Some(a), Some(b)) => agree(&format!("gradient of {name}"), a, b),
            (None, None) => {}
            _ => panic!("{name}: a gradient on one device only"),
        }
    }
}

/// Every variable of the two models (buffers and tables included) agrees.
fn all_vars_agree(what: &str, vc: &VarMap, vg: &VarMap) {
    let (a, b) = (vc.data().lock().unwrap(), vg.data().lock().unwrap());
    assert_eq!(a.len(), b.len());
    for (name, v) in a.iter() {
        agree(
            &format!("{what}: {name}"),
            v.as_tensor(),
            b[name].as_tensor(),
        );
    }
}

// A small learning rate: Adam's first steps move each value by ~lr·sign(g), so a gradient that
// is ~0 on both devices but of opposite signs must not dominate the comparison.
const STEP_LR: f64 = 1e-5;

#[test]
fn inceptionxml_training_steps_agree() {
    let Some(dev) = gpu() else { return };
    let cfg = config(false);
    let [(mc, vc), (mg, vg)] = twins(&cfg, &dev);
    let mut oc = optimizers_for(&mc, AdamConsts::default()).unwrap();
    let mut og = optimizers_for(&mg, AdamConsts::default()).unwrap();
    let (ids, labels) = data(&cfg, 32);
    for step in 0..3 {
        let rows: Vec<usize> = (0..16).map(|r| (r + 8 * step) % 32).collect();
        let bc = make_batch(&ids, cfg.seq_len, &labels, &rows, None, &Device::Cpu).unwrap();
        let bg = make_batch(&ids, cfg.seq_len, &labels, &rows, None, &dev).unwrap();
        let lc = train_step_plain(&mc, &mut oc, &bc, STEP_LR, 0.9).unwrap();
        let lg = train_step_plain(&mg, &mut og, &bg, STEP_LR, 0.9).unwrap();
        assert!(
            (lc - lg).abs() <= TOL * lc.abs().max(1e-3),
            "step {step}: loss {lc} vs {lg}"
        );
    }
    all_vars_agree("after 3 steps", &vc, &vg);
}

#[test]
fn inceptionxml_plus_training_steps_agree() {
    let Some(dev) = gpu() else { return };
    let cfg = config(true);
    let [(mc, vc), (mg, vg)] = twins(&cfg, &dev);
    let mut oc = optimizers_for(&mc, AdamConsts::default()).unwrap();
    let mut og = optimizers_for(&mg, AdamConsts::default()).unwrap();
    let (ids, labels) = data(&cfg, 32);
    for step in 0..3 {
        let rows: Vec<usize> = (0..16).map(|r| (r + 8 * step) % 32).collect();
        let ixc = mc.clusters().unwrap().clone();
        let ixg = mg.clusters().unwrap().clone();
        let bc = make_batch(&ids, cfg.seq_len, &labels, &rows, Some(&ixc), &Device::Cpu).unwrap();
        let bg = make_batch(&ids, cfg.seq_len, &labels, &rows, Some(&ixg), &dev).unwrap();
        let detach = step == 0;
        let (lc, sc) = train_step_plus(&mc, &mut oc, &bc, STEP_LR, 0.9, detach).unwrap();
        let (lg, sg) = train_step_plus(&mg, &mut og, &bg, STEP_LR, 0.9, detach).unwrap();
        assert!(
            (lc - lg).abs() <= TOL * lc.abs().max(1e-3),
            "step {step}: loss {lc} vs {lg}"
        );
        assert_eq!(
            sc.candidates, sg.candidates,
            "step {step}: shortlists differ"
        );
        assert_eq!(sc.touched_rows, sg.touched_rows);
    }
    all_vars_agree("after 3 steps", &vc, &vg);
}
