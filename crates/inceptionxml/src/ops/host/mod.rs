//! Host kernels on plain slices, outside candle: what the fused CPU paths are made of. One SIMD
//! dispatch for all of them (`cpu`).
//!
//! | module | job |
//! |---|---|
//! | `cpu` | the run-time AVX2 + FMA dispatch (`dispatch!`, `simd_fn!`) |
//! | `mm` | bounds-checked strided GEMMs over the `gemm` crate (crate-private) |
//! | [`simd`] | dot products (f32, exact int8·int16) and `axpy` |
//! | [`vmath`] | vectorised GELU, BatchNorm and BCE row kernels |
//! | [`gelu_bn`] | `BN(GELU(z + b))` forward and backward over row layouts |
//! | [`encoder`] | the whole encoder, forward and backward, on reused buffers |
//! | [`bn_hidden`] | plain InceptionXML's hidden layer, forward and backward |
//! | [`residual_hidden`] | InceptionXML+'s residual hidden layers, forward and backward |
//! | [`linear_bce`] | a classifier and its BCE, blocked, forward and backward |

pub mod bn_hidden;
pub(crate) mod cpu;
pub mod encoder;
pub mod gelu_bn;
pub mod linear_bce;
pub(crate) mod mm;
pub mod residual_hidden;
pub mod simd;
pub mod vmath;
