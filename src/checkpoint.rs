//! Checkpoints: one safetensors file holding every state variable (weights,
//! running statistics, optimizer state) as f32 tensors, with the model
//! spec, optimizer, loss and training state as JSON in its `__metadata__`.
//! One file, written to a temporary name and renamed, so a crash never
//! leaves a half-written or mismatched checkpoint behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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

const FORMAT: &str = "ferrometal-checkpoint-1";

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

/// Writes `trainer`'s full state and `state` to `path` atomically.
pub fn save(trainer: &Trainer, path: impl AsRef<Path>, state: &TrainingState) -> Result<()> {
    let path = path.as_ref();
    let mut tensors = Vec::new();
    for (name, _) in trainer.state_names()? {
        let shape = trainer.state_shape(&name)?;
        let values = trainer.read_state(&name)?;
        tensors.push((name, shape, values));
    }
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
    let bytes = encode(&tensors, &recipe);
    let name = path.file_name().ok_or_else(|| {
        Error::Io(format!(
            "checkpoint path {} has no file name",
            path.display()
        ))
    })?;
    let temporary = path.with_file_name(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io =
        |what: &str, e: std::io::Error| Error::Io(format!("{what} {}: {e}", temporary.display()));
    {
        let mut file = std::fs::File::create(&temporary).map_err(|e| io("cannot create", e))?;
        file.write_all(&bytes).map_err(|e| io("cannot write", e))?;
        file.sync_all().map_err(|e| io("cannot flush", e))?;
    }
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::Io(format!(
            "cannot move the checkpoint to {}: {e}",
            path.display()
        ))
    })
}

/// A trainer rebuilt from the checkpoint at `path` on `device`, with all its
/// state restored, and the training state to continue from.
pub fn resume(device: &crate::Device, path: impl AsRef<Path>) -> Result<(Trainer, TrainingState)> {
    let (recipe, tensors) = read(path.as_ref())?;
    let optimizer = optimizer_from(&recipe.optimizer)?;
    let mut trainer = Trainer::new(
        device,
        &recipe.model,
        &optimizer,
        (&recipe.loss).into(),
        recipe.state.seed,
    )?;
    restore(&mut trainer, &tensors, path.as_ref())?;
    trainer.set_run_count(recipe.state.runs)?;
    Ok((trainer, recipe.state))
}

/// Loads the checkpoint's state into an existing trainer of the same model.
pub fn load_into(trainer: &mut Trainer, path: impl AsRef<Path>) -> Result<TrainingState> {
    let (recipe, tensors) = read(path.as_ref())?;
    if &recipe.model != trainer.model() {
        return Err(Error::InvalidArgument(format!(
            "checkpoint {} holds another model than this trainer's",
            path.as_ref().display()
        )));
    }
    restore(trainer, &tensors, path.as_ref())?;
    trainer.set_run_count(recipe.state.runs)?;
    Ok(recipe.state)
}

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn restore(trainer: &mut Trainer, tensors: &Tensors, path: &Path) -> Result<()> {
    let names = trainer.state_names()?;
    // Check everything before writing anything, so a bad file changes nothing.
    for (name, _) in &names {
        let expected = trainer.state_shape(name)?;
        match tensors.get(name) {
            None => {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint {}: tensor '{name}' is missing",
                    path.display()
                )))
            }
            Some((shape, _)) if *shape != expected => {
                return Err(Error::ShapeMismatch(format!(
                    "checkpoint {}: '{name}' has shape {shape:?}, the model needs {expected:?}",
                    path.display()
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !names.iter().any(|(n, _)| n == *k)) {
        return Err(Error::InvalidArgument(format!(
            "checkpoint {}: tensor '{extra}' is not in this model",
            path.display()
        )));
    }
    for (name, _) in &names {
        trainer.write_state(name, &tensors[name].1)?;
    }
    Ok(())
}

fn encode(tensors: &[(String, Vec<usize>, Vec<f32>)], recipe: &str) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({ "ferrometal": recipe }),
    );
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let end = offset + values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for (_, _, values) in tensors {
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

fn read(path: &Path) -> Result<(Recipe, Tensors)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("cannot read checkpoint {}: {e}", path.display())))?;
    let corrupt = |why: String| {
        Error::Io(format!(
            "checkpoint {} is corrupt or truncated: {why}",
            path.display()
        ))
    };
    if bytes.len() < 8 {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header size",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let data_start = 8u64
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or_else(|| {
            corrupt(format!(
                "the header claims {header_len} bytes but the file has {}",
                bytes.len()
            ))
        })? as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let recipe = header
        .get("__metadata__")
        .and_then(|m| m.get("ferrometal"))
        .and_then(|r| r.as_str())
        .ok_or_else(|| corrupt("no ferrometal metadata (not a ferrometal checkpoint)".into()))?;
    let recipe: Recipe =
        serde_json::from_str(recipe).map_err(|e| corrupt(format!("metadata: {e}")))?;
    if recipe.format != FORMAT {
        return Err(corrupt(format!(
            "format '{}', expected '{FORMAT}'",
            recipe.format
        )));
    }
    let data = &bytes[data_start..];
    let mut tensors = Tensors::new();
    let mut spans = Vec::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            entry
                .get(key)
                .ok_or_else(|| corrupt(format!("'{name}' has no {key}")))
        };
        if field("dtype")?.as_str() != Some("F32") {
            return Err(Error::DtypeMismatch(format!(
                "checkpoint {}: '{name}' is not F32",
                path.display()
            )));
        }
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
            .map_err(|e| corrupt(format!("'{name}' shape: {e}")))?;
        let offsets: [usize; 2] = serde_json::from_value(field("data_offsets")?.clone())
            .map_err(|e| corrupt(format!("'{name}' offsets: {e}")))?;
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let fits = offsets[0] <= offsets[1]
            && offsets[1] <= data.len()
            && count.and_then(|c| c.checked_mul(4)) == Some(offsets[1] - offsets[0]);
        if !fits {
            return Err(corrupt(format!(
                "'{name}' offsets {offsets:?} do not hold shape {shape:?} within {} data bytes",
                data.len()
            )));
        }
        spans.push((offsets[0], offsets[1]));
        let values = data[offsets[0]..offsets[1]]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        tensors.insert(name.clone(), (shape, values));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(corrupt("tensors overlap".into()));
    }
    Ok((recipe, tensors))
}
