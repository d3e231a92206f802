//! Renders the library's training events on standard error: a progress bar per epoch and one
//! line per finished epoch.

use inceptionxml::train::TrainEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A `TrainEvent` handler for the terminal (silent when `show` is false).
pub struct Progress {
    show: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(show: bool) -> Self {
        Progress { show, bar: None }
    }

    /// Handles one event.
    pub fn on_event(&mut self, event: TrainEvent) {
        if let TrainEvent::Warning(w) = &event {
            // Shown even with --quiet.
            eprintln!("warning: {w}");
            return;
        }
        if !self.show {
            return;
        }
        match event {
            TrainEvent::Warning(_) => {}
            TrainEvent::SparseStart { rows } => {
                eprintln!("training the sparse model on {rows} rows")
            }
            TrainEvent::CorpusVectors {
                words,
                tokens,
                seconds,
            } => eprintln!(
                "word vectors trained on the training texts ({tokens} tokens, {words} words) in \
                 {seconds:.1}s"
            ),
            TrainEvent::DefaultEpochs { epochs, rows } => {
                println!(
                    "epochs {epochs} (the default for {rows} training rows; --epochs to change)"
                )
            }
            TrainEvent::Clustered {
                labels,
                clusters,
                seconds,
            } => eprintln!("clustered {labels} labels into {clusters} clusters in {seconds:.1}s"),
            TrainEvent::EpochStart {
                epoch,
                epochs,
                steps,
            } => {
                let pb =
                    ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
                ) {
                    pb.set_style(style.progress_chars("=> "));
                }
                pb.set_prefix(format!("epoch {epoch}/{epochs}"));
                self.bar = Some(pb);
            }
            TrainEvent::Step {
                loss,
                samples_per_s,
            } => {
                if let Some(pb) = &self.bar {
                    pb.inc(1);
                    pb.set_message(format!("loss {loss:.5}  {samples_per_s:.0} samples/s"));
                }
            }
            TrainEvent::EpochEnd(r) => {
                if let Some(pb) = self.bar.take() {
                    pb.finish_and_clear();
                }
                let mut msg = format!(
                    "epoch {}/{}  loss {:.5}  {:.0} samples/s  {:.1}s",
                    r.epoch, r.epochs, r.loss, r.samples_per_s, r.seconds
                );
                if let Some(v) = &r.valid {
                    msg.push_str(&format!(
                        "  valid P@1 {:.2}  PSP@1 {:.2}  |",
                        v.p[0] * 100.0,
                        v.psp[0] * 100.0
                    ));
                }
                if let Some(m) = &r.metrics {
                    msg.push_str(&format!(
                        "  P@1 {:.2}  P@5 {:.2}  PSP@1 {:.2}",
                        m.p[0] * 100.0,
                        m.p.last().copied().unwrap_or(0.0) * 100.0,
                        m.psp[0] * 100.0
                    ));
                }
                if let Some(p) = &r.plus {
                    if let Some(e) = &p.eval {
                        msg.push_str(&format!(
                            "  meta P@1 {:.2}  recall@{} {:.2}",
                            e.meta_p1 * 100.0,
                            e.top_k,
                            e.shortlist_recall * 100.0
                        ));
                    }
                    if p.detached {
                        msg.push_str("  (encoder detached from the extreme head)");
                    }
                }
                eprintln!("{msg}");
            }
        }
    }
}
