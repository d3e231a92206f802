//! `inceptionxml`: InceptionXML and InceptionXML+ for short-text extreme multi-label
//! classification, on candle. The framework-free parts (formats, text, metrics, clustering) live
//! in the `xmc` crate and are re-exported here.

pub mod device;
pub mod error;
pub mod model;
pub mod ops;
pub mod predict;
pub mod train;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use xmc;
