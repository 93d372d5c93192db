//! Training: the one-call-per-step [`Trainer`], inference engines, and the
//! loop around them.

mod trainer;

pub use trainer::{Evaluation, Inference, Loss, Trainer};
