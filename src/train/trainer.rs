//! The level-3 engine: a model compiled with its loss and optimizer, so
//! that one training step is one call and one device submission.

use std::ffi::CStr;

use crate::device::Device;
use crate::error::{check, Result};
use crate::graph::{Exec, Optimizer};
use crate::handle::OwnedHandle;
use crate::nn::Model;
use crate::sys;
use crate::tensor::Tensor;

/// What a trainer minimises.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Loss {
    /// Softmax cross-entropy against i32 class labels [n].
    CrossEntropy {
        /// 0 for none; 0.1 is common.
        label_smoothing: f64,
    },
    /// Binary cross-entropy on logits against f32 targets shaped like the output.
    BceWithLogits,
    /// Mean squared error against f32 targets.
    Mse,
    /// Mean absolute error against f32 targets.
    Mae,
    /// Huber loss with `delta` against f32 targets.
    Huber {
        /// Where the loss turns from quadratic to linear.
        delta: f64,
    },
}

impl Loss {
    fn to_sys(self) -> sys::fm_loss_config {
        let (loss, label_smoothing, delta) = match self {
            Loss::CrossEntropy { label_smoothing } => {
                (sys::FM_OP_SOFTMAX_CROSS_ENTROPY, label_smoothing, 1.0)
            }
            Loss::BceWithLogits => (sys::FM_OP_BCE_WITH_LOGITS, 0.0, 1.0),
            Loss::Mse => (sys::FM_OP_MSE, 0.0, 1.0),
            Loss::Mae => (sys::FM_OP_MAE, 0.0, 1.0),
            Loss::Huber { delta } => (sys::FM_OP_HUBER, 0.0, delta),
        };
        sys::fm_loss_config {
            loss,
            label_smoothing,
            delta,
        }
    }
}

/// The result of evaluating one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Correct argmax predictions (classification; 0 otherwise).
    pub correct: u64,
    /// Samples in the batch.
    pub count: u64,
}

/// A trainer's options beyond its model, optimizer and loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrainerOptions {
    /// On by default: a step whose loss or any gradient holds an inf or a
    /// NaN changes nothing (weights, optimizer state, running statistics,
    /// the step counter), decided on the device without synchronising.
    /// [`Trainer::step_with_loss`] and [`Trainer::synchronize`] report such
    /// a step as [`Error::Numerical`](crate::Error::Numerical) naming it, and
    /// [`Trainer::stats`] counts them. Off: the step updates everything with
    /// what it computed, and the weights become NaN.
    pub nonfinite_guard: bool,
}

impl Default for TrainerOptions {
    fn default() -> TrainerOptions {
        TrainerOptions {
            nonfinite_guard: true,
        }
    }
}

impl TrainerOptions {
    /// Turns the non-finite guard on or off.
    pub fn nonfinite_guard(mut self, on: bool) -> TrainerOptions {
        self.nonfinite_guard = on;
        self
    }
}

/// What a trainer's steps did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainerStats {
    /// Steps run, skipped ones included.
    pub steps: u64,
    /// Steps the non-finite guard skipped.
    pub skipped_steps: u64,
    /// The 1-based number of the last skipped step (0: none).
    pub last_skipped_step: u64,
}

/// A model compiled for training on one device. Parameters, running
/// statistics and optimizer state stay on the device.
pub struct Trainer {
    handle: OwnedHandle,
    exec: Exec,
    model: Model,
    optimizer: Optimizer,
    loss: Loss,
    learning_rate: f64,
    device: Device,
}

// SAFETY: the C ABI lets a trainer be used by one thread at a time, from any
// thread; every method that runs work takes `&mut self`.
unsafe impl Send for Trainer {}

impl Trainer {
    /// Builds and compiles `model` on `device`. Errors name the layer that
    /// does not fit its input.
    pub fn new(
        device: &Device,
        model: &Model,
        optimizer: &Optimizer,
        loss: Loss,
        seed: u64,
    ) -> Result<Trainer> {
        Trainer::with_options(
            device,
            model,
            optimizer,
            loss,
            seed,
            &TrainerOptions::default(),
        )
    }

    /// [`Trainer::new`] with `options`.
    pub fn with_options(
        device: &Device,
        model: &Model,
        optimizer: &Optimizer,
        loss: Loss,
        seed: u64,
        options: &TrainerOptions,
    ) -> Result<Trainer> {
        let (specs, _names) = model.to_sys()?;
        let raw_options = sys::fm_trainer_options {
            nonfinite_guard: i32::from(options.nonfinite_guard),
        };
        let mut raw = 0;
        // SAFETY: specs (and the names they point into), the shape and the
        // options live across the call; the library copies all of them (the
        // header's ownership rule), so `_names` may be dropped afterwards.
        check(unsafe {
            sys::fm_trainer_new(
                &mut raw,
                device.as_raw(),
                specs.as_ptr(),
                specs.len(),
                model.input_shape.as_ptr(),
                model.input_shape.len(),
                &optimizer.0,
                &loss.to_sys(),
                seed,
                &raw_options,
            )
        })?;
        // SAFETY: a new reference we now own.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let mut exec_raw = 0;
        // SAFETY: valid out-pointer and a live trainer.
        check(unsafe { sys::fm_trainer_exec(&mut exec_raw, handle.raw()) })?;
        // SAFETY: a new reference we now own.
        let exec = Exec::adopt(unsafe { OwnedHandle::from_raw(exec_raw) }, device);
        Ok(Trainer {
            handle,
            exec,
            model: model.clone(),
            optimizer: *optimizer,
            loss,
            learning_rate: optimizer.0.learning_rate,
            device: device.clone(),
        })
    }

