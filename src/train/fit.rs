//! The training loop around a [`Trainer`]: epochs over batches, validation,
//! schedules, early stopping, callbacks, and a stop handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::schedule::{EarlyStopping, Schedule, Scheduler};
use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Something that yields the (inputs, labels) batches of an epoch.
pub trait BatchSource {
    /// The batches of `epoch` (1-based), in order.
    fn batches(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_>;
}

/// Ends a [`Fit`] cleanly after the current step; clone it into a Ctrl-C
/// handler or another thread.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the loop to stop after the current step.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What an epoch did, passed to callbacks.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: u64,
    /// Steps taken so far in the whole run.
    pub steps: u64,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Validation loss and accuracy, when a validation source was given.
    pub validation: Option<(f64, f64)>,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Steps of the epoch the trainer's non-finite guard skipped (their
    /// loss or a gradient held an inf or a NaN, so they changed nothing).
    pub skipped_steps: u64,
}

/// Why a fit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitEnd {
    /// All epochs ran.
    Completed,
    /// Early stopping fired.
    EarlyStopped,
    /// The stop handle was used.
    Stopped,
    /// More steps were skipped for non-finite values than
    /// [`Fit::skipped_steps_allowed`] allows. The weights are those of the
    /// last good step, and checkpoints written by `on_epoch` callbacks stay
    /// those of the last completed epoch.
    TooManySkippedSteps,
}

type EpochCallback<'a> = Box<dyn FnMut(&EpochReport) -> Result<()> + 'a>;
type StepCallback<'a> = Box<dyn FnMut(u64, f32) + 'a>;

/// A configured training loop: `Fit::new(epochs)...run(&mut trainer, &train, Some(&validation))`.
pub struct Fit<'a> {
    epochs: u64,
    schedule: Schedule,
    early_stopping: Option<EarlyStopping>,
    stop: StopHandle,
    on_epoch: Vec<EpochCallback<'a>>,
    on_step: Vec<StepCallback<'a>>,
    first_epoch: u64,
    skipped_steps_allowed: Option<u64>,
}

impl<'a> Fit<'a> {
    /// Runs `epochs` epochs.
    pub fn new(epochs: u64) -> Fit<'a> {
        Fit {
            epochs,
            schedule: Schedule::Constant,
            early_stopping: None,
            stop: StopHandle::default(),
            on_epoch: Vec::new(),
            on_step: Vec::new(),
            first_epoch: 1,
            skipped_steps_allowed: None,
        }
    }
    /// Go on past up to `count` steps skipped by the trainer's non-finite
    /// guard in the whole run (a NaN in a batch, a loss that overflowed),
    /// and end with [`FitEnd::TooManySkippedSteps`] at the next one. By
    /// default the first skipped step ends the fit with its
    /// [`Error::Numerical`](crate::Error::Numerical).
    pub fn skipped_steps_allowed(mut self, count: u64) -> Fit<'a> {
        self.skipped_steps_allowed = Some(count);
        self
    }
    /// A learning-rate schedule starting from the trainer's rate.
    pub fn schedule(mut self, schedule: Schedule) -> Fit<'a> {
        self.schedule = schedule;
        self
    }
    /// Stop when the validation loss (or training loss without validation) stalls.
    pub fn early_stopping(mut self, stopping: EarlyStopping) -> Fit<'a> {
        self.early_stopping = Some(stopping);
        self
    }
    /// Called after each epoch; an error ends the fit with that error.
    pub fn on_epoch(mut self, callback: impl FnMut(&EpochReport) -> Result<()> + 'a) -> Fit<'a> {
        self.on_epoch.push(Box::new(callback));
        self
    }
    /// Called after each step with (step, loss).
    pub fn on_step(mut self, callback: impl FnMut(u64, f32) + 'a) -> Fit<'a> {
        self.on_step.push(Box::new(callback));
        self
    }
    /// Continue a resumed run from this epoch (1-based).
    pub fn starting_epoch(mut self, epoch: u64) -> Fit<'a> {
        self.first_epoch = epoch.max(1);
        self
    }
    /// A handle that stops the loop after the current step.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs the loop. Returns why it ended and every epoch's report.
    pub fn run(
        mut self,
        trainer: &mut Trainer,
        train: &dyn BatchSource,
        validation: Option<&dyn BatchSource>,
    ) -> Result<(FitEnd, Vec<EpochReport>)> {
        let mut scheduler = Scheduler::new(self.schedule, trainer.learning_rate());
        let mut reports = Vec::new();
        let mut steps = 0u64;
        let mut skipped_in_all = 0u64;
        let skipped_before = trainer.stats()?.skipped_steps;
        for epoch in self.first_epoch..=self.epochs {
            let (mut loss_sum, mut batches, mut skipped) = (0.0, 0u64, 0u64);
            for item in train.batches(epoch) {
                let (inputs, labels) = item?;
                let lr = scheduler.on_step(steps);
                if lr != trainer.learning_rate() {
                    trainer.set_learning_rate(lr)?;
                }
                let loss = match trainer.step_with_loss(&inputs, &labels) {
                    Ok(loss) => loss,
                    Err(Error::Numerical(message)) if self.skipped_steps_allowed.is_some() => {
                        // A skip (the guard counted it) or a plain
                        // non-finite loss without the guard (an error).
                        if trainer.stats()?.skipped_steps == skipped_before + skipped_in_all {
                            return Err(Error::Numerical(message));
                        }
                        skipped_in_all += 1;
                        skipped += 1;
                        steps += 1;
                        if Some(skipped_in_all) > self.skipped_steps_allowed {
                            return Ok((FitEnd::TooManySkippedSteps, reports));
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                loss_sum += f64::from(loss);
                batches += 1;
                for callback in &mut self.on_step {
                    callback(steps, loss);
                }
                steps += 1;
                if self.stop.is_stopped() {
                    return Ok((FitEnd::Stopped, reports));
                }
            }
            let validation = match validation {
                Some(source) => Some(evaluate(trainer, source, epoch)?),
                None => None,
            };
            let train_loss = loss_sum / batches.max(1) as f64;
            let monitored = validation.map_or(train_loss, |(loss, _)| loss);
            let lr = scheduler.on_epoch_end(epoch, monitored);
            if lr != trainer.learning_rate() {
                trainer.set_learning_rate(lr)?;
            }
            let report = EpochReport {
                epoch,
                steps,
                train_loss,
                validation,
                learning_rate: lr,
                skipped_steps: skipped,
            };
            for callback in &mut self.on_epoch {
                callback(&report)?;
            }
            reports.push(report);
            if let Some(stopping) = &mut self.early_stopping {
                if stopping.should_stop(monitored) {
                    return Ok((FitEnd::EarlyStopped, reports));
                }
            }
        }
        Ok((FitEnd::Completed, reports))
    }
}

/// Mean loss and accuracy of `trainer` over a source, in evaluation mode.
pub fn evaluate(trainer: &mut Trainer, source: &dyn BatchSource, epoch: u64) -> Result<(f64, f64)> {
    let (mut loss, mut correct, mut count) = (0.0, 0u64, 0u64);
    for item in source.batches(epoch) {
        let (inputs, labels) = item?;
        let result = trainer.evaluate(&inputs, &labels)?;
        loss += f64::from(result.loss) * result.count as f64;
        correct += result.correct;
        count += result.count;
    }
    Ok((
        loss / count.max(1) as f64,
        correct as f64 / count.max(1) as f64,
    ))
}
