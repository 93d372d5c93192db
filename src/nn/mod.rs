//! Models as sequences of layers, built with [`Model::builder`].

mod layer;
mod model;

pub mod reference;

pub use layer::{Layer, LayerKind, WeightInit};
pub use model::{Model, ModelBuilder};
