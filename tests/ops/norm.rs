//! Normalisation and regularisation: batch norm (training output and
//! gradients, running statistics, evaluation mode), layer norm, dropout.

use ferrometal::{DType, Device, Graph, Tensor};

use crate::harness::{devices, from, rand, values, OpTest};

/// Batch norm of x [n, c, spatial...] (given as n, c, spatial size) with
/// per-channel statistics `stats` (mean, variance) or, when None, the batch
/// statistics (biased variance).
fn batch_norm_reference(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    (n, c, spatial): (usize, usize, usize),
    stats: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for ch in 0..c {
        let index = |b: usize, s: usize| (b * c + ch) * spatial + s;
        let (mean, var) = match stats {
            Some((m, v)) => (m[ch], v[ch]),
            None => batch_statistics(x, (n, c, spatial), ch, false),
        };
        for b in 0..n {
            for s in 0..spatial {
                let i = index(b, s);
                y[i] = (x[i] - mean) / (var + eps).sqrt() * gamma[ch] + beta[ch];
            }
        }
    }
    y
}

/// (mean, variance) of channel `ch`; the variance unbiased if asked.
fn batch_statistics(
    x: &[f64],
    (n, c, spatial): (usize, usize, usize),
    ch: usize,
    unbiased: bool,
) -> (f64, f64) {
    let values: Vec<f64> = (0..n)
        .flat_map(|b| (0..spatial).map(move |s| x[(b * c + ch) * spatial + s]))
        .collect();
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let squares = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
    (mean, squares / if unbiased { count - 1.0 } else { count })
}

#[test]
fn batch_norm_training_output_and_gradients() {
    for (x_shape, eps) in [
        (vec![4usize, 3, 2, 2], 1e-5),
        (vec![6, 3], 1e-5),
        (vec![2, 3, 5], 1e-3),
    ] {
        let (n, c) = (x_shape[0], x_shape[1]);
        let spatial: usize = x_shape[2..].iter().product();
        // Shifted and scaled so the statistics are not trivially (0, 1).
        let x = rand(&x_shape, 1).map(|v| 0.3 + 2.0 * v);
        let gamma = rand(&[c], 2).map(|v| 1.0 + 0.5 * v);
        OpTest::new(
            format!("batch_norm training {x_shape:?}"),
            vec![x, gamma, rand(&[c], 3)],
        )
        .shape(&x_shape)
        .run(
            &|g, v| {
                let mean = g.variable_from("running_mean", &[c], &vec![0.0f32; c])?;
                let var = g.variable_from("running_var", &[c], &vec![1.0f32; c])?;
                g.batch_norm(v[0], v[1], v[2], mean, var, 0.1, eps, true)
            },
            &|d| batch_norm_reference(&d[0], &d[1], &d[2], (n, c, spatial), None, eps),
        );
    }
}

/// A convolution with a bias feeding a training-mode batch norm: on the CPU
/// the convolution then takes the batch's channel sums and variance sums
/// itself (sum z^2 - (sum z)^2 / count, in double), so the normalisation
/// pass never reads z for them. The channels sit far from zero (bias 3)
/// with a small spread, where that formula loses most to cancellation.
/// The bias's own gradient is not checked: batch norm removes it, so it is
/// a sum that cancels to zero, which float reaches only to about 1e-5
/// (fused or not).
#[test]
fn batch_norm_of_a_convolution_with_a_bias() {
    // z has 2^18 elements: smaller passes keep their sums out of the conv.
    let (xs, ws) = ([4usize, 2, 128, 128], [4usize, 2, 3, 3]);
    let options = ferrometal::Conv2d {
        padding: [1, 1],
        ..ferrometal::Conv2d::default()
    };
    let (n, c, spatial) = (xs[0], ws[0], xs[2] * xs[3]);
    OpTest::new(
        "conv2d + bias, then batch_norm training",
        vec![
            rand(&xs, 7),
            rand(&ws, 8).map(|v| 0.3 * v),
            rand(&[c], 9).map(|v| 3.0 + v).skip_grad(),
            rand(&[c], 10).map(|v| 1.0 + 0.5 * v),
            rand(&[c], 11),
        ],
    )
    .grad_samples(12)
    .run(
        &|g, v| {
            let z = g.conv2d(v[0], v[1], Some(v[2]), &options)?;
            let mean = g.variable_from("running_mean", &[c], &vec![0.0f32; c])?;
            let var = g.variable_from("running_var", &[c], &vec![1.0f32; c])?;
            g.batch_norm(z, v[3], v[4], mean, var, 0.1, 1e-5, true)
        },
        &|d| {
            let z = crate::conv_pool::conv2d_reference(&d[0], xs, &d[1], ws, Some(&d[2]), &options);
            batch_norm_reference(&z, &d[3], &d[4], (n, c, spatial), None, 1e-5)
        },
    );
}

