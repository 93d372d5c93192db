//! Data-loader measurements for BENCHMARKS.md: images/s decoded and resized
//! (cache off) with 1 and 2 workers, and cnn64 step time fed by the loader
//! against the same batches resident on the device.
//!
//!     cargo run --release --example loader_bench -- data/digits64 [cpu|cuda|metal]

use std::sync::Arc;
use std::time::Instant;

use ferrometal::data::{DataLoader, Dataset, ImageFolder};
use ferrometal::{Device, Loss, Optimizer, Tensor, Trainer};

fn main() -> anyhow::Result<()> {
    let folder = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/digits64".into());
    let device = match std::env::args().nth(2).as_deref() {
        None | Some("cpu") => Device::cpu()?,
        Some("cuda") => Device::cuda(0)?,
        Some("metal") => Device::metal(0)?,
        Some(other) => anyhow::bail!("loader_bench: unknown device {other:?} (cpu, cuda or metal)"),
    };
    println!("device: {}", device.info()?.name);
    // 64x64 PNGs resized to 56x56 so every image is decoded *and* resized.
    let images: Arc<dyn Dataset> = Arc::new(
        ImageFolder::builder(&folder)
            .size(56, 56)
            .cache_bytes(0)
            .open()?,
    );
    for workers in [0, 1, 2] {
        let loader = DataLoader::new(images.clone(), &device, 32)?
            .workers(workers)
            .prefetch(4);
        let started = Instant::now();
        let mut count = 0;
        for epoch in 1..=3 {
            for batch in loader.host_epoch(epoch) {
                count += batch?.targets.len();
            }
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "decode+resize, {workers} workers: {:.0} images/s ({count} images in {s:.2} s)",
            count as f64 / s
        );
    }

    let images: Arc<dyn Dataset> = Arc::new(ImageFolder::builder(&folder).cache_bytes(0).open()?);
    let model = ferrometal::nn::reference::cnn64(2)?;
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let epochs = 3;
    let loader = DataLoader::new(images.clone(), &device, 32)?
        .shuffle(1)
        .drop_last(true);
    // Resident: the same batches made into tensors before timing.
    let mut resident: Vec<(Tensor, Tensor)> = Vec::new();
    for epoch in 1..=epochs {
        for batch in loader.host_epoch(epoch) {
            resident.push(batch?.to_device(&device)?);
        }
    }
    let mut trainer = Trainer::new(&device, &model, &Optimizer::adam(1e-3), loss, 0)?;
    for (x, y) in resident.iter().take(5) {
        trainer.step(x, y)?;
    }
    let started = Instant::now();
    for (x, y) in &resident {
        trainer.step(x, y)?;
    }
    trainer.step_with_loss(&resident[0].0, &resident[0].1)?;
    let base = started.elapsed().as_secs_f64() / (resident.len() + 1) as f64;
    println!(
        "resident data: {:.2} ms/step ({} steps)",
        base * 1e3,
        resident.len() + 1
    );
    for workers in [0, 1, 2] {
        let loader = loader.clone().workers(workers).prefetch(4);
        let mut trainer = Trainer::new(&device, &model, &Optimizer::adam(1e-3), loss, 0)?;
        for (x, y) in resident.iter().take(5) {
            trainer.step(x, y)?;
        }
        let (mut waited, mut steps) = (0.0, 0usize);
        let started = Instant::now();
        for epoch in 1..=epochs {
            let mut batches = loader.host_epoch(epoch);
            loop {
                let t = Instant::now();
                let Some(batch) = batches.next() else { break };
                let (x, y) = batch?.to_device(&device)?;
                waited += t.elapsed().as_secs_f64();
                trainer.step(&x, &y)?;
                steps += 1;
            }
        }
        trainer.step_with_loss(&resident[0].0, &resident[0].1)?;
        let per = started.elapsed().as_secs_f64() / (steps + 1) as f64;
        println!(
            "loader, {workers} workers: {:.2} ms/step, {:.3} ms/step waiting for data (decode, no cache)",
            per * 1e3,
            waited * 1e3 / steps as f64
        );
    }
    Ok(())
}
