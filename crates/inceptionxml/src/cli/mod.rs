//! One module per subcommand: each parses its flags (clap `Args`) and calls library functions.

pub mod bench;
pub mod cluster;
pub mod eval;
pub mod stats;
pub mod synth;
