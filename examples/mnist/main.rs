//! The main job: train a CNN (or an MLP) on MNIST, evaluate on the test set
//! every epoch, and write to an output folder a checkpoint, the metrics as
//! CSV and JSON, and a plot of the curves.
//!
//!     cargo run --release --example mnist [-- --epochs 3 --model mlp --device cpu]
//!     cargo run --release --example mnist -- --resume runs/mnist/checkpoint.safetensors --epochs 4

mod plot;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ferrometal::checkpoint::{self, TrainingState};
use ferrometal::data::{Batches, Mnist, MnistSplit};
use ferrometal::train::{Schedule, Scheduler};
use ferrometal::{Device, Loss, Model, Optimizer, Tensor, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Architecture {
    Cnn,
    Mlp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceChoice {
    Cpu,
    Cuda,
    Metal,
    Best,
}

#[derive(Parser, Debug)]
#[command(about = "Train a classifier on MNIST with ferrometal")]
struct Args {
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    batch_size: usize,
    /// Peak learning rate (Adam), decayed to zero by a cosine over the run.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, value_enum, default_value_t = Architecture::Cnn)]
    model: Architecture,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Best)]
    device: DeviceChoice,
    /// Folder for metrics (created if missing).
    #[arg(long, default_value = "runs/mnist")]
    out: PathBuf,
    /// Folder with the four MNIST files (default: the bundled copy).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Train on the first N training images only (quick runs).
    #[arg(long, value_parser = at_least_one)]
    limit: Option<usize>,
    /// Continue from a checkpoint (its model and optimizer replace --model and --lr).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A count that must be positive (a batch of 0, or 0 training images,
/// would train on nothing).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn model(architecture: Architecture) -> ferrometal::Result<Model> {
    match architecture {
        Architecture::Cnn => Model::builder([1, 28, 28])
            .conv2d(16, 5)
            .relu()
            .max_pool2d(2)
            .conv2d(32, 5)
            .relu()
            .max_pool2d(2)
            .flatten()
            .dense(128)
            .relu()
            .dense(10)
            .build(),
        Architecture::Mlp => Model::builder([1, 28, 28])
            .flatten()
            .dense(256)
            .relu()
            .dense(128)
            .relu()
            .dense(10)
            .build(),
    }
}

fn batch(
    device: &Device,
    split: &MnistSplit,
    indices: &[usize],
) -> ferrometal::Result<(Tensor, Tensor)> {
    let mut images = Vec::with_capacity(indices.len() * 784);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        images.extend_from_slice(&split.images[i * 784..(i + 1) * 784]);
        labels.push(split.labels[i]);
    }
    Ok((
        Tensor::from_slice(device, &[indices.len(), 1, 28, 28], &images)?,
        Tensor::from_slice(device, &[indices.len()], &labels)?,
    ))
}

