//! Ops in combination, as models use them: inputs used twice (gradients
//! accumulate), parameters held in variables, chains of ops planned and
//! fused together, one executable run with several batch sizes.

use ferrometal::{Conv2d, DType, Graph, Reduction, Tensor, BATCH};

use crate::harness::{devices, ints, rand, values, OpTest, Tol};

#[test]
fn an_input_used_twice_accumulates_its_gradient() {
    let x = || vec![rand(&[3, 3], 1)];
    OpTest::new("x + x", x()).run(&|g, v| g.add(v[0], v[0]), &|d| {
        d[0].iter().map(|a| 2.0 * a).collect()
    });
    OpTest::new("x * x", x()).run(&|g, v| g.mul(v[0], v[0]), &|d| {
        d[0].iter().map(|a| a * a).collect()
    });
    OpTest::new("x - x", x()).run(&|g, v| g.sub(v[0], v[0]), &|_| vec![0.0; 9]);
    OpTest::new("x · x", x())
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.matmul(v[0], v[0]), &|d| {
            crate::linalg::matmul_reference(&d[0], &[3, 3], &d[0], &[3, 3], false, false).0
        });
    OpTest::new("x · xᵀ", x())
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.matmul_t(v[0], v[0], false, true), &|d| {
            crate::linalg::matmul_reference(&d[0], &[3, 3], &d[0], &[3, 3], false, true).0
        });
    OpTest::new("concat [x, x]", x()).tol(Tol::Exact).run(
        &|g, v| g.concat(&[v[0], v[0]], 1),
        &|d| {
            d[0].chunks(3)
                .flat_map(|r| r.iter().chain(r).copied().collect::<Vec<_>>())
                .collect()
        },
    );
    OpTest::new("x * sigmoid(x) built from parts", x()).run(
        &|g, v| g.mul(v[0], g.sigmoid(v[0])?),
        &|d| {
            d[0].iter()
                .map(|&a| a * crate::harness::sigmoid(a))
                .collect()
        },
    );
}

#[test]
fn parameters_held_in_variables() {
    OpTest::new(
        "linear on variables",
        vec![rand(&[4, 6], 1), rand(&[5, 6], 2), rand(&[5], 3)],
    )
    .in_variables()
    .tol(Tol::Terms(1e-5))
    .run(&|g, v| g.linear(v[0], v[1], Some(v[2])), &|d| {
        let y = crate::linalg::matmul_reference(&d[0], &[4, 6], &d[1], &[5, 6], false, true).0;
        y.iter().enumerate().map(|(i, y)| y + d[2][i % 5]).collect()
    });
    let (xs, ws) = ([2usize, 3, 6, 6], [4usize, 3, 3, 3]);
    let options = Conv2d {
        stride: [2, 2],
        padding: [1, 1],
        ..Default::default()
    };
    OpTest::new(
        "conv2d on variables",
        vec![rand(&xs, 4), rand(&ws, 5), rand(&[4], 6)],
    )
    .in_variables()
    .tol(Tol::Terms(1e-5))
    .run(&|g, v| g.conv2d(v[0], v[1], Some(v[2]), &options), &|d| {
        crate::conv_pool::conv2d_reference(&d[0], xs, &d[1], ws, Some(&d[2]), &options)
    });
    OpTest::new(
        "embedding of a variable table",
        vec![rand(&[4, 3], 7), ints(&[5], vec![3, 1, 3, 0, 3])],
    )
    .in_variables()
    .tol(Tol::Exact)
    .run(&|g, v| g.embedding(v[0], v[1]), &|d| {
        d[1].iter()
            .flat_map(|&i| d[0][i as usize * 3..i as usize * 3 + 3].to_vec())
            .collect()
    });
}

/// A two-layer classifier in f64: relu(x w1ᵀ + b1) w2ᵀ + b2, then mean
/// softmax cross-entropy against `labels`.
fn mlp_loss(
    x: &[f64],
    w1: &[f64],
    b1: &[f64],
    w2: &[f64],
    b2: &[f64],
    labels: &[f64],
    (n, i, h, c): (usize, usize, usize, usize),
) -> f64 {
    let mut total = 0.0;
    for r in 0..n {
        let hidden: Vec<f64> = (0..h)
            .map(|j| (b1[j] + (0..i).map(|k| x[r * i + k] * w1[j * i + k]).sum::<f64>()).max(0.0))
            .collect();
        let logits: Vec<f64> = (0..c)
            .map(|j| b2[j] + (0..h).map(|k| hidden[k] * w2[j * h + k]).sum::<f64>())
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
        total += lse - logits[labels[r] as usize];
    }
    total / n as f64
}

