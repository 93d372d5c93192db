//! The conformance harness: run an op through a graph on a device, compare
//! the forward result with an independent float64 reference written in the
//! test, and every input's gradient with central finite differences of
//! that reference.

use ferrometal::{Device, Graph, Tensor, Value};

/// Deterministic pseudo-random values in (-1, 1).
pub fn values(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e3779b97f4a7c15).wrapping_add(1);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

pub struct Input {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

pub fn input(shape: &[usize], seed: u64) -> Input {
    let count = shape.iter().product();
    Input {
        shape: shape.to_vec(),
        data: values(count, seed),
    }
}

/// Checks `build` (the op under test) against `reference` (f64) on `inputs`:
/// the forward values, then the gradient of sum(output * R) for every input.
/// `tolerance` is relative to the largest magnitude of the expected values
/// (0 demands exact forward results, as for pure data movement).
pub fn check(
    device: &Device,
    inputs: &[Input],
    build: &dyn for<'g> Fn(&'g Graph, &[Value<'g>]) -> ferrometal::Result<Value<'g>>,
    reference: &dyn Fn(&[Vec<f64>]) -> Vec<f64>,
    tolerance: f64,
) {
    let g = Graph::new().unwrap();
    let placeholders: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let dims: Vec<i64> = inp.shape.iter().map(|&d| d as i64).collect();
            g.placeholder(&format!("x{i}"), ferrometal::DType::F32, &dims)
                .unwrap()
        })
        .collect();
    let out = build(&g, &placeholders).unwrap();
    let data: Vec<Vec<f64>> = inputs
        .iter()
        .map(|i| i.data.iter().map(|&v| v as f32 as f64).collect())
        .collect();
    let expected = reference(&data);
    let projection = values(expected.len(), 99);
    let out_shape: Vec<usize> = out.shape().unwrap().iter().map(|&d| d as usize).collect();
    let r = g
        .constant(
            &out_shape,
            &projection.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        )
        .unwrap();
    let loss = g.sum(g.mul(out, r).unwrap(), &[], false).unwrap();
    let grads = g.gradients(loss, &placeholders).unwrap();
    let mut exec = g.compile(device).unwrap();
    let tensors: Vec<Tensor> = inputs
        .iter()
        .zip(&data)
        .map(|(inp, d)| {
            Tensor::from_slice(
                device,
                &inp.shape,
                &d.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            )
            .unwrap()
        })
        .collect();
    let feeds: Vec<(Value, &Tensor)> = placeholders.iter().copied().zip(tensors.iter()).collect();
    let mut fetches = vec![out];
    fetches.extend(&grads);
    let results = exec.run(&feeds, &fetches).unwrap();

    let got = results[0].to_vec::<f32>().unwrap();
    assert_eq!(got.len(), expected.len(), "output size");
    let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (f64::from(g) - e).abs() <= tolerance * scale,
            "forward[{i}]: got {g}, expected {e}"
        );
    }
    // Finite differences of the f64 reference: exact to ~1e-9.
    let objective = |d: &[Vec<f64>]| {
        reference(d)
            .iter()
            .zip(&projection)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    for (k, grad) in results[1..].iter().enumerate() {
        let got = grad.to_vec::<f32>().unwrap();
        let mut probe = data.clone();
        let h = 1e-6;
        let mut numeric = Vec::with_capacity(got.len());
        for i in 0..data[k].len() {
            probe[k][i] = data[k][i] + h;
            let up = objective(&probe);
            probe[k][i] = data[k][i] - h;
            let down = objective(&probe);
            probe[k][i] = data[k][i];
            numeric.push((up - down) / (2.0 * h));
        }
        // f32 results against f64 differences: never tighter than f32 rounding.
        let bound = tolerance.max(1e-6) * numeric.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &n)) in got.iter().zip(&numeric).enumerate() {
            assert!(
                (f64::from(g) - n).abs() <= bound,
                "gradient of input {k} [{i}]: got {g}, expected {n}"
            );
        }
    }
}
