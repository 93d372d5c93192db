//! Op conformance: each op's forward pass against an independent float64
//! reference written here, and its gradient against finite differences of
//! that reference (see harness.rs).

mod conv_pool;
mod harness;