#[test]
fn a_small_classifier_end_to_end() {
    let dims = (6usize, 5usize, 7usize, 3usize);
    let (n, i, h, c) = dims;
    let labels: Vec<i32> = (0..n).map(|r| (r % c) as i32).collect();
    // Pre-activations of the hidden layer stay away from 0 for these
    // weights (checked below), so relu's kink is not straddled.
    let args = vec![
        rand(&[n, i], 1),
        rand(&[h, i], 2),
        rand(&[h], 3),
        rand(&[c, h], 4),
        rand(&[c], 5),
        ints(&[n], labels),
    ];
    let crate::harness::Data::F32(x) = &args[0].data else {
        unreachable!()
    };
    let crate::harness::Data::F32(w1) = &args[1].data else {
        unreachable!()
    };
    let crate::harness::Data::F32(b1) = &args[2].data else {
        unreachable!()
    };
    for r in 0..n {
        for j in 0..h {
            let pre = b1[j] + (0..i).map(|k| x[r * i + k] * w1[j * i + k]).sum::<f64>();
            assert!(
                pre.abs() > 1e-3,
                "test data: pre-activation {pre} too close to the kink"
            );
        }
    }
    OpTest::new("mlp", args.clone()).shape(&[]).run(
        &|g, v| {
            let hidden = g.relu(g.linear(v[0], v[1], Some(v[2]))?)?;
            let logits = g.linear(hidden, v[3], Some(v[4]))?;
            g.softmax_cross_entropy(logits, v[5], 0.0, Reduction::Mean)
        },
        &|d| vec![mlp_loss(&d[0], &d[1], &d[2], &d[3], &d[4], &d[5], dims)],
    );
    OpTest::new("mlp on variables", args).in_variables().run(
        &|g, v| {
            let hidden = g.relu(g.linear(v[0], v[1], Some(v[2]))?)?;
            let logits = g.linear(hidden, v[3], Some(v[4]))?;
            g.softmax_cross_entropy(logits, v[5], 0.0, Reduction::Mean)
        },
        &|d| vec![mlp_loss(&d[0], &d[1], &d[2], &d[3], &d[4], &d[5], dims)],
    );
}

