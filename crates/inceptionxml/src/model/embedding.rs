//! The word-embedding table (MODEL.md §2): V×d, pad row (id 0) all zeros; with subwords
//! ([`crate::config::ModelConfig::subwords`]) the n-gram rows follow, starting at zero, and a
//! word's vector is its row plus the mean of its n-grams' rows ([`xmc::subwords`]).
//!
//! The table is a [`Var`] in the model's `VarMap` (so it is saved with the model) but it is never
//! part of the autograd graph: [`Embedding::lookup`] gathers rows from a detached view, and the
//! trainer updates the touched rows itself from the gradient with respect to the gathered input.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use xmc::subwords::Subwords;

use super::init;
use crate::error::{Error, Result};

/// The word table: V word rows, then the n-gram rows (if any), d wide.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Var,
    vocab_size: usize,
    /// Word rows plus n-gram rows.
    rows: usize,
    dim: usize,
}

impl Embedding {
    /// A table of `rows` rows (the first `vocab_size` the words') registered as `{name}`: every
    /// word row U(-0.25, 0.25) except the pad row; n-gram rows zero (a word starts as its own
    /// row).
    pub fn new(
        varmap: &VarMap,
        name: &str,
        (vocab_size, rows): (usize, usize),
        dim: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        let mut data = init::uniform(rng, vocab_size * dim, 0.25);
        data[..dim].fill(0.0);
        data.resize(rows.max(vocab_size) * dim, 0.0);
        let rows = rows.max(vocab_size);
        let table = init::register(varmap, name, (rows, dim), data, device)?;
        Ok(Embedding {
            table,
            vocab_size,
            rows,
            dim,
        })
    }

    /// The table variable.
    pub fn table(&self) -> &Var {
        &self.table
    }

    /// Overwrites the word rows from a V×d row-major slice (the n-gram rows are set to zero),
    /// or the whole table from a slice of every row; the pad row is forced to zero.
    pub fn set(&self, table: &[f32]) -> Result<()> {
        if table.len() != self.vocab_size * self.dim && table.len() != self.rows * self.dim {
            return Err(Error::Shape(format!(
                "embedding table has {} values, expected {}×{} = {}",
                table.len(),
                self.vocab_size,
                self.dim,
                self.vocab_size * self.dim
            )));
        }
        let mut data = table.to_vec();
        data.resize(self.rows * self.dim, 0.0);
        data[..self.dim].fill(0.0);
        let t = Tensor::from_vec(data, (self.rows, self.dim), self.table.device())?;
        self.table.set(&t)?;
        Ok(())
    }

