//! The InceptionXML model: configuration and layers.

pub mod config;

pub use config::ModelConfig;
