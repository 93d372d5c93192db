//! Training: the one-call-per-step [`Trainer`], inference engines, and the
//! loop around them ([`Fit`], schedules, early stopping).

mod fit;
mod schedule;
mod trainer;

pub use fit::{evaluate, BatchSource, EpochReport, Fit, FitEnd, StopHandle};
pub use schedule::{EarlyStopping, Schedule, Scheduler};
pub use trainer::{Evaluation, Inference, Loss, Trainer, TrainerOptions, TrainerStats};