    /// The raw `fm_trainer` handle, borrowed (valid while `self` lives).
    pub fn as_raw(&self) -> usize {
        self.handle.raw()
    }

    /// One training step (forward, backward, update) without reading anything back.
    pub fn step(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<()> {
        // SAFETY: live handles; a NULL loss pointer means "do not read back".
        check(unsafe {
            sys::fm_trainer_step(
                self.handle.raw(),
                inputs.as_raw(),
                labels.as_raw(),
                std::ptr::null_mut(),
            )
        })
    }

    /// Waits for the steps so far and returns the data error one of them
    /// found ([`Error::OutOfRange`] for a label out of range). On a GPU,
    /// [`step`](Trainer::step) returns once the step is queued; a bad label
    /// makes that step leave the parameters unchanged and is reported here or
    /// by the next step. [`step_with_loss`](Trainer::step_with_loss) reports
    /// it at once.
    ///
    /// With the non-finite guard on (the default), steps it skipped since
    /// the last report come back as [`Error::Numerical`] naming the last.
    pub fn synchronize(&mut self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_trainer_synchronize(self.handle.raw()) })
    }

    /// Steps run and skipped so far (waits for the queued steps).
    pub fn stats(&mut self) -> Result<TrainerStats> {
        let mut raw = sys::fm_trainer_stats {
            steps: 0,
            skipped_steps: 0,
            last_skipped_step: 0,
        };
        // SAFETY: live handle, valid out-pointer.
        check(unsafe { sys::fm_trainer_stats_get(&mut raw, self.handle.raw()) })?;
        Ok(TrainerStats {
            steps: raw.steps,
            skipped_steps: raw.skipped_steps,
            last_skipped_step: raw.last_skipped_step,
        })
    }

    /// One training step, returning the batch's mean loss (one synchronisation).
    /// [`Error::Numerical`] names the step when the loss or a gradient is
    /// NaN or infinite; with the non-finite guard on (the default) that
    /// step changed nothing.
    pub fn step_with_loss(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<f32> {
        let mut loss = 0.0;
        // SAFETY: live handles, valid out-pointer.
        check(unsafe {
            sys::fm_trainer_step(
                self.handle.raw(),
                inputs.as_raw(),
                labels.as_raw(),
                &mut loss,
            )
        })?;
        Ok(loss)
    }

    /// Loss and correct predictions on a batch, in evaluation mode.
    pub fn evaluate(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<Evaluation> {
        let (mut loss, mut correct) = (0.0, 0);
        // SAFETY: live handles, valid out-pointers.
        check(unsafe {
            sys::fm_trainer_evaluate(
                self.handle.raw(),
                inputs.as_raw(),
                labels.as_raw(),
                &mut loss,
                &mut correct,
            )
        })?;
        Ok(Evaluation {
            loss,
            correct,
            count: inputs.shape().first().copied().unwrap_or(0) as u64,
        })
    }

    /// The model's outputs for `inputs` (evaluation mode).
    pub fn predict(&mut self, inputs: &Tensor) -> Result<Tensor> {
        let mut raw = 0;
        // SAFETY: valid out-pointer, live handles.
        check(unsafe { sys::fm_trainer_predict(&mut raw, self.handle.raw(), inputs.as_raw()) })?;
        Tensor::adopt(raw, &self.device)
    }

    /// Changes the learning rate (no recompilation).
    pub fn set_learning_rate(&mut self, learning_rate: f64) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::fm_trainer_set_learning_rate(self.handle.raw(), learning_rate) })?;
        self.learning_rate = learning_rate;
        Ok(())
    }

    /// The learning rate in use.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// The model this trainer was built from.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The optimizer settings it was built with.
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The loss it minimises.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// Runs of the underlying executable (steps and evaluations; seeds dropout).
    pub fn run_count(&self) -> Result<u64> {
        self.exec.run_count()
    }

    /// Restores the run counter (see [`crate::checkpoint`]).
    pub fn set_run_count(&mut self, count: u64) -> Result<()> {
        self.exec.set_run_count(count)
    }

    /// The device it trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every state variable as (name, is_parameter): parameters, then
    /// running statistics, then optimizer state.
    pub fn state_names(&self) -> Result<Vec<(String, bool)>> {
        let mut count = 0;
        // SAFETY: valid out-pointer.
        check(unsafe { sys::fm_trainer_state_count(&mut count, self.handle.raw()) })?;
        (0..count)
            .map(|i| {
                let (mut name, mut parameter) = (std::ptr::null(), 0);
                // SAFETY: valid out-pointers; the name lives as long as the trainer.
                check(unsafe {
                    sys::fm_trainer_state_name(&mut name, &mut parameter, self.handle.raw(), i)
                })?;
                // SAFETY: NUL-terminated, copied at once.
                Ok((
                    unsafe { CStr::from_ptr(name) }
                        .to_string_lossy()
                        .into_owned(),
                    parameter != 0,
                ))
            })
            .collect()
    }

    /// The shape of state variable `name`.
    pub fn state_shape(&self, name: &str) -> Result<Vec<usize>> {
        self.exec.variable_shape(name)
    }

    /// A copy of state variable `name` (e.g. "dense0.weight").
    pub fn read_state(&self, name: &str) -> Result<Vec<f32>> {
        self.exec.read_variable(name)
    }

    /// Overwrites state variable `name` (its size must match).
    pub fn write_state(&mut self, name: &str, values: &[f32]) -> Result<()> {
        if name == "optimizer.lr" {
            if let [lr] = values {
                self.learning_rate = f64::from(*lr);
            }
        }
        self.exec.write_variable(name, values)
    }

    /// An inference engine on `device` with a copy of the current parameters.
    pub fn inference(&self, device: &Device) -> Result<Inference> {
        let mut raw = 0;
        // SAFETY: valid out-pointer, live handles.
        check(unsafe {
            sys::fm_inference_from_trainer(&mut raw, self.handle.raw(), device.as_raw())
        })?;
        Inference::adopt(raw, device)
    }

    /// Output shape of one sample.
    pub fn output_shape(&self) -> Result<Vec<i64>> {
        let mut dims = [0i64; sys::FM_MAX_RANK as usize];
        let mut rank = 0;
        // SAFETY: dims has FM_MAX_RANK entries.
        check(unsafe {
            sys::fm_trainer_output_shape(dims.as_mut_ptr(), &mut rank, self.handle.raw())
        })?;
        Ok(dims[..rank].to_vec())
    }
}

