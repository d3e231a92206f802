//! Whole-model tests: shapes, train/eval behaviour, persistence, gradients.

use super::*;
use crate::testing::{self, host};
use candle_core::DType;

fn cfg(d: usize, s: usize, f: usize, v: usize, l: usize) -> ModelConfig {
    let mut c = ModelConfig::new(v, l);
    c.embed_dim = d;
    c.seq_len = s;
    c.filters = f;
    c
}

fn ids(b: usize, s: usize, v: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<u32> = (0..b * s)
        .map(|i| {
            if i % s >= s - 2 {
                0 // padding at the end of every row
            } else {
                use rand::Rng;
                rng.gen_range(1..v as u32)
            }
        })
        .collect();
    Tensor::from_vec(data, (b, s), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    testing::max_abs_diff(&host(a), &host(b))
}

#[test]
fn shapes_default_and_general_d() {
    for (d, want_feat) in [(300usize, 480usize), (100, 32 * 3), (64, 32)] {
        let c = cfg(d, 32, 32, 50, 7);
        assert_eq!(c.feature_dim(), want_feat);
        let vm = VarMap::new();
        let m = InceptionXml::new(&c, &vm, &Device::Cpu, 1).unwrap();
        let x = m.embed(&ids(3, 32, 50, 2), None).unwrap();
        assert_eq!(x.dims(), &[3, 32, d]);
        let (att, proj, inc, _) = m.layers();
        let mix = att.mixing(&x, false).unwrap();
        assert_eq!(mix.dims(), &[3, 32, 32]);
        let p = proj.forward(&x, Some(&mix), false).unwrap();
        assert_eq!(p.dims(), &[3, d, 32]);
        let h = inc.branches(&p, false).unwrap();
        assert_eq!(h.dims(), &[3, c.branch_len(), 96]);
        let hf = inc.final_layer(&h, false).unwrap();
        assert_eq!(hf.dims(), &[3, want_feat]);
        assert_eq!(m.encode(&x, true).unwrap().dims(), &[3, want_feat]);
        let logits = m.forward(&ids(3, 32, 50, 2), false).unwrap();
        assert_eq!(logits.dims(), &[3, 7]);
        assert_eq!(m.head(&hf, true).unwrap().dims(), &[3, 7]);
    }
}

#[test]
fn embed_rejects_wrong_length_and_pad_row_is_zero() {
    let c = cfg(64, 8, 4, 20, 3);
    let vm = VarMap::new();
    let m = InceptionXml::new(&c, &vm, &Device::Cpu, 1).unwrap();
    assert!(m.embed(&ids(2, 7, 20, 1), None).is_err());
    m.set_embeddings(&vec![0.5; 20 * 64]).unwrap();
    let x: Vec<Vec<Vec<f32>>> = m.embed(&ids(2, 8, 20, 1), None).unwrap().to_vec3().unwrap();
    assert!(x[0][7].iter().all(|&a| a == 0.0));
    assert!(x[0][0].iter().all(|&a| a == 0.5));
}

#[test]
fn eval_is_deterministic_and_train_is_not() {
    let c = cfg(64, 8, 8, 30, 5);
    let vm = VarMap::new();
    let m = InceptionXml::new(&c, &vm, &Device::Cpu, 3).unwrap();
    let x = ids(4, 8, 30, 4);
    let a = m.forward(&x, false).unwrap();
    let b = m.forward(&x, false).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let t1 = m.forward(&x, true).unwrap();
    let t2 = m.forward(&x, true).unwrap();
    assert!(
        max_abs_diff(&t1, &t2) > 1e-4,
        "dropout must make training forwards differ"
    );
    // Running statistics moved during the two training forwards; u changed too.
    let rm: Vec<f32> = vm.data().lock().unwrap()["head.bn.running_mean"]
        .as_tensor()
        .to_vec1()
        .unwrap();
    assert!(rm.iter().any(|&v| v != 0.0));
    let c2 = m.forward(&x, false).unwrap();
    assert!(
        max_abs_diff(&a, &c2) > 1e-6,
        "eval must use the updated running stats"
    );
    // With every dropout at 0, train still differs from eval (batch statistics).
    let mut c0 = c.clone();
    c0.dropout_embed = 0.0;
    c0.dropout_conv = 0.0;
    c0.dropout_hidden = 0.0;
    c0.dropout_ext = 0.0;
    let vm0 = VarMap::new();
    let m0 = InceptionXml::new(&c0, &vm0, &Device::Cpu, 3).unwrap();
    let e = m0.forward(&x, false).unwrap();
    let t = m0.forward(&x, true).unwrap();
    assert!(max_abs_diff(&e, &t) > 1e-4);
}

#[test]
fn same_seed_same_model_other_seed_differs() {
    let c = cfg(64, 8, 4, 30, 5);
    let (v1, v2, v3) = (VarMap::new(), VarMap::new(), VarMap::new());
    let m1 = InceptionXml::new(&c, &v1, &Device::Cpu, 9).unwrap();
    let m2 = InceptionXml::new(&c, &v2, &Device::Cpu, 9).unwrap();
    let m3 = InceptionXml::new(&c, &v3, &Device::Cpu, 10).unwrap();
    let x = ids(3, 8, 30, 1);
    let (a, b, z) = (
        m1.forward(&x, false).unwrap(),
        m2.forward(&x, false).unwrap(),
        m3.forward(&x, false).unwrap(),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &z) > 1e-4);
}

