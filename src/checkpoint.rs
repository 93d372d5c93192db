//! Checkpoints: one safetensors file holding every state variable (weights,
//! running statistics, optimizer state) as f32 tensors, written and read by
//! the native core (`fm_trainer_save`, `fm_trainer_load`), so C and Swift
//! hosts share the format. The core adds the format, optimizer, run
//! counter and a CRC-32C of the data to its `__metadata__`; this module
//! adds the model spec, optimizer, loss and training state as JSON, which
//! [`resume`] rebuilds the trainer from.
//!
//! Saving is crash-safe: a temporary file of a unique name, fsynced and
//! renamed over the path, then the folder fsynced; a crash leaves the old
//! complete file or the new one. Loading checks the whole file (header,
//! every tensor against the model, checksum) before it changes anything.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{check, Error, Result};
use crate::graph::Optimizer;
use crate::nn::Model;
use crate::sys;
use crate::train::{Loss, Trainer};

/// Where training stood when a checkpoint was written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Completed epochs.
    pub epoch: u64,
    /// Completed steps.
    pub step: u64,
    /// The executable's run counter (dropout masks continue from it).
    pub runs: u64,
    /// The seed data shuffling and initialisation used.
    pub seed: u64,
    /// Scheduler, early stopping and other loop state.
    pub extra: serde_json::Value,
}

/// Everything needed to rebuild a trainer, stored as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Recipe {
    format: String,
    model: Model,
    optimizer: BTreeMap<String, f64>,
    loss: LossRecord,
    state: TrainingState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LossRecord {
    CrossEntropy { label_smoothing: f64 },
    BceWithLogits,
    Mse,
    Mae,
    Huber { delta: f64 },
}

/// The version of the JSON this module keeps in the checkpoint (the core
/// versions the file itself).
const FORMAT: &str = "ferrometal-recipe-1";

fn optimizer_record(o: &Optimizer) -> BTreeMap<String, f64> {
    let o = &o.0;
    BTreeMap::from([
        ("kind".into(), f64::from(o.kind)),
        ("learning_rate".into(), o.learning_rate),
        ("momentum".into(), o.momentum),
        ("dampening".into(), o.dampening),
        ("nesterov".into(), f64::from(o.nesterov)),
        ("beta1".into(), o.beta1),
        ("beta2".into(), o.beta2),
        ("eps".into(), o.eps),
        ("weight_decay".into(), o.weight_decay),
        ("alpha".into(), o.alpha),
        ("centered".into(), f64::from(o.centered)),
        ("rho".into(), o.rho),
        ("initial_accumulator".into(), o.initial_accumulator),
        ("momentum_decay".into(), o.momentum_decay),
        ("clip_value".into(), o.clip_value),
        ("clip_norm".into(), o.clip_norm),
    ])
}

fn optimizer_from(record: &BTreeMap<String, f64>) -> Result<Optimizer> {
    let get = |key: &str| {
        record
            .get(key)
            .copied()
            .ok_or_else(|| Error::Io(format!("checkpoint: optimizer field '{key}' is missing")))
    };
    Ok(Optimizer(sys::fm_optimizer {
        kind: get("kind")? as u32,
        learning_rate: get("learning_rate")?,
        momentum: get("momentum")?,
        dampening: get("dampening")?,
        nesterov: get("nesterov")? as i32,
        beta1: get("beta1")?,
        beta2: get("beta2")?,
        eps: get("eps")?,
        weight_decay: get("weight_decay")?,
        alpha: get("alpha")?,
        centered: get("centered")? as i32,
        rho: get("rho")?,
        initial_accumulator: get("initial_accumulator")?,
        momentum_decay: get("momentum_decay")?,
        clip_value: get("clip_value")?,
        clip_norm: get("clip_norm")?,
    }))
}

impl From<Loss> for LossRecord {
    fn from(loss: Loss) -> LossRecord {
        match loss {
            Loss::CrossEntropy { label_smoothing } => LossRecord::CrossEntropy { label_smoothing },
            Loss::BceWithLogits => LossRecord::BceWithLogits,
            Loss::Mse => LossRecord::Mse,
            Loss::Mae => LossRecord::Mae,
            Loss::Huber { delta } => LossRecord::Huber { delta },
        }
    }
}

impl From<&LossRecord> for Loss {
    fn from(record: &LossRecord) -> Loss {
        match *record {
            LossRecord::CrossEntropy { label_smoothing } => Loss::CrossEntropy { label_smoothing },
            LossRecord::BceWithLogits => Loss::BceWithLogits,
            LossRecord::Mse => Loss::Mse,
            LossRecord::Mae => Loss::Mae,
            LossRecord::Huber { delta } => Loss::Huber { delta },
        }
    }
}

