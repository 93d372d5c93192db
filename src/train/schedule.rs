//! Learning-rate schedules and early stopping. The learning rate is a
//! device scalar of the trainer, so changing it never recompiles.

use serde::{Deserialize, Serialize};

/// How the learning rate evolves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiplied by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: u64,
        /// Factor per decay.
        gamma: f64,
    },
    /// Multiplied by `gamma` every epoch.
    Exponential {
        /// Factor per epoch.
        gamma: f64,
    },
    /// Linear warmup over `warmup_steps`, then a cosine from the base rate
    /// down to `min_lr` at `total_steps`.
    CosineWithWarmup {
        /// Steps of linear warmup from 0.
        warmup_steps: u64,
        /// Steps at which the cosine reaches `min_lr`.
        total_steps: u64,
        /// Floor of the cosine.
        min_lr: f64,
    },
    /// Multiplied by `factor` when the monitored loss has not improved by
    /// more than `threshold` (relative) for `patience` epochs.
    ReduceOnPlateau {
        /// Factor per reduction.
        factor: f64,
        /// Epochs without improvement tolerated.
        patience: u64,
        /// Relative improvement that counts.
        threshold: f64,
        /// Floor.
        min_lr: f64,
    },
}

/// A schedule in progress: its base rate and what it has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    schedule: Schedule,
    base_lr: f64,
    lr: f64,
    best: Option<f64>,
    bad_epochs: u64,
}

impl Scheduler {
    /// Starts `schedule` from `base_lr`.
    pub fn new(schedule: Schedule, base_lr: f64) -> Scheduler {
        let lr = match schedule {
            Schedule::CosineWithWarmup { warmup_steps, .. } if warmup_steps > 0 => 0.0,
            _ => base_lr,
        };
        Scheduler {
            schedule,
            base_lr,
            lr,
            best: None,
            bad_epochs: 0,
        }
    }

    /// The learning rate to use now.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Called before step `step` (0-based, counted over the whole run).
    pub fn on_step(&mut self, step: u64) -> f64 {
        if let Schedule::CosineWithWarmup {
            warmup_steps,
            total_steps,
            min_lr,
        } = self.schedule
        {
            self.lr = if step < warmup_steps {
                self.base_lr * (step + 1) as f64 / warmup_steps as f64
            } else {
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((step - warmup_steps) as f64 / span).min(1.0);
                min_lr
                    + (self.base_lr - min_lr)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            };
        }
        self.lr
    }

    /// Called after epoch `epoch` (1-based) with the monitored loss.
    pub fn on_epoch_end(&mut self, epoch: u64, monitored: f64) -> f64 {
        match self.schedule {
            Schedule::Step { every, gamma } => {
                self.lr = self.base_lr * gamma.powi((epoch / every.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => self.lr = self.base_lr * gamma.powi(epoch as i32),
            Schedule::ReduceOnPlateau {
                factor,
                patience,
                threshold,
                min_lr,
            } => {
                let improved = self
                    .best
                    .is_none_or(|best| monitored < best * (1.0 - threshold));
                if improved {
                    self.best = Some(monitored);
                    self.bad_epochs = 0;
                } else {
                    self.bad_epochs += 1;
                    if self.bad_epochs > patience {
                        self.lr = (self.lr * factor).max(min_lr);
                        self.bad_epochs = 0;
                    }
                }
            }
            Schedule::Constant | Schedule::CosineWithWarmup { .. } => {}
        }
        self.lr
    }
}

/// Stops training when the monitored loss stops improving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    patience: u64,
    min_delta: f64,
    best: Option<f64>,
    bad_epochs: u64,
}

impl EarlyStopping {
    /// Stop after `patience` epochs without the loss falling by more than `min_delta`.
    pub fn new(patience: u64, min_delta: f64) -> EarlyStopping {
        EarlyStopping {
            patience,
            min_delta,
            best: None,
            bad_epochs: 0,
        }
    }

    /// Records an epoch's loss; true when training should stop.
    pub fn should_stop(&mut self, monitored: f64) -> bool {
        if self
            .best
            .is_none_or(|best| monitored < best - self.min_delta)
        {
            self.best = Some(monitored);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        self.bad_epochs >= self.patience
    }

    /// The best loss seen.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}
