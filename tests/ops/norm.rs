//! Batch and layer normalisation, including batch norm's running statistics.

use ferrometal::{DType, Device, Graph, Tensor};

use crate::harness::{check, input};

fn batch_norm_reference(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    n: usize,
    c: usize,
    spatial: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for ch in 0..c {
        let values: Vec<f64> = (0..n)
            .flat_map(|b| (0..spatial).map(move |s| (b * c + ch) * spatial + s))
            .map(|i| x[i])
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        for b in 0..n {
            for s in 0..spatial {
                let i = (b * c + ch) * spatial + s;
                y[i] = (x[i] - mean) / (var + 1e-5).sqrt() * gamma[ch] + beta[ch];
            }
        }
    }
    y
}

#[test]
fn batch_norm_training_output_and_gradients() {
    let device = Device::cpu().unwrap();
    let (n, c, h, w) = (3, 2, 2, 3);
    let inputs = [input(&[n, c, h, w], 1), input(&[c], 2), input(&[c], 3)];
    check(
        &device,
        &inputs,
        &|g, v| {
            let mean = g.variable_from("mean", &[c], &[0.0f32; 2])?;
            let var = g.variable_from("var", &[c], &[1.0f32; 2])?;
            g.batch_norm(v[0], v[1], v[2], mean, var, 0.1, 1e-5, true)
        },
        &|d| batch_norm_reference(&d[0], &d[1], &d[2], n, c, h * w),
        1e-4,
    );
}

#[test]
fn batch_norm_running_statistics_and_evaluation() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let x = g
        .placeholder("x", DType::F32, &[ferrometal::BATCH, 2])
        .unwrap();
    let gamma = g.variable_from("gamma", &[2], &[2.0f32, 0.5]).unwrap();
    let beta = g.variable_from("beta", &[2], &[0.1f32, -0.1]).unwrap();
    let mean = g.variable_from("mean", &[2], &[0.0f32, 1.0]).unwrap();
    let var = g.variable_from("var", &[2], &[1.0f32, 2.0]).unwrap();
    let train = g
        .batch_norm(x, gamma, beta, mean, var, 0.1, 1e-5, true)
        .unwrap();
    let eval = g
        .batch_norm(x, gamma, beta, mean, var, 0.1, 1e-5, false)
        .unwrap();
    let mut exec = g.compile(&device).unwrap();
    let data = [1.0f32, 4.0, 2.0, 6.0, 6.0, 5.0, 3.0, 1.0];
    let tensor = Tensor::from_slice(&device, &[4, 2], &data).unwrap();
    // Evaluation uses the running statistics as they are.
    let out = exec.run(&[(x, &tensor)], &[eval]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let expected0 = (1.0 - 0.0) / (1.0f64 + 1e-5).sqrt() * 2.0 + 0.1;
    assert!((f64::from(out[0]) - expected0).abs() < 1e-5);
    // A training run updates them with momentum and the unbiased variance.
    exec.run(&[(x, &tensor)], &[train]).unwrap();
    let column = |k: usize| -> Vec<f64> { (0..4).map(|r| f64::from(data[r * 2 + k])).collect() };
    for (k, (old_mean, old_var)) in [(0.0, 1.0), (1.0, 2.0)].into_iter().enumerate() {
        let values = column(k);
        let m = values.iter().sum::<f64>() / 4.0;
        let unbiased = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 3.0;
        let got_mean = f64::from(exec.read_variable("mean").unwrap()[k]);
        let got_var = f64::from(exec.read_variable("var").unwrap()[k]);
        assert!(
            (got_mean - (0.9 * old_mean + 0.1 * m)).abs() < 1e-5,
            "mean[{k}] = {got_mean}"
        );
        assert!(
            (got_var - (0.9 * old_var + 0.1 * unbiased)).abs() < 1e-5,
            "var[{k}] = {got_var}"
        );
    }
    // Evaluation does not touch them.
    let before = exec.read_variable("mean").unwrap();
    exec.run(&[(x, &tensor)], &[eval]).unwrap();
    assert_eq!(exec.read_variable("mean").unwrap(), before);
}

#[test]
fn layer_norm_over_trailing_dims() {
    let device = Device::cpu().unwrap();
    let inputs = [input(&[3, 2, 4], 5), input(&[2, 4], 6), input(&[2, 4], 7)];
    check(
        &device,
        &inputs,
        &|g, v| g.layer_norm(v[0], v[1], v[2], 2, 1e-5),
        &|d| {
            d[0].chunks(8)
                .flat_map(|row| {
                    let mean = row.iter().sum::<f64>() / 8.0;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0;
                    row.iter()
                        .enumerate()
                        .map(move |(i, v)| (v - mean) / (var + 1e-5).sqrt() * d[1][i] + d[2][i])
                        .collect::<Vec<_>>()
                })
                .collect()
        },
        1e-4,
    );
}