    /// ids `[B, S]` (u32) with each position's n-gram rows -> `[B, S, d]`: the word's row plus
    /// the mean of its n-grams' rows, with no gradient path to the table. On the host a
    /// parallel loop over the positions; elsewhere [`Embedding::lookup_subwords_composed`].
    pub fn lookup_subwords(&self, ids: &Tensor, sub: &Subwords) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let host = ids.flatten_all()?.to_vec1::<u32>()?;
        self.check_subwords(&host, sub)?;
        let table = self.table.as_tensor();
        if !table.device().is_cpu() {
            return self.gather_weighted(&host, (b, s), sub);
        }
        let d = self.dim;
        let mut out = crate::ops::storage::zeros(host.len() * d);
        crate::ops::storage::with_host_f32(table, |t| {
            let row = |r: u32| &t[r as usize * d..(r as usize + 1) * d];
            out.par_chunks_mut(d.max(1))
                .zip(&host)
                .enumerate()
                .for_each(|(p, (o, &i))| {
                    if i == 0 {
                        return;
                    }
                    o.copy_from_slice(row(i));
                    let grams = sub.at(p);
                    let w = 1.0 / grams.len().max(1) as f32;
                    for &r in grams {
                        for (o, &x) in o.iter_mut().zip(row(r)) {
                            *o += w * x;
                        }
                    }
                })
        })?;
        Ok(Tensor::from_vec(out, (b, s, d), table.device())?)
    }

    /// [`Embedding::lookup_subwords`] as composed candle ops (any device): the weighted rows
    /// gathered, then added into their positions. The reference the host loop is tested against.
    pub fn lookup_subwords_composed(&self, ids: &Tensor, sub: &Subwords) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let host = ids.flatten_all()?.to_vec1::<u32>()?;
        self.check_subwords(&host, sub)?;
        self.gather_weighted(&host, (b, s), sub)
    }

    /// The composed lookup of host ids already checked ([`Embedding::check_subwords`]).
    fn gather_weighted(
        &self,
        host: &[u32],
        (b, s): (usize, usize),
        sub: &Subwords,
    ) -> Result<Tensor> {
        let l = sub.lookups(host)?;
        let dev = self.table.device();
        let n = l.rows.len();
        let zeros = Tensor::zeros((b * s, self.dim), candle_core::DType::F32, dev)?;
        if n == 0 {
            return Ok(zeros.reshape((b, s, self.dim))?);
        }
        let rows = Tensor::from_slice(&l.rows, n, dev)?;
        let pos = Tensor::from_slice(&l.positions, n, dev)?;
        let w = Tensor::from_slice(&l.weights, (n, 1), dev)?;
        let g = self
            .table
            .as_tensor()
            .detach()
            .index_select(&rows, 0)?
            .broadcast_mul(&w)?;
        Ok(zeros.index_add(&pos, &g, 0)?.reshape((b, s, self.dim))?)
    }

    /// Errors unless `ids` are word ids and `sub` holds n-gram rows of this table for the
    /// same positions.
    fn check_subwords(&self, ids: &[u32], sub: &Subwords) -> Result<()> {
        if sub.ptr.len() != ids.len() + 1 {
            return Err(Error::Shape(format!(
                "subwords of {} positions for {} ids",
                sub.ptr.len() - 1,
                ids.len()
            )));
        }
        self.check_ids(ids)?;
        let v = self.vocab_size as u32;
        if let Some(&bad) = sub.rows.iter().find(|&&r| r < v || r as usize >= self.rows) {
            return Err(Error::Shape(format!(
                "subword row {bad} outside the table's n-gram rows {v}..{}",
                self.rows
            )));
        }
        Ok(())
    }

    /// Errors unless every id is a word row.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            Some(&bad) => Err(Error::Shape(format!(
                "word id {bad} >= vocabulary size {}",
                self.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// ids `[B, S]` (u32) -> `[B, S, d]`, with no gradient path to the table.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let table = self.table.as_tensor();
        if table.device().is_cpu() && ids.device().is_cpu() {
            // A parallel row copy on the host (candle's index_select copies on one thread).
            let ids = ids.flatten_all()?.to_vec1::<u32>()?;
            self.check_ids(&ids)?;
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
        let e = Embedding::new(&vm, "emb", (5, 5), 4, &mut rng, &Device::Cpu).unwrap();
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

    #[test]
    fn subwords_add_the_mean_of_their_rows_and_match_the_composed_lookup() {
        use xmc::subwords::{SubwordParams, Subwords};
        let vm = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let p = SubwordParams {
            buckets: 7,
            minn: 3,
            maxn: 4,
        };
        let e = Embedding::new(&vm, "emb", (5, 12), 4, &mut rng, &Device::Cpu).unwrap();
        let table: Vec<Vec<f32>> = e.table().as_tensor().to_vec2().unwrap();
        assert!(
            table[5..].iter().flatten().all(|&x| x == 0.0),
            "n-gram rows start at 0"
        );
        // Non-zero n-gram rows to see them in the sum.
        let data: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
        e.set(&data).unwrap();
        let sub = Subwords::of_texts(&["kakor bullar", "te"], 3, &p, 5);
        let ids = Tensor::new(&[[2u32, 4, 0], [1, 0, 0]], &Device::Cpu).unwrap();
        let x: Vec<Vec<Vec<f32>>> = e.lookup_subwords(&ids, &sub).unwrap().to_vec3().unwrap();
        let composed: Vec<Vec<Vec<f32>>> = e
            .lookup_subwords_composed(&ids, &sub)
            .unwrap()
            .to_vec3()
            .unwrap();
        let table: Vec<Vec<f32>> = e.table().as_tensor().to_vec2().unwrap();
        let grams = sub.at(0);
        assert_eq!(grams.len(), 5 + 4); // `<kakor>`, 7 characters: five 3-grams, four 4-grams
        for j in 0..4 {
            let want = table[2][j]
                + grams.iter().map(|&r| table[r as usize][j]).sum::<f32>() / grams.len() as f32;
            assert!((x[0][0][j] - want).abs() < 1e-6);
        }
        for (a, b) in x
            .iter()
            .flatten()
            .flatten()
            .zip(composed.iter().flatten().flatten())
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert!(x[0][2].iter().all(|&v| v == 0.0), "padding stays zero");
        // A mismatched layout or a foreign row is refused.
        let other = Subwords::of_texts(&["kakor"], 2, &p, 5);
        assert!(e.lookup_subwords(&ids, &other).is_err());
        let foreign = Subwords::of_texts(&["kakor bullar", "te"], 3, &p, 50);
        assert!(e.lookup_subwords(&ids, &foreign).is_err());
    }
}
