//! Wall-clock spans of the training step's and prediction's stages, for `inceptionxml bench
//! profile` and `bench predict --profile`.
//!
//! Every stage is a [`Stage`]. Off by default: timing then costs one relaxed atomic load. When
//! [`enable`]d, each span adds its elapsed time to a process-wide table under its stage (stages
//! run one after another on the calling thread; the parallel work inside a stage is part of its
//! span). Spans are scoped, never dropped by hand: [`timed`] times a closure, [`Laps`] times a
//! sequence of stages (each [`Laps::next`] ends the one before; the last ends with the scope).
//! [`take`] returns the table in order of first appearance and clears it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<(Stage, Duration, u64)>> = Mutex::new(Vec::new());

/// A stage of the training step or of prediction, as `bench profile` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    // A training step (the top level of `bench profile`).
    WordLookup,
    EncoderForward,
    HeadsForwardLoss,
    HeadsBackward,
    EncoderBackward,
    Optimiser,
    HeadsForwardBackward,
    EncoderBackwardBesideUpdates,
    // Inside a plain step's heads.
    PlainHidden,
    PlainLoss,
    // Inside a fused InceptionXML+ step's "heads forward + backward".
    PlusHidden,
    PlusMetaLogits,
    PlusMetaBesideExtreme,
    PlusHeadGradients,
    // The two sides of `PlusMetaBesideExtreme`, which run at the same time.
    SideMetaBackward,
    SideShortlist,
    SideCandidateLoss,
    SideCandidatesBackward,
    SideExtremeHiddenBackward,
    // Inside a composed InceptionXML+ step's "heads forward + loss".
    MetaHead,
    MetaLoss,
    Shortlist,
    ExtremeFeatures,
    CandidateLoss,
    // The two sides of `EncoderBackwardBesideUpdates`.
    SideEncoderBackward,
    SideEarlyUpdates,
    // Inside "optimiser".
    DenseAdam,
    LabelRows,
    WordRows,
    // The fused encoder's forward.
    EncFwdWordDropout,
    EncFwdAttention,
    EncFwdBnProjection,
    EncFwdBranches,
    EncFwdBnMerge,
    EncFwdFinal,
    EncFwdBnFinal,
    // The fused encoder's backward.
    EncBwdBnFinal,
    EncBwdFinal,
    EncBwdBnMerge,
    EncBwdBranchWeights,
    EncBwdBranchInputs,
    EncBwdBnProjection,
    EncBwdAttention,
    EncBwdXW2,
    EncBwdWordDropout,
    // Prediction (`bench predict --profile`).
    PredictEncode,
    PredictShortlist,
    PredictExtremeFeatures,
    PredictCandidates,
}