#[test]
fn batch_norm_evaluation_uses_the_running_statistics() {
    let (n, c, spatial) = (3usize, 2usize, 4usize);
    let (running_mean, running_var) = ([0.25f32, -0.5], [0.5f32, 2.0]);
    let stats: (Vec<f64>, Vec<f64>) = (
        running_mean.iter().map(|&v| f64::from(v)).collect(),
        running_var.iter().map(|&v| f64::from(v)).collect(),
    );
    OpTest::new(
        "batch_norm evaluation",
        vec![rand(&[n, c, 2, 2], 4), rand(&[c], 5), rand(&[c], 6)],
    )
    .run(
        &|g, v| {
            let mean = g.variable_from("running_mean", &[c], &running_mean)?;
            let var = g.variable_from("running_var", &[c], &running_var)?;
            g.batch_norm(v[0], v[1], v[2], mean, var, 0.1, 1e-5, false)
        },
        &|d| {
            batch_norm_reference(
                &d[0],
                &d[1],
                &d[2],
                (n, c, spatial),
                Some((&stats.0, &stats.1)),
                1e-5,
            )
        },
    );
}

#[test]
fn batch_norm_updates_running_statistics_with_momentum_and_unbiased_variance() {
    for device in devices() {
        for momentum in [0.1, 0.3] {
            let (n, c, spatial) = (4usize, 3usize, 6usize);
            let g = Graph::new().unwrap();
            let x = g
                .placeholder("x", DType::F32, &[ferrometal::BATCH, 3, 2, 3])
                .unwrap();
            let gamma_data = [1.5f32, 0.5, -1.0];
            let beta_data = [0.1f32, -0.2, 0.3];
            let gamma = g.variable_from("gamma", &[c], &gamma_data).unwrap();
            let beta = g.variable_from("beta", &[c], &beta_data).unwrap();
            let initial = ([0.5f32, -0.2, 0.1], [1.5f32, 0.7, 2.0]);
            let rm = g.variable_from("running_mean", &[c], &initial.0).unwrap();
            let rv = g.variable_from("running_var", &[c], &initial.1).unwrap();
            let train = g
                .batch_norm(x, gamma, beta, rm, rv, momentum, 1e-5, true)
                .unwrap();
            let eval = g
                .batch_norm(x, gamma, beta, rm, rv, momentum, 1e-5, false)
                .unwrap();
            let mut exec = g.compile(&device).unwrap();
            let gamma64: Vec<f64> = gamma_data.iter().map(|&v| f64::from(v)).collect();
            let beta64: Vec<f64> = beta_data.iter().map(|&v| f64::from(v)).collect();
            let mut mean: Vec<f64> = initial.0.iter().map(|&v| f64::from(v)).collect();
            let mut var: Vec<f64> = initial.1.iter().map(|&v| f64::from(v)).collect();
            let close = |got: &[f32], want: &[f64], what: &str| {
                for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{what}[{i}]: got {g}, want {w}"
                    );
                }
            };

            // Evaluation before any training: the initial statistics, unchanged after.
            let batch: Vec<f64> = values(n * c * spatial, 7)
                .iter()
                .map(|v| f64::from((1.0 + 3.0 * v) as f32))
                .collect();
            let tensor = Tensor::from_slice(
                &device,
                &[n, 3, 2, 3],
                &batch.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            )
            .unwrap();
            let out = exec.run(&[(x, &tensor)], &[eval]).unwrap();
            let want = batch_norm_reference(
                &batch,
                &gamma64,
                &beta64,
                (n, c, spatial),
                Some((&mean, &var)),
                1e-5,
            );
            close(&out[0].to_vec::<f32>().unwrap(), &want, "evaluation output");
            close(
                &exec.read_variable("running_mean").unwrap(),
                &mean,
                "running_mean after evaluation",
            );
            close(
                &exec.read_variable("running_var").unwrap(),
                &var,
                "running_var after evaluation",
            );

            // Two training runs on different batches (the second with another batch size).
            for (run, batch_size) in [(0u64, n), (1, 2)] {
                let batch: Vec<f64> = values(batch_size * c * spatial, 20 + run)
                    .iter()
                    .map(|v| f64::from((0.5 - 2.0 * v) as f32))
                    .collect();
                let tensor = Tensor::from_slice(
                    &device,
                    &[batch_size, 3, 2, 3],
                    &batch.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                )
                .unwrap();
                let out = exec.run(&[(x, &tensor)], &[train]).unwrap();
                // The output uses the batch statistics...
                let want = batch_norm_reference(
                    &batch,
                    &gamma64,
                    &beta64,
                    (batch_size, c, spatial),
                    None,
                    1e-5,
                );
                close(&out[0].to_vec::<f32>().unwrap(), &want, "training output");
                // ... and the running ones move toward them, the variance unbiased.
                for ch in 0..c {
                    let (m, v) = batch_statistics(&batch, (batch_size, c, spatial), ch, true);
                    mean[ch] = (1.0 - momentum) * mean[ch] + momentum * m;
                    var[ch] = (1.0 - momentum) * var[ch] + momentum * v;
                }
                close(
                    &exec.read_variable("running_mean").unwrap(),
                    &mean,
                    &format!("running_mean after run {run}"),
                );
                close(
                    &exec.read_variable("running_var").unwrap(),
                    &var,
                    &format!("running_var after run {run}"),
                );
            }

            // Evaluation now uses the updated statistics.
            let out = exec.run(&[(x, &tensor)], &[eval]).unwrap();
            let want = batch_norm_reference(
                &batch,
                &gamma64,
                &beta64,
                (n, c, spatial),
                Some((&mean, &var)),
                1e-5,
            );
            close(
                &out[0].to_vec::<f32>().unwrap(),
                &want,
                "evaluation output after training",
            );
        }
    }
}