pub(crate) fn c_path(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| Error::InvalidArgument(format!("path {} is not UTF-8", path.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes)
        .map_err(|_| Error::InvalidArgument(format!("path {} contains a NUL byte", path.display())))
}

/// Writes `trainer`'s full state and `state` to `path` atomically (see the
/// module's documentation).
pub fn save(trainer: &Trainer, path: impl AsRef<Path>, state: &TrainingState) -> Result<()> {
    let path = path.as_ref();
    let mut state = state.clone();
    state.runs = trainer.run_count()?;
    let recipe = Recipe {
        format: FORMAT.into(),
        model: trainer.model().clone(),
        optimizer: optimizer_record(trainer.optimizer()),
        loss: trainer.loss().into(),
        state,
    };
    let recipe = serde_json::to_string(&recipe)
        .map_err(|e| Error::Internal(format!("checkpoint JSON: {e}")))?;
    let recipe = CString::new(recipe)
        .map_err(|_| Error::Internal("checkpoint JSON holds a NUL byte".into()))?;
    let c_path = c_path(path)?;
    // SAFETY: live trainer; both strings are NUL-terminated and outlive the call.
    check(unsafe { sys::fm_trainer_save(trainer.as_raw(), c_path.as_ptr(), recipe.as_ptr()) })
}

/// The recipe stored in the checkpoint at `path`.
fn recipe(path: &Path) -> Result<Recipe> {
    let c_path = c_path(path)?;
    let mut length = 0usize;
    // SAFETY: capacity 0 with a NULL buffer asks only for the length.
    check(unsafe {
        sys::fm_checkpoint_metadata(std::ptr::null_mut(), 0, &mut length, c_path.as_ptr())
    })?;
    let mut text = vec![0u8; length + 1];
    // SAFETY: `text` has room for length + 1 bytes.
    check(unsafe {
        sys::fm_checkpoint_metadata(
            text.as_mut_ptr().cast(),
            text.len(),
            &mut length,
            c_path.as_ptr(),
        )
    })?;
    text.truncate(length.min(text.len() - 1));
    let corrupt = |why: String| {
        Error::Io(format!(
            "checkpoint {} has bad metadata: {why}",
            path.display()
        ))
    };
    let recipe: Recipe = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if recipe.format != FORMAT {
        return Err(corrupt(format!(
            "format '{}', expected '{FORMAT}'",
            recipe.format
        )));
    }
    Ok(recipe)
}

/// A lower bound of the bytes `model`'s parameters take: every dense or
/// convolution layer has at least `units` x kernel area weights, whatever
/// its input. A checkpoint whose file is smaller cannot hold the model, so
/// a hostile spec (a layer of a million units in a 14 KB file) is refused
/// before the trainer is built and its memory allocated.
fn parameter_bytes_at_least(model: &Model) -> u128 {
    model
        .layers
        .iter()
        .map(|layer| match layer.kind {
            crate::nn::LayerKind::Dense => layer.units.max(0) as u128,
            crate::nn::LayerKind::Conv2d | crate::nn::LayerKind::ConvTranspose2d => {
                layer.units.max(0) as u128
                    * layer.kernel_size[0].max(0) as u128
                    * layer.kernel_size[1].max(0) as u128
            }
            _ => 0,
        })
        .sum::<u128>()
        * 4
}

/// A trainer rebuilt from the checkpoint at `path` on `device`, with all its
/// state restored, and the training state to continue from.
pub fn resume(device: &crate::Device, path: impl AsRef<Path>) -> Result<(Trainer, TrainingState)> {
    let path = path.as_ref();
    let recipe = recipe(path)?;
    let size = std::fs::metadata(path)
        .map_err(|e| Error::Io(format!("cannot read checkpoint {}: {e}", path.display())))?
        .len();
    let needed = parameter_bytes_at_least(&recipe.model);
    if needed > u128::from(size) {
        return Err(Error::Io(format!(
            "checkpoint {} is corrupt: its model needs at least {needed} bytes of weights, the file has {size}",
            path.display()
        )));
    }
    let optimizer = optimizer_from(&recipe.optimizer)?;
    let mut trainer = Trainer::new(
        device,
        &recipe.model,
        &optimizer,
        (&recipe.loss).into(),
        recipe.state.seed,
    )?;
    load(&mut trainer, path, sys::fm_trainer_load)?;
    Ok((trainer, recipe.state))
}

fn load(
    trainer: &mut Trainer,
    path: &Path,
    function: unsafe extern "C" fn(usize, *const std::os::raw::c_char) -> sys::fm_status,
) -> Result<()> {
    let c_path = c_path(path)?;
    // SAFETY: live trainer, NUL-terminated path.
    check(unsafe { function(trainer.as_raw(), c_path.as_ptr()) })
}

/// Loads the checkpoint's full state (weights, running statistics,
/// optimizer state, run counter) into an existing trainer of the same model
/// and optimizer. Nothing changes on error.
pub fn load_into(trainer: &mut Trainer, path: impl AsRef<Path>) -> Result<TrainingState> {
    let path = path.as_ref();
    let recipe = recipe(path)?;
    if &recipe.model != trainer.model() {
        return Err(Error::InvalidArgument(format!(
            "checkpoint {} holds another model than this trainer's",
            path.display()
        )));
    }
    load(trainer, path, sys::fm_trainer_load)?;
    Ok(recipe.state)
}

/// Loads only the weights (parameters and running statistics) into
/// `trainer`, keeping its optimizer state: from a checkpoint of the same
/// model with any optimizer, or from a plain safetensors file (written by
/// another tool) whose f32 tensors are named and shaped as the model's
/// state (`dense0.weight`, `batch_norm1.running_mean`, ...), with no others.
/// A missing or extra tensor, or a shape that differs, is an error naming
/// it, and nothing changes.
pub fn load_weights(trainer: &mut Trainer, path: impl AsRef<Path>) -> Result<()> {
    load(trainer, path.as_ref(), sys::fm_trainer_load_weights)
}
