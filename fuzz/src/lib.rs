//! The fuzz targets' shared entry point: `run(target, bytes)` feeds the bytes to one parser or
//! loader; any outcome but a panic, an abort or a hang is a pass.
#[path = "parsers.rs"]
pub mod parsers;
pub use parsers::{run, TARGETS};
