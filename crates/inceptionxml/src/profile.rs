//! Wall-clock spans of the training step's stages, for `inceptionxml bench profile`.
//!
//! Off by default: a [`span`] then costs one relaxed atomic load. When [`enable`]d, each span
//! adds its elapsed time to a process-wide table under its name (stages run one after another on
//! the calling thread; the parallel work inside a stage is part of its span). [`take`] returns
//! the table in order of first appearance and clears it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<(&'static str, Duration, u64)>> = Mutex::new(Vec::new());

/// Turns recording on or off.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether spans are being recorded.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A running span; records on drop.
#[must_use = "a span measures until it is dropped"]
pub struct Span {
    name: &'static str,
    start: Option<Instant>,
}

/// Starts the span `name` (a no-op unless [`enable`]d).
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            let dt = s.elapsed();
            if let Ok(mut t) = TABLE.lock() {
                match t.iter_mut().find(|e| e.0 == self.name) {
                    Some(e) => {
                        e.1 += dt;
                        e.2 += 1;
                    }
                    None => t.push((self.name, dt, 1)),
                }
            }
        }
    }
}

/// The recorded `(name, total time, count)` in order of first appearance; clears the table.
pub fn take() -> Vec<(&'static str, Duration, u64)> {
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
        drop(span("profile-test.off"));
        enable(true);
        for _ in 0..3 {
            let _s = span("profile-test.on");
        }
        enable(false);
        let t = take();
        assert!(!t.iter().any(|e| e.0 == "profile-test.off"));
        let on = t.iter().find(|e| e.0 == "profile-test.on").unwrap();
        assert_eq!(on.2, 3);
    }
}