#[test]
fn one_executable_runs_any_batch_size() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let x = g.placeholder("x", DType::F32, &[BATCH, 4]).unwrap();
        let y = g.placeholder("y", DType::I32, &[BATCH]).unwrap();
        let w_data: Vec<f32> = values(12, 1).iter().map(|&v| v as f32).collect();
        let w = g.variable_from("w", &[3, 4], &w_data).unwrap();
        let logits = g.linear(x, w, None).unwrap();
        let probabilities = g.softmax(logits, -1).unwrap();
        let loss = g
            .softmax_cross_entropy(logits, y, 0.0, Reduction::Sum)
            .unwrap();
        let grad = g.gradients(loss, &[w]).unwrap()[0];
        assert_eq!(probabilities.shape().unwrap(), [BATCH, 3]);
        let mut exec = g.compile(&device).unwrap();
        for (seed, batch) in [3usize, 7, 1, 3, 64, 7].into_iter().enumerate() {
            let xs: Vec<f32> = values(batch * 4, 10 + seed as u64)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let ys: Vec<i32> = (0..batch).map(|r| ((r * 7 + seed) % 3) as i32).collect();
            let out = exec
                .run(
                    &[
                        (x, &Tensor::from_slice(&device, &[batch, 4], &xs).unwrap()),
                        (y, &Tensor::from_slice(&device, &[batch], &ys).unwrap()),
                    ],
                    &[probabilities, loss, grad],
                )
                .unwrap();
            assert_eq!(out[0].shape(), [batch, 3]);
            // Reference: p = softmax(x wᵀ), loss = -sum log p[y], dW = (p - onehot)ᵀ x.
            let (mut total, mut dw) = (0.0f64, [0.0f64; 12]);
            let got_p = out[0].to_vec::<f32>().unwrap();
            for r in 0..batch {
                let z: Vec<f64> = (0..3)
                    .map(|j| {
                        (0..4)
                            .map(|k| f64::from(xs[r * 4 + k]) * f64::from(w_data[j * 4 + k]))
                            .sum()
                    })
                    .collect();
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                for j in 0..3 {
                    let p = (z[j] - max).exp() / sum;
                    assert!(
                        (f64::from(got_p[r * 3 + j]) - p).abs() < 1e-6,
                        "batch {batch}: p[{r}, {j}]"
                    );
                    let delta = p - f64::from(u8::from(j == ys[r] as usize));
                    for k in 0..4 {
                        dw[j * 4 + k] += delta * f64::from(xs[r * 4 + k]);
                    }
                }
                total += max + sum.ln() - z[ys[r] as usize];
            }
            let got = f64::from(out[1].scalar().unwrap());
            assert!(
                (got - total).abs() <= 1e-5 * (1.0 + total.abs()),
                "batch {batch}: loss {got} vs {total}"
            );
            for (k, (&got, want)) in out[2].to_vec::<f32>().unwrap().iter().zip(dw).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "batch {batch}: dW[{k}] {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn gradients_of_unrelated_and_repeated_values() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let x = g.placeholder("x", DType::F32, &[2]).unwrap();
        let unused = g.placeholder("unused", DType::F32, &[3]).unwrap();
        let loss = g.sum(g.mul(x, x).unwrap(), &[], false).unwrap();
        // The loss does not depend on `unused`: zeros of its shape. The same value twice: twice the same gradient.
        let grads = g.gradients(loss, &[unused, x, x]).unwrap();
        assert_eq!(grads[0].shape().unwrap(), [3]);
        let mut exec = g.compile(&device).unwrap();
        let xs = Tensor::from_slice(&device, &[2], &[1.5f32, -2.0]).unwrap();
        let us = Tensor::from_slice(&device, &[3], &[1.0f32; 3]).unwrap();
        let out = exec
            .run(
                &[(x, &xs), (unused, &us)],
                &[grads[0], grads[1], grads[2], loss, loss, x],
            )
            .unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), [0.0; 3]);
        assert_eq!(out[1].to_vec::<f32>().unwrap(), [3.0, -4.0]);
        assert_eq!(out[2].to_vec::<f32>().unwrap(), [3.0, -4.0]);
        assert_eq!(out[3].scalar().unwrap(), 6.25);
        assert_eq!(out[4].scalar().unwrap(), 6.25);
        assert_eq!(
            out[5].to_vec::<f32>().unwrap(),
            [1.5, -2.0],
            "a fetched placeholder is its feed"
        );
    }
}

/// Builds values from a [BATCH, 3, 4] placeholder `p` (and a [4, 5] one).
type Cases<'g> = Vec<(&'static str, ferrometal::Result<ferrometal::Value<'g>>)>;

/// Checks that each value's public shape, with BATCH replaced by the fed
/// batch, is the shape of the fetched tensor, for batches 1 and 4.
fn check_public_shapes(
    build: &dyn for<'g> Fn(&'g Graph, ferrometal::Value<'g>, ferrometal::Value<'g>) -> Cases<'g>,
) {
    for device in devices() {
        let g = Graph::new().unwrap();
        let p = g.placeholder("p", DType::F32, &[BATCH, 3, 4]).unwrap();
        let w = g.placeholder("w", DType::F32, &[4, 5]).unwrap();
        let cases = build(&g, p, w);
        let mut exec = g.compile(&device).unwrap();
        for batch in [1usize, 4] {
            let ps =
                Tensor::from_slice(&device, &[batch, 3, 4], &vec![1.0f32; batch * 12]).unwrap();
            let ws = Tensor::from_slice(&device, &[4, 5], &[1.0f32; 20]).unwrap();
            for (name, value) in &cases {
                // Refusing an op whose shape cannot be stated is fine too.
                let Ok(value) = value else { continue };
                let declared = value.shape().unwrap();
                let fetched = exec.run(&[(p, &ps), (w, &ws)], &[*value]).unwrap();
                // BATCH_DEPENDENT says only "depends on the batch": it matches any size.
                let public: Vec<usize> = declared
                    .iter()
                    .zip(fetched[0].shape())
                    .map(|(&d, &got)| match d {
                        BATCH => batch,
                        ferrometal::BATCH_DEPENDENT => got,
                        known => known as usize,
                    })
                    .collect();
                assert_eq!(
                    fetched[0].shape(),
                    &public[..],
                    "{name}: public shape {declared:?} at batch {batch}"
                );
            }
        }
    }
}

