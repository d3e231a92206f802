//! Candidate scoring against dense reference computations.

use super::*;
use crate::ops::bce_with_logits_masked;
use crate::testing::{assert_each_close, max_abs_diff};
use candle_core::{Device, Var};
use xmc::shortlist::build;

/// 7 labels in 3 clusters of sizes 3, 2, 2.
fn index() -> ClusterIndex {
    ClusterIndex::new(vec![0, 1, 2, 0, 1, 0, 2], 3).unwrap()
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919 % 211) as f32 - 105.0) / 100.0)
        .collect()
}

#[test]
fn forward_and_sparse_backward_match_a_dense_oracle() {
    let ix = index();
    let (rows, dim) = (3, 5);
    let table = values(7 * dim, 1);
    let g0 = values(rows * dim, 2);
    let meta = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.1, 0.2, 0.9];
    let pos: Vec<&[u32]> = vec![&[1], &[], &[6, 2]];
    let sl = build(&meta, &ix, 1, Some(&pos)).unwrap();
    let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
    assert_eq!(plan.width(), sl.width);
    let dev = Device::Cpu;
    let g = Var::from_slice(&g0, (rows, dim), &dev).unwrap();
    let t = Tensor::from_slice(&table, (7, dim), &dev).unwrap();
    let (logits, sink) = candidate_logits(g.as_tensor(), &t, plan.clone()).unwrap();
    let y = Tensor::from_slice(&sl.targets, (rows, sl.width), &dev).unwrap();
    let m = Tensor::from_slice(&sl.mask, (rows, sl.width), &dev).unwrap();
    let loss = bce_with_logits_masked(&logits, &y, &m).unwrap();
    let grads = loss.backward().unwrap();
    let gg: Vec<f32> = grads
        .get(g.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (tpos, tgrad) = sink.take().unwrap();
    let tgrad: Vec<f32> = tgrad.flatten_all().unwrap().to_vec1().unwrap();

    // Oracle: explicit loops over (row, slot) in label space.
    let order = ix.order();
    let lg: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let n: f32 = sl.mask.iter().sum();
    let mut want_g = vec![0f32; rows * dim];
    let mut want_t = vec![0f32; 7 * dim];
    let positions = ix.positions();
    for r in 0..rows {
        for s in 0..sl.width {
            let i = r * sl.width + s;
            if sl.mask[i] == 0.0 {
                assert_eq!(lg[i], 0.0);
                continue;
            }
            let p = positions[sl.labels[i] as usize] as usize;
            assert_eq!(order[p], sl.labels[i]);
            let z: f32 = (0..dim).map(|k| table[p * dim + k] * g0[r * dim + k]).sum();
            assert!((z - lg[i]).abs() < 1e-5);
            let d = (1.0 / (1.0 + (-z).exp()) - sl.targets[i]) / n;
            for k in 0..dim {
                want_g[r * dim + k] += d * table[p * dim + k];
                want_t[p * dim + k] += d * g0[r * dim + k];
            }
        }
    }
    for (a, b) in gg.iter().zip(&want_g) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert!(tpos.windows(2).all(|w| w[0] < w[1]));
    let touched: Vec<u32> = plan.touched();
    assert_eq!(tpos, touched);
    for p in 0..7u32 {
        let row = &want_t[p as usize * dim..(p as usize + 1) * dim];
        match tpos.iter().position(|&x| x == p) {
            Some(j) => {
                for (a, b) in tgrad[j * dim..(j + 1) * dim].iter().zip(row) {
                    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
                }
            }
            None => assert!(row.iter().all(|&v| v == 0.0), "untouched row {p}"),
        }
    }
}

