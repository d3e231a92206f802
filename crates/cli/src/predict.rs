//! `inceptionxml predict`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use inceptionxml::config::ScoreMode;
use inceptionxml::{LoadOptions, Model, PredictOptions};
use xmc::labels::Labels;

use crate::output::{write_explained, write_row, Format};

/// Flags of `inceptionxml predict`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory written by `train` or `demo`; repeat to average several models' scores
    /// (an ensemble over the same labels).
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    #[arg(
        long,
        help = "InceptionXML+ ranking: `extreme` (σ of the extreme logit, the paper) or `combined` \
                (times σ of the cluster's meta logit) [default: the better one on the validation \
                split at the end of training (mean of P@1, P@3, P@5), saved in config.json]"
    )]
    pub score: Option<ScoreMode>,
    /// Score small batches (at most 8 texts) exactly in f32 instead of with the int8 indexes
    /// (output layer; InceptionXML+: meta classifier and label table), which pre-rank every label
    /// and rescore the best exactly. CPU only.
    #[arg(long)]
    pub exact: bool,
    /// Texts, one per line; `-` reads standard input and answers line by line (interactive).
    #[arg(long)]
    pub texts: PathBuf,
    /// Output: sparse `label:score` rows with a `rows labels` header; `-` is standard output.
    /// With `--texts -` the header is left out and each answer is flushed at once.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Output format: `xc` (sparse label ids), `tsv` (row, URI, label, score per line) or `json`
    /// (one Annif-style `{"results": [...]}` object per text).
    #[arg(long, value_enum, default_value_t = Format::Xc)]
    pub format: Format,
    /// Labels per text.
    #[arg(long, default_value_t = PredictOptions::DEFAULT_TOP_K)]
    pub top_k: usize,
    /// Texts per forward pass.
    #[arg(long, default_value_t = PredictOptions::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Explain each label: the weight of every word of the text for it (its score minus its
    /// score with the word removed), in text order. `--format json`: an `"explanation":
    /// [{"word", "weight"}]` per result; `tsv`: a fifth column of `word:weight` pairs.
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub run: crate::common::RunArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::common::set_threads(args.run.threads.threads)?;
    anyhow::ensure!(args.top_k > 0, "--top-k must be > 0");
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be > 0");
    let load = LoadOptions {
        device: args.run.device.device,
        exact: args.exact,
        threads: args.run.threads.threads,
    };
    anyhow::ensure!(
        !args.explain || args.format != Format::Xc,
        "--explain needs --format json or tsv (the xc format has no room for words)"
    );
    let p = Model::load_with(&args.model, &load)?;
    if args.texts.as_os_str() == "-" {
        return interactive(&p, &args);
    }
    let texts = xmc::texts::read_texts(&args.texts)?;
    let opts = PredictOptions {
        batch_size: args.batch_size,
        score: args.score,
        ..PredictOptions::default()
    };
    let labels = p.labels();
    let written = if args.explain {
        let rows = p.explain(&texts, args.top_k, &opts)?;
        write_out(&args.out, |w| {
            for (r, row) in rows.iter().enumerate() {
                write_explained(w, r, row, labels, args.format)?;
            }
            Ok(())
        })
    } else {
        let rows = p.rank(&texts, args.top_k, &opts)?;
        match args.format {
            Format::Xc => xmc::predictions::write_predictions(&args.out, &rows, p.n_labels()),
            f => write_out(&args.out, |w| write_rows(w, &rows, labels, f)),
        }
    };
    written.with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// Writes through `write` to standard output (`-`, buffered) or atomically to the file `out`.
fn write_out(
    out: &std::path::Path,
    write: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> xmc::Result<()> {
    if out.as_os_str() == "-" {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        write(&mut w)
            .and_then(|_| w.flush())
            .map_err(|e| xmc::Error::io(out, e))
    } else {
        xmc::io::write_atomic(out, |w| write(w))
    }
}

fn write_rows(
    w: &mut dyn Write,
    rows: &[Vec<(u32, f32)>],
    labels: &Labels,
    format: Format,
) -> std::io::Result<()> {
    for (r, row) in rows.iter().enumerate() {
        write_row(w, r, row, labels, format)?;
    }
    Ok(())
}

fn interactive(p: &Model, args: &Args) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?,
        )
    };
    let labels = p.labels();
    // The library's line reader: line breaks (`\n`, `\r\n`) and a byte-order mark opening the
    // input are stripped, and a line is capped (xmc::io::MAX_LINE), never read without bound.
    let mut input = xmc::io::Lines::new(std::io::stdin().lock(), "<stdin>");
    let mut i = 0;
    while let Some(bytes) = input.next_bytes()? {
        // A line that is not UTF-8 gets an error on standard error and an empty result in the
        // output's format (an empty row, `{"results":[]}`, no TSV line); the session goes on.
        let line = std::str::from_utf8(bytes);
        if line.is_err() {
            eprintln!("error: <stdin>:{}: not valid UTF-8 (line skipped)", i + 1);
        }
        if args.explain {
            let row = match line {
                Ok(line) => {
                    let opts = PredictOptions {
                        batch_size: 1,
                        score: args.score,
                        ..PredictOptions::default()
                    };
                    p.explain(&[line], args.top_k, &opts)?
                        .pop()
                        .unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            write_explained(&mut out, i, &row, labels, args.format)?;
            out.flush()?;
            i += 1;
            continue;
        }
        let row = match line {
            Ok(line) => p.rank_one(line, args.top_k, args.score)?,
            Err(_) => Vec::new(),
        };
        match args.format {
            Format::Xc => {
                let s: Vec<String> = row.iter().map(|(l, v)| format!("{l}:{v:.6}")).collect();
                writeln!(out, "{}", s.join(" "))?;
            }
            f => write_row(&mut out, i, &row, labels, f)?,
        }
        out.flush()?;
        i += 1;
    }
    Ok(())
}
