//! One-cycle learning-rate and β1 schedule, per batch step (MODEL.md §4): PyTorch's `OneCycleLR`
//! with `anneal_strategy="cos"`, `three_phase=False`, `cycle_momentum=True`.
//!
//! Phase 1 (steps 0 … pct_start·T − 1): lr from lr_max/div_factor up to lr_max, β1 from
//! β1_max down to β1_min. Phase 2 (… T − 1): lr down to lr_max/(div_factor·final_div_factor),
//! β1 back up to β1_max. Both phases use the cosine `end + (start − end)/2 · (1 + cos(π·pct))`.
//! Step `t` is the 0-based index of the optimiser step the values are used for.

use crate::config::TrainConfig;

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    pub lr_max: f64,
    pub total_steps: u64,
    pub pct_start: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
    pub beta1_max: f64,
    pub beta1_min: f64,
}

impl OneCycle {
    /// MODEL.md §4's values: 30% warm-up, start lr_max/10, end lr_max/(10·10⁴),
    /// β1 0.95 → 0.85 → 0.95.
    pub fn new(lr_max: f64, total_steps: u64) -> Self {
        OneCycle {
            lr_max,
            total_steps,
            pct_start: 0.3,
            div_factor: 10.0,
            final_div_factor: 1e4,
            beta1_max: 0.95,
            beta1_min: 0.85,
        }
    }

    /// The schedule of a run configured by `cfg`, `total_steps` steps long.
    pub fn for_run(cfg: &TrainConfig, total_steps: u64) -> Self {
        OneCycle {
            lr_max: cfg.lr_max,
            total_steps,
            pct_start: cfg.pct_start,
            div_factor: cfg.div_factor,
            final_div_factor: cfg.final_div_factor,
            beta1_max: cfg.beta1_max,
            beta1_min: cfg.beta1_min,
        }
    }

    fn anneal(start: f64, end: f64, pct: f64) -> f64 {
        end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
    }

    /// (lr, β1) for the 0-based step `t`; steps past the end keep the final values.
    pub fn at(&self, t: u64) -> (f64, f64) {
        let initial = self.lr_max / self.div_factor;
        let min = initial / self.final_div_factor;
        let last = self.total_steps.saturating_sub(1) as f64;
        let t = (t as f64).min(last);
        let end1 = self.pct_start * self.total_steps as f64 - 1.0;
        if t <= end1 && end1 > 0.0 {
            let pct = t / end1;
            (
                Self::anneal(initial, self.lr_max, pct),
                Self::anneal(self.beta1_max, self.beta1_min, pct),
            )
        } else {
            let span = last - end1;
            let pct = if span > 0.0 {
                ((t - end1) / span).clamp(0.0, 1.0)
            } else {
                1.0
            };
            (
                Self::anneal(self.lr_max, min, pct),
                Self::anneal(self.beta1_min, self.beta1_max, pct),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from PyTorch's formula (total_steps 100, max_lr 5e-3, div_factor 10,
    /// final_div_factor 1e4, pct_start 0.3, momentum 0.95/0.85), computed in f64.
    #[test]
    fn matches_pytorch_one_cycle() {
        let s = OneCycle::new(5e-3, 100);
        let cases = [
            (0, 0.0004999999999999996, 0.95),
            (10, 0.001696081008425472, 0.9234204220349895),
            (29, 0.005, 0.85),
            (30, 0.004997482691526623, 0.8500503466729342),
            (64, 0.0025000250000000003, 0.8999999999999999),
            (99, 5e-08, 0.95),
        ];
        for (t, lr, b1) in cases {
            let (l, b) = s.at(t);
            assert!((l - lr).abs() < 1e-15, "step {t}: lr {l} vs {lr}");
            assert!((b - b1).abs() < 1e-12, "step {t}: beta1 {b} vs {b1}");
        }
        // Past the end: the final values.
        assert_eq!(s.at(500), s.at(99));
    }

    #[test]
    fn tiny_runs_do_not_divide_by_zero() {
        for total in [1, 2, 3] {
            let s = OneCycle::new(1e-3, total);
            for t in 0..total {
                let (l, b) = s.at(t);
                assert!(l.is_finite() && b.is_finite() && l > 0.0);
            }
        }
    }
}
