//! `xmc`: the framework-free half of inceptionxml.
//!
//! Everything here works without a tensor engine: the Extreme Classification Repository data
//! formats, the text pipeline (cleaning, stop words, vocabulary, fixed-length id sequences),
//! word-vector files, ranking metrics with inverse propensities, and label clustering
//! (TF-IDF, PIFA, balanced hierarchical spherical 2-means).

pub mod error;

// Data formats.
pub mod bow;
pub mod dataset;
pub mod import;
pub mod io;
pub mod labels;
pub mod predictions;
pub mod sparse;
pub mod stats;
pub mod texts;

// Text pipeline and word vectors.
pub mod embeddings;
pub mod stopwords;
pub mod subwords;
pub mod text;
pub mod vectors;
pub mod vocab;

// Evaluation.
pub mod metrics;

// Label clustering.
pub mod cluster;
pub mod cluster_quality;
pub mod pifa;
pub mod shortlist;
pub mod synthetic;
pub mod tfidf;

// The sparse lexical model: linear classifiers over a label tree.
pub mod linear;
pub mod tree;

pub use error::{Error, Result};
pub use sparse::SparseMatrix;
