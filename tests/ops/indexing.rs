//! Embedding, one-hot, dropout, assignments and stop_gradient.

use ferrometal::{DType, Device, Graph, Tensor};

use crate::harness::{check, input};

#[test]
fn embedding_gathers_rows_and_accumulates_gradients_for_repeats() {
    let device = Device::cpu().unwrap();
    let indices = [2i32, 0, 2, 3, 2];
    check(
        &device,
        &[input(&[4, 3], 1)],
        &|g, v| {
            let i = g.constant(&[5], &indices)?;
            g.embedding(v[0], i)
        },
        &|d| {
            indices
                .iter()
                .flat_map(|&i| d[0][i as usize * 3..i as usize * 3 + 3].to_vec())
                .collect()
        },
        0.0,
    );
}

#[test]
fn one_hot_vectors() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let i = g.constant(&[3], &[1i32, 0, 3]).unwrap();
    let out = g
        .compile(&device)
        .unwrap()
        .run(&[], &[g.one_hot(i, 4).unwrap()])
        .unwrap();
    assert_eq!(out[0].shape(), [3, 4]);
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        [0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.]
    );
}

#[test]
fn dropout_scales_kept_elements_and_draws_new_masks_per_run() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[10_000]).unwrap();
    let train = g.dropout(x, 0.3, 42, true).unwrap();
    let eval = g.dropout(x, 0.3, 42, false).unwrap();
    let mut exec = g.compile(&device).unwrap();
    let ones = Tensor::from_slice(&device, &[10_000], &vec![1.0f32; 10_000]).unwrap();
    let first = exec.run(&[(x, &ones)], &[train]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let kept = first.iter().filter(|&&v| v != 0.0).count() as f64;
    assert!(first
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    // Binomial(10000, 0.7): 3 sigma is about 137.
    assert!((kept - 7000.0).abs() < 140.0, "kept {kept}");
    let second = exec.run(&[(x, &ones)], &[train]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    assert_ne!(first, second, "each run draws a new mask");
    assert_eq!(
        exec.run(&[(x, &ones)], &[eval]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0f32; 10_000]
    );
    // The same seed and run number give the same mask in another executable.
    let mut again = g.compile(&device).unwrap();
    assert_eq!(
        again.run(&[(x, &ones)], &[train]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap(),
        first
    );
}

#[test]
fn stop_gradient_blocks_and_group_assigns() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let w = g.variable_from("w", &[2], &[1.0f32, 2.0]).unwrap();
    let blocked = g.stop_gradient(w).unwrap();
    let loss = g.sum(g.mul(w, blocked).unwrap(), &[], false).unwrap();
    let grad = g.gradients(loss, &[w]).unwrap()[0];
    let out = g.compile(&device).unwrap().run(&[], &[grad]).unwrap();
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        [1.0, 2.0],
        "d(w * stop(w))/dw = stop(w)"
    );
}
