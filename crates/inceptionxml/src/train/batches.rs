//! Mini-batches: a seeded shuffle per epoch, and batch tensors (ids `[B, S]` u32, dense
//! targets `[B, L]` f32 — or `[B, C]` cluster targets for InceptionXML+, which never builds
//! anything of size B × L) built on a background thread one batch ahead of the training step.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xmc::shortlist::ClusterIndex;
use xmc::subwords::Subwords;
use xmc::SparseMatrix;

use crate::error::{Error, Result};

/// The order of the `n` training rows in `epoch` (0-based): a Fisher–Yates shuffle seeded by
/// (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Number of batches per epoch. A remainder of a single row joins the last full batch (batch
/// norm cannot normalise one sample); any other remainder is a smaller last batch.
pub fn steps_per_epoch(n: usize, batch_size: usize) -> usize {
    let full = n / batch_size;
    match n % batch_size {
        0 | 1 => full.max(usize::from(n > 0 && full == 0)),
        _ => full + 1,
    }
}

/// One mini-batch.
pub struct Batch {
    /// `[B, S]` u32 token ids.
    pub ids: Tensor,
    /// The same ids on the host, row-major (for scattering the embedding gradient).
    pub ids_host: Vec<u32>,
    /// `[B, L]` f32, 1 for the positive labels of each row; with clusters, `[B, C]`, 1 for the
    /// clusters holding a positive label.
    pub targets: Tensor,
    /// The positive labels of each row (increasing).
    pub positives: Vec<Vec<u32>>,
    /// Number of rows.
    pub len: usize,
    /// Each position's n-gram rows (models with subwords).
    pub subwords: Option<Subwords>,
}

/// Builds the batch of `rows` from the encoded texts (`ids`: N×S) and the label matrix; with
/// `clusters`, the targets are the rows' positive clusters.
pub fn make_batch(
    ids: &[u32],
    seq_len: usize,
    labels: &SparseMatrix,
    rows: &[usize],
    clusters: Option<&ClusterIndex>,
    device: &Device,
) -> Result<Batch> {
    let b = rows.len();
    let l = clusters.map_or(labels.n_cols, |c| c.n_clusters());
    let mut ids_host = Vec::with_capacity(b * seq_len);
    let mut targets = vec![0f32; b * l];
    let mut positives = Vec::with_capacity(b);
    for (i, &r) in rows.iter().enumerate() {
        ids_host.extend_from_slice(&ids[r * seq_len..(r + 1) * seq_len]);
        for &c in labels.row_indices(r) {
            let col = clusters.map_or(c as usize, |ix| ix.assign[c as usize] as usize);
            targets[i * l + col] = 1.0;
        }
        positives.push(labels.row_indices(r).to_vec());
    }
    let batch = Batch {
        ids: Tensor::from_slice(&ids_host, (b, seq_len), device)?,
        targets: Tensor::from_vec(targets, (b, l), device)?,
        positives,
        ids_host,
        len: b,
        subwords: None,
    };
    // On a GPU the copies were queued on this (loader) thread's stream: let them land before the
    // batch is handed to the training thread, which computes on its own stream.
    device.synchronize()?;
    Ok(batch)
}

/// An epoch's batches, produced by a background thread one batch ahead. If that thread fails
/// (a panic) or its channel closes before the last batch, the iterator's next item is an
/// [`Error::BatchLoader`] instead of an early end: an epoch is never silently short.
pub struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    /// Batches the epoch has ([`steps_per_epoch`]) and batches handed out so far.
    planned: usize,
    received: usize,
}

