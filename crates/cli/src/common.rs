//! What the subcommands share: `--device`, `--threads`, memory readings, metric lines.

use xmc::metrics::Metrics;

/// `--device`, shared by the commands that run the model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: inceptionxml::DeviceSpec,
}

impl DeviceArg {
    /// Opens the device (an error says why it cannot be used).
    pub fn open(self) -> inceptionxml::Result<candle_core::Device> {
        self.device.open()
    }
}

/// Builds rayon's global pool (used by candle's CPU kernels too) with `n` threads (default: all
/// cores), every worker and the calling thread flushing subnormal floats to zero
/// ([`inceptionxml::runtime::flush_denormals`]). Must run before any parallel work.
pub fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    inceptionxml::runtime::flush_denormals();
    let mut pool = rayon::ThreadPoolBuilder::new().start_handler(|_| {
        inceptionxml::runtime::flush_denormals();
    });
    if let Some(n) = n {
        anyhow::ensure!(n > 0, "--threads must be > 0");
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        anyhow::ensure!(
            n <= 4 * cores,
            "--threads {n}: at most {} on this machine ({cores} cores; more threads only slow the work down)",
            4 * cores
        );
        // candle's gemm reads RAYON_NUM_THREADS; rayon's global pool is configured explicitly.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        pool = pool.num_threads(n);
    }
    match (pool.build_global(), n) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(_)) => Err(anyhow::anyhow!("--threads: {e}")),
        // Already built (a second call in one process): it keeps its settings.
        (Err(_), None) => Ok(()),
    }
}

fn status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Peak resident set size of this process in MiB (`VmHWM` of /proc/self/status), if reported.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Current resident set size in MiB (`VmRSS`), if reported.
pub fn current_rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// `P@1 … P@k`, `nDCG@…`, `PSP@…` and `PSnDCG@…` lines, ×100 with two decimals.
pub fn format_metrics(m: &Metrics) -> String {
    let line = |name: &str, v: &[f64]| {
        v.iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || (i + 1) % 2 == 1)
            .map(|(i, x)| format!("{name}@{} {:6.2}", i + 1, x * 100.0))
            .collect::<Vec<_>>()
            .join("  ")
    };
    [
        line("P", &m.p),
        line("nDCG", &m.ndcg),
        line("PSP", &m.psp),
        line("PSnDCG", &m.psndcg),
    ]
    .join("\n")
}