fn evaluate(trainer: &mut Trainer, split: &MnistSplit) -> ferrometal::Result<(f64, f64)> {
    let (mut loss, mut correct) = (0.0, 0u64);
    for indices in Batches::new(split.len(), 1000, false, 0, 0) {
        let (images, labels) = batch(trainer.device(), split, &indices)?;
        let result = trainer.evaluate(&images, &labels)?;
        loss += f64::from(result.loss) * indices.len() as f64;
        correct += result.correct;
    }
    Ok((
        loss / split.len() as f64,
        correct as f64 / split.len() as f64,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut device = match args.device {
        DeviceChoice::Cpu => Device::cpu()?,
        DeviceChoice::Cuda => Device::cuda(0)?,
        DeviceChoice::Metal => Device::metal(0)?,
        DeviceChoice::Best => Device::best()?,
    };
    let mut mnist = match &args.data {
        Some(dir) => Mnist::load(dir)?,
        None => Mnist::bundled()?,
    };
    if let Some(limit) = args.limit {
        mnist.train = mnist.train.take(limit);
    }
    let (mut trainer, mut state) = match &args.resume {
        Some(path) => checkpoint::resume(&device, path)?,
        None => {
            let model = model(args.model)?;
            let optimizer = Optimizer::adam(args.lr);
            let loss = Loss::CrossEntropy {
                label_smoothing: 0.0,
            };
            let trainer = match Trainer::new(&device, &model, &optimizer, loss, args.seed) {
                // The best device may not run graphs yet (CUDA does only
                // level 1 so far); the CPU always does.
                Err(ferrometal::Error::Unsupported(why))
                    if matches!(args.device, DeviceChoice::Best) =>
                {
                    eprintln!("note: {why}; training on the CPU instead");
                    device = Device::cpu()?;
                    Trainer::new(&device, &model, &optimizer, loss, args.seed)?
                }
                other => other?,
            };
            (
                trainer,
                TrainingState {
                    seed: args.seed,
                    ..Default::default()
                },
            )
        }
    };
    println!(
        "ferrometal {} | {} on {} ({}) | {} training images, batch {}, Adam lr {}{}",
        ferrometal::version(),
        if args.resume.is_some() {
            "resumed model".to_string()
        } else {
            format!("{:?}", args.model)
        },
        device.location(),
        device.info()?.name,
        mnist.train.len(),
        args.batch_size,
        trainer.learning_rate() as f32,
        if state.epoch > 0 {
            format!(", from epoch {}", state.epoch)
        } else {
            String::new()
        }
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut csv = std::fs::File::create(args.out.join("metrics.csv"))?;
    writeln!(csv, "epoch,train_loss,test_loss,test_accuracy,seconds")?;
    // Cosine decay from the initial rate to zero over the whole run.
    let steps_per_epoch = mnist.train.len().div_ceil(args.batch_size) as u64;
    let total_steps = steps_per_epoch * args.epochs;
    let mut scheduler = Scheduler::new(
        Schedule::CosineWithWarmup {
            warmup_steps: 0,
            total_steps,
            min_lr: 0.0,
        },
        trainer.optimizer().0.learning_rate,
    );
    let mut history = Vec::new();
    let started = Instant::now();
    for epoch in state.epoch + 1..=args.epochs {
        let batches = Batches::new(mnist.train.len(), args.batch_size, true, state.seed, epoch);
        let bar = ProgressBar::new(batches.batch_count() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")?
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", args.epochs));
        let epoch_start = Instant::now();
        let (mut loss_sum, mut seen, mut correct, mut judged) = (0.0f64, 0usize, 0u64, 0u64);
        for (step, indices) in batches.enumerate() {
            let (images, labels) = batch(&device, &mnist.train, &indices)?;
            trainer.set_learning_rate(scheduler.on_step(state.step + step as u64))?;
            // Reading the loss back costs a synchronisation; on a GPU one
            // in twenty steps is plenty for the progress bar.
            if step % 20 == 0 {
                let result = trainer.evaluate(&images, &labels)?;
                correct += result.correct;
                judged += result.count;
            }
            let loss = trainer.step_with_loss(&images, &labels)?;
            loss_sum += f64::from(loss) * indices.len() as f64;
            seen += indices.len();
            bar.inc(1);
            if step % 10 == 0 {
                bar.set_message(format!(
                    "loss {:.4} acc {:.1}% {:.0} samples/s",
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / judged.max(1) as f64,
                    seen as f64 / epoch_start.elapsed().as_secs_f64()
                ));
            }
        }
        bar.finish();
        let (test_loss, test_accuracy) = evaluate(&mut trainer, &mnist.test)?;
        let train_loss = loss_sum / seen as f64;
        let seconds = started.elapsed().as_secs_f64();
        println!("epoch {epoch}: train loss {train_loss:.4}, test loss {test_loss:.4}, test accuracy {:.2}% ({seconds:.1} s)", test_accuracy * 100.0);
        writeln!(
            csv,
            "{epoch},{train_loss},{test_loss},{test_accuracy},{seconds}"
        )?;
        history.push(plot::Point {
            epoch,
            train_loss,
            test_loss,
            test_accuracy,
        });
        state.epoch = epoch;
        state.step += seen.div_ceil(args.batch_size) as u64;
        checkpoint::save(&trainer, args.out.join("checkpoint.safetensors"), &state)?;
    }
    let Some(last) = history.last() else {
        println!(
            "nothing to do: the checkpoint already covers {} epochs",
            state.epoch
        );
        return Ok(());
    };
    let json: Vec<_> = history
        .iter()
        .map(|p| {
            serde_json::json!({"epoch": p.epoch, "train_loss": p.train_loss, "test_loss": p.test_loss,
                               "test_accuracy": p.test_accuracy})
        })
        .collect();
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    plot::draw(&args.out.join("curves.png"), &history)?;
    println!(
        "done: {:.2}% test accuracy after {} epochs in {:.1} s; checkpoint, metrics.csv, metrics.json, curves.png in {}",
        last.test_accuracy * 100.0,
        last.epoch,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
