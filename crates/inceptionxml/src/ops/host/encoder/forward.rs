//! The fused encoder's forward pass (training or evaluation).

use super::*;

impl Workspace {
    /// Encoder forward of `x` `[B, S, d]`: returns `h_f` `[B, F·L2]` (channel-major). With
    /// `train`, BatchNorm uses batch statistics (see [`Self::batch_stats`]), the dropouts in
    /// `drop` apply, and what the backward pass needs is kept.
    pub fn forward(
        &mut self,
        p: &Params,
        dims: Dims,
        x0: &[f32],
        lens: &[usize],
        dropouts: Dropouts,
        train: bool,
    ) -> Result<Vec<f32>> {
        let Dims {
            b,
            s,
            d,
            f,
            l1,
            l2,
            wp,
            rp,
            w2,
        } = dims;
        if x0.len() != b * s * d {
            return Err(Error::Shape(format!(
                "fused encoder: input of {} values for {b}×{s}×{d}",
                x0.len()
            )));
        }
        check_params(p, &dims)?;
        if lens.len() != b || lens.iter().any(|&n| n > s) {
            return Err(Error::Shape(format!(
                "fused encoder: {} text lengths for {b} texts of {s} words",
                lens.len()
            )));
        }
        self.lens.clear();
        self.lens.extend_from_slice(lens);
        self.offs.clear();
        self.offs.push(0);
        for &n in lens {
            let last = self.offs[self.offs.len() - 1];
            self.offs.push(last + n);
        }
        let rows = self.offs[b];
        self.dims = Some(dims);
        self.train = train;
        self.drop = if train { dropouts } else { Dropouts::default() };
        let dr = self.drop;
        // Word-vector dropout on the words' rows (the padding rows stay zero), and the words'
        // rows gathered: xc [rows, d].
        let mut laps = Laps::start(Stage::EncFwdWordDropout);
        let x = grow(&mut self.x, b * s * d);
        let mask0 = grow(
            &mut self.mask0,
            if dr.embed.is_some() { b * s * d } else { 0 },
        );
        let xc = grow(&mut self.xc, rows * d);
        {
            let parts = split_rows(xc, lens, d);
            // One mask chunk per text, or none at all without word dropout (mask0 is empty).
            let mut chunks = mask0.chunks_mut(s * d);
            let masks: Vec<Option<&mut [f32]>> = (0..b).map(|_| chunks.next()).collect();
            x.par_chunks_mut(s * d)
                .zip(x0.par_chunks(s * d))
                .zip(parts.into_par_iter().zip(masks))
                .enumerate()
                .for_each(|(bi, ((xs, x0s), (xcs, m)))| {
                    let n = lens[bi] * d;
                    match (dr.embed, m) {
                        (Some((pr, seed)), Some(m)) => {
                            mask_range(&mut m[..n], pr, seed, bi * s * d);
                            for ((o, i), m) in xs[..n].iter_mut().zip(&x0s[..n]).zip(&m[..n]) {
                                *o = i * m;
                            }
                        }
                        _ => xs[..n].copy_from_slice(&x0s[..n]),
                    }
                    xs[n..].fill(0.0);
                    xcs.copy_from_slice(&xs[..n]);
                });
        }
        laps.next(Stage::EncFwdAttention);
        let x = &self.x[..];
        // Y = X W2ᵀ on the words' rows only (padding rows give zero).
        let y = grow(&mut self.yc, rows * d);
        mm(
            y,
            Out::rm(0, d),
            View::rm(&self.xc, 0, rows, d),
            View::rm(&p.w2, 0, d, d).t(),
            1.0,
            false,
            par_for(rows, d, d),
        )?;
        let y = &self.yc[..];
        let (lens, offs) = (&self.lens[..], &self.offs[..]);
        // Attention and projection per sample: z1 [B·d, F] (pre-bias).
        let na = dims.att();
        let att = grow(&mut self.att, b * na);
        let z1 = grow(&mut self.z1, b * d * f);
        att.par_chunks_mut(na)
            .zip(z1.par_chunks_mut(d * f))
            .enumerate()
            .try_for_each(|(bi, (a, z))| {
                attention_fwd(p, &dims, x, y, (bi, lens[bi], offs[bi]), a, z)
            })?;
        // GELU + BatchNorm(F) (+ dropout) into the padded layout.
        laps.next(Stage::EncFwdBnProjection);
        // Only the rows nothing below writes are zeroed: each sample's tail past its circular
        // padding and the K rows after the last sample (the windows' overhang).
        let ppad = grow(&mut self.ppad, (b * rp + K) * f);
        ppad[b * rp * f..].fill(0.0);
        let proj_mask = mask_for(&mut self.mask1, dr.proj, b * d * f);
        self.stats[0] = gelu_bn_fwd(
            &self.z1,
            RowMap { stride: d, off: 0 },
            (b, d, f),
            &p.bp,
            &p.bn1,
            train,
            grow(&mut self.act1, if train { b * d * f } else { 0 }),
            grow(&mut self.dact1, if train { b * d * f } else { 0 }),
            ppad,
            RowMap {
                stride: rp,
                off: PAD,
            },
            proj_mask,
        )?;
        // Circular padding: rows 0..6 repeat the last 6 positions, rows 6+d.. the first 6.
        ppad[..b * rp * f].par_chunks_mut(rp * f).for_each(|smp| {
            smp.copy_within(d * f..(d + PAD) * f, 0);
            smp.copy_within(PAD * f..2 * PAD * f, (PAD + d) * f);
            smp[(2 * PAD + d) * f..].fill(0.0);
        });
        laps.next(Stage::EncFwdBranches);
        let ppad = &self.ppad[..];
        // The three branches: one GEMM each over overlapping windows (row stride 4F).
        let z2 = grow(&mut self.z2, b * wp * 3 * f);
        for (j, &(k, o)) in BRANCHES.iter().enumerate() {
            mm(
                z2,
                Out::rm(j * f, 3 * f),
                View::rm(ppad, o * f, b * wp, k * f).rs(STRIDE * f),
                View::rm(&p.conv[j], 0, k * f, f),
                1.0,
                false,
                par_for(b * wp, f, k * f),
            )?;
        }
        laps.next(Stage::EncFwdBnMerge);
        let h = grow(&mut self.h, (b * wp + K) * 3 * f);
        // Rows l1..wp of each sample and the K rows after the last; the GELU+BN writes the rest.
        h[b * wp * 3 * f..].fill(0.0);
        h[..b * wp * 3 * f]
            .par_chunks_mut(wp * 3 * f)
            .for_each(|smp| smp[l1 * 3 * f..].fill(0.0));
        let merge_mask = mask_for(&mut self.mask2, dr.merge, b * l1 * 3 * f);
        self.stats[1] = gelu_bn_fwd(
            &self.z2,
            RowMap { stride: wp, off: 0 },
            (b, l1, 3 * f),
            &p.conv_bias,
            &p.bn2,
            train,
            grow(&mut self.act2, if train { b * l1 * 3 * f } else { 0 }),
            grow(&mut self.dact2, if train { b * l1 * 3 * f } else { 0 }),
            h,
            RowMap { stride: wp, off: 0 },
            merge_mask,
        )?;
        laps.next(Stage::EncFwdFinal);
        // Final convolution: one GEMM over 16-row windows of H at stride 4.
        let z3 = grow(&mut self.z3, b * w2 * f);
        mm(
            z3,
            Out::rm(0, f),
            View::rm(&self.h, 0, b * w2, K * 3 * f).rs(STRIDE * 3 * f),
            View::rm(&p.fin, 0, K * 3 * f, f),
            1.0,
            false,
            par_for(b * w2, f, K * 3 * f),
        )?;
        laps.next(Stage::EncFwdBnFinal);
        let y3 = grow(&mut self.y3, b * l2 * f);
        self.stats[2] = gelu_bn_fwd(
            &self.z3,
            RowMap { stride: w2, off: 0 },
            (b, l2, f),
            &p.fin_bias,
            &p.bn3,
            train,
            grow(&mut self.act3, if train { b * l2 * f } else { 0 }),
            grow(&mut self.dact3, if train { b * l2 * f } else { 0 }),
            y3,
            RowMap { stride: l2, off: 0 },
            None,
        )?;
        // Flatten channel-major.
        let mut out = vec![0f32; b * f * l2];
        out.par_chunks_mut(f * l2)
            .zip(self.y3.par_chunks(l2 * f))
            .for_each(|(o, yv)| {
                for t in 0..l2 {
                    for c in 0..f {
                        o[c * l2 + t] = yv[t * f + c];
                    }
                }
            });
        laps.stop();
        Ok(out)
    }
}
