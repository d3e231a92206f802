//! The `inceptionxml` command-line tool as a library: one module per subcommand (`Args` and
//! `run`), used by the binary (`main.rs`), and the HTTP server's request path
//! ([`serve::fuzz`]), which the fuzz target and the replay of its corpus drive in-process.

pub mod bench;
pub mod cluster;
pub mod common;
pub mod demo;
pub mod eval;
pub mod import;
pub mod output;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod serve;
pub mod split;
pub mod stats;
pub mod synth;
pub mod train;
pub mod vectors;
