//! Train/validation splits, plain or stratified, as [`Subset`] views.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::dataset::{index_error, Dataset, Target};
use super::rng::Rng;
use crate::error::{Error, Result};

/// The samples of a dataset at some indices, in that order.
#[derive(Clone)]
pub struct Subset {
    dataset: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The view of `dataset` at `indices` (each checked against its length).
    pub fn new(dataset: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(index_error("Subset", bad, dataset.len()));
        }
        Ok(Subset { dataset, indices })
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn feature_shape(&self) -> Vec<usize> {
        self.dataset.feature_shape()
    }
    fn read_into(&self, index: usize, rng: Option<&mut Rng>, out: &mut [f32]) -> Result<Target> {
        let &inner = self
            .indices
            .get(index)
            .ok_or_else(|| index_error("Subset", index, self.len()))?;
        self.dataset.read_into(inner, rng, out)
    }
    fn target(&self, index: usize) -> Result<Target> {
        let &inner = self
            .indices
            .get(index)
            .ok_or_else(|| index_error("Subset", index, self.len()))?;
        self.dataset.target(inner)
    }
}

/// Splits `dataset` into (train, validation) with about `validation`
/// (a fraction in (0, 1)) of the samples in the second, shuffled from
/// `seed`. `stratified` splits each class separately, so both parts keep
/// the class proportions (it needs [`Target::Class`] targets).
pub fn train_validation_split(
    dataset: Arc<dyn Dataset>,
    validation: f64,
    stratified: bool,
    seed: u64,
) -> Result<(Subset, Subset)> {
    if !(validation > 0.0 && validation < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "train_validation_split: validation fraction {validation} is not in (0, 1)"
        )));
    }
    let len = dataset.len();
    let groups: Vec<Vec<usize>> = if stratified {
        let mut by_class: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for i in 0..len {
            match dataset.target(i)? {
                Target::Class(c) => by_class.entry(c).or_default().push(i),
                Target::Value(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "train_validation_split: stratified split needs class targets, sample {i} has a real value"
                    )))
                }
            }
        }
        by_class.into_values().collect()
    } else {
        vec![(0..len).collect()]
    };
    let mut rng = Rng::new(seed);
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for mut group in groups {
        for i in (1..group.len()).rev() {
            let j = rng.below(i + 1);
            group.swap(i, j);
        }
        let take = (group.len() as f64 * validation).round() as usize;
        valid.extend_from_slice(&group[..take]);
        train.extend_from_slice(&group[take..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok((
        Subset::new(dataset.clone(), train)?,
        Subset::new(dataset, valid)?,
    ))
}