impl Batches {
    /// Batches of `batch_size` rows in `order` (see [`steps_per_epoch`] for the last batch),
    /// with each row's subwords for a model that has them (`subwords`: those of every text of
    /// `ids`).
    pub fn new(
        (ids, subwords): (Arc<Vec<u32>>, Option<Arc<Subwords>>),
        seq_len: usize,
        labels: Arc<SparseMatrix>,
        order: Vec<usize>,
        batch_size: usize,
        clusters: Option<Arc<ClusterIndex>>,
        device: Device,
    ) -> Self {
        let (tx, rx) = sync_channel(1);
        let n_steps = steps_per_epoch(order.len(), batch_size);
        let handle = std::thread::spawn(move || {
            for s in 0..n_steps {
                let end = if s + 1 == n_steps {
                    order.len().min((s + 1) * batch_size + 1)
                } else {
                    (s + 1) * batch_size
                };
                let end = end.min(order.len());
                let rows = &order[s * batch_size..end];
                let mut batch =
                    make_batch(&ids, seq_len, &labels, rows, clusters.as_deref(), &device);
                if let (Ok(b), Some(sw)) = (&mut batch, &subwords) {
                    b.subwords = Some(sw.select(rows));
                }
                if tx.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        Batches {
            rx: Some(rx),
            handle: Some(handle),
            planned: n_steps,
            received: 0,
        }
    }

    /// After the channel closed: the loader thread's outcome, an error unless it ended after
    /// handing out every batch.
    fn loader_failure(&mut self) -> Option<Error> {
        self.rx.take();
        let joined = self.handle.take().map(JoinHandle::join);
        if let Some(Err(panic)) = joined {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            return Some(Error::BatchLoader(format!(
                "the loader thread panicked after {} of {} batches: {msg}",
                self.received, self.planned
            )));
        }
        (self.received < self.planned).then(|| {
            Error::BatchLoader(format!(
                "the loader stopped after {} of {} batches",
                self.received, self.planned
            ))
        })
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.received += 1;
                Some(batch)
            }
            Err(_) => self.loader_failure().map(Err),
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Close the channel first so a producer blocked on `send` wakes up and exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 0);
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn steps_cover_rows_and_never_leave_a_single_row() {
        assert_eq!(steps_per_epoch(256, 128), 2);
        assert_eq!(steps_per_epoch(257, 128), 2); // the leftover row joins batch 2
        assert_eq!(steps_per_epoch(258, 128), 3);
        assert_eq!(steps_per_epoch(5, 128), 1);
        assert_eq!(steps_per_epoch(1, 128), 1);
    }

    #[test]
    fn batches_hold_ids_and_targets() {
        let seq = 3;
        let ids: Vec<u32> = (0..5 * seq as u32).collect();
        let labels =
            SparseMatrix::from_index_rows(4, &[vec![0], vec![1, 3], vec![], vec![2], vec![0, 1]])
                .unwrap();
        let order = vec![4, 2, 0, 1, 3];
        let all: Vec<Batch> = Batches::new(
            (Arc::new(ids), None),
            seq,
            Arc::new(labels.clone()),
            order.clone(),
            2,
            None,
            Device::Cpu,
        )
        .collect::<Result<_>>()
        .unwrap();
        assert_eq!(all.iter().map(|b| b.len).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(all[0].ids_host, vec![12, 13, 14, 6, 7, 8]);
        assert_eq!(
            all[0].targets.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 0.0, 0.0], vec![0.0; 4]]
        );
        assert_eq!(all[1].ids.dims(), &[3, seq]);
        assert_eq!(all[0].positives, vec![vec![0, 1], vec![]]);
        // Cluster targets: labels {0, 2} -> cluster 0, {1, 3} -> cluster 1.
        let ix = Arc::new(ClusterIndex::new(vec![0, 1, 0, 1], 2).unwrap());
        let b = make_batch(&[0; 15], 3, &labels, &[1, 3], Some(&ix), &Device::Cpu).unwrap();
        assert_eq!(
            b.targets.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 1.0], vec![1.0, 0.0]]
        );
        // Early stop does not hang.
        let mut it = Batches::new(
            (Arc::new(vec![0; 300]), None),
            3,
            Arc::new(SparseMatrix::from_index_rows(2, &vec![vec![0u32]; 100]).unwrap()),
            (0..100).collect(),
            10,
            None,
            Device::Cpu,
        );
        assert!(it.next().is_some());
        drop(it);
    }

    /// A loader that panics mid-epoch (a label id past the label count here) ends the
    /// iteration with an error, never with a silently short epoch.
    #[test]
    fn a_failing_loader_is_an_error_not_a_short_epoch() {
        let labels = SparseMatrix::from_index_rows(4, &[vec![0], vec![3], vec![1]]).unwrap();
        // Cluster index over 2 labels only: assigning label 3 panics in the loader thread.
        let ix = Arc::new(ClusterIndex::new(vec![0, 1], 2).unwrap());
        let items: Vec<Result<Batch>> = Batches::new(
            (Arc::new(vec![1; 9]), None),
            3,
            Arc::new(labels),
            vec![0, 1, 2],
            1,
            Some(ix),
            Device::Cpu,
        )
        .collect();
        assert_eq!(items.len(), 2, "one good batch, then the error");
        assert!(items[0].is_ok());
        let Err(Error::BatchLoader(msg)) = &items[1] else {
            panic!("expected a batch-loader error");
        };
        assert!(msg.contains("panicked after 1 of 3"), "{msg}");
    }
}
