//! Fused, in-place Adam for dense parameters (PyTorch `torch.optim.Adam` semantics, no weight
//! decay, no amsgrad).
//!
//! For each variable, with per-variable step `t` (counted when the variable has a gradient):
//! ```text
//! m ← β1·m + (1 − β1)·g        v ← β2·v + (1 − β2)·g²
//! p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//! `lr` and `β1` are passed at every step (the one-cycle schedule moves both; like PyTorch, the
//! bias correction uses the current β1). The first and second moments live in host memory next
//! to the op and the parameter is updated through candle's in-place op interface: one pass over
//! param, grad, m and v, no full-size temporaries, chunks of large tensors in parallel.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::storage::{f32_slice, f32_slice_mut};

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// Adam's fixed constants (β1 and lr come with every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConsts {
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConsts {
    fn default() -> Self {
        AdamConsts {
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The per-step scalars of one Adam update, precomputed in f64.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamCoef {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    /// lr / (1 − β1ᵗ)
    pub(crate) step_size: f32,
    /// 1 / √(1 − β2ᵗ)
    pub(crate) inv_sqrt_bc2: f32,
    pub(crate) eps: f32,
}

#[cfg(feature = "cuda")]
impl AdamCoef {
    /// Pushes the per-step scalars (the last arguments of `adam_f32` and `row_adam_f32`).
    pub(crate) fn push_args<'a>(
        &'a self,
        b: &mut candle_core::cuda_backend::cudarc::driver::LaunchArgs<'a>,
    ) {
        use crate::ops::cuda::PushKernelArg;
        b.arg(&self.beta1);
        b.arg(&self.beta2);
        b.arg(&self.step_size);
        b.arg(&self.inv_sqrt_bc2);
        b.arg(&self.eps);
    }
}

impl AdamCoef {
    pub(crate) fn new(lr: f64, beta1: f64, c: AdamConsts, t: u64) -> Self {
        let t = t.max(1) as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        AdamCoef {
            beta1: beta1 as f32,
            beta2: c.beta2 as f32,
            step_size: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: c.eps as f32,
        }
    }

    /// Updates one run of parameters with their gradients and moments.
    #[inline]
    pub(crate) fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (self.beta1, self.beta2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= self.step_size * *m / (v.sqrt() * self.inv_sqrt_bc2 + self.eps);
        }
    }
}

/// The in-place Adam op: dst = the parameter, src = its gradient, the moments borrowed from the
/// optimiser (host slices on the CPU, device tensors on a GPU).
struct AdamKernel<'a> {
    coef: AdamCoef,
    moments: MomentsMut<'a>,
}

impl InplaceOp2 for AdamKernel<'_> {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32_slice_mut(s1, l1, "adam parameter")?;
        let g = f32_slice(s2, l2, "adam gradient")?;
        let (mut m, mut v) = self.moments.host("adam")?;
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "adam: parameter has {} elements, gradient {}, state {}",
                p.len(),
                g.len(),
                m.len()
            );
        }
        let coef = self.coef;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| coef.apply(p, g, m, v));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        use crate::ops::cuda::{grid, launch_kernel, view, view_mut, with_moments, Kernel};
        let (m, v) = self.moments.device("adam")?;
        let k = Kernel::new(&s1.device.clone(), "adam_f32")?;
        let g = view(s2, l2, "adam gradient")?;
        let n = g.len();
        let c = self.coef;
        let mut p = view_mut(s1, l1, "adam parameter")?;
        if p.len() != n {
            candle_core::bail!("adam: parameter has {} values, gradient {n}", p.len());
        }
        with_moments(
            m,
            v,
            n,
            |m, v| launch_kernel!(k, grid(n); &mut p, &g, m, v, &n; adam c),
        )
    }
}

/// A parameter's moments as an op borrows them for one update.
pub(crate) enum MomentsMut<'a> {
    Host {
        m: RefCell<&'a mut [f32]>,
        v: RefCell<&'a mut [f32]>,
    },
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Device { m: &'a Tensor, v: &'a Tensor },
}

/// Borrowed host moments.
type HostMoments<'b, 'a> = (
    std::cell::RefMut<'b, &'a mut [f32]>,
    std::cell::RefMut<'b, &'a mut [f32]>,
);