#[test]
fn layer_norm_over_the_trailing_dims() {
    let cases: [(&[usize], i64, f64); 4] = [
        (&[3, 2, 4], 1, 1e-5),
        (&[3, 2, 4], 2, 1e-5),
        (&[5, 6], 1, 1e-3),
        (&[2, 3, 4], 3, 1e-5),
    ];
    for (seed, (x_shape, normalized_rank, eps)) in cases.into_iter().enumerate() {
        let tail = &x_shape[x_shape.len() - normalized_rank as usize..];
        let group: usize = tail.iter().product();
        let seed = 10 * seed as u64;
        let x = rand(x_shape, seed).map(|v| 2.0 * v - 0.4);
        let gamma = rand(tail, seed + 1).map(|v| 1.0 + 0.5 * v);
        OpTest::new(
            format!("layer_norm {x_shape:?} over the last {normalized_rank}"),
            vec![x, gamma, rand(tail, seed + 2)],
        )
        .shape(x_shape)
        .run(
            &|g, v| g.layer_norm(v[0], v[1], v[2], normalized_rank, eps),
            &|d| {
                d[0].chunks(group)
                    .flat_map(|row| {
                        let mean = row.iter().sum::<f64>() / group as f64;
                        let var =
                            row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / group as f64;
                        row.iter()
                            .enumerate()
                            .map(move |(i, v)| (v - mean) / (var + eps).sqrt() * d[1][i] + d[2][i])
                            .collect::<Vec<_>>()
                    })
                    .collect()
            },
        );
    }
}

const DROPOUT_COUNT: usize = 10_000;

fn dropout_data() -> Vec<f32> {
    // Nonzero, so a kept element is told from a dropped one.
    values(DROPOUT_COUNT, 3)
        .iter()
        .map(|v| (0.25 + v.abs()) as f32 * v.signum() as f32)
        .collect()
}

fn dropout_weights() -> Vec<f32> {
    values(DROPOUT_COUNT, 4).iter().map(|&v| v as f32).collect()
}

/// Builds y = dropout(x), loss = sum(y * r) and its gradient on a graph.
fn dropout_graph(
    g: &Graph,
    p: f64,
    seed: u64,
    training: bool,
) -> (ferrometal::Value<'_>, [ferrometal::Value<'_>; 2]) {
    let x = g.placeholder("x", DType::F32, &[100, 100]).unwrap();
    let y = g.dropout(x, p, seed, training).unwrap();
    let r = g.constant(&[100, 100], &dropout_weights()).unwrap();
    let loss = g.sum(g.mul(y, r).unwrap(), &[], false).unwrap();
    let grad = g.gradients(loss, &[x]).unwrap()[0];
    (x, [y, grad])
}

