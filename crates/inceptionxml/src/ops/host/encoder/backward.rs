//! The fused encoder's backward pass, from the gradient of its output.

use super::*;

impl Workspace {
    /// Backward of the last training [`Self::forward`] for `dh` `[B, F·L2]`.
    pub fn backward(&mut self, p: &Params, dh_out: &[f32]) -> Result<Grads> {
        let dims = match (self.dims, self.train) {
            (Some(d), true) => d,
            _ => {
                return Err(Error::Shape(
                    "fused encoder: backward without a training forward".into(),
                ))
            }
        };
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
        if dh_out.len() != b * f * l2 {
            return Err(Error::Shape(format!(
                "fused encoder: output gradient of {} values for {b}×{}",
                dh_out.len(),
                f * l2
            )));
        }
        check_params(p, &dims)?;
        let mut g = Grads::default();
        let mut laps = Laps::start(Stage::EncBwdBnFinal);
        // Final BatchNorm: dy3 compact [B·L2, F] from the channel-major gradient.
        let mut dy3 = vec![0f32; b * l2 * f];
        dy3.par_chunks_mut(l2 * f)
            .zip(dh_out.par_chunks(f * l2))
            .for_each(|(o, gv)| {
                for t in 0..l2 {
                    for c in 0..f {
                        o[t * f + c] = gv[c * l2 + t];
                    }
                }
            });
        // dz3 with three leading zero rows (for the shifted col2im GEMMs); padding windows zero.
        let dz3 = grow(&mut self.dz3, (3 + b * w2) * f);
        dz3.fill(0.0);
        let (dw, db, dbias) = gelu_bn_bwd(
            &dy3,
            RowMap { stride: l2, off: 0 },
            None,
            (b, l2, f),
            &self.act3,
            &self.dact3,
            &self.stats[2],
            &p.bn3,
            dz3,
            RowMap { stride: w2, off: 3 },
        )?;
        g.bn3 = (dw, db);
        g.fin_bias = dbias;
        laps.next(Stage::EncBwdFinal);
        let dz3 = &self.dz3[..];
        // Final convolution's weight: windowsᵀ · dz3.
        g.fin = vec![0f32; K * 3 * f * f];
        mm_split_k(
            &mut g.fin,
            View::rm(&self.h, 0, b * w2, K * 3 * f)
                .rs(STRIDE * 3 * f)
                .t(),
            View::rm(dz3, 3 * f, b * w2, f),
        )?;
        // Its input gradient: block j (4 rows) of H gets Σ_q dz3[j − q] · W_qᵀ.
        let dh = grow(&mut self.dh, b * wp * 3 * f);
        let blk = STRIDE * 3 * f;
        for q in 0..K / STRIDE {
            mm(
                dh,
                Out::rm(0, blk),
                View::rm(dz3, (3 - q) * f, b * w2, f),
                View::strided(&p.fin, q * blk * f, (f, blk), (1, f)),
                1.0,
                q > 0,
                par_for(b * w2, blk, f),
            )?;
        }
        laps.next(Stage::EncBwdBnMerge);
        // Merge BatchNorm (with its dropout).
        let dz2 = grow(&mut self.dz2, b * wp * 3 * f);
        // Rows l1..wp of each sample (the GELU+BN backward writes the rest).
        dz2.par_chunks_mut(wp * 3 * f)
            .for_each(|smp| smp[l1 * 3 * f..].fill(0.0));
        let merge_mask = self.drop.merge.map(|_| &self.mask2[..]);
        let (dw, db, dbias) = gelu_bn_bwd(
            &self.dh,
            RowMap { stride: wp, off: 0 },
            merge_mask,
            (b, l1, 3 * f),
            &self.act2,
            &self.dact2,
            &self.stats[1],
            &p.bn2,
            dz2,
            RowMap { stride: wp, off: 0 },
        )?;
        g.bn2 = (dw, db);
        g.conv_bias = dbias;
        laps.next(Stage::EncBwdBranchWeights);
        let dz2 = &self.dz2[..];
        // Branch weights: windowsᵀ · dz2 (column block j).
        for (j, &(k, o)) in BRANCHES.iter().enumerate() {
            let mut w = vec![0f32; k * f * f];
            mm_split_k(
                &mut w,
                View::rm(&self.ppad, o * f, b * wp, k * f)
                    .rs(STRIDE * f)
                    .t(),
                View::rm(dz2, j * f, b * wp, f).rs(3 * f),
            )?;
            g.conv[j] = w;
        }
        laps.next(Stage::EncBwdBranchInputs);
        // Branch inputs: per chunk of samples, columns dz2·Wᵀ then scattered back (col2im).
        let cw: usize = BRANCHES.iter().map(|(k, _)| k * f).sum();
        let dcols = grow(&mut self.dcols, b * wp * cw);
        // Zeroed chunk by chunk by the tasks that accumulate into it.
        let dppad = grow(&mut self.dppad, b * rp * f);
        let per = b.div_ceil(4 * rayon::current_num_threads()).max(1);
        dcols
            .par_chunks_mut(per * wp * cw)
            .zip(dppad.par_chunks_mut(per * rp * f))
            .enumerate()
            .try_for_each(|(ci, (cols, dp))| -> Result<()> {
                dp.fill(0.0);
                let ns = dp.len() / (rp * f);
                let mut col0 = 0;
                for (j, &(k, _)) in BRANCHES.iter().enumerate() {
                    mm(
                        cols,
                        Out::rm(col0, cw),
                        View::rm(dz2, (ci * per * wp) * 3 * f + j * f, ns * wp, f).rs(3 * f),
                        View::rm(&p.conv[j], 0, k * f, f).t(),
                        1.0,
                        false,
                        Parallelism::None,
                    )?;
                    col0 += k * f;
                }
                for si in 0..ns {
                    let dps = &mut dp[si * rp * f..(si + 1) * rp * f];
                    for t in 0..l1 {
                        let row = &cols[(si * wp + t) * cw..(si * wp + t + 1) * cw];
                        let mut col0 = 0;
                        for &(k, o) in &BRANCHES {
                            let dst = &mut dps[(STRIDE * t + o) * f..(STRIDE * t + o + k) * f];
                            for (a, v) in dst.iter_mut().zip(&row[col0..col0 + k * f]) {
                                *a += v;
                            }
                            col0 += k * f;
                        }
                    }
                }
                Ok(())
            })?;
        laps.next(Stage::EncBwdBnProjection);
        // Fold the circular padding back: dy1 [B·d, F].
        let dy1 = grow(&mut self.dy1, b * d * f);
        dy1.par_chunks_mut(d * f)
            .zip(self.dppad.par_chunks(rp * f))
            .for_each(|(o, dp)| {
                o.copy_from_slice(&dp[PAD * f..(PAD + d) * f]);
                for (a, v) in o[(d - PAD) * f..].iter_mut().zip(&dp[..PAD * f]) {
                    *a += v;
                }
                for (a, v) in o[..PAD * f]
                    .iter_mut()
                    .zip(&dp[(PAD + d) * f..(2 * PAD + d) * f])
                {
                    *a += v;
                }
            });
        let dz1 = grow(&mut self.dz1, b * d * f);
        let proj_mask = self.drop.proj.map(|_| &self.mask1[..]);
        let (dw, db, dbias) = gelu_bn_bwd(
            &self.dy1,
            RowMap { stride: d, off: 0 },
            proj_mask,
            (b, d, f),
            &self.act1,
            &self.dact1,
            &self.stats[0],
            &p.bn1,
            dz1,
            RowMap { stride: d, off: 0 },
        )?;
        g.bn1 = (dw, db);
        g.bp = dbias;
        laps.next(Stage::EncBwdAttention);
        // Attention and projection backward per sample.
        let na = dims.att();
        let nd = 6 * s * s + f * s;
        let datt = grow(&mut self.datt, b * nd);
        let rows = self.offs[b];
        let dy_parts = split_rows(grow(&mut self.dyc, rows * d), &self.lens, d);
        g.x = zeros(b * s * d);
        let (x, y, att, dz1) = (&self.x[..], &self.yc[..], &self.att[..], &self.dz1[..]);
        let (lens, offs) = (&self.lens[..], &self.offs[..]);
        let acc = datt
            .par_chunks_mut(nd)
            .zip(dy_parts.into_par_iter())
            .zip(g.x.par_chunks_mut(s * d))
            .enumerate()
            .map(|(bi, ((da, dyb), dxb))| {
                attention_bwd(
                    p,
                    &dims,
                    (x, y, dz1),
                    &att[bi * na..(bi + 1) * na],
                    (bi, lens[bi], offs[bi]),
                    da,
                    dyb,
                    dxb,
                )
            })
            .collect::<Result<Vec<AttAcc>>>()?
            .iter()
            .fold(AttAcc::zero(&dims), |mut a, o| {
                a.add(o);
                a
            });
        g.wp = acc.wp;
        g.w1 = acc.w1;
        g.g1 = acc.g1 as f32;
        g.g2 = acc.g2 as f32;
        laps.next(Stage::EncBwdXW2);
        // Y = X W2ᵀ on the words' rows: dX += dY W2 (scattered back), dW2 = dYᵀ X.
        let dyc = &self.dyc[..];
        let dxc = grow(&mut self.dxc, rows * d);
        mm(
            dxc,
            Out::rm(0, d),
            View::rm(dyc, 0, rows, d),
            View::rm(&p.w2, 0, d, d),
            1.0,
            false,
            par_for(rows, d, d),
        )?;
        g.x.par_chunks_mut(s * d).enumerate().for_each(|(bi, gx)| {
            let src = &self.dxc[offs[bi] * d..offs[bi + 1] * d];
            for (a, v) in gx.iter_mut().zip(src) {
                *a += v;
            }
        });
        g.w2 = vec![0f32; d * d];
        mm(
            &mut g.w2,
            Out::rm(0, d),
            View::rm(dyc, 0, rows, d).t(),
            View::rm(&self.xc, 0, rows, d),
            1.0,
            false,
            par_for(d, d, rows),
        )?;
        laps.next(Stage::EncBwdWordDropout);
        if self.drop.embed.is_some() {
            let lens = &self.lens;
            g.x.par_chunks_mut(s * d)
                .zip(self.mask0.par_chunks(s * d))
                .enumerate()
                .for_each(|(bi, (o, m))| {
                    let n = lens[bi] * d;
                    o[..n].iter_mut().zip(&m[..n]).for_each(|(a, m)| *a *= m);
                });
        }
        Ok(g)
    }
}