/// A model's evaluation pass alone, for deployment.
pub struct Inference {
    handle: OwnedHandle,
    exec: Exec,
    device: Device,
}

// SAFETY: used by one thread at a time (the C contract); running takes `&mut self`.
unsafe impl Send for Inference {}

impl Inference {
    /// A fresh engine for `model` (load parameters with [`Inference::write_parameter`]).
    pub fn new(device: &Device, model: &Model) -> Result<Inference> {
        let (specs, _names) = model.to_sys()?;
        let mut raw = 0;
        // SAFETY: specs, names and shape live across the call.
        check(unsafe {
            sys::fm_inference_new(
                &mut raw,
                device.as_raw(),
                specs.as_ptr(),
                specs.len(),
                model.input_shape.as_ptr(),
                model.input_shape.len(),
            )
        })?;
        Inference::adopt(raw, device)
    }

    fn adopt(raw: usize, device: &Device) -> Result<Inference> {
        // SAFETY: the caller hands over a new reference.
        let handle = unsafe { OwnedHandle::from_raw(raw) };
        let mut exec_raw = 0;
        // SAFETY: valid out-pointer, live handle.
        check(unsafe { sys::fm_inference_exec(&mut exec_raw, handle.raw()) })?;
        // SAFETY: a new reference we now own.
        let exec = Exec::adopt(unsafe { OwnedHandle::from_raw(exec_raw) }, device);
        Ok(Inference {
            handle,
            exec,
            device: device.clone(),
        })
    }

    /// The outputs for `inputs`.
    pub fn infer(&mut self, inputs: &Tensor) -> Result<Tensor> {
        let mut raw = 0;
        // SAFETY: valid out-pointer, live handles.
        check(unsafe { sys::fm_infer(&mut raw, self.handle.raw(), inputs.as_raw()) })?;
        Tensor::adopt(raw, &self.device)
    }

    /// Overwrites parameter `name`.
    pub fn write_parameter(&mut self, name: &str, values: &[f32]) -> Result<()> {
        self.exec.write_variable(name, values)
    }

    /// A copy of parameter `name`.
    pub fn read_parameter(&self, name: &str) -> Result<Vec<f32>> {
        self.exec.read_variable(name)
    }

    /// Writes the parameters and running statistics to `path`, crash-safely,
    /// as a checkpoint that [`Inference::load_weights`] and
    /// [`checkpoint::load_weights`](crate::checkpoint::load_weights) read.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = crate::checkpoint::c_path(path.as_ref())?;
        // SAFETY: live handle, NUL-terminated path, no metadata.
        check(unsafe { sys::fm_inference_save(self.handle.raw(), path.as_ptr(), std::ptr::null()) })
    }

    /// Loads the parameters and running statistics from a checkpoint of the
    /// same model (a trainer's, with any optimizer, or an engine's) or a
    /// plain safetensors file of exactly its weights. Nothing changes on
    /// error.
    pub fn load_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = crate::checkpoint::c_path(path.as_ref())?;
        // SAFETY: live handle, NUL-terminated path.
        check(unsafe { sys::fm_inference_load(self.handle.raw(), path.as_ptr()) })
    }
}
