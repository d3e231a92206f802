//! The word-embedding table (MODEL.md §2): V×d, pad row (id 0) all zeros.
//!
//! The table is a [`Var`] in the model's `VarMap` (so it is saved with the model) but it is never
//! part of the autograd graph: [`Embedding::lookup`] gathers rows from a detached view, and the
//! trainer updates the touched rows itself from the gradient with respect to the gathered input.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::init;
use crate::error::{Error, Result};

/// The V×d word table.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Var,
    vocab_size: usize,
    dim: usize,
}

impl Embedding {
    /// A table with every row U(-0.25, 0.25) except the pad row, registered as `{name}`.
    pub fn new(
        varmap: &VarMap,
        name: &str,
        vocab_size: usize,
        dim: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let mut data = init::uniform(rng, vocab_size * dim, 0.25);
        data[..dim].fill(0.0);
        let table = init::register(varmap, name, (vocab_size, dim), data, device)?;
        Ok(Embedding {
            table,
            vocab_size,
            dim,
        })
    }

    /// The table variable.
    pub fn table(&self) -> &Var {
        &self.table
    }

    /// Overwrites the whole table from a V×d row-major slice; the pad row is forced to zero.
    pub fn set(&self, table: &[f32]) -> Result<()> {
        if table.len() != self.vocab_size * self.dim {
            return Err(Error::Shape(format!(
                "embedding table has {} values, expected {}×{} = {}",
                table.len(),
                self.vocab_size,
                self.dim,
                self.vocab_size * self.dim
            )));
        }
        let mut data = table.to_vec();
        data[..self.dim].fill(0.0);
        let t = Tensor::from_vec(data, (self.vocab_size, self.dim), self.table.device())?;
        self.table.set(&t)?;
        Ok(())
    }

    /// ids `[B, S]` (u32) -> `[B, S, d]`, with no gradient path to the table.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let table = self.table.as_tensor();
        if table.device().is_cpu() && ids.device().is_cpu() {
            // A parallel row copy on the host (candle's index_select copies on one thread).
            let ids = ids.flatten_all()?.to_vec1::<u32>()?;
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
                return Err(Error::Shape(format!(
                    "word id {bad} >= vocabulary size {}",
                    self.vocab_size
                )));
            }
            let d = self.dim;
            let mut out = crate::ops::storage::zeros(ids.len() * d);
            crate::ops::storage::with_host_f32(table, |t| {
                out.par_chunks_mut(d.max(1)).zip(&ids).for_each(|(o, &i)| {
                    o.copy_from_slice(&t[i as usize * d..(i as usize + 1) * d])
                });
            })?;
            return Ok(Tensor::from_vec(out, (b, s, d), table.device())?);
        }
        let flat = ids.flatten_all()?;
        let rows = self.table.as_tensor().detach().index_select(&flat, 0)?;
        Ok(rows.reshape((b, s, self.dim))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pad_row_is_zero_and_lookup_gathers_rows() {
        let vm = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let e = Embedding::new(&vm, "emb", 5, 4, &mut rng, &Device::Cpu).unwrap();
        let ids = Tensor::new(&[[0u32, 2], [4, 0]], &Device::Cpu).unwrap();
        let x = e.lookup(&ids).unwrap();
        assert_eq!(x.dims(), &[2, 2, 4]);
        let v: Vec<Vec<Vec<f32>>> = x.to_vec3().unwrap();
        assert!(v[0][0].iter().all(|&a| a == 0.0));
        assert!(v[1][1].iter().all(|&a| a == 0.0));
        let table: Vec<Vec<f32>> = e.table().as_tensor().to_vec2().unwrap();
        assert_eq!(v[0][1], table[2]);
        assert_eq!(v[1][0], table[4]);
        assert!(table[1].iter().all(|a| a.abs() < 0.25 && *a != 0.0));
        // set forces the pad row to zero.
        e.set(&[1.0; 20]).unwrap();
        let table: Vec<Vec<f32>> = e.table().as_tensor().to_vec2().unwrap();
        assert_eq!(table[0], vec![0.0; 4]);
        assert_eq!(table[3], vec![1.0; 4]);
        assert!(e.set(&[1.0; 19]).is_err());
        // no autograd to the table
        assert!(!x.is_variable());
        assert!(x
            .backward()
            .is_ok_and(|g| g.get(e.table().as_tensor()).is_none()));
    }
}
