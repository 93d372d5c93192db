//! The three reference models of DESIGN.md, which the benchmarks
//! (`examples/bench.rs`, `bench/pytorch_bench.py`), the image-folder example
//! and the cross-backend tests train.

use super::model::{Model, ModelBuilder};
use crate::error::Result;

/// 3×64×64 → conv 8, 16, 32 (3×3, stride 2, padding 1, ReLU) → flatten →
/// dense 64 ReLU → dense `classes` (the seeds' cats-vs-dogs CNN).
pub fn cnn64(classes: i64) -> Result<Model> {
    Model::builder([3, 64, 64])
        .conv2d_with(8, 3, 2, 1)
        .relu()
        .conv2d_with(16, 3, 2, 1)
        .relu()
        .conv2d_with(32, 3, 2, 1)
        .relu()
        .flatten()
        .dense(64)
        .relu()
        .dense(classes)
        .build()
}

/// 784 → 256 ReLU → 128 ReLU → 10.
pub fn mlp() -> Result<Model> {
    Model::builder([784])
        .dense(256)
        .relu()
        .dense(128)
        .relu()
        .dense(10)
        .build()
}

/// 3×32×32 → [conv32 BN ReLU]×2 → maxpool → [conv64 BN ReLU]×2 → maxpool →
/// conv128 BN ReLU → maxpool → flatten → dense 10 (3×3 convolutions, padding 1).
pub fn cifar() -> Result<Model> {
    let block = |b: ModelBuilder, units| b.conv2d_with(units, 3, 1, 1).batch_norm().relu();
    let mut b = Model::builder([3, 32, 32]);
    b = block(block(b, 32), 32).max_pool2d(2);
    b = block(block(b, 64), 64).max_pool2d(2);
    b = block(b, 128).max_pool2d(2);
    b.flatten().dense(10).build()
}
