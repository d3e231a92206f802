//! The CUDA kernels of `kernels/ops.cu`, compiled as plain C++ by `build.rs` and run on the host
//! as one block of one thread, against the CPU kernels: their index arithmetic and formulas are
//! checked on every machine, GPU or not. The warp-level `cand_scores_f32` runs as one warp of 32
//! threads (see `kernels/host_emulation.cpp`).

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use xmc::shortlist::{build, ClusterIndex};

use crate::ops::dropout::mask;
use crate::ops::{bce_with_logits, bce_with_logits_masked, CandidatePlan};
use crate::optim::adam::{AdamCoef, AdamConsts};
use crate::optim::RowGroups;

// The kernels compiled as C++ (`kernels/host_emulation.cpp`). Each reads and writes only the
// elements its size arguments name, through the pointers given, and keeps no pointer after it
// returns; callers pass pointers of live buffers of at least those sizes.
extern "C" {
    fn adam_f32(
        p: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: usize,
        b1: f32,
        b2: f32,
        step_size: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
    );
    fn row_adam_f32(
        p: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        ids: *const u32,
        n_ids: usize,
        dim: usize,
        b1: f32,
        b2: f32,
        step_size: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
    );
    fn segment_sum_f32(
        src: *const f32,
        order: *const u32,
        starts: *const u32,
        n_groups: usize,
        dim: usize,
        out: *mut f32,
    );
    fn bce_sum_f32(
        x: *const f32,
        y: *const f32,
        m: *const f32,
        has_mask: i32,
        n: usize,
        acc: *mut f64,
    );
    fn bce_finish(acc: *const f64, out: *mut f32);
    fn bce_grad_f32(
        x: *const f32,
        y: *const f32,
        m: *const f32,
        has_mask: i32,
        scale: *const f32,
        n: usize,
        out: *mut f32,
    );
    fn dropout_f32(
        x: *const f32,
        out: *mut f32,
        n: usize,
        seed: u64,
        threshold: u64,
        keep: f32,
        chunk: usize,
    );
    fn emu_cand_scores_warp(
        g: *const f32,
        table: *const f32,
        slot_pos: *const i32,
        rows: usize,
        width: usize,
        dim: usize,
        out: *mut f32,
    ) -> i32;
    fn cand_grad_input_f32(
        dlog: *const f32,
        table: *const f32,
        slot_pos: *const i32,
        rows: usize,
        width: usize,
        dim: usize,
        out: *mut f32,
    );
    #[allow(clippy::too_many_arguments)]
    fn cand_grad_table_f32(
        dlog: *const f32,
        g: *const f32,
        t_block: *const u32,
        t_off: *const u32,
        users_off: *const u32,
        users_r: *const u32,
        users_slot: *const u32,
        n_touched: usize,
        width: usize,
        dim: usize,
        out: *mut f32,
    );
}

fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * scale)
        .collect()
}

fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn adam_kernels_match_the_cpu_update() {
    let n = 1000;
    let coef = AdamCoef::new(3e-3, 0.9, AdamConsts::default(), 3);
    let g = values(n, 1, 2.0);
    let (mut p, mut m, mut v) = (values(n, 2, 1.0), values(n, 3, 0.1), values(n, 4, 0.1));
    v.iter_mut().for_each(|x| *x = x.abs());
    let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
    coef.apply(&mut p, &g, &mut m, &mut v);
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        adam_f32(
            p2.as_mut_ptr(),
            g.as_ptr(),
            m2.as_mut_ptr(),
            v2.as_mut_ptr(),
            n,
            coef.beta1,
            coef.beta2,
            coef.step_size,
            coef.inv_sqrt_bc2,
            coef.eps,
        )
    };
    close("adam p", &p2, &p, 1e-6);
    close("adam m", &m2, &m, 1e-6);
    close("adam v", &v2, &v, 1e-6);

    // Rows 1, 4, 6 of an 8 × 5 table.
    let (rows, dim, ids) = (8usize, 5usize, [1u32, 4, 6]);
    let g = values(ids.len() * dim, 5, 1.0);
    let (mut p, mut m, mut v) = (values(rows * dim, 6, 1.0), vec![0f32; 40], vec![0f32; 40]);
    let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
    for (k, &r) in ids.iter().enumerate() {
        let at = r as usize * dim..(r as usize + 1) * dim;
        coef.apply(
            &mut p[at.clone()],
            &g[k * dim..(k + 1) * dim],
            &mut m[at.clone()],
            &mut v[at],
        );
    }
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        row_adam_f32(
            p2.as_mut_ptr(),
            g.as_ptr(),
            m2.as_mut_ptr(),
            v2.as_mut_ptr(),
            ids.as_ptr(),
            ids.len(),
            dim,
            coef.beta1,
            coef.beta2,
            coef.step_size,
            coef.inv_sqrt_bc2,
            coef.eps,
        )
    };
    close("row adam p", &p2, &p, 1e-6);
    close("row adam v", &v2, &v, 1e-6);
}

#[test]
fn segment_sum_kernel_matches_the_host_grouping() {
    let ids: Vec<u32> = (0..200).map(|i| (i * 37 % 23) as u32).collect();
    let dim = 7;
    let groups = RowGroups::new(&ids);
    let g = values(ids.len() * dim, 7, 1.0);
    let want = groups.sum_host(&g, dim).unwrap();
    let mut got = vec![0f32; want.len()];
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        segment_sum_f32(
            g.as_ptr(),
            groups.order.as_ptr(),
            groups.starts.as_ptr(),
            groups.ids.len(),
            dim,
            got.as_mut_ptr(),
        )
    };
    close("segment sum", &got, &want, 1e-6);
}

