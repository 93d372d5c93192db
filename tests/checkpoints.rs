//! Checkpoints under hostile conditions: corrupted files (every one
//! refused, nothing changed), files from other tools and other optimizers
//! (errors that say so, and a way to take the weights), threads saving to
//! one path, and processes killed in the middle of saving.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use ferrometal::checkpoint::{self, TrainingState};
use ferrometal::{Device, Error, Inference, Loss, Model, Optimizer, Tensor, Trainer};

fn model() -> Model {
    Model::builder([8])
        .dense(16)
        .relu()
        .dense(16)
        .batch_norm()
        .relu()
        .dense(3)
        .build()
        .unwrap()
}

fn trainer(device: &Device, optimizer: &Optimizer, seed: u64) -> Trainer {
    Trainer::new(
        device,
        &model(),
        optimizer,
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        seed,
    )
    .unwrap()
}

fn train(t: &mut Trainer, device: &Device, steps: usize) {
    let xs: Vec<f32> = (0..32 * 8)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let ys: Vec<i32> = (0..32).map(|i| i % 3).collect();
    let x = Tensor::from_slice(device, &[32, 8], &xs).unwrap();
    let y = Tensor::from_slice(device, &[32], &ys).unwrap();
    for _ in 0..steps {
        t.step(&x, &y).unwrap();
    }
}

