//! Timing of the model's forward and forward+backward passes (used by an `#[ignore]`d test;
//! run it with `cargo test --release -p inceptionxml --lib model -- --ignored --nocapture`).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{InceptionXml, ModelConfig};
use crate::error::Result;

/// Median milliseconds per call.
#[derive(Debug, Clone, Copy)]
pub struct BenchTimes {
    /// Training-mode forward (dropout, batch statistics, power iterations) of one batch.
    pub forward_ms: f64,
    /// Training-mode forward plus backward (loss = mean of logits · fixed random weights, whose
    /// own cost is negligible; a real BCE adds a few elementwise passes over B×L).
    pub forward_backward_ms: f64,
    /// Evaluation-mode forward of one batch.
    pub eval_forward_ms: f64,
}

/// Times a freshly initialised model on random ids (after [`crate::runtime::tune_runtime`]):
/// `iters` repetitions after one warm-up,
/// gradient taken with respect to the trainable parameters and the embedded input (as the
/// trainer does).
pub fn bench_forward_backward(
    cfg: &ModelConfig,
    batch: usize,
    iters: usize,
    device: &Device,
) -> Result<BenchTimes> {
    crate::runtime::tune_runtime();
    let varmap = VarMap::new();
    let model = InceptionXml::new(cfg, &varmap, device, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * cfg.seq_len)
        .map(|i| {
            // ~10 real words per text, then padding.
            if i % cfg.seq_len < 10 {
                rng.gen_range(1..cfg.vocab_size as u32)
            } else {
                0
            }
        })
        .collect();
    let ids = Tensor::from_vec(ids, (batch, cfg.seq_len), device)?;
    let r: Vec<f32> = (0..batch * cfg.n_labels)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let r = Tensor::from_vec(r, (batch, cfg.n_labels), device)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up
        let mut t = Vec::with_capacity(iters);
        for _ in 0..iters.max(1) {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(t))
    };
    let train = batch > 1;
    let forward_ms = time(&mut || {
        let x = model.embed(&ids)?;
        let h = model.encode(&x, train)?;
        let _ = model.head(&h, train)?;
        Ok(())
    })?;
    let forward_backward_ms = time(&mut || {
        let x = Var::from_tensor(&model.embed(&ids)?)?;
        let h = model.encode(x.as_tensor(), train)?;
        let z = model.head(&h, train)?;
        let grads = (z * &r)?.mean_all()?.backward()?;
        debug_assert!(grads.get(x.as_tensor()).is_some());
        Ok(())
    })?;
    let eval_forward_ms = time(&mut || {
        let _ = model.forward(&ids, false)?;
        Ok(())
    })?;
    Ok(BenchTimes {
        forward_ms,
        forward_backward_ms,
        eval_forward_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "timing; run in release with --ignored --nocapture"]
    fn bench_model() {
        let threads = candle_core::utils::get_num_threads();
        for l in [736usize, 22_933] {
            let cfg = ModelConfig::new(50_000, l);
            let t = bench_forward_backward(&cfg, 128, 10, &Device::Cpu).unwrap();
            eprintln!(
                "L={l} B=128 threads={threads}: train forward {:.1} ms, forward+backward {:.1} ms ({:.0} samples/s), eval forward {:.1} ms",
                t.forward_ms,
                t.forward_backward_ms,
                128e3 / t.forward_backward_ms,
                t.eval_forward_ms
            );
            let t1 = bench_forward_backward(&cfg, 1, 50, &Device::Cpu).unwrap();
            eprintln!("L={l} B=1: eval forward {:.2} ms", t1.eval_forward_ms);
        }
    }
}

#[cfg(test)]
mod profile {
    use super::*;
    use crate::ops::dropout::Dropout;
    use crate::ops::im2col;

    /// CPU time of all this process's threads, in ms (robust to other processes' load).
    fn cpu_ms() -> f64 {
        let mut t = 0u64;
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let s = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
            t += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        t as f64 / 1e6
    }

    /// Prints wall and CPU ms per call; returns the CPU ms.
    fn ms(f: &mut dyn FnMut() -> Tensor, n: usize) -> String {
        f();
        let (s, c) = (Instant::now(), cpu_ms());
        for _ in 0..n {
            f();
        }
        format!(
            "wall {:.1} ms, cpu {:.1} ms",
            s.elapsed().as_secs_f64() * 1e3 / n as f64,
            (cpu_ms() - c) / n as f64
        )
    }