#[test]
fn bce_kernels_match_the_cpu_loss_and_gradient() {
    let (r, c) = (9usize, 31usize);
    let n = r * c;
    let x = values(n, 8, 40.0);
    let y: Vec<f32> = (0..n).map(|i| (i % 4 == 0) as u8 as f32).collect();
    let m: Vec<f32> = (0..n).map(|i| (i % 3 != 0) as u8 as f32).collect();
    let dev = Device::Cpu;
    for has_mask in [0i32, 1] {
        let xv = Var::from_slice(&x, (r, c), &dev).unwrap();
        let yt = Tensor::from_slice(&y, (r, c), &dev).unwrap();
        let mt = Tensor::from_slice(&m, (r, c), &dev).unwrap();
        let loss = if has_mask == 1 {
            bce_with_logits_masked(xv.as_tensor(), &yt, &mt).unwrap()
        } else {
            bce_with_logits(xv.as_tensor(), &yt).unwrap()
        };
        let want_grad: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut acc = [0f64; 2];
        let mut out = [0f32; 1];
        // SAFETY: every pointer is into a live vector of at least the elements that the size
        // arguments name (the vectors are built with those sizes above); see the extern block.
        unsafe {
            bce_sum_f32(
                x.as_ptr(),
                y.as_ptr(),
                m.as_ptr(),
                has_mask,
                n,
                acc.as_mut_ptr(),
            );
            bce_finish(acc.as_ptr(), out.as_mut_ptr());
        }
        close("bce loss", &out, &[loss.to_scalar::<f32>().unwrap()], 1e-6);
        let count = if has_mask == 1 {
            acc[1] as f32
        } else {
            n as f32
        };
        let scale = [1.0 / count];
        let mut got = vec![0f32; n];
        // SAFETY: every pointer is into a live vector of at least the elements that the size
        // arguments name (the vectors are built with those sizes above); see the extern block.
        unsafe {
            bce_grad_f32(
                x.as_ptr(),
                y.as_ptr(),
                m.as_ptr(),
                has_mask,
                scale.as_ptr(),
                n,
                got.as_mut_ptr(),
            )
        };
        close("bce gradient", &got, &want_grad, 1e-6);
    }
}

#[test]
fn dropout_kernel_draws_the_cpu_mask() {
    let n = 10_007; // more than two 4,096-value chunks, odd
    let x: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
    let (p, seed) = (0.35f32, 0xDEAD_BEEF_u64);
    let want: Vec<f32> = mask(n, p, seed)
        .iter()
        .zip(&x)
        .map(|(m, x)| m * x)
        .collect();
    let mut got = vec![0f32; n];
    let threshold = (p as f64 * 4_294_967_296.0) as u64;
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        dropout_f32(
            x.as_ptr(),
            got.as_mut_ptr(),
            n,
            seed,
            threshold,
            1.0 / (1.0 - p),
            4096,
        )
    };
    assert_eq!(got, want);
}

#[test]
fn candidate_kernels_match_the_block_code() {
    let (labels, n_clusters, rows, dim) = (120usize, 12usize, 5usize, 70usize);
    let assign: Vec<u32> = (0..labels).map(|l| ((l * 5) % n_clusters) as u32).collect();
    let ix = ClusterIndex::new(assign, n_clusters).unwrap();
    let meta = values(rows * n_clusters, 9, 1.0);
    let sl = build(&meta, &ix, 3, None).unwrap();
    let plan = Arc::new(CandidatePlan::new(&sl, &ix).unwrap());
    let (w, table, g) = (
        plan.width(),
        values(labels * dim, 10, 0.5),
        values(rows * dim, 11, 1.0),
    );
    let dlog: Vec<f32> = values(rows * w, 12, 1.0)
        .iter()
        .zip(&sl.mask)
        .map(|(d, m)| d * m)
        .collect();
    let slots = plan.slot_positions();
    let mut scores = vec![f32::NAN; rows * w];
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    let rc = unsafe {
        emu_cand_scores_warp(
            g.as_ptr(),
            table.as_ptr(),
            slots.as_ptr(),
            rows,
            w,
            dim,
            scores.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "emulated warp did not start");
    close("scores", &scores, &plan.scores(&g, &table, dim), 1e-5);
    let mut dg = vec![0f32; rows * dim];
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        cand_grad_input_f32(
            dlog.as_ptr(),
            table.as_ptr(),
            slots.as_ptr(),
            rows,
            w,
            dim,
            dg.as_mut_ptr(),
        )
    };
    close(
        "grad input",
        &dg,
        &plan.grad_input(&dlog, &table, dim),
        1e-5,
    );
    let tu = plan.touched_users();
    let want = plan.grad_table(&dlog, &g, dim);
    let n_touched = plan.touched().len();
    let mut dw = vec![0f32; n_touched * dim];
    // SAFETY: every pointer is into a live vector of at least the elements that the size
    // arguments name (the vectors are built with those sizes above); see the extern block.
    unsafe {
        cand_grad_table_f32(
            dlog.as_ptr(),
            g.as_ptr(),
            tu.t_block.as_ptr(),
            tu.t_off.as_ptr(),
            tu.users_off.as_ptr(),
            tu.users_r.as_ptr(),
            tu.users_slot.as_ptr(),
            n_touched,
            w,
            dim,
            dw.as_mut_ptr(),
        )
    };
    close("grad table", &dw, &want, 1e-5);
}
