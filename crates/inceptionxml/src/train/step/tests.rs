//! Fused steps against composed ones on twin models; the label-table rows a step moves.

use std::sync::Arc;

use super::plus::{plus_backward, PlusTable};
use super::*;
use crate::config::{ModelConfig, PlusConfig, ScoreMode};
use crate::optim::AdamConsts;
use crate::testing::{host, max_rel_diff};
use crate::train::batches::make_batch;
use crate::train::setup::optimizers_for;
use candle_core::Device;
use candle_nn::VarMap;
use xmc::shortlist::ClusterIndex;
use xmc::SparseMatrix;

/// A 12-label InceptionXML+ model over 4 clusters (label l in cluster l % 4; in cluster
/// order the table rows of cluster c are 3c..3c+3), encoder fused or composed.
fn tiny_plus(seq_len: usize, top_k: usize, fused: bool) -> (InceptionXml, Arc<ClusterIndex>) {
    let mut cfg = ModelConfig::new(40, 12);
    cfg.embed_dim = 64;
    cfg.seq_len = seq_len;
    cfg.plus = Some(PlusConfig {
        n_clusters: 4,
        hidden_dim: cfg.feature_dim(),
        top_k,
        dropout_meta: 0.3,
        score: ScoreMode::Extreme,
    });
    let varmap = VarMap::new();
    let mut model = InceptionXml::new(&cfg, &varmap, &Device::Cpu, 3).unwrap();
    model.set_fused(fused);
    let assign: Vec<u32> = (0..12).map(|l| l % 4).collect();
    let index = Arc::new(ClusterIndex::new(assign, 4).unwrap());
    model.set_clusters(index.clone()).unwrap();
    (model, index)
}

/// The fused InceptionXML+ step (fused encoder and heads) against the composed candle ops
/// on twin models (same masks, same power iterations), with and without the detached
/// encoder: the loss, the gradient of every variable and of the looked-up vectors, and the
/// label table's row gradient agree.
#[test]
fn fused_plus_step_matches_composed_ops() {
    let rel = |a: &[f32], b: &[f32]| max_rel_diff(a, b, a, 1e-3);
    for detach in [false, true] {
        let make = |fused: bool| tiny_plus(8, 2, fused);
        let (ma, index) = make(false);
        let (mb, _) = make(true);
        assert!(mb.uses_fused_encoder() && !ma.uses_fused_encoder());
        let labels =
            SparseMatrix::from_index_rows(12, &[vec![5], vec![6, 1], vec![0], vec![11, 2]])
                .unwrap();
        let ids: Vec<u32> = (0..32).map(|i| 1 + (i * 7) % 38).collect();
        let batch =
            make_batch(&ids, 8, &labels, &[0, 1, 2, 3], Some(&index), &Device::Cpu).unwrap();
        let a = plus_backward(&ma, &batch, detach, None).unwrap();
        let b = plus_backward(&mb, &batch, detach, None).unwrap();
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "loss {} vs {}",
            a.loss,
            b.loss
        );
        assert_eq!(a.candidates, b.candidates);
        let mut n = 0;
        for ((name, va), (_, vb)) in ma.trainable_vars().iter().zip(mb.trainable_vars()) {
            let ga = a.grads.get(va.as_tensor());
            let gb = b.grads.get(vb.as_tensor());
            let (Some(ga), Some(gb)) = (ga, gb) else {
                panic!("detach {detach}: {name}: gradient on one side only");
            };
            let e = rel(&host(ga), &host(gb));
            assert!(
                e < 2e-3,
                "detach {detach}: gradient of {name} differs by {e}"
            );
            n += 1;
        }
        assert_eq!(
            n,
            ma.trainable_vars().len(),
            "every variable has a gradient"
        );
        let e = rel(
            &host(a.grads.get(&a.x).unwrap()),
            &host(b.grads.get(&b.x).unwrap()),
        );
        assert!(
            e < 2e-3,
            "detach {detach}: word-vector gradient differs by {e}"
        );
        let PlusTable::Rows(Some((ra, ta))) = a.table else {
            panic!("the composed step leaves gradient rows");
        };
        let PlusTable::Candidates { dlog, g } = &b.table else {
            panic!("the fused step leaves the candidates' gradient to the update");
        };
        let rb = b.plan.touched();
        assert_eq!(ra, rb);
        let d = ma.config().feature_dim();
        let e = rel(&host(&ta), &b.plan.grad_table(dlog, g, d));
        assert!(
            e < 2e-3,
            "detach {detach}: label-table gradient differs by {e}"
        );
    }
}

