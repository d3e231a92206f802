//! The per-block kernels of the CPU path: AVX2 + FMA register tiles where the CPU has them
//! ([`avx`]), plain loops otherwise ([`plain`]). Every kernel sees one
//! distinct block `w` (`len × dim`, a cluster's table rows) and its users `(row, slot)`.

/// Plain loops: the reference, and the path of CPUs without AVX2 + FMA.
pub mod plain {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `out[j·len + i] = w[i]·g[r_j]`.
    pub fn score_block(w: &[f32], dim: usize, users: &[(u32, u32)], g: &[f32], out: &mut [f32]) {
        let len = w.len() / dim.max(1);
        for (j, &(r, _)) in users.iter().enumerate() {
            let gr = &g[r as usize * dim..(r as usize + 1) * dim];
            for i in 0..len {
                out[j * len + i] = dot(&w[i * dim..(i + 1) * dim], gr);
            }
        }
    }

    /// `acc[r_j] += Σ_i dlog[r_j, slot_j + i]·w[i]`.
    pub fn grad_input_block(
        w: &[f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        acc: &mut [f32],
    ) {
        let len = w.len() / dim.max(1);
        for &(r, slot) in users {
            let (r, slot) = (r as usize, slot as usize);
            let o = &mut acc[r * dim..(r + 1) * dim];
            for i in 0..len {
                let a = dlog[r * width + slot + i];
                for (o, &x) in o.iter_mut().zip(&w[i * dim..(i + 1) * dim]) {
                    *o += a * x;
                }
            }
        }
    }

    /// `out[i] = Σ_j dlog[r_j, slot_j + i]·g[r_j]`.
    pub fn grad_table_block(
        out: &mut [f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        g: &[f32],
    ) {
        let len = out.len() / dim.max(1);
        out.fill(0.0);
        for &(r, slot) in users {
            let (r, slot) = (r as usize, slot as usize);
            let gr = &g[r * dim..(r + 1) * dim];
            for i in 0..len {
                let a = dlog[r * width + slot + i];
                for (o, &x) in out[i * dim..(i + 1) * dim].iter_mut().zip(gr) {
                    *o += a * x;
                }
            }
        }
    }
}

/// AVX2 + FMA register tiles (8 accumulators each, enough independent FMAs to cover their
/// latency on both ports): scores 2 table rows × 4 users, the input gradient 64 values of a
/// user's row, the table gradient 4 table rows × 16 values. Callers check the CPU.
#[cfg(target_arch = "x86_64")]
pub mod avx {
    use std::arch::x86_64::*;

    /// The sum of the 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// See [`super::plain::score_block`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn score_block(
        w: &[f32],
        dim: usize,
        users: &[(u32, u32)],
        g: &[f32],
        out: &mut [f32],
    ) {
        let len = w.len() / dim.max(1);
        let n8 = dim / 8 * 8;
        assert!(out.len() >= users.len() * len && w.len() >= len * dim);
        for &(r, _) in users {
            assert!((r as usize + 1) * dim <= g.len());
        }
        let wp = w.as_ptr();
        let grow = |j: usize| g.as_ptr().add(users[j].0 as usize * dim);
        let mut j = 0;
        while j + 4 <= users.len() {
            let gs = [grow(j), grow(j + 1), grow(j + 2), grow(j + 3)];
            let mut i = 0;
            while i + 2 <= len {
                let (w0, w1) = (wp.add(i * dim), wp.add((i + 1) * dim));
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut k = 0;
                while k < n8 {
                    let a0 = _mm256_loadu_ps(w0.add(k));
                    let a1 = _mm256_loadu_ps(w1.add(k));
                    for (q, gq) in gs.iter().enumerate() {
                        let b = _mm256_loadu_ps(gq.add(k));
                        acc[q] = _mm256_fmadd_ps(a0, b, acc[q]);
                        acc[4 + q] = _mm256_fmadd_ps(a1, b, acc[4 + q]);
                    }
                    k += 8;
                }
                for (q, gq) in gs.iter().enumerate() {
                    let (mut s0, mut s1) = (hsum(acc[q]), hsum(acc[4 + q]));
                    for t in n8..dim {
                        let b = *gq.add(t);
                        s0 += *w0.add(t) * b;
                        s1 += *w1.add(t) * b;
                    }
                    out[(j + q) * len + i] = s0;
                    out[(j + q) * len + i + 1] = s1;
                }
                i += 2;
            }
            if i < len {
                for (q, gq) in gs.iter().enumerate() {
                    out[(j + q) * len + i] = dot(wp.add(i * dim), *gq, dim);
                }
            }
            j += 4;
        }
        while j < users.len() {
            let gq = grow(j);
            for i in 0..len {
                out[j * len + i] = dot(wp.add(i * dim), gq, dim);
            }
            j += 1;
        }
    }

    /// `a·b` over `n` values.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and `a..a + n`, `b..b + n` must be readable.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
        let n8 = n / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut k = 0;
        while k < n8 {
            let q = (k / 8) & 1;
            acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(k)), _mm256_loadu_ps(b.add(k)), acc[q]);
            k += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
        for t in n8..n {
            s += *a.add(t) * *b.add(t);
        }
        s
    }

    /// See [`super::plain::grad_input_block`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn grad_input_block(
        w: &[f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        acc: &mut [f32],
    ) {
        let len = w.len() / dim.max(1);
        let wp = w.as_ptr();
        for &(r, slot) in users {
            let (r, slot) = (r as usize, slot as usize);
            let d = &dlog[r * width + slot..r * width + slot + len];
            if d.iter().all(|&x| x == 0.0) {
                continue;
            }
            let o = &mut acc[r * dim..(r + 1) * dim];
            let op = o.as_mut_ptr();
            let mut k = 0;
            while k + 64 <= dim {
                let mut s = [_mm256_setzero_ps(); 8];
                for (i, &a) in d.iter().enumerate() {
                    let c = _mm256_set1_ps(a);
                    let wi = wp.add(i * dim + k);
                    for (q, sq) in s.iter_mut().enumerate() {
                        *sq = _mm256_fmadd_ps(c, _mm256_loadu_ps(wi.add(8 * q)), *sq);
                    }
                }
                for (q, sq) in s.iter().enumerate() {
                    let p = op.add(k + 8 * q);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), *sq));
                }
                k += 64;
            }
            while k + 8 <= dim {
                let mut s = _mm256_setzero_ps();
                for (i, &a) in d.iter().enumerate() {
                    s = _mm256_fmadd_ps(_mm256_set1_ps(a), _mm256_loadu_ps(wp.add(i * dim + k)), s);
                }
                let p = op.add(k);
                _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), s));
                k += 8;
            }
            for t in k..dim {
                let mut s = 0f32;
                for (i, &a) in d.iter().enumerate() {
                    s += a * w[i * dim + t];
                }
                o[t] += s;
            }
        }
    }

    /// See [`super::plain::grad_table_block`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn grad_table_block(
        out: &mut [f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        g: &[f32],
    ) {
        let len = out.len() / dim.max(1);
        for &(r, slot) in users {
            assert!((r as usize + 1) * dim <= g.len());
            assert!(r as usize * width + slot as usize + len <= dlog.len());
        }
        let coef = |j: usize, i: usize| {
            let (r, slot) = (users[j].0 as usize, users[j].1 as usize);
            *dlog.get_unchecked(r * width + slot + i)
        };
        let grow = |j: usize| g.as_ptr().add(users[j].0 as usize * dim);
        let op = out.as_mut_ptr();
        let mut i0 = 0;
        while i0 < len {
            let ri = (len - i0).min(4);
            let mut k = 0;
            while k + 16 <= dim {
                let mut s = [_mm256_setzero_ps(); 8];
                for j in 0..users.len() {
                    let gj = grow(j).add(k);
                    let (b0, b1) = (_mm256_loadu_ps(gj), _mm256_loadu_ps(gj.add(8)));
                    for a in 0..ri {
                        let c = _mm256_set1_ps(coef(j, i0 + a));
                        s[2 * a] = _mm256_fmadd_ps(c, b0, s[2 * a]);
                        s[2 * a + 1] = _mm256_fmadd_ps(c, b1, s[2 * a + 1]);
                    }
                }
                for a in 0..ri {
                    let p = op.add((i0 + a) * dim + k);
                    _mm256_storeu_ps(p, s[2 * a]);
                    _mm256_storeu_ps(p.add(8), s[2 * a + 1]);
                }
                k += 16;
            }
            for t in k..dim {
                for a in 0..ri {
                    let mut s = 0f32;
                    for j in 0..users.len() {
                        s += coef(j, i0 + a) * *grow(j).add(t);
                    }
                    out[(i0 + a) * dim + t] = s;
                }
            }
            i0 += ri;
        }
    }
}

/// The safe entry `$name`: [`avx`]`::$name` or [`plain`]`::$name`, by the CPU
/// ([`crate::ops::host::cpu::dispatch!`]).
macro_rules! kernel {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?);) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            crate::ops::host::cpu::dispatch!(avx::$name($($arg),*), plain::$name($($arg),*))
        }
    };
}

kernel! {
    /// Scores of a block's rows for each of its users, user-major: `out[j·len + i]`.
    pub fn score_block(w: &[f32], dim: usize, users: &[(u32, u32)], g: &[f32], out: &mut [f32]);
}

kernel! {
    /// Adds a block's contribution to its users' input gradients.
    pub fn grad_input_block(
        w: &[f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        acc: &mut [f32],
    );
}

kernel! {
    /// A block's table-row gradients.
    pub fn grad_table_block(
        out: &mut [f32],
        dim: usize,
        users: &[(u32, u32)],
        dlog: &[f32],
        width: usize,
        g: &[f32],
    );
}