/// A fresh folder for one test.
fn folder(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrometal-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

/// xorshift64*, for reproducible mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn every_corrupted_checkpoint_is_refused_and_changes_nothing() {
    let device = Device::cpu().unwrap();
    let dir = folder("corrupt");
    let good = dir.join("good.safetensors");
    let mut source = trainer(&device, &Optimizer::adam(1e-2), 1);
    train(&mut source, &device, 3);
    checkpoint::save(&source, &good, &TrainingState::default()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;

    let mut victim = trainer(&device, &Optimizer::adam(1e-2), 2);
    let before = common::state_of(&victim);
    let path = dir.join("mutated.safetensors");
    let mut refuse = |what: String, content: &[u8]| {
        std::fs::write(&path, content).unwrap();
        if let Ok(state) = checkpoint::load_into(&mut victim, &path) {
            panic!("{what}: a corrupt checkpoint was accepted ({state:?})");
        }
    };
    // A header length short or long by 1 to 7 bytes (once, every tensor
    // was read shifted).
    for delta in 1..=7i64 {
        for sign in [-1i64, 1] {
            let mut m = bytes.clone();
            let length = (header as i64 + sign * delta) as u64;
            m[..8].copy_from_slice(&length.to_le_bytes());
            refuse(format!("header length {sign}x{delta}"), &m);
        }
    }
    // Bytes after the data, and data cut short.
    for extra in [1usize, 4, 8, 100] {
        let mut m = bytes.clone();
        m.extend(std::iter::repeat_n(0u8, extra));
        refuse(format!("{extra} trailing bytes"), &m);
        refuse(format!("{extra} bytes cut"), &bytes[..bytes.len() - extra]);
    }
    // Single bit flips anywhere in the file, and random byte runs.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for trial in 0..400 {
        let mut m = bytes.clone();
        let at = if trial % 2 == 0 {
            8 + header + rng.below(bytes.len() - 8 - header) // data
        } else {
            rng.below(8 + header) // length and header
        };
        // (No flip of a padding space gives another JSON space character.)
        m[at] ^= 1 << rng.below(8);
        refuse(format!("bit flip at byte {at}"), &m);
    }
    for _ in 0..100 {
        let mut m = bytes.clone();
        let at = rng.below(bytes.len());
        let run = 1 + rng.below(16);
        for b in m.iter_mut().skip(at).take(run) {
            *b = rng.next() as u8;
        }
        if m != bytes {
            refuse(format!("{run} random bytes at {at}"), &m);
        }
    }
    assert_eq!(
        common::state_of(&victim),
        before,
        "a refused checkpoint changed the trainer"
    );
    // The good file still loads, bit for bit.
    checkpoint::load_into(&mut victim, &good).unwrap();
    assert_eq!(common::state_of(&victim), common::state_of(&source));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hostile_model_spec_is_refused_before_anything_is_built() {
    let device = Device::cpu().unwrap();
    let dir = folder("hostile-spec");
    let good = dir.join("good.safetensors");
    let t = trainer(&device, &Optimizer::sgd(0.1), 1);
    checkpoint::save(&t, &good, &TrainingState::default()).unwrap();
    // The same checkpoint, re-signed by the core, with a recipe whose first
    // layer has 1,048,576 units: a 2 KB file claiming gigabytes of weights.
    let mut length = 0usize;
    let c_path = std::ffi::CString::new(good.to_str().unwrap()).unwrap();
    let mut text = vec![0u8; 1 << 16];
    // SAFETY: text has the capacity passed.
    let status = unsafe {
        ferrometal::sys::fm_checkpoint_metadata(
            text.as_mut_ptr().cast(),
            text.len(),
            &mut length,
            c_path.as_ptr(),
        )
    };
    assert_eq!(status, 0);
    let mut recipe: serde_json::Value = serde_json::from_slice(&text[..length]).unwrap();
    recipe["model"]["layers"][0]["units"] = serde_json::json!(1_048_576);
    let hostile = dir.join("hostile.safetensors");
    let c_hostile = std::ffi::CString::new(hostile.to_str().unwrap()).unwrap();
    let c_recipe = std::ffi::CString::new(recipe.to_string()).unwrap();
    // SAFETY: live trainer, NUL-terminated strings.
    let status = unsafe {
        ferrometal::sys::fm_trainer_save(t.as_raw(), c_hostile.as_ptr(), c_recipe.as_ptr())
    };
    assert_eq!(status, 0);
    let started = Instant::now();
    let error = checkpoint::resume(&device, &hostile).err().unwrap();
    assert!(
        matches!(error, Error::Io(_)) && error.message().contains("at least"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused only after {:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plain safetensors file (as `safetensors.torch.save_file` writes one)
/// of the given f32 tensors.
fn plain_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, shape, values) in tensors {
        let end = offset + values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    for (_, _, values) in tensors {
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
    }
    bytes
}

#[test]
fn other_files_and_other_optimizers_get_errors_that_say_so() {
    let device = Device::cpu().unwrap();
    let dir = folder("foreign");
    let mut adam = trainer(&device, &Optimizer::adam(1e-2), 1);
    train(&mut adam, &device, 3);
    let adam_path = dir.join("adam.safetensors");
    checkpoint::save(&adam, &adam_path, &TrainingState::default()).unwrap();

    // A checkpoint of the same model with another optimizer.
    let mut sgd = trainer(&device, &Optimizer::sgd(0.1).momentum(0.9), 2);
    let error = checkpoint::load_into(&mut sgd, &adam_path).unwrap_err();
    assert!(
        error.message().contains("'adam'")
            && error.message().contains("'sgd'")
            && error.message().contains("load_weights"),
        "{error}"
    );
    let momentum_before = sgd
        .read_state("optimizer.dense0.weight.momentum_buffer")
        .unwrap();
    checkpoint::load_weights(&mut sgd, &adam_path).unwrap();
    for (name, is_parameter) in sgd.state_names().unwrap() {
        if !name.starts_with("optimizer.") {
            assert_eq!(
                sgd.read_state(&name).unwrap(),
                adam.read_state(&name).unwrap(),
                "{name} ({is_parameter})"
            );
        }
    }
    assert_eq!(
        sgd.read_state("optimizer.dense0.weight.momentum_buffer")
            .unwrap(),
        momentum_before
    );

    // A safetensors file from another tool, with the model's weights.
    let weights: Vec<(String, Vec<usize>, Vec<f32>)> = adam
        .state_names()
        .unwrap()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("optimizer."))
        .map(|(name, _)| {
            let shape = adam.state_shape(&name).unwrap();
            let values: Vec<f32> = adam
                .read_state(&name)
                .unwrap()
                .iter()
                .map(|v| v * 2.0)
                .collect();
            (name, shape, values)
        })
        .collect();
    let foreign = dir.join("foreign.safetensors");
    std::fs::write(&foreign, plain_safetensors(&weights)).unwrap();
    let error = checkpoint::load_into(&mut sgd, &foreign).unwrap_err();
    assert!(
        error
            .message()
            .contains("not a ferrometal checkpoint (no ferrometal metadata)"),
        "{error}"
    );
    checkpoint::load_weights(&mut sgd, &foreign).unwrap();
    for (name, _, values) in &weights {
        assert_eq!(&sgd.read_state(name).unwrap(), values, "{name}");
    }
    // An inference engine takes the same files.
    let mut inference = Inference::new(&device, &model()).unwrap();
    inference.load_weights(&foreign).unwrap();
    inference.load_weights(&adam_path).unwrap();
    let engine_path = dir.join("engine.safetensors");
    inference.save(&engine_path).unwrap();
    checkpoint::load_weights(&mut sgd, &engine_path).unwrap();

    // Names, shapes and extra tensors that do not fit are named.
    let mut wrong = weights.clone();
    wrong[0].1 = vec![8, 16];
    std::fs::write(&foreign, plain_safetensors(&wrong)).unwrap();
    let error = checkpoint::load_weights(&mut sgd, &foreign).unwrap_err();
    assert!(
        matches!(error, Error::ShapeMismatch(_))
            && error.message().contains("'dense0.weight'")
            && error.message().contains("[16, 8]"),
        "{error}"
    );
    let mut extra = weights.clone();
    extra.push(("fc9.weight".into(), vec![2], vec![1.0, 2.0]));
    std::fs::write(&foreign, plain_safetensors(&extra)).unwrap();
    let error = checkpoint::load_weights(&mut sgd, &foreign).unwrap_err();
    assert!(
        error
            .message()
            .contains("'fc9.weight' is not in this model"),
        "{error}"
    );
    let missing = &weights[1..];
    std::fs::write(&foreign, plain_safetensors(missing)).unwrap();
    let error = checkpoint::load_weights(&mut sgd, &foreign).unwrap_err();
    assert!(
        error.message().contains("'dense0.weight' is missing"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_saving_to_one_path_leave_one_whole_checkpoint() {
    let device = Device::cpu().unwrap();
    let dir = folder("threads");
    let path = dir.join("shared.safetensors");
    let states: Vec<Vec<(String, Vec<f32>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                let device = device.clone();
                let path = path.clone();
                scope.spawn(move || {
                    let t = trainer(&device, &Optimizer::adam(1e-2), seed + 10);
                    for _ in 0..10 {
                        checkpoint::save(&t, &path, &TrainingState::default()).unwrap();
                    }
                    common::state_of(&t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut loaded = trainer(&device, &Optimizer::adam(1e-2), 99);
    checkpoint::load_into(&mut loaded, &path).unwrap();
    assert!(
        states.contains(&common::state_of(&loaded)),
        "the file mixes savers"
    );
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

const KILL_CHILD: &str = "FERROMETAL_CHECKPOINT_KILL_CHILD";
const TRIALS: usize = 200;

/// Child mode of the kill test: save a trainer to the given path forever,
/// saying "saving" once it started.
fn save_forever(path: &str) -> ! {
    let device = Device::cpu().unwrap();
    let wide = Model::builder([64])
        .dense(512)
        .relu()
        .dense(512)
        .relu()
        .dense(3)
        .build()
        .unwrap();
    let mut t = Trainer::new(&device, &wide, &Optimizer::adam(1e-3), Loss::Mse, 5).unwrap();
    let x = Tensor::from_slice(&device, &[4, 64], &[0.25f32; 256]).unwrap();
    let y = Tensor::from_slice(&device, &[4, 3], &[0.5f32; 12]).unwrap();
    println!("saving");
    loop {
        t.step(&x, &y).unwrap();
        checkpoint::save(&t, path, &TrainingState::default()).unwrap();
    }
}

#[test]
fn a_save_killed_at_any_moment_leaves_the_old_or_the_new_file() {
    if let Ok(path) = std::env::var(KILL_CHILD) {
        save_forever(&path);
    }
    let dir = folder("killed");
    let path = dir.join("run.safetensors");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(42);
    let mut temporaries_seen = 0;
    for trial in 0..TRIALS {
        let mut child = Command::new(&exe)
            .args([
                "a_save_killed_at_any_moment_leaves_the_old_or_the_new_file",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.contains("saving") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child ended");
        }
        // The first save may not have finished: wait for the file once.
        if trial == 0 {
            while !path.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000) as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        temporaries_seen += temporaries(&dir).len();
        // What is at the path is a whole checkpoint.
        let (resumed, _) = checkpoint::resume(&Device::cpu().unwrap(), &path)
            .unwrap_or_else(|e| panic!("trial {trial}: the checkpoint is broken: {e}"));
        drop(resumed);
    }
    // Temporaries of killed savers are removed by the next save.
    let device = Device::cpu().unwrap();
    let (t, _) = checkpoint::resume(&device, &path).unwrap();
    checkpoint::save(&t, &path, &TrainingState::default()).unwrap();
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    eprintln!("{TRIALS} kills during saves: every file whole; {temporaries_seen} temporaries seen after kills, all removed");
    std::fs::remove_dir_all(&dir).unwrap();
}