/// Fused steps make some updates beside the encoder's backward (the heads' dense variables
/// and the label table, [`Early`]) and the rest after it. Two steps of each model kind on
/// twin models, fused and composed (every update after the backward): every variable ends
/// where the composed step puts it (a variable moved twice, or not at all, would be a whole
/// step of about `lr` away), and every one has moved.
#[test]
fn fused_steps_move_every_variable_as_composed_steps_do() {
    let lr = 1e-2;
    let labels =
        SparseMatrix::from_index_rows(12, &[vec![5], vec![6, 1], vec![0], vec![11, 2]]).unwrap();
    for plus in [false, true] {
        let make = |fused: bool| {
            if plus {
                let (m, ix) = tiny_plus(8, 2, fused);
                (m, Some(ix))
            } else {
                let mut cfg = ModelConfig::new(40, 12);
                cfg.embed_dim = 64;
                cfg.seq_len = 8;
                let mut m = InceptionXml::new(&cfg, &VarMap::new(), &Device::Cpu, 3).unwrap();
                m.set_fused(fused);
                (m, None)
            }
        };
        let (ma, ix) = make(false);
        let (mb, _) = make(true);
        let start: Vec<Vec<f32>> = mb
            .trainable_vars()
            .iter()
            .map(|(_, v)| host(v.as_tensor()))
            .collect();
        let mut oa = optimizers_for(&ma, AdamConsts::default()).unwrap();
        let mut ob = optimizers_for(&mb, AdamConsts::default()).unwrap();
        for step in 0..2u32 {
            let ids: Vec<u32> = (0..32).map(|i| 1 + (i * 7 + step * 5) % 38).collect();
            let batch =
                make_batch(&ids, 8, &labels, &[0, 1, 2, 3], ix.as_deref(), &Device::Cpu).unwrap();
            let (la, _) = train_step(&ma, &mut oa, &batch, lr, 0.9, false).unwrap();
            let (lb, _) = train_step(&mb, &mut ob, &batch, lr, 0.9, false).unwrap();
            assert!((la - lb).abs() < 1e-4, "plus {plus}: loss {la} vs {lb}");
        }
        for (((name, va), (_, vb)), v0) in ma
            .trainable_vars()
            .iter()
            .zip(mb.trainable_vars())
            .zip(&start)
        {
            let (a, b) = (host(va.as_tensor()), host(vb.as_tensor()));
            let e = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                e < 0.25 * lr as f32,
                "plus {plus}: {name} is {e} away from the composed step's"
            );
            assert_ne!(&b, v0, "plus {plus}: {name} did not move");
        }
    }
}

/// One InceptionXML+ step moves exactly the label-table rows of the shortlisted clusters.
#[test]
fn a_plus_step_updates_only_candidate_rows() {
    let (model, index) = tiny_plus(ModelConfig::new(40, 12).seq_len, 1, true);
    let cfg = model.config().clone();
    let mut opt = optimizers_for(&model, AdamConsts::default()).unwrap();
    // Two rows, positives in clusters 1 and 2: with K = 1 the forced clusters are exactly those.
    let labels = SparseMatrix::from_index_rows(12, &[vec![5], vec![6]]).unwrap();
    let ids: Vec<u32> = (0..64).map(|i| 1 + i % 38).collect();
    let batch = make_batch(&ids, 32, &labels, &[0, 1], Some(&index), &Device::Cpu).unwrap();
    let before: Vec<f32> = model
        .plus()
        .unwrap()
        .table
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (loss, st) = train_step_plus(&model, &mut opt, &batch, 1e-2, 0.9, false).unwrap();
    assert!(loss.is_finite());
    assert_eq!(st.candidates, 6);
    assert_eq!(st.touched_rows, 6);
    let after: Vec<f32> = model
        .plus()
        .unwrap()
        .table
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let hd = cfg.feature_dim();
    for row in 0..12 {
        let (a, b) = (
            &before[row * hd..(row + 1) * hd],
            &after[row * hd..(row + 1) * hd],
        );
        let cluster = row / 3;
        if cluster == 1 || cluster == 2 {
            assert_ne!(a, b, "candidate row {row} did not move");
        } else {
            assert_eq!(a, b, "row {row} of an unlisted cluster moved");
        }
    }
}

/// The word table's gradient with subwords (`optim::subword_row_grads`) is the derivative of
/// the host lookup: checked by finite differences of `Σ lookup(T) ⊙ R` (linear in the table, so
/// the differences are exact up to rounding), on every row looked up and on rows that were not.
#[test]
fn subword_row_gradients_are_the_lookup_s_derivative() {
    use crate::model::embedding::Embedding;
    use rand::{Rng, SeedableRng};
    use xmc::subwords::{SubwordParams, Subwords};
    let (v, buckets, d, s) = (6usize, 9usize, 4usize, 3usize);
    let p = SubwordParams {
        buckets,
        minn: 3,
        maxn: 4,
    };
    let vm = VarMap::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let e = Embedding::new(&vm, "t", (v, v + buckets), d, &mut rng, &Device::Cpu).unwrap();
    let base: Vec<f32> = (0..(v + buckets) * d)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let sub = Subwords::of_texts(&["kakor bullar kakor", "te"], s, &p, v);
    let ids = [2u32, 4, 2, 5, 0, 0];
    let r: Vec<f32> = (0..ids.len() * d)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let idt = Tensor::from_slice(&ids, (2, s), &Device::Cpu).unwrap();
    let loss = |t: &[f32]| -> f64 {
        e.set(t).unwrap();
        let x: Vec<f32> = host(&e.lookup_subwords(&idt, &sub).unwrap());
        x.iter()
            .zip(&r)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    let gx = Tensor::from_slice(&r, (2, s, d), &Device::Cpu).unwrap();
    let (rows, g) = crate::optim::subword_row_grads(&gx, &ids, &sub)
        .unwrap()
        .unwrap();
    let g: Vec<f32> = host(&g);
    assert!(rows.len() > 3 && rows.iter().all(|&x| x != 0));
    let l0 = loss(&base);
    let eps = 1e-2f32;
    for row in 0..v + buckets {
        for j in 0..d {
            let mut t = base.clone();
            t[row * d + j] += eps;
            let fd = (loss(&t) - l0) / eps as f64;
            let want = rows
                .iter()
                .position(|&x| x as usize == row)
                .map_or(0.0, |k| g[k * d + j] as f64);
            // The pad row is zero whatever is set: no gradient reaches it.
            assert!(
                (fd - want).abs() < 2e-3,
                "row {row} dim {j}: fd {fd} vs {want}"
            );
        }
    }
}
