//! The one run-time SIMD dispatch of the host kernels. The binary targets baseline x86-64, so
//! the AVX2 + FMA builds of a kernel are chosen at run time, here and only here: [`dispatch!`]
//! calls a kernel's wide build where the CPU has AVX2 and FMA ([`has_avx2_fma`], checked once)
//! and its baseline build otherwise; [`simd_fn!`] makes both builds of one body. Every kernel
//! family (`simd` dot products, `vmath` row kernels, the candidates' block kernels, dropout
//! masks) goes through them, so the safety argument below is made once.

/// Whether this CPU runs the AVX2 + FMA kernels (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Evaluates `$wide` where the CPU has AVX2 and FMA and returns it from the enclosing function;
/// otherwise evaluates to `$plain`. `$wide` must be a call of an `unsafe fn` compiled with
/// `#[target_feature(enable = "avx2,fma")]` whose only safety condition is that the CPU supports
/// those features (the crate's wide kernels document exactly that under `# Safety`), with plain
/// values as arguments. Use it as the whole body of the safe wrapper.
macro_rules! dispatch {
    ($wide:expr, $plain:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if $crate::ops::host::cpu::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), the only condition of
            // the target-feature kernel called here (see `dispatch!`'s contract).
            #[allow(unused_unsafe)]
            return unsafe { $wide };
        }
        $plain
    }};
}
pub(crate) use dispatch;

/// A safe function `$name` whose body is `$body(args)`, compiled twice: with AVX2 + FMA enabled
/// (the compiler vectorises it for 256-bit registers; no FMA contraction without fast-math, so
/// both builds compute the same values) and for baseline x86-64, chosen by [`dispatch!`].
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            /// `$body` compiled with AVX2 + FMA.
            ///
            /// # Safety
            /// The CPU supports AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            $crate::ops::host::cpu::dispatch!(wide($($arg),*), $body($($arg),*))
        }
    };
}
pub(crate) use simd_fn;
