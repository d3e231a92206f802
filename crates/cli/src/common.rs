//! What the subcommands share: `--device`, `--threads`, memory readings, metric lines.

use xmc::metrics::Metrics;

/// `println!` that returns an error instead of panicking when standard output cannot be
/// written (a full disk, `>/dev/full`): `outln!("...")?`. A closed pipe still ends the process
/// quietly (SIGPIPE, `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
    }};
}
pub(crate) use outln;

/// [`outln!`] without the line break.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
    }};
}
pub(crate) use out;

/// `--device`, shared by the commands that run the model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value_t = inceptionxml::DeviceSpec::default())]
    pub device: inceptionxml::DeviceSpec,
}

impl DeviceArg {
    /// Opens the device (an error says why it cannot be used).
    pub fn open(self) -> inceptionxml::Result<candle_core::Device> {
        self.device.open()
    }
}

/// `--threads`, shared by every command that computes.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ThreadsArg {
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `--device` and `--threads`: where and on how many threads a model runs.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RunArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

/// The flags that pick and shape InceptionXML+ (`train`, `bench train`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlusArgs {
    /// Train InceptionXML+ (meta head over label clusters, extreme head over each row's
    /// shortlisted clusters) instead of the full one-vs-all head.
    #[arg(long)]
    pub plus: bool,
    /// With --plus: a label -> cluster file (from `inceptionxml cluster`), or a number of
    /// clusters (a power of two) to compute from the training data [default: L/10 as a power
    /// of two].
    #[arg(long, requires = "plus")]
    pub clusters: Option<String>,
    /// With --plus: clusters shortlisted per text, K [default: C/64 within 128..=800, at most C].
    #[arg(long, requires = "plus")]
    pub top_k: Option<usize>,
    /// With --plus: hidden width of the heads [default: the encoder's output, 480 with the
    /// default filters].
    #[arg(long, requires = "plus")]
    pub hidden_dim: Option<usize>,
}

/// Builds the thread pool ([`inceptionxml::runtime::init_threads`]: `n` threads, default all
/// cores, subnormals flushed to zero on every worker). Must run before any parallel work.
pub fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    inceptionxml::runtime::init_threads(n).map_err(flag_error)
}

/// A library error about the threads option, named as the flag (`threads ...` ->
/// `--threads ...`).
pub fn flag_error(e: inceptionxml::Error) -> anyhow::Error {
    match e {
        inceptionxml::Error::Config(m) => anyhow::anyhow!("--{m}"),
        e => e.into(),
    }
}

/// A help text with the library's default appended: `text [default: value]`.
pub fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
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
