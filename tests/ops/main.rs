//! Op conformance: each op's forward pass against an independent float64
//! reference written here, and its gradient against finite differences of
//! that reference (see harness.rs).

// Tables of (op, reference) pairs read best as tuples of fn pointers.
#![allow(clippy::type_complexity, clippy::too_many_arguments)]

mod conv_pool;
mod harness;

mod elementwise;
mod linalg;
mod reduce;
mod shape;

mod bad_input;
mod indexing;
mod loss;
mod norm;