#[test]
fn trainable_vars_exclude_table_and_buffers() {
    let c = cfg(64, 8, 4, 30, 5);
    let vm = VarMap::new();
    let m = InceptionXml::new(&c, &vm, &Device::Cpu, 1).unwrap();
    let names: Vec<String> = m.trainable_vars().into_iter().map(|(n, _)| n).collect();
    let want = [
        "attn_dims.gamma",
        "attn_dims.weight",
        "attn_words.gamma",
        "attn_words.weight",
        "final_bn.bias",
        "final_bn.weight",
        "final_conv.bias",
        "final_conv.weight",
        "head.bn.bias",
        "head.bn.weight",
        "head.hidden.bias",
        "head.hidden.weight",
        "head.out.bias",
        "head.out.weight",
        "inception.conv16.bias",
        "inception.conv16.weight",
        "inception.conv4.bias",
        "inception.conv4.weight",
        "inception.conv8.bias",
        "inception.conv8.weight",
        "inception_bn.bias",
        "inception_bn.weight",
        "proj.bias",
        "proj.weight",
        "proj_bn.bias",
        "proj_bn.weight",
    ];
    assert_eq!(names, want);
    let all = vm.data().lock().unwrap();
    assert_eq!(all.len(), want.len() + 1 + 2 * 4 + 2 * 2); // + table + 4 BN × 2 + 2 SN × 2
    assert!(all.contains_key(EMBEDDING_NAME));
    for (n, v) in m.trainable_vars() {
        assert_eq!(all[&n].as_tensor().id(), v.as_tensor().id(), "{n}");
    }
    // Every trainable var gets a gradient from a training forward (γ = 0 blocks W1, W2 then,
    // so give the γs a value first).
    let (att, ..) = m.layers();
    att.words
        .gamma
        .set(&Tensor::new(&[0.1f32], &Device::Cpu).unwrap())
        .unwrap();
    att.dims
        .gamma
        .set(&Tensor::new(&[0.1f32], &Device::Cpu).unwrap())
        .unwrap();
    drop(all);
    let loss = m
        .forward(&ids(4, 8, 30, 2), true)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    for (n, v) in m.trainable_vars() {
        assert!(g.get(v.as_tensor()).is_some(), "no gradient for {n}");
    }
    assert!(g.get(m.embedding_table().as_tensor()).is_none());
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let c = cfg(64, 8, 8, 30, 6);
    let x = ids(5, 8, 30, 3);
    let vm = VarMap::new();
    let m = InceptionXml::new(&c, &vm, &Device::Cpu, 1).unwrap();
    // Move every kind of state off its initial value: γs, BN running stats, SN u/v.
    let (att, ..) = m.layers();
    att.words
        .gamma
        .set(&Tensor::new(&[0.2f32], &Device::Cpu).unwrap())
        .unwrap();
    att.dims
        .gamma
        .set(&Tensor::new(&[-0.1f32], &Device::Cpu).unwrap())
        .unwrap();
    for _ in 0..3 {
        m.forward(&x, true).unwrap();
    }
    let want = m.forward(&x, false).unwrap();
    vm.save(&path).unwrap();

    let mut vm2 = VarMap::new();
    let m2 = InceptionXml::new(&c, &vm2, &Device::Cpu, 77).unwrap();
    assert!(max_abs_diff(&want, &m2.forward(&x, false).unwrap()) > 1e-4);
    vm2.load(&path).unwrap();
    let got = m2.forward(&x, false).unwrap();
    assert_eq!(max_abs_diff(&want, &got), 0.0);
}

/// Autograd vs central finite differences on a tiny model in eval mode.
#[test]
fn gradient_check_full_forward() {
    let c = cfg(64, 4, 4, 12, 3);
    let vm = VarMap::new();
    let m = InceptionXml::new(&c, &vm, &Device::Cpu, 5).unwrap();
    let (att, ..) = m.layers();
    att.words
        .gamma
        .set(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap())
        .unwrap();
    att.dims
        .gamma
        .set(&Tensor::new(&[0.4f32], &Device::Cpu).unwrap())
        .unwrap();
    let b = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x = Var::from_tensor(
        &Tensor::from_vec(
            init::uniform(&mut rng, b * 4 * 64, 0.5),
            (b, 4, 64),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let r = Tensor::from_vec(init::uniform(&mut rng, b * 3, 1.0), (b, 3), &Device::Cpu).unwrap();
    let loss = |m: &InceptionXml| -> f64 {
        let h = m.encode_composed(x.as_tensor(), false).unwrap();
        let z = m.head(&h, false).unwrap();
        (z * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let h = m.encode_composed(x.as_tensor(), false).unwrap();
    let grads = (m.head(&h, false).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();

    let (mut checked, mut significant, mut worst) = (0, 0, 0f64);
    let mut vars: Vec<(String, Var)> = m.trainable_vars();
    vars.push(("x".into(), x.clone()));
    for (name, var) in &vars {
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = orig.len();
        // A few entries per variable, including the largest-gradient one.
        let imax = (0..n)
            .max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs()))
            .unwrap();
        for &i in &[0, n / 2, n - 1, imax] {
            let eps = 1e-2f32 * orig[i].abs().max(0.1);
            let at = |delta: f32| {
                let mut w = orig.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss(&m)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let ad = g[i] as f64;
            let tol = 2e-2 * ad.abs().max(fd.abs()) + 2e-3;
            assert!(
                (fd - ad).abs() <= tol,
                "{name}[{i}]: autograd {ad} vs finite difference {fd}"
            );
            checked += 1;
            if ad.abs() > 1e-2 {
                significant += 1;
            }
            worst = worst.max((fd - ad).abs() / (ad.abs().max(fd.abs()) + 1e-3));
        }
    }
    eprintln!("gradient check: {checked} entries, {significant} with |grad| > 1e-2, worst relative error {worst:.2e}");
    assert!(checked >= 4 * 27);
    assert!(
        significant >= 2 * 27,
        "too few non-trivial gradients: {significant}"
    );
}
