//! Losses, both reductions.

use ferrometal::{DType, Device, Graph, Reduction, Tensor};

use crate::harness::{check, input};

fn reduce(per: Vec<f64>, count: usize, reduction: Reduction) -> Vec<f64> {
    let sum: f64 = per.iter().sum();
    vec![if reduction == Reduction::Sum {
        sum
    } else {
        sum / count as f64
    }]
}

#[test]
fn softmax_cross_entropy_with_label_smoothing() {
    let device = Device::cpu().unwrap();
    let labels = [2i32, 0, 1, 2];
    for smoothing in [0.0, 0.1] {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let reference = |d: &[Vec<f64>]| {
                let per = d[0]
                    .chunks(3)
                    .zip(labels)
                    .map(|(row, label)| {
                        let max = row.iter().copied().fold(f64::MIN, f64::max);
                        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                        let nll = lse - row[label as usize];
                        let smooth = row.iter().map(|v| lse - v).sum::<f64>() / 3.0;
                        (1.0 - smoothing) * nll + smoothing * smooth
                    })
                    .collect();
                reduce(per, 4, reduction)
            };
            check(
                &device,
                &[input(&[4, 3], 1)],
                &|g, v| {
                    let y = g.constant(&[4], &labels)?;
                    g.softmax_cross_entropy(v[0], y, smoothing, reduction)
                },
                &reference,
                1e-5,
            );
        }
    }
}

#[test]
fn elementwise_losses() {
    let device = Device::cpu().unwrap();
    let targets: Vec<f64> = crate::harness::values(6, 9)
        .iter()
        .map(|v| (v + 1.0) / 2.0)
        .collect();
    let t32: Vec<f32> = targets.iter().map(|&v| v as f32).collect();
    type Build = for<'g> fn(
        &'g Graph,
        ferrometal::Value<'g>,
        ferrometal::Value<'g>,
    ) -> ferrometal::Result<ferrometal::Value<'g>>;
    let cases: Vec<(Build, fn(f64, f64) -> f64, bool)> = vec![
        (|g, p, t| g.mse(p, t), |p, t| (p - t).powi(2), false),
        (|g, p, t| g.mae(p, t), |p, t| (p - t).abs(), false),
        (
            |g, p, t| g.huber(p, t, 0.3),
            |p, t| {
                let d = (p - t).abs();
                if d < 0.3 {
                    0.5 * d * d
                } else {
                    0.3 * (d - 0.15)
                }
            },
            false,
        ),
        (
            |g, p, t| g.bce_with_logits(p, t),
            |x, t| x.max(0.0) - x * t + (1.0 + (-x.abs()).exp()).ln(),
            false,
        ),
        (
            |g, p, t| g.binary_cross_entropy(p, t),
            |p, t| -(t * p.ln() + (1.0 - t) * (1.0 - p).ln()),
            true,
        ),
    ];
    for (k, (build, f, probabilities)) in cases.into_iter().enumerate() {
        let mut x = input(&[2, 3], 20 + k as u64);
        if probabilities {
            x.data
                .iter_mut()
                .for_each(|v| *v = 0.1 + 0.8 * (*v + 1.0) / 2.0);
        }
        let t = t32.clone();
        let targets = targets.clone();
        check(
            &device,
            &[x],
            &|g, v| {
                let tv = g.constant(&[2, 3], &t)?;
                build(g, v[0], tv)
            },
            &|d| {
                reduce(
                    d[0].iter().zip(&targets).map(|(&p, &t)| f(p, t)).collect(),
                    6,
                    Reduction::Mean,
                )
            },
            2e-5,
        );
    }
    // Categorical cross-entropy on probabilities: -sum(t log p) per row, mean over rows.
    let probabilities = [0.2f64, 0.7, 0.1, 0.5, 0.25, 0.25];
    let onehot = [0.0f32, 1.0, 0.0, 0.3, 0.3, 0.4];
    let g = Graph::new().unwrap();
    let p = g
        .constant(&[2, 3], &probabilities.map(|v| v as f32))
        .unwrap();
    let t = g.constant(&[2, 3], &onehot).unwrap();
    let loss = g.categorical_cross_entropy(p, t).unwrap();
    let got = g.compile(&device).unwrap().run(&[], &[loss]).unwrap()[0]
        .scalar()
        .unwrap();
    let expected: f64 =
        -(0.7f64.ln() + 0.3 * 0.5f64.ln() + 0.3 * 0.25f64.ln() + 0.4 * 0.25f64.ln()) / 2.0;
    assert!(
        (f64::from(got) - expected).abs() < 1e-6,
        "{got} vs {expected}"
    );
    // BCE with logits stays finite at large |x|.
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[2]).unwrap();
    let y = g.constant(&[2], &[1.0f32, 0.0]).unwrap();
    let loss = g.bce_with_logits(x, y).unwrap();
    let mut exec = g.compile(&device).unwrap();
    let far = Tensor::from_slice(&device, &[2], &[-50.0f32, 50.0]).unwrap();
    let value = exec.run(&[(x, &far)], &[loss]).unwrap()[0]
        .scalar()
        .unwrap();
    assert!((value - 50.0).abs() < 1e-3, "{value}");
}
