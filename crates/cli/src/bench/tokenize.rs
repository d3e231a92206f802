//! `inceptionxml bench tokenize`: texts -> fixed-length id sequences.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use xmc::text::tokenize_all;
use xmc::vocab::Vocab;

/// Flags of `inceptionxml bench tokenize`.
#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// Dataset folder in the Extreme Classification Repository layout (reads `trn_X.txt`).
    #[arg(long, default_value = "data/cooking")]
    pub data: PathBuf,
    /// Timed repetitions (after one untimed warm-up); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Sequence length S of the id rows.
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// Vocabulary size, pad and unknown included.
    #[arg(long, default_value_t = 100_000)]
    pub vocab_size: usize,
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (Linux; in
/// units of USER_HZ = 1/100 s). `None` elsewhere. On a busy machine wall time overstates the cost;
/// CPU time does not.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub fn run_tokenize(a: TokenizeArgs) -> anyhow::Result<()> {
    let path = a.data.join("trn_X.txt");
    let texts = xmc::texts::read_texts(&path)?;
    anyhow::ensure!(!texts.is_empty(), "{}: no texts", path.display());
    let bytes: usize = texts.iter().map(|t| t.len() + 1).sum();

    crate::common::set_threads((a.threads > 0).then_some(a.threads))?;
    let (threads, vocab, build_time, runs, checksum, cpu) = {
        let t0 = Instant::now();
        let vocab = Vocab::build(&tokenize_all(&texts), a.vocab_size, 1);
        let build_time = t0.elapsed();
        // Warm-up (caches, thread-local buffers, page faults of the output).
        let ids = vocab.encode_all(&texts, a.seq_len);
        let checksum: u64 = ids.iter().map(|&x| x as u64).sum();
        let mut runs = Vec::with_capacity(a.repeat as usize);
        let cpu0 = process_cpu_time();
        for _ in 0..a.repeat {
            let t = Instant::now();
            let ids = vocab.encode_all(&texts, a.seq_len);
            runs.push(t.elapsed());
            anyhow::ensure!(
                ids.iter().map(|&x| x as u64).sum::<u64>() == checksum,
                "encode_all is not deterministic"
            );
        }
        let cpu = cpu0
            .zip(process_cpu_time())
            .map(|(a, b)| b.saturating_sub(a) / runs.len() as u32);
        (
            rayon::current_num_threads(),
            vocab,
            build_time,
            runs,
            checksum,
            cpu,
        )
    };

    let mut run_secs: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
    let med = Duration::from_secs_f64(super::median(&mut run_secs));
    let secs = med.as_secs_f64();
    println!(
        "data {}: {} titles, {:.1} MB; vocabulary {} ids (built in {:.0} ms); S = {}; {} threads",
        path.display(),
        texts.len(),
        bytes as f64 / 1e6,
        vocab.len(),
        build_time.as_secs_f64() * 1e3,
        a.seq_len,
        threads
    );
    println!(
        "encode_all: median of {} runs {:.1} ms (min {:.1}, max {:.1}): {:.0} titles/s, {:.1} MB/s \
         [checksum {checksum}]",
        runs.len(),
        secs * 1e3,
        runs.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        runs.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        texts.len() as f64 / secs,
        bytes as f64 / 1e6 / secs,
    );
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        let c = cpu.as_secs_f64();
        println!(
            "cpu time: {:.1} ms per run (all threads): {:.0} titles per CPU-second, {:.1} MB per \
             CPU-second",
            c * 1e3,
            texts.len() as f64 / c,
            bytes as f64 / 1e6 / c
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances() {
        // Busy-loop until the counter moves (10 ms ticks; a loaded machine may give us little
        // CPU), for at most 10 s of wall time.
        if let Some(t0) = process_cpu_time() {
            let start = Instant::now();
            let mut x = 0u64;
            let mut t1 = t0;
            while t1 <= t0 && start.elapsed() < Duration::from_secs(10) {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                t1 = process_cpu_time().unwrap_or(t0);
            }
            assert!(t1 > t0, "{t0:?} -> {t1:?}");
        }
    }
}
