//! One module per subcommand: each parses its flags (clap `Args`) and calls library functions.

pub mod eval;
pub mod cluster;
pub mod bench;
pub mod stats;
pub mod synth;