#[test]
fn public_shapes_with_the_batch_match_fetched_shapes() {
    check_public_shapes(&|g, p, w| {
        vec![
            ("flatten", g.flatten(p)),
            ("reshape to [-1, 12]", g.reshape(p, &[-1, 12])),
            ("reshape to [-1, 3, 2, 2]", g.reshape(p, &[-1, 3, 2, 2])),
            ("transpose(0, 1)", g.transpose(p, 0, 1)),
            ("sum over the batch", g.sum(p, &[0], false)),
            ("sum over 1, keep_dims", g.sum(p, &[1], true)),
            ("matmul", g.matmul(p, w)),
            ("unsqueeze(0)", g.unsqueeze(p, &[0])),
            ("slice of the first row", g.slice(p, 0, 0, 1)),
            ("softmax over the batch", g.softmax(p, 0)),
        ]
    });
}

#[test]
fn a_batch_dependent_dim_that_is_not_the_batch_is_not_reported_as_the_batch() {
    // Each of these has a dim 0 that varies with the batch without being it.
    let g = Graph::new().unwrap();
    let p = g.placeholder("p", DType::F32, &[BATCH, 3, 4]).unwrap();
    for value in [
        g.reshape(p, &[-1, 4]).unwrap(),
        g.concat(&[p, p], 0).unwrap(),
        g.slice(p, 0, 0, -1).unwrap(),
        g.pad(p, &[(1, 1), (0, 0), (0, 0)], 0.0).unwrap(),
    ] {
        assert_eq!(
            value.shape().unwrap()[0],
            ferrometal::BATCH_DEPENDENT,
            "{value:?}"
        );
    }
    check_public_shapes(&|g, p, _| {
        vec![
            ("reshape to [-1, 4]", g.reshape(p, &[-1, 4])),
            ("reshape to [-1]", g.reshape(p, &[-1])),
            ("concat along the batch", g.concat(&[p, p], 0)),
            ("slice dropping the last row", g.slice(p, 0, 0, -1)),
            (
                "pad along the batch",
                g.pad(p, &[(1, 1), (0, 0), (0, 0)], 0.0),
            ),
        ]
    });
}

#[test]
fn empty_tensors_flow_through() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let a = g.placeholder("a", DType::F32, &[2, 0]).unwrap();
        let b = g.placeholder("b", DType::F32, &[0, 3]).unwrap();
        let x = g.placeholder("x", DType::F32, &[BATCH, 2, 4, 4]).unwrap();
        let labels = g.placeholder("labels", DType::I32, &[BATCH]).unwrap();
        let w = g.variable_from("w", &[3, 2, 3, 3], &[0.5f32; 54]).unwrap();
        let product = g.matmul(a, b).unwrap();
        let row_sums = g.sum(a, &[1], false).unwrap();
        let features = g
            .global_avg_pool(g.conv2d(x, w, None, &Conv2d::default()).unwrap())
            .unwrap();
        let loss = g
            .softmax_cross_entropy(features, labels, 0.0, Reduction::Sum)
            .unwrap();
        let grad = g.gradients(loss, &[w]).unwrap()[0];
        let mut exec = g.compile(&device).unwrap();
        let out = exec
            .run(
                &[
                    (a, &Tensor::zeros(&device, DType::F32, &[2, 0]).unwrap()),
                    (b, &Tensor::zeros(&device, DType::F32, &[0, 3]).unwrap()),
                    (
                        x,
                        &Tensor::zeros(&device, DType::F32, &[0, 2, 4, 4]).unwrap(),
                    ),
                    (labels, &Tensor::zeros(&device, DType::I32, &[0]).unwrap()),
                ],
                &[product, row_sums, features, loss, grad],
            )
            .unwrap();
        assert_eq!(
            out[0].to_vec::<f32>().unwrap(),
            [0.0; 6],
            "a product over k = 0 is zeros"
        );
        assert_eq!(
            out[1].to_vec::<f32>().unwrap(),
            [0.0; 2],
            "an empty sum is 0"
        );
        assert_eq!(out[2].shape(), [0, 3]);
        assert_eq!(
            out[3].scalar().unwrap(),
            0.0,
            "the sum over an empty batch is 0"
        );
        assert_eq!(out[4].to_vec::<f32>().unwrap(), [0.0; 54]);
    }
}
