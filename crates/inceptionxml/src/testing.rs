//! Comparison helpers shared by the unit tests (one definition each instead of a closure per
//! test file).

use candle_core::Tensor;

/// A tensor's values, row-major on the host.
pub fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The largest magnitude in `v` (0 for an empty slice).
pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// `max |a − b|` over two slices of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// `max |a − b|` relative to the scale `max(max |scale_of|, floor)`.
pub fn max_rel_diff(a: &[f32], b: &[f32], scale_of: &[f32], floor: f32) -> f32 {
    max_abs_diff(a, b) / max_abs(scale_of).max(floor)
}

/// Asserts `|a[i] − b[i]| ≤ tol · (1 + |b[i]|)` for every `i`, naming the first that is not.
pub fn assert_each_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}
