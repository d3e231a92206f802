//! TEMP stand-in (the real module lands from the `text` branch): random tables only.

use std::fmt;
use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::vocab::Vocab;

/// Pre-trained word vectors.
pub struct WordVectors {
    pub dim: usize,
}

impl WordVectors {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Err(Error::param(format!(
            "{}: word vectors not supported by the stand-in",
            path.as_ref().display()
        )))
    }
}

/// How many vocabulary words had a pre-trained vector.
pub struct Coverage {
    pub found: usize,
    pub total: usize,
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} words pre-trained", self.found, self.total)
    }
}

/// V×dim table: pad row zero, others U(-0.25, 0.25).
pub fn init_table(
    vocab: &Vocab,
    dim: usize,
    _vectors: Option<&WordVectors>,
    seed: u64,
) -> (Vec<f32>, Coverage) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut t: Vec<f32> = (0..vocab.len() * dim)
        .map(|_| rng.gen_range(-0.25f32..0.25))
        .collect();
    t[..dim].fill(0.0);
    (
        t,
        Coverage {
            found: 0,
            total: vocab.len(),
        },
    )
}
