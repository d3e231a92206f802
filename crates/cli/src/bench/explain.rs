//! `inceptionxml bench explain`: how faithful and how costly the explanations are.
//!
//! - **Deletion test**: for each text and its top label, the words are removed one by one (all
//!   removed so far stay removed) in the order of their weights, highest first, and in random
//!   orders; the area over the score curve, AOPC = mean over j = 0..n of (f(x) − f(x without its
//!   first j words)), is larger when the order finds the words the score depends on first.
//! - **Randomisation test** (Adebayo et al., 2018): the explanations of a model whose label
//!   weights were shuffled must differ from the model's own. Shuffling the labels' weights by a
//!   permutation π gives label l the classifier of π(l) (for the sparse model its whole path, for
//!   InceptionXML+ its table row and cluster), so the shuffled model's explanation of l is the
//!   model's explanation of π(l): computed exactly without building the shuffled model.
//! - **Cost**: explaining the top 5 labels of one text (batch 1), and explained prediction of
//!   many texts against plain prediction.

use std::path::PathBuf;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use inceptionxml::{LoadOptions, Model, PredictOptions};

use super::median;
use crate::common::outln;

/// Flags of `inceptionxml bench explain`.
#[derive(clap::Args)]
pub struct ExplainBench {
    /// Model directory (or several: an ensemble).
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    /// Texts, one per line (the test split's).
    #[arg(long)]
    pub texts: PathBuf,
    /// Texts of the deletion and randomisation tests (the first with at least 2 words).
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Random orders per text in the deletion test.
    #[arg(long, default_value_t = 5)]
    pub random_orders: usize,
    /// Labels explained per text in the cost measurements.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Texts of the throughput comparison (explained against plain prediction).
    #[arg(long, default_value_t = 2000)]
    pub throughput_texts: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// AOPC of removing `order`'s words cumulatively from `words` for `label`.
fn aopc(m: &Model, words: &[String], order: &[usize], label: u32) -> anyhow::Result<f64> {
    let mut variants = vec![words.to_vec()];
    let mut removed = vec![false; words.len()];
    for &i in order {
        removed[i] = true;
        variants.push(
            words
                .iter()
                .zip(&removed)
                .filter(|(_, r)| !**r)
                .map(|(w, _)| w.clone())
                .collect(),
        );
    }
    let s = m.ensemble().label_scores(&variants, &[label], None)?;
    let full = s[0][0] as f64;
    Ok(s.iter().map(|r| full - r[0] as f64).sum::<f64>() / s.len() as f64)
}

/// Spearman's rank correlation of two equally long weight vectors (average ranks for ties).
fn spearman(a: &[f32], b: &[f32]) -> f64 {
    fn ranks(v: &[f32]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

pub fn bench_explain(a: ExplainBench) -> anyhow::Result<()> {
    crate::common::set_threads(a.threads)?;
    let m = Model::load_with(
        &a.model,
        &LoadOptions {
            threads: a.threads,
            ..Default::default()
        },
    )?;
    let all = xmc::texts::read_texts(&a.texts)?;
    let texts: Vec<&String> = all
        .iter()
        .filter(|t| xmc::text::tokenize(t).len() >= 2)
        .take(a.n)
        .collect();
    anyhow::ensure!(!texts.is_empty(), "no text of at least 2 words");
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let n_labels = m.n_labels() as u32;
    let mut perm: Vec<u32> = (0..n_labels).collect();
    perm.shuffle(&mut rng);

    // Deletion and randomisation, on each text's top label.
    let (mut by_weight, mut random) = (Vec::new(), Vec::new());
    let (mut rho, mut same_top) = (Vec::new(), 0usize);
    for t in &texts {
        let top = m.rank(&[t.as_str()], 1, &PredictOptions::default())?;
        let Some(&(label, _)) = top[0].first() else {
            continue;
        };
        let shuffled = perm[label as usize];
        let o = m.ensemble().occlusion(t, &[label, shuffled], None)?;
        let w = &o.weights[0];
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&i, &j| w[j].total_cmp(&w[i]));
        by_weight.push(aopc(&m, &o.words, &order, label)?);
        let mut r = 0.0;
        for _ in 0..a.random_orders.max(1) {
            order.shuffle(&mut rng);
            r += aopc(&m, &o.words, &order, label)?;
        }
        random.push(r / a.random_orders.max(1) as f64);
        let ws = &o.weights[1];
        rho.push(spearman(w, ws));
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j]));
        same_top += usize::from(argmax(w) == argmax(ws));
    }
    let n = by_weight.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let better = by_weight.iter().zip(&random).filter(|(a, b)| a > b).count();
    outln!(
        "deletion test, {n} texts, top label: AOPC by weight {:.4}, random orders {:.4} (mean of {}); \
         by weight above random on {:.1} % of the texts",
        mean(&by_weight),
        mean(&random),
        a.random_orders.max(1),
        100.0 * better as f64 / n.max(1) as f64
    )?;
    outln!(
        "randomisation test (label weights shuffled): Spearman of the word weights, model vs \
         shuffled model: mean {:.3}, median {:.3}; same most important word on {:.1} % of the texts",
        mean(&rho),
        median(&mut rho.clone()),
        100.0 * same_top as f64 / n.max(1) as f64
    )?;

    // Cost at batch 1: texts of 8 to 12 words, top-k explained.
    let ten: Vec<&String> = all
        .iter()
        .filter(|t| (8..=12).contains(&xmc::text::tokenize(t).len()))
        .take(300)
        .collect();
    let opts = PredictOptions::default();
    let mut lat = Vec::new();
    for t in &ten {
        let t0 = Instant::now();
        std::hint::black_box(m.explain(&[t.as_str()], a.top_k, &opts)?);
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut plain_lat = Vec::new();
    for t in &ten {
        let t0 = Instant::now();
        std::hint::black_box(m.rank(&[t.as_str()], a.top_k, &opts)?);
        plain_lat.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    outln!(
        "batch 1, {} texts of 8-12 words, top {}: explained median {:.2} ms (plain {:.2} ms)",
        ten.len(),
        a.top_k,
        median(&mut lat),
        median(&mut plain_lat)
    )?;

    // Throughput: explained against plain prediction, alternated, medians of 3.
    let many: Vec<&str> = all
        .iter()
        .take(a.throughput_texts)
        .map(String::as_str)
        .collect();
    let (mut ex_qps, mut plain_qps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        std::hint::black_box(m.rank(&many, a.top_k, &opts)?);
        plain_qps.push(many.len() as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        std::hint::black_box(m.explain(&many, a.top_k, &opts)?);
        ex_qps.push(many.len() as f64 / t0.elapsed().as_secs_f64());
    }
    let (e, p) = (median(&mut ex_qps), median(&mut plain_qps));
    outln!(
        "throughput, {} texts, top {}: explained {:.0} texts/s, plain {:.0} texts/s: {:.1} % \
         (rounds: explained {:?}, plain {:?})",
        many.len(),
        a.top_k,
        e,
        p,
        100.0 * e / p,
        ex_qps.iter().map(|x| x.round()).collect::<Vec<_>>(),
        plain_qps.iter().map(|x| x.round()).collect::<Vec<_>>()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spearman;

    #[test]
    fn spearman_of_orders() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
