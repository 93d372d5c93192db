//! Datasets and batching.

mod batches;
mod mnist;

pub use batches::Batches;
pub use mnist::{Mnist, MnistSplit};
