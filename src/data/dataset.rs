//! The [`Dataset`] trait (a length and samples by index) and [`InMemory`],
//! a dataset of tensors already in host memory.

use std::sync::Arc;

use super::rng::Rng;
use crate::error::{Error, Result};

/// What a sample is trained against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// A class index, for [`crate::Loss::CrossEntropy`] (collated as i32 [n]).
    Class(i32),
    /// A real value, for regression losses (collated as f32 [n, 1]).
    Value(f32),
}

/// One sample: its features (laid out as [`Dataset::feature_shape`], CHW
/// for images) and its target.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `feature_shape().iter().product()` values.
    pub features: Vec<f32>,
    /// The label or regression target.
    pub target: Target,
}

/// A finite, indexable collection of samples of one shape.
///
/// Implementations are shared by the [`super::DataLoader`]'s worker threads,
/// hence `Send + Sync`; a sample must depend only on its index and on the
/// generator it is handed, so that runs repeat.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample's features, e.g. `[3, 64, 64]`.
    fn feature_shape(&self) -> Vec<usize>;

    /// Writes sample `index`'s features into `out` (exactly
    /// `feature_shape().iter().product()` values) and returns its target.
    /// `rng` is `Some` in training, for datasets with random transforms
    /// (a random crop); `None` asks for the deterministic version.
    fn read_into(&self, index: usize, rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target>;

    /// Sample `index`, deterministic (no random transforms).
    fn sample(&self, index: usize) -> Result<Sample> {
        let mut features = vec![0.0; self.feature_shape().iter().product()];
        let target = self.read_into(index, None, &mut features)?;
        Ok(Sample { features, target })
    }

    /// Sample `index`'s target; datasets that know it without decoding
    /// the features override this (used by stratified splits).
    fn target(&self, index: usize) -> Result<Target> {
        Ok(self.sample(index)?.target)
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        (**self).feature_shape()
    }
    fn read_into(&self, index: usize, rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target> {
        (**self).read_into(index, rng, out)
    }
    fn target(&self, index: usize) -> Result<Target> {
        (**self).target(index)
    }
}

/// The error for an index past the end.
pub(crate) fn index_error(what: &str, index: usize, len: usize) -> Error {
    Error::InvalidArgument(format!(
        "{what}: sample index {index} is out of range for {len} samples"
    ))
}

/// The error for an output slice of the wrong length.
pub(crate) fn check_out(what: &str, out: &[f32], expected: usize) -> Result<()> {
    if out.len() == expected {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what}: output has {} values, a sample has {expected}",
            out.len()
        )))
    }
}

/// Samples held in host memory: features as one flat f32 array.
#[derive(Clone, Debug)]
pub struct InMemory {
    features: Vec<f32>,
    shape: Vec<usize>,
    targets: Vec<Target>,
}

impl InMemory {
    /// `targets.len()` samples of `shape`; `features` holds them one after
    /// the other.
    pub fn new(features: Vec<f32>, shape: &[usize], targets: Vec<Target>) -> Result<InMemory> {
        let per_sample: usize = shape.iter().product();
        if per_sample == 0 || features.len() != per_sample * targets.len() {
            return Err(Error::InvalidArgument(format!(
                "InMemory: {} feature values do not make {} samples of shape {shape:?}",
                features.len(),
                targets.len()
            )));
        }
        Ok(InMemory {
            features,
            shape: shape.to_vec(),
            targets,
        })
    }

    /// A classification dataset with i32 labels.
    pub fn classification(features: Vec<f32>, shape: &[usize], labels: &[i32]) -> Result<InMemory> {
        InMemory::new(
            features,
            shape,
            labels.iter().map(|&l| Target::Class(l)).collect(),
        )
    }

    /// A regression dataset with one f32 target per sample.
    pub fn regression(features: Vec<f32>, shape: &[usize], values: &[f32]) -> Result<InMemory> {
        InMemory::new(
            features,
            shape,
            values.iter().map(|&v| Target::Value(v)).collect(),
        )
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.targets.len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }
    fn read_into(&self, index: usize, _rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target> {
        let target = *self
            .targets
            .get(index)
            .ok_or_else(|| index_error("InMemory", index, self.len()))?;
        let n = out.len();
        check_out("InMemory", out, self.features.len() / self.targets.len())?;
        out.copy_from_slice(&self.features[index * n..(index + 1) * n]);
        Ok(target)
    }
    fn target(&self, index: usize) -> Result<Target> {
        self.targets
            .get(index)
            .copied()
            .ok_or_else(|| index_error("InMemory", index, self.len()))
    }
}
