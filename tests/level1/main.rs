//! Level-1 tests: devices, buffers, streams and the pool, through the safe
//! API and, for misuse the safe API rules out, through `ferrometal::sys`.
//! Every test runs on each device present: the CPU always, CUDA device 0
//! when built with `cuda` and a GPU exists (otherwise a skip is printed).

mod bad_input;
mod buffers;
mod devices;
mod staging;
mod streams;

#[path = "../common/mod.rs"]
mod common;

pub use common::devices;
