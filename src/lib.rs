//! # ferrometal
//!
//! Deep-learning training and inference with all state resident on the
//! device: a C++17 engine behind a small C ABI (`native/include/ferrometal.h`),
//! wrapped here in safe types.
//!
//! ```
//! use ferrometal::{Buffer, Device};
//!
//! # fn main() -> ferrometal::Result<()> {
//! let device = Device::best()?; // CUDA if built and present, else the CPU
//! let mut buffer = Buffer::from_slice(&device, &[1.0f32, 2.0, 3.0])?;
//! buffer.fill_range(1, 1, 5.0)?;
//! assert_eq!(buffer.to_vec()?, [1.0, 5.0, 3.0]);
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`Error`] values carrying the native message, which names the
//! function and argument at fault. Nothing in this crate panics on bad input.
#![warn(missing_docs)]
// Bad input is an error, never a panic: no unwrap, expect or panic in the
// library (tests and examples may).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod buffer;
pub mod checkpoint;
pub mod data;
mod device;
mod dtype;
mod error;
mod graph;
mod handle;
pub mod metrics;
pub mod nn;
mod staging;
mod stream;
pub mod sys;
mod tensor;
pub mod train;

pub use buffer::Buffer;
pub use device::{Backend, Device, DeviceInfo, Location, PoolStats};
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use graph::{
    Attrs, Conv2d, Exec, Graph, Init, Op, Optimizer, Pool2d, Reduction, Value, BATCH,
    BATCH_DEPENDENT,
};
pub use nn::{Layer, LayerKind, Model, ModelBuilder};
pub use staging::Staging;
pub use stream::{PendingRead, Stream};
pub use tensor::Tensor;
pub use train::{Evaluation, Inference, Loss, Trainer, TrainerOptions, TrainerStats};

/// The library version, "major.minor.patch".
pub fn version() -> &'static str {
    // SAFETY: fm_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(sys::fm_version()) }
        .to_str()
        .unwrap_or("unknown")
}

/// Whether the native library was built for the ABI these bindings expect.
pub fn abi_matches() -> bool {
    // SAFETY: no arguments, no failure.
    let native = unsafe { sys::fm_abi_version() };
    native == sys::FM_ABI_VERSION
}