/// The tiled block kernels against plain loops over (row, slot), at sizes that exercise the
/// full tiles and every remainder (dims 480 and 37, blocks of 1–13 rows, 1–40 users).
#[test]
fn tiled_kernels_match_plain_loops() {
    for dim in [480usize, 37] {
        let (rows, n_blocks) = (40, 9);
        let sizes: Vec<u32> = (0..n_blocks).map(|b| 1 + (b * 5 % 13) as u32).collect();
        let starts: Vec<u32> = sizes
            .iter()
            .scan(0u32, |a, &l| {
                let s = *a;
                *a += l;
                Some(s)
            })
            .collect();
        let n_table = (starts[n_blocks - 1] + sizes[n_blocks - 1]) as usize;
        // Row r scores blocks (r·b + 1) mod 7 < 4, in an order of its own.
        let blocks: Vec<Vec<(u32, u32)>> = (0..rows)
            .map(|r| {
                let mut v: Vec<usize> = (0..n_blocks).filter(|b| (r * b + 1) % 7 < 4).collect();
                let k = r % v.len().max(1);
                v.rotate_left(k);
                v.iter().map(|&b| (starts[b], sizes[b])).collect()
            })
            .collect();
        let plan = CandidatePlan::from_blocks(&blocks);
        let table = values(n_table * dim, 3);
        let g = values(rows * dim, 4);
        let dlog: Vec<f32> = values(rows * plan.width(), 5);
        let mut want_s = vec![0f32; rows * plan.width()];
        let mut want_g = vec![0f32; rows * dim];
        let mut want_t = vec![0f32; n_table * dim];
        for (r, bs) in plan.row_blocks.iter().enumerate() {
            for b in bs {
                for i in 0..b.len as usize {
                    let p = b.start as usize + i;
                    let at = r * plan.width() + b.slot as usize + i;
                    let (w, x) = (&table[p * dim..(p + 1) * dim], &g[r * dim..(r + 1) * dim]);
                    want_s[at] = w.iter().zip(x).map(|(a, b)| a * b).sum();
                    for k in 0..dim {
                        want_g[r * dim + k] += dlog[at] * w[k];
                        want_t[p * dim + k] += dlog[at] * x[k];
                    }
                }
            }
        }
        let close = |a: &[f32], b: &[f32], what: &str| assert_each_close(what, a, b, 1e-3);
        // Padding slots: 0 in the scores, and 0 in dlog (the loss gives them none).
        let zero_padding = |v: &[f32]| {
            let mut v = v.to_vec();
            for (r, bs) in plan.row_blocks.iter().enumerate() {
                let used: u32 = bs.iter().map(|b| b.len).sum();
                v[r * plan.width() + used as usize..(r + 1) * plan.width()].fill(0.0);
            }
            v
        };
        close(
            &plan.scores(&g, &table, dim),
            &zero_padding(&want_s),
            "scores",
        );
        let dl = zero_padding(&dlog);
        close(&plan.grad_input(&dl, &table, dim), &want_g, "grad_input");
        let touched = plan.touched();
        let got = plan.grad_table(&dl, &g, dim);
        let want: Vec<f32> = touched
            .iter()
            .flat_map(|&p| want_t[p as usize * dim..(p as usize + 1) * dim].to_vec())
            .collect();
        close(&got, &want, "grad_table");
        // The dispatched (AVX2 where the CPU has it) block kernels against the plain loops.
        for u in 0..plan.uniq.len() {
            let (start, len) = plan.uniq[u];
            let w = &table[start as usize * dim..(start + len) as usize * dim];
            let users = &plan.users[plan.users_off[u]..plan.users_off[u + 1]];
            let n = users.len() * len as usize;
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            kernels::score_block(w, dim, users, &g, &mut a);
            kernels::plain::score_block(w, dim, users, &g, &mut b);
            close(&a, &b, "score_block");
            let n = rows * dim;
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            kernels::grad_input_block(w, dim, users, &dl, plan.width(), &mut a);
            kernels::plain::grad_input_block(w, dim, users, &dl, plan.width(), &mut b);
            close(&a, &b, "grad_input_block");
            let n = len as usize * dim;
            let (mut a, mut b) = (vec![1f32; n], vec![2f32; n]);
            kernels::grad_table_block(&mut a, dim, users, &dl, plan.width(), &g);
            kernels::plain::grad_table_block(&mut b, dim, users, &dl, plan.width(), &g);
            close(&a, &b, "grad_table_block");
        }
        // The same result on one thread as on several (fixed slices).
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            one.install(|| plan.grad_input(&dl, &table, dim)),
            plan.grad_input(&dl, &table, dim)
        );
    }
}

/// The loops of the GPU kernels (kernels/ops.cu `cand_*`) over the flat arrays, on the host.
fn flat_kernels(
    plan: &CandidatePlan,
    g: &[f32],
    table: &[f32],
    dlog: &[f32],
    dim: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, width) = (plan.rows(), plan.width());
    let sp = plan.slot_positions();
    let mut scores = vec![0f32; rows * width];
    for (w, o) in scores.iter_mut().enumerate() {
        if sp[w] >= 0 {
            let p = sp[w] as usize;
            *o = (0..dim)
                .map(|j| table[p * dim + j] * g[(w / width) * dim + j])
                .sum();
        }
    }
    let mut dg = vec![0f32; rows * dim];
    for (k, o) in dg.iter_mut().enumerate() {
        let (r, j) = (k / dim, k % dim);
        for s in 0..width {
            let (p, d) = (sp[r * width + s], dlog[r * width + s]);
            if p >= 0 && d != 0.0 {
                *o += d * table[p as usize * dim + j];
            }
        }
    }
    let tu = plan.touched_users();
    let mut dw = vec![0f32; tu.t_block.len() * dim];
    for (k, o) in dw.iter_mut().enumerate() {
        let (t, j) = (k / dim, k % dim);
        let (u, i) = (tu.t_block[t] as usize, tu.t_off[t] as usize);
        for q in tu.users_off[u] as usize..tu.users_off[u + 1] as usize {
            let r = tu.users_r[q] as usize;
            let d = dlog[r * width + tu.users_slot[q] as usize + i];
            if d != 0.0 {
                *o += d * g[r * dim + j];
            }
        }
    }
    (scores, dg, dw)
}

