//! Training-step throughput of the three reference models of DESIGN.md
//! (cnn64, mlp, cifar), with the same shapes, batch sizes and optimizers as
//! bench/pytorch_bench.py, so the two can be compared in one run
//! (bench/compare.sh). Data is one random batch kept on the device; the loss
//! is read back only after the timed steps.
//!
//!     cargo run --release --example bench -- --model cnn64 --backend cpu

use std::time::Instant;

use clap::{Parser, ValueEnum};
use ferrometal::{Device, Loss, Model, Optimizer, Tensor, Trainer, TrainerOptions};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Reference {
    Cnn64,
    Mlp,
    Cifar,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Cpu,
    Cuda,
    Metal,
}

#[derive(Parser, Debug)]
#[command(about = "Steps per second of the reference models")]
struct Args {
    #[arg(long, value_enum, default_value_t = Reference::Mlp)]
    model: Reference,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Batch size (default: the reference's).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed steps (default: about 2 seconds' worth on a 2-core CPU).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Train without the non-finite guard (to measure what it costs).
    #[arg(long)]
    no_nonfinite_guard: bool,
}

/// (model, optimizer, batch, classes, default steps)
fn reference(which: Reference) -> ferrometal::Result<(Model, Optimizer, usize, i32, usize)> {
    Ok(match which {
        Reference::Cnn64 => (
            ferrometal::nn::reference::cnn64(2)?,
            Optimizer::adam(1e-3),
            32,
            2,
            200,
        ),
        Reference::Mlp => (
            ferrometal::nn::reference::mlp()?,
            Optimizer::sgd(0.01).momentum(0.9),
            128,
            10,
            500,
        ),
        Reference::Cifar => (
            ferrometal::nn::reference::cifar()?,
            Optimizer::adam(1e-3),
            128,
            10,
            8,
        ),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = match args.backend {
        Backend::Cpu => Device::cpu()?,
        Backend::Cuda => Device::cuda(0)?,
        Backend::Metal => Device::metal(0)?,
    };
    let (model, optimizer, default_batch, classes, default_steps) = reference(args.model)?;
    let batch = args.batch.unwrap_or(default_batch);
    let steps = args.steps.unwrap_or(default_steps);
    let sample: usize = model.input_shape.iter().product::<i64>() as usize;
    let mut state = 12345u64;
    let inputs: Vec<f32> = (0..batch * sample)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let labels: Vec<i32> = (0..batch).map(|i| i as i32 % classes).collect();
    let mut shape = vec![batch];
    shape.extend(model.input_shape.iter().map(|&d| d as usize));
    let x = Tensor::from_slice(&device, &shape, &inputs)?;
    let y = Tensor::from_slice(&device, &[batch], &labels)?;
    let options = TrainerOptions::default().nonfinite_guard(!args.no_nonfinite_guard);
    let mut trainer = Trainer::with_options(
        &device,
        &model,
        &optimizer,
        Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        0,
        &options,
    )?;
    for _ in 0..args.warmup {
        trainer.step(&x, &y)?;
    }
    device.reset_peak_memory()?;
    let started = Instant::now();
    for _ in 0..steps {
        trainer.step(&x, &y)?;
    }
    let loss = trainer.step_with_loss(&x, &y)?; // one more step, and the synchronisation
    let seconds = started.elapsed().as_secs_f64();
    let peak = device.pool_stats()?.peak_bytes_in_use;
    println!(
        "ferrometal {:?} {} batch {batch}: {:.1} steps/s ({} steps in {seconds:.2} s), peak device memory {:.1} MiB, loss {loss:.4}",
        args.model,
        device.location(),
        (steps + 1) as f64 / seconds,
        steps + 1,
        peak as f64 / (1 << 20) as f64
    );
    Ok(())
}