    #[test]
    #[ignore = "per-stage timing"]
    fn profile_stages() {
        crate::runtime::tune_runtime();
        let cfg = ModelConfig::new(1000, 22_933);
        let vm = VarMap::new();
        let m = InceptionXml::new(&cfg, &vm, &Device::Cpu, 0).unwrap();
        let (att, proj, inc, head) = m.layers();
        let head = head.unwrap();
        let dev = Device::Cpu;
        let b = 128;
        let x = Tensor::rand(-0.2f32, 0.2, (b, 32, 300), &dev).unwrap();
        let n = 5;
        let t = true;
        let dr = Dropout::new(0, 0);
        eprintln!(
            "dropout x {}",
            ms(&mut || dr.apply(&x, 0.25, true).unwrap(), n)
        );
        eprintln!("mixing {}", ms(&mut || att.mixing(&x, t).unwrap(), n));
        let mix = att.mixing(&x, t).unwrap();
        eprintln!(
            "  xxt {}",
            ms(&mut || x.matmul(&x.t().unwrap()).unwrap(), n)
        );
        let w2 = att.dims.sn.weight(false).unwrap();
        eprintln!(
            "  xw2 {}",
            ms(&mut || x.broadcast_matmul(&w2.t().unwrap()).unwrap(), n)
        );
        eprintln!("  rr {}", ms(&mut || mix.matmul(&mix).unwrap(), n));
        eprintln!(
            "proj {}",
            ms(&mut || proj.forward(&x, Some(&mix), t).unwrap(), n)
        );
        let wp = proj.weight.as_tensor().broadcast_as((b, 32, 32)).unwrap();
        eprintln!("  wp m {}", ms(&mut || wp.matmul(&mix).unwrap(), n));
        let tt = wp.matmul(&mix).unwrap();
        eprintln!(
            "  xt tt {}",
            ms(&mut || x.t().unwrap().matmul(&tt.t().unwrap()).unwrap(), n)
        );
        eprintln!("  tt x {}", ms(&mut || tt.matmul(&x).unwrap(), n));
        let p = proj.forward(&x, Some(&mix), t).unwrap();
        eprintln!(
            "  gelu_bn p {}",
            ms(&mut || proj.bn.forward_gelu(&p, t).unwrap(), n)
        );
        eprintln!("branches {}", ms(&mut || inc.branches(&p, t).unwrap(), n));
        let win = im2col::Windows::new(300, 16, 4, 6).unwrap();
        eprintln!(
            "  im2col {}",
            ms(&mut || im2col::im2col(&p, win).unwrap(), n)
        );
        let cols = im2col::im2col(&p, win).unwrap();
        let w16 = Tensor::rand(0f32, 1., (512, 32), &dev).unwrap();
        let w16t = Tensor::rand(0f32, 1., (32, 512), &dev)
            .unwrap()
            .t()
            .unwrap();
        eprintln!("  gemm k16 {}", ms(&mut || cols.matmul(&w16).unwrap(), n));
        eprintln!(
            "  gemm k16 wt {}",
            ms(&mut || cols.matmul(&w16t).unwrap(), n)
        );
        let w8 = w16.narrow(0, 0, 256).unwrap();
        eprintln!(
            "  gemm k8 narrow {}",
            ms(
                &mut || cols.narrow(1, 128, 256).unwrap().matmul(&w8).unwrap(),
                n
            )
        );
        let z = cols.matmul(&w16).unwrap();
        let zz = Tensor::cat(&[&z, &z, &z], 1).unwrap();
        eprintln!(
            "  cat3 {}",
            ms(&mut || Tensor::cat(&[&z, &z, &z], 1).unwrap(), n)
        );
        eprintln!(
            "  gelu_bn {}",
            ms(&mut || inc.merge_bn.forward_gelu(&zz, t).unwrap(), n)
        );
        let h = inc.branches(&p, t).unwrap();
        eprintln!("final {}", ms(&mut || inc.final_layer(&h, t).unwrap(), n));
        let hf = inc.final_layer(&h, t).unwrap();
        eprintln!("head {}", ms(&mut || head.forward(&hf, t).unwrap(), n));
        let hv = Var::from_tensor(&hf).unwrap();
        eprintln!(
            "head fwd+bwd {}",
            ms(
                &mut || {
                    let z = head.forward(hv.as_tensor(), t).unwrap();
                    z.sum_all().unwrap().backward().unwrap();
                    z
                },
                n
            )
        );
        let xv = Var::from_tensor(&x).unwrap();
        let fb = |name: &str, inp: &Tensor, f: &dyn Fn(&Tensor) -> Tensor| {
            let v = Var::from_tensor(inp).unwrap();
            eprintln!(
                "{name} fwd+bwd {}",
                ms(
                    &mut || {
                        let y = f(v.as_tensor());
                        y.sum_all().unwrap().backward().unwrap();
                        y
                    },
                    n
                )
            );
        };
        fb("dropout", &x, &|v| dr.apply(v, 0.25, true).unwrap());
        fb("mixing", &x, &|v| att.mixing(v, t).unwrap());
        fb("mixing+proj", &x, &|v| {
            proj.forward(v, Some(&att.mixing(v, t).unwrap()), t)
                .unwrap()
        });
        fb("proj matmuls", &x, &|v| {
            v.t().unwrap().matmul(&tt.t().unwrap()).unwrap()
        });
        fb("gelu_bn p", &p, &|v| proj.bn.forward_gelu(v, t).unwrap());
        fb("branches", &p, &|v| inc.branches(v, t).unwrap());
        fb("im2col", &p, &|v| im2col::im2col(v, win).unwrap());
        fb("final", &h, &|v| inc.final_layer(v, t).unwrap());
        eprintln!("encode fwd {}", ms(&mut || m.encode(&x, t).unwrap(), n));
        eprintln!(
            "encode fwd+bwd {}",
            ms(
                &mut || {
                    let z = m.encode(xv.as_tensor(), t).unwrap();
                    z.sum_all().unwrap().backward().unwrap();
                    z
                },
                n
            )
        );
    }
}