impl<'a> MomentsMut<'a> {
    /// The host moments; an error when they live on a GPU (the parameter is on the CPU).
    pub(crate) fn host<'b>(&'b self, op: &str) -> candle_core::Result<HostMoments<'b, 'a>> {
        match self {
            MomentsMut::Host { m, v } => Ok((m.borrow_mut(), v.borrow_mut())),
            MomentsMut::Device { .. } => {
                candle_core::bail!("{op}: the moments are on a GPU but the parameter is not")
            }
        }
    }

    /// The device moments; an error when they live in host memory (the parameter is on a GPU).
    #[cfg(feature = "cuda")]
    pub(crate) fn device(&self, op: &str) -> candle_core::Result<(&'a Tensor, &'a Tensor)> {
        match self {
            MomentsMut::Device { m, v } => Ok((m, v)),
            MomentsMut::Host { .. } => {
                candle_core::bail!(
                    "{op}: the moments are in host memory but the parameter is on a GPU"
                )
            }
        }
    }
}

/// First and second moments of a parameter: host vectors for a CPU parameter, tensors on the
/// parameter's device otherwise.
#[derive(Debug)]
pub(crate) enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

impl Moments {
    /// Zero moments for a parameter of `shape` on `device`.
    pub(crate) fn zeros(shape: &Shape, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            Ok(Self::host_zeros(shape.elem_count()))
        } else {
            Ok(Moments::Device {
                m: Tensor::zeros(shape, DType::F32, device)?,
                v: Tensor::zeros(shape, DType::F32, device)?,
            })
        }
    }

    /// `n` zero moments in host memory.
    pub(crate) fn host_zeros(n: usize) -> Self {
        Moments::Host {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// The moments as CPU tensors of `shape` (for saving).
    pub(crate) fn to_tensors(&self, shape: &Shape) -> Result<(Tensor, Tensor)> {
        let cpu = Device::Cpu;
        Ok(match self {
            Moments::Host { m, v } => (
                Tensor::from_slice(m, shape, &cpu)?,
                Tensor::from_slice(v, shape, &cpu)?,
            ),
            Moments::Device { m, v } => (m.to_device(&cpu)?, v.to_device(&cpu)?),
        })
    }

    /// Replaces the moments by `m` and `v` (same shape, checked by the caller).
    pub(crate) fn set(&mut self, m: &Tensor, v: &Tensor) -> Result<()> {
        match self {
            Moments::Host { m: hm, v: hv } => {
                *hm = m.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                *hv = v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            }
            Moments::Device { m: dm, v: dv } => {
                let dev = dm.device().clone();
                *dm = m.to_dtype(DType::F32)?.to_device(&dev)?.contiguous()?;
                *dv = v.to_dtype(DType::F32)?.to_device(&dev)?.contiguous()?;
            }
        }
        Ok(())
    }

    /// The first moment as host values (tests).
    #[cfg(test)]
    pub(crate) fn m_host(&self) -> Vec<f32> {
        match self {
            Moments::Host { m, .. } => m.clone(),
            Moments::Device { m, .. } => m.flatten_all().unwrap().to_vec1().unwrap(),
        }
    }

    /// Borrows the moments for one op.
    pub(crate) fn borrow_mut(&mut self) -> MomentsMut<'_> {
        match self {
            Moments::Host { m, v } => MomentsMut::Host {
                m: RefCell::new(m),
                v: RefCell::new(v),
            },
            Moments::Device { m, v } => MomentsMut::Device { m, v },
        }
    }

    /// Writes every page of host moments (they start as untouched zero pages).
    pub(crate) fn make_resident(&mut self) {
        if let Moments::Host { m, v } = self {
            for buf in [m, v] {
                for x in buf.iter_mut().step_by(1024) {
                    *x = 0.0;
                }
            }
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
    step: u64,
}

/// Adam over a fixed list of named dense variables.
pub struct Adam {
    slots: Vec<Slot>,
    consts: AdamConsts,
}

impl Adam {
    /// Zero moments for each variable (f32), on the variable's device.
    pub fn new(vars: Vec<(String, Var)>, consts: AdamConsts) -> Result<Self> {
        let mut slots = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if var.dtype() != DType::F32 {
                return Err(Error::Config(format!(
                    "adam: {name} is {:?}, only f32 is supported",
                    var.dtype()
                )));
            }
            let moments = Moments::zeros(var.shape(), var.device())?;
            slots.push(Slot {
                name,
                var,
                moments,
                step: 0,
            });
        }
        Ok(Adam { slots, consts })
    }

    /// One update of every variable that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64, beta1: f64) -> Result<()> {
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = g.contiguous()?;
            slot.step += 1;
            let coef = AdamCoef::new(lr, beta1, self.consts, slot.step);
            let kernel = AdamKernel {
                coef,
                moments: slot.moments.borrow_mut(),
            };
            slot.var.as_tensor().inplace_op2(&g, &kernel)?;
        }
        Ok(())
    }

    /// The largest per-variable step count (the number of updates so far).
    pub fn steps(&self) -> u64 {
        self.slots.iter().map(|s| s.step).max().unwrap_or(0)
    }

    /// The optimiser state as named tensors (`adam.m.<var>`, `adam.v.<var>`, and the per-variable
    /// step as `adam.step.<var>`, a u32 pair [low, high]) for saving.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let dev = Device::Cpu;
        let mut out = HashMap::new();
        for s in &self.slots {
            let (m, v) = s.moments.to_tensors(s.var.shape())?;
            out.insert(format!("adam.m.{}", s.name), m);
            out.insert(format!("adam.v.{}", s.name), v);
            out.insert(
                format!("adam.step.{}", s.name),
                Tensor::from_slice(&[s.step as u32, (s.step >> 32) as u32], 2, &dev)?,
            );
        }
        Ok(out)
    }

    /// Restores the state written by [`Adam::state_tensors`]; `file` names the source in errors.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, file: &str) -> Result<()> {
        for s in &mut self.slots {
            let get = |key: String| {
                state.get(&key).ok_or_else(|| Error::Model {
                    path: file.to_string(),
                    msg: format!("missing tensor {key}"),
                })
            };
            let m = get(format!("adam.m.{}", s.name))?;
            let v = get(format!("adam.v.{}", s.name))?;
            for (key, t) in [("m", m), ("v", v)] {
                if t.shape() != s.var.shape() {
                    return Err(Error::Model {
                        path: file.to_string(),
                        msg: format!(
                            "adam.{key}.{} has shape {:?}, the parameter {:?}",
                            s.name,
                            t.dims(),
                            s.var.dims()
                        ),
                    });
                }
            }
            s.moments.set(m, v)?;
            let st: Vec<u32> = get(format!("adam.step.{}", s.name))?
                .flatten_all()?
                .to_dtype(DType::U32)?
                .to_vec1()?;
            if st.len() != 2 {
                return Err(Error::Model {
                    path: file.to_string(),
                    msg: format!("adam.step.{} must hold 2 values", s.name),
                });
            }
            s.step = st[0] as u64 | ((st[1] as u64) << 32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal transcription of PyTorch's single-tensor Adam step.
    fn reference(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, b1: f64, t: i32) {
        let b2 = 0.999f64;
        for i in 0..p.len() {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let denom = v[i].sqrt() / bc2.sqrt() + 1e-8;
            p[i] -= lr / bc1 * m[i] / denom;
        }
    }

    #[test]
    fn matches_pytorch_adam_with_changing_lr_and_beta1() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) / 7.0).collect();
        let var = Var::from_slice(&init, (3, 4), &dev).unwrap();
        let mut opt = Adam::new(vec![("w".into(), var.clone())], AdamConsts::default()).unwrap();
        let mut p: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0; 12], vec![0.0; 12]);
        for t in 1..=5 {
            // loss = Σ c_i p_i² → g = 2 c_i p_i
            let c: Vec<f32> = (0..12).map(|i| 0.5 + (i * t) as f32 % 3.0).collect();
            let ct = Tensor::from_slice(&c, (3, 4), &dev).unwrap();
            let loss = (var.as_tensor().sqr().unwrap() * &ct)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<f64> = (0..12).map(|i| 2.0 * c[i] as f64 * p[i]).collect();
            let lr = 0.01 * t as f64;
            let b1 = 0.95 - 0.02 * t as f64;
            opt.step(&grads, lr, b1).unwrap();
            reference(&mut p, &mut m, &mut v, &g, lr, b1, t);
            let got = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for i in 0..12 {
                assert!((got[i] as f64 - p[i]).abs() < 1e-5, "t={t} i={i}");
            }
        }
        assert_eq!(opt.steps(), 5);
    }

    #[test]
    fn state_round_trip() {
        let dev = Device::Cpu;
        let var = Var::from_slice(&[1f32, 2.0, 3.0], 3, &dev).unwrap();
        let mut opt = Adam::new(vec![("w".into(), var.clone())], AdamConsts::default()).unwrap();
        let grads = var
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&grads, 0.1, 0.9).unwrap();
        let st = opt.state_tensors().unwrap();
        let mut other = Adam::new(vec![("w".into(), var.clone())], AdamConsts::default()).unwrap();
        other.load_state(&st, "opt.safetensors").unwrap();
        assert_eq!(other.steps(), 1);
        assert_eq!(
            other.slots[0].moments.m_host(),
            opt.slots[0].moments.m_host()
        );
        let mut bad = st.clone();
        bad.insert(
            "adam.m.w".into(),
            Tensor::zeros(4, DType::F32, &dev).unwrap(),
        );
        let e = other
            .load_state(&bad, "opt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("opt.safetensors") && e.contains("adam.m.w"),
            "{e}"
        );
    }
}