impl Stage {
    /// The name `bench profile` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::WordLookup => "word lookup",
            Stage::EncoderForward => "encoder forward",
            Stage::HeadsForwardLoss => "heads forward + loss",
            Stage::HeadsBackward => "heads backward",
            Stage::EncoderBackward => "encoder backward",
            Stage::Optimiser => "optimiser",
            Stage::HeadsForwardBackward => "heads forward + backward",
            Stage::EncoderBackwardBesideUpdates => "encoder backward ‖ early updates",
            Stage::PlainHidden => "hidden layer",
            Stage::PlainLoss => "loss (B×L BCE)",
            Stage::PlusHidden => "hidden layers",
            Stage::PlusMetaLogits => "meta logits",
            Stage::PlusMetaBesideExtreme => "meta backward ‖ extreme head",
            Stage::PlusHeadGradients => "head gradients out",
            Stage::SideMetaBackward => "‖ meta classifier + hidden backward",
            Stage::SideShortlist => "‖ shortlist",
            Stage::SideCandidateLoss => "‖ candidate logits + loss",
            Stage::SideCandidatesBackward => "‖ candidates backward",
            Stage::SideExtremeHiddenBackward => "‖ extreme hidden backward",
            Stage::MetaHead => "meta head",
            Stage::MetaLoss => "meta loss",
            Stage::Shortlist => "shortlist",
            Stage::ExtremeFeatures => "extreme features",
            Stage::CandidateLoss => "candidate logits + loss",
            Stage::SideEncoderBackward => "‖ encoder backward",
            Stage::SideEarlyUpdates => "‖ heads' and label-table updates",
            Stage::DenseAdam => "dense Adam",
            Stage::LabelRows => "label-table rows",
            Stage::WordRows => "word rows",
            Stage::EncFwdWordDropout => "enc fwd: word dropout",
            Stage::EncFwdAttention => "enc fwd: attention + projection",
            Stage::EncFwdBnProjection => "enc fwd: GELU+BN (projection)",
            Stage::EncFwdBranches => "enc fwd: inception branches",
            Stage::EncFwdBnMerge => "enc fwd: GELU+BN (merge)",
            Stage::EncFwdFinal => "enc fwd: final convolution",
            Stage::EncFwdBnFinal => "enc fwd: GELU+BN (final)",
            Stage::EncBwdBnFinal => "enc bwd: GELU+BN (final)",
            Stage::EncBwdFinal => "enc bwd: final convolution",
            Stage::EncBwdBnMerge => "enc bwd: GELU+BN (merge)",
            Stage::EncBwdBranchWeights => "enc bwd: branch weights",
            Stage::EncBwdBranchInputs => "enc bwd: branch inputs (col2im)",
            Stage::EncBwdBnProjection => "enc bwd: GELU+BN (projection)",
            Stage::EncBwdAttention => "enc bwd: attention + projection",
            Stage::EncBwdXW2 => "enc bwd: X W2ᵀ (dX, dW2)",
            Stage::EncBwdWordDropout => "enc bwd: word dropout",
            Stage::PredictEncode => "predict: lookup + encoder",
            Stage::PredictShortlist => "predict: meta head + shortlist",
            Stage::PredictExtremeFeatures => "predict: extreme features",
            Stage::PredictCandidates => "predict: candidates + ranking",
        }
    }

    /// Whether this is a top-level stage (of a training step, or of prediction): the others
    /// run inside one of them.
    pub const fn is_top(self) -> bool {
        matches!(
            self,
            Stage::WordLookup
                | Stage::EncoderForward
                | Stage::HeadsForwardLoss
                | Stage::HeadsBackward
                | Stage::EncoderBackward
                | Stage::Optimiser
                | Stage::HeadsForwardBackward
                | Stage::EncoderBackwardBesideUpdates
                | Stage::PredictEncode
                | Stage::PredictShortlist
                | Stage::PredictExtremeFeatures
                | Stage::PredictCandidates
        )
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Turns recording on or off.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether spans are being recorded.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A running span; records when it goes out of scope.
#[must_use = "a span measures until the end of its scope"]
pub struct Span {
    stage: Stage,
    start: Option<Instant>,
}

/// Starts timing `stage` until the end of the scope (a no-op unless [`enable`]d).
pub fn span(stage: Stage) -> Span {
    Span {
        stage,
        start: enabled().then(Instant::now),
    }
}

/// Runs `f`, timed as `stage`.
pub fn timed<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let _s = span(stage);
    f()
}

/// A sequence of stages timed back to back: [`Laps::next`] ends the running stage and starts
/// the next; the last one ends with the scope (or [`Laps::stop`]).
#[must_use = "laps measure until the end of their scope"]
pub struct Laps(Option<Span>);

impl Laps {
    /// Starts timing `stage`.
    pub fn start(stage: Stage) -> Self {
        Laps(Some(span(stage)))
    }

    /// Ends the running stage and starts `stage`.
    pub fn next(&mut self, stage: Stage) {
        self.0 = None;
        self.0 = Some(span(stage));
    }

    /// Ends the running stage.
    pub fn stop(&mut self) {
        self.0 = None;
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            let dt = s.elapsed();
            if let Ok(mut t) = TABLE.lock() {
                match t.iter_mut().find(|e| e.0 == self.stage) {
                    Some(e) => {
                        e.1 += dt;
                        e.2 += 1;
                    }
                    None => t.push((self.stage, dt, 1)),
                }
            }
        }
    }
}

/// The recorded `(stage, total time, count)` in order of first appearance; clears the table.
pub fn take() -> Vec<(Stage, Duration, u64)> {
    TABLE
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_accumulate_only_when_enabled() {
        // Stages no other test of this process times.
        timed(Stage::PredictExtremeFeatures, || ());
        enable(true);
        for _ in 0..3 {
            timed(Stage::PredictCandidates, || ());
        }
        let mut laps = Laps::start(Stage::PredictCandidates);
        laps.next(Stage::PredictShortlist);
        drop(laps);
        enable(false);
        let t = take();
        assert!(!t.iter().any(|e| e.0 == Stage::PredictExtremeFeatures));
        let on = t.iter().find(|e| e.0 == Stage::PredictCandidates).unwrap();
        assert_eq!(on.2, 4);
        assert_eq!(
            t.iter().find(|e| e.0 == Stage::PredictShortlist).unwrap().2,
            1
        );
        assert_eq!(
            Stage::PredictShortlist.name(),
            "predict: meta head + shortlist"
        );
        assert!(Stage::WordLookup.is_top() && !Stage::DenseAdam.is_top());
    }
}