#[test]
fn the_gpu_kernels_flat_arrays_give_the_block_results() {
    let ix = index();
    let (rows, dim) = (4, 6);
    let table = values(7 * dim, 3);
    let g = values(rows * dim, 4);
    let meta = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.1, 0.2, 0.9, 0.4, 0.6, 0.5];
    let pos: Vec<&[u32]> = vec![&[1], &[], &[6, 2], &[0]];
    let sl = build(&meta, &ix, 2, Some(&pos)).unwrap();
    let plan = CandidatePlan::new(&sl, &ix).unwrap();
    let dlog: Vec<f32> = values(rows * plan.width(), 5)
        .iter()
        .zip(&sl.mask)
        .map(|(d, m)| d * m)
        .collect();
    let (scores, dg, dw) = flat_kernels(&plan, &g, &table, &dlog, dim);
    let close = |a: &[f32], b: &[f32]| {
        let e = max_abs_diff(a, b);
        assert!(e < 1e-5, "off by {e}");
    };
    close(&scores, &plan.scores(&g, &table, dim));
    close(&dg, &plan.grad_input(&dlog, &table, dim));
    let want = plan.grad_table(&dlog, &g, dim);
    assert_eq!(plan.touched().len() * dim, dw.len());
    close(&dw, &want);
    // Padding slots are -1 exactly where the shortlist masks them out.
    let sp = plan.slot_positions();
    for (p, m) in sp.iter().zip(&sl.mask) {
        assert_eq!(*p < 0, *m == 0.0);
    }
    let from_positions = CandidatePlan::from_positions(&[vec![4, 1], vec![6]]);
    assert_eq!(from_positions.slot_positions(), vec![4, 1, 6, -1]);
}

#[test]
fn the_table_gradient_is_finite_differences() {
    // d loss / d table[p][k] by central differences on a tiny case.
    let ix = index();
    let (rows, dim) = (2, 3);
    let table = values(7 * dim, 3);
    let g0 = values(rows * dim, 4);
    let meta = [0.2, 0.9, 0.4, 0.7, 0.1, 0.6];
    let pos: Vec<&[u32]> = vec![&[4], &[0, 5]];
    let sl = build(&meta, &ix, 2, Some(&pos)).unwrap();
    let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
    let dev = Device::Cpu;
    let y = Tensor::from_slice(&sl.targets, (rows, sl.width), &dev).unwrap();
    let m = Tensor::from_slice(&sl.mask, (rows, sl.width), &dev).unwrap();
    let loss_at = |tab: &[f32]| -> f32 {
        let t = Tensor::from_slice(tab, (7, dim), &dev).unwrap();
        let g = Tensor::from_slice(&g0, (rows, dim), &dev).unwrap();
        let (l, _) = candidate_logits(&g, &t, plan.clone()).unwrap();
        bce_with_logits_masked(&l, &y, &m)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let g = Var::from_slice(&g0, (rows, dim), &dev).unwrap();
    let t = Tensor::from_slice(&table, (7, dim), &dev).unwrap();
    let (l, sink) = candidate_logits(g.as_tensor(), &t, plan.clone()).unwrap();
    bce_with_logits_masked(&l, &y, &m)
        .unwrap()
        .backward()
        .unwrap();
    let (tpos, tgrad) = sink.take().unwrap();
    let tgrad: Vec<f32> = tgrad.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-2f32;
    for (j, &p) in tpos.iter().enumerate() {
        for k in 0..dim {
            let i = p as usize * dim + k;
            let mut a = table.clone();
            a[i] += h;
            let mut b = table.clone();
            b[i] -= h;
            let fd = (loss_at(&a) - loss_at(&b)) / (2.0 * h);
            assert!(
                (fd - tgrad[j * dim + k]).abs() < 2e-4,
                "{fd} vs {}",
                tgrad[j * dim + k]
            );
        }
    }
}