fn run_dropout(
    exec: &mut ferrometal::Exec,
    x: ferrometal::Value<'_>,
    fetches: &[ferrometal::Value<'_>],
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let tensor = Tensor::from_slice(device, &[100, 100], &dropout_data()).unwrap();
    let out = exec.run(&[(x, &tensor)], fetches).unwrap();
    (
        out[0].to_vec::<f32>().unwrap(),
        out[1].to_vec::<f32>().unwrap(),
    )
}

fn mask(y: &[f32]) -> Vec<bool> {
    y.iter().map(|&v| v != 0.0).collect()
}

#[test]
fn dropout_in_training_zeroes_or_scales_each_element() {
    for device in devices() {
        let data = dropout_data();
        let r = dropout_weights();
        for p in [0.1, 0.3, 0.5, 0.8] {
            let g = Graph::new().unwrap();
            let (x, fetches) = dropout_graph(&g, p, 42, true);
            let mut exec = g.compile(&device).unwrap();
            let (y, grad) = run_dropout(&mut exec, x, &fetches, &device);
            let scale = 1.0 / (1.0 - p);
            let mut kept = 0usize;
            for i in 0..DROPOUT_COUNT {
                let x = f64::from(data[i]);
                let (y, grad, r) = (f64::from(y[i]), f64::from(grad[i]), f64::from(r[i]));
                if y == 0.0 {
                    assert_eq!(
                        grad, 0.0,
                        "p {p}: dropped element {i} must have zero gradient"
                    );
                } else {
                    kept += 1;
                    assert!(
                        (y - x * scale).abs() <= 1e-6 * (x * scale).abs(),
                        "p {p}: y[{i}] = {y}, x / (1 - p) = {}",
                        x * scale
                    );
                    // The gradient uses the same mask as the forward pass.
                    assert!(
                        (grad - r * scale).abs() <= 1e-6 * (r * scale).abs() + 1e-12,
                        "p {p}: grad[{i}] = {grad}, want {}",
                        r * scale
                    );
                }
            }
            let fraction = kept as f64 / DROPOUT_COUNT as f64;
            let sigma = (p * (1.0 - p) / DROPOUT_COUNT as f64).sqrt();
            assert!(
                (fraction - (1.0 - p)).abs() <= 3.0 * sigma,
                "p {p}: kept {fraction}, expected {} ± {}",
                1.0 - p,
                3.0 * sigma
            );
        }
    }
}

#[test]
fn dropout_masks_depend_on_seed_and_run_only() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let (x, fetches) = dropout_graph(&g, 0.5, 7, true);
        let other_seed = g.dropout(x, 0.5, 8, true).unwrap();
        let mut exec = g.compile(&device).unwrap();
        let (first, _) = run_dropout(&mut exec, x, &fetches, &device);
        let (second, _) = run_dropout(&mut exec, x, &fetches, &device);
        assert_ne!(
            mask(&first),
            mask(&second),
            "successive runs must draw different masks"
        );
        assert_eq!(exec.run_count().unwrap(), 2);

        // Another executable of the same graph, at the same run number, draws the same masks.
        let mut again = g.compile(&device).unwrap();
        let (replay, _) = run_dropout(&mut again, x, &fetches, &device);
        assert_eq!(mask(&replay), mask(&first), "same seed and run, same mask");
        let (replay, _) = run_dropout(&mut again, x, &fetches, &device);
        assert_eq!(mask(&replay), mask(&second), "same seed and run, same mask");
        // Restoring the run counter replays a run.
        exec.set_run_count(1).unwrap();
        let (replay, _) = run_dropout(&mut exec, x, &fetches, &device);
        assert_eq!(
            mask(&replay),
            mask(&second),
            "restored run count replays the mask"
        );

        // Another seed, same run: another mask.
        again.set_run_count(0).unwrap();
        let tensor = Tensor::from_slice(&device, &[100, 100], &dropout_data()).unwrap();
        let out = again.run(&[(x, &tensor)], &[other_seed]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        assert_ne!(mask(&out), mask(&first), "seeds 7 and 8 gave the same mask");
    }
}

#[test]
fn dropout_outside_training_and_with_p_zero_is_the_identity() {
    for (p, training) in [(0.5, false), (0.9, false), (0.0, true)] {
        OpTest::new(
            format!("dropout p {p} training {training}"),
            vec![rand(&[4, 5], 1)],
        )
        .tol(crate::harness::Tol::Exact)
        .run(&|g, v| g.dropout(v[0], p, 3, training), &|d| d[0].clone());
    }
    OpTest::new("dropout p 1", vec![from(&[3], vec![1.0, -2.0, 0.5])])
        .tol(crate::harness::Tol::Exact)
        .run(&|g, v| g.dropout(v[0], 1.0, 3, true), &|_| vec![0.0; 3]);
}
