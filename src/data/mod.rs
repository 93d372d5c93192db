//! Datasets, batching and the data loader.
//!
//! A [`Dataset`] is a length and samples by index (features as f32, a
//! [`Target`]): [`InMemory`] tensors, [`MnistSplit`], [`ImageFolder`],
//! [`CsvDataset`], and [`Subset`] views from [`train_validation_split`].
//! A [`DataLoader`] batches one for [`crate::train::Fit`], shuffling per
//! epoch from a seed, with worker threads and bounded prefetch, optional
//! [`Augment`]ation, and everything reproducible from the seed.

mod augment;
mod batches;
mod cache;
mod csv;
mod dataset;
mod image_folder;
mod loader;
mod mnist;
mod rng;
mod split;

pub use augment::Augment;
pub use batches::Batches;
pub use cache::{ByteLru, CacheStats};
pub use csv::{CsvDataset, CsvTask};
pub use dataset::{Dataset, InMemory, Sample, Target};
pub use image_folder::{BadFiles, Crop, ImageFolder, ImageFolderBuilder, ScanReport};
pub use loader::{DataLoader, HostBatch, HostEpoch, StagedInputs, Targets};
pub use mnist::{Mnist, MnistSplit};
pub use rng::Rng;
pub use split::{train_validation_split, Subset};
