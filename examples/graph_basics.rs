//! Level 2 in one screen: logistic regression on a synthetic, linearly
//! separable problem, built as a graph (forward, gradients, SGD update) and
//! trained by running the compiled graph once per step.
//!
//!     cargo run --release --example graph_basics

use ferrometal::{DType, Device, Graph, Init, Optimizer, Reduction, Tensor, BATCH};

fn main() -> anyhow::Result<()> {
    let device = Device::best()?;
    let features = 4;

    // Data: the label is 1 when w·x > 0 for a hidden w.
    let hidden = [1.5f32, -2.0, 0.5, 1.0];
    let mut state = 42u64;
    let mut random = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let samples = 512;
    let xs: Vec<f32> = (0..samples * features).map(|_| random()).collect();
    let ys: Vec<i32> = xs
        .chunks(features)
        .map(|x| (x.iter().zip(&hidden).map(|(a, b)| a * b).sum::<f32>() > 0.0) as i32)
        .collect();

    // The model: logits = x·Wᵀ + b, softmax cross-entropy over 2 classes.
    let g = Graph::new()?;
    let x = g.placeholder("x", DType::F32, &[BATCH, features as i64])?;
    let y = g.placeholder("y", DType::I32, &[BATCH])?;
    let w = g.variable("w", &[2, features], Init::XavierUniform { seed: 1 })?;
    let b = g.variable("b", &[2], Init::Zeros)?;
    let logits = g.linear(x, w, Some(b))?;
    let loss = g.softmax_cross_entropy(logits, y, 0.0, Reduction::Mean)?;
    let grads = g.gradients(loss, &[w, b])?;
    let step = g.optimizer(
        &Optimizer::sgd(0.5).momentum(0.9),
        &[(w, grads[0]), (b, grads[1])],
    )?;
    let predicted = g.argmax(logits, 1)?;

    let mut exec = g.compile(&device)?;
    let inputs = Tensor::from_slice(&device, &[samples, features], &xs)?;
    let labels = Tensor::from_slice(&device, &[samples], &ys)?;
    for epoch in 0..=30 {
        let out = exec.run(&[(x, &inputs), (y, &labels)], &[loss, step])?;
        if epoch % 10 == 0 {
            println!("step {epoch:2}: loss {:.4}", out[0].scalar()?);
        }
    }
    let guesses = exec.run(&[(x, &inputs)], &[predicted])?[0].to_vec::<i32>()?;
    let accuracy = guesses.iter().zip(&ys).filter(|(a, b)| a == b).count() as f32 / samples as f32;
    println!(
        "training accuracy: {:.1}% on {}",
        accuracy * 100.0,
        device.location()
    );
    Ok(())
}