#[cfg(test)]
mod latency {
    use super::*;

    #[test]
    #[ignore = "batch-1 timing"]
    fn batch1_stages() {
        crate::runtime::tune_runtime();
        for l in [736usize, 22_933] {
            let cfg = ModelConfig::new(1000, l);
            let vm = VarMap::new();
            let m = InceptionXml::new(&cfg, &vm, &Device::Cpu, 0).unwrap();
            let ids = Tensor::zeros((1, 32), candle_core::DType::U32, &Device::Cpu).unwrap();
            let x = m.embed(&ids).unwrap();
            let h = m.encode(&x, false).unwrap();
            let time = |f: &dyn Fn()| {
                f();
                let s = Instant::now();
                for _ in 0..50 {
                    f();
                }
                s.elapsed().as_secs_f64() * 1e3 / 50.0
            };
            let enc = time(&|| {
                m.encode(&x, false).unwrap();
            });
            let head = time(&|| {
                m.head(&h, false).unwrap();
            });
            let hd = m.layers().3.unwrap();
            let feats = hd.features(&h, false).unwrap();
            let gemv = time(&|| {
                feats.matmul(hd.out_weight.as_tensor()).unwrap();
            });
            let (att, proj, inc, _) = m.layers();
            let mix = att.mixing(&x, false).unwrap();
            let p = proj.forward(&x, Some(&mix), false).unwrap();
            let br = inc.branches(&p, false).unwrap();
            let t_mix = time(&|| {
                att.mixing(&x, false).unwrap();
            });
            let t_proj = time(&|| {
                proj.forward(&x, Some(&mix), false).unwrap();
            });
            let t_br = time(&|| {
                inc.branches(&p, false).unwrap();
            });
            let t_fin = time(&|| {
                inc.final_layer(&br, false).unwrap();
            });
            eprintln!(
                "L={l} B=1: encode {enc:.3} ms (attention {t_mix:.3}, projection {t_proj:.3}, branches {t_br:.3}, final {t_fin:.3}), head {head:.3} ms (classifier GEMV {gemv:.3} ms)"
            );
        }
    }
}
