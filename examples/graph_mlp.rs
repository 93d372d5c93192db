//! An MNIST MLP written directly as a graph (level 2): two hidden layers,
//! softmax cross-entropy, gradients and an SGD-with-momentum update, all in
//! one executable that runs once per batch. The level-3 Trainer builds the
//! same kind of graph from a layer list.
//!
//!     cargo run --release --example graph_mlp

use ferrometal::data::{Batches, Mnist};
use ferrometal::{DType, Device, Graph, Init, Optimizer, Reduction, Tensor, BATCH};

fn main() -> anyhow::Result<()> {
    let device = Device::cpu()?;
    let mnist = Mnist::bundled()?;
    let g = Graph::new()?;
    let x = g.placeholder("x", DType::F32, &[BATCH, 784])?;
    let y = g.placeholder("y", DType::I32, &[BATCH])?;
    let mut h = x;
    let mut params = Vec::new();
    for (layer, (inputs, outputs)) in [(784, 256), (256, 128), (128, 10)].into_iter().enumerate() {
        let w = g.variable(
            &format!("w{layer}"),
            &[outputs, inputs],
            Init::HeUniform { seed: layer as u64 },
        )?;
        let b = g.variable(&format!("b{layer}"), &[outputs], Init::Zeros)?;
        h = g.linear(h, w, Some(b))?;
        if layer < 2 {
            h = g.relu(h)?;
        }
        params.extend([w, b]);
    }
    let loss = g.softmax_cross_entropy(h, y, 0.0, Reduction::Mean)?;
    let predicted = g.argmax(h, 1)?;
    let grads = g.gradients(loss, &params)?;
    let pairs: Vec<_> = params.iter().copied().zip(grads).collect();
    let step = g.optimizer(&Optimizer::sgd(0.05).momentum(0.9), &pairs)?;
    let mut exec = g.compile(&device)?;

    let train = &mnist.train;
    for epoch in 1..=2u64 {
        let (mut total, mut batches) = (0.0, 0);
        for indices in Batches::new(train.len(), 128, true, 0, epoch) {
            let images: Vec<f32> = indices
                .iter()
                .flat_map(|&i| train.images[i * 784..(i + 1) * 784].to_vec())
                .collect();
            let labels: Vec<i32> = indices.iter().map(|&i| train.labels[i]).collect();
            let xs = Tensor::from_slice(&device, &[indices.len(), 784], &images)?;
            let ys = Tensor::from_slice(&device, &[indices.len()], &labels)?;
            total += exec.run(&[(x, &xs), (y, &ys)], &[loss, step])?[0].scalar()?;
            batches += 1;
            if batches % 100 == 0 {
                println!(
                    "epoch {epoch} step {batches}: mean loss {:.4}",
                    total / batches as f32
                );
            }
        }
    }
    let test = &mnist.test;
    let xs = Tensor::from_slice(&device, &[test.len(), 784], &test.images)?;
    let guesses = exec.run(&[(x, &xs)], &[predicted])?[0].to_vec::<i32>()?;
    let correct = guesses
        .iter()
        .zip(&test.labels)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "test accuracy: {:.2}%",
        100.0 * correct as f64 / test.len() as f64
    );
    let (peak, unshared) = exec.planned_memory()?;
    println!(
        "planned memory of the last plan: {} KiB (without reuse: {} KiB)",
        peak >> 10,
        unshared >> 10
    );
    Ok(())
}
