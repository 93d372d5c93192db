//! The same ops on inputs large enough to be split over the thread pool and
//! the blocked kernels (the small cases elsewhere run in one task). Gradients
//! are checked at a sample of elements (each finite difference costs a
//! whole reference evaluation).

use ferrometal::{Conv2d, Pool2d, Reduction};

use crate::harness::{broadcast_index, coords, ints, rand, OpTest, Tol};

#[test]
fn large_broadcast_arithmetic_and_activations() {
    let (a_shape, b_shape) = ([300usize, 257], [257usize]);
    OpTest::new(
        "large mul [300, 257] by [257]",
        vec![rand(&a_shape, 1), rand(&b_shape, 2)],
    )
    .grad_samples(40)
    .run(&|g, v| g.mul(v[0], v[1]), &|d| {
        (0..300 * 257)
            .map(|i| d[0][i] * d[1][broadcast_index(&b_shape, &coords(&a_shape, i))])
            .collect()
    });
    OpTest::new(
        "large sub [257] from [300, 1]",
        vec![rand(&[300, 1], 3), rand(&b_shape, 4)],
    )
    .grad_samples(40)
    .run(&|g, v| g.sub(v[0], v[1]), &|d| {
        (0..300 * 257)
            .map(|i| d[0][i / 257] - d[1][i % 257])
            .collect()
    });
    OpTest::new("large gelu(tanh(x))", vec![rand(&[70_001], 5)])
        .grad_samples(40)
        .run(&|g, v| g.gelu(g.tanh(v[0])?, false), &|d| {
            d[0].iter()
                .map(|&x| 0.5 * x.tanh() * (1.0 + crate::harness::erf(x.tanh() / 2f64.sqrt())))
                .collect()
        });
}

#[test]
fn large_reductions_and_softmax() {
    let shape = [513usize, 300];
    for axis in [0usize, 1] {
        let other = 1 - axis;
        let group = |d: &[f64], j: usize| -> Vec<f64> {
            (0..shape[axis])
                .map(|k| {
                    if axis == 0 {
                        d[k * 300 + j]
                    } else {
                        d[j * 300 + k]
                    }
                })
                .collect()
        };
        OpTest::new(format!("large sum along {axis}"), vec![rand(&shape, 6)])
            .tol(Tol::Terms(1e-5))
            .grad_samples(40)
            .run(&|g, v| g.sum(v[0], &[axis as i64], false), &|d| {
                (0..shape[other])
                    .map(|j| group(&d[0], j).iter().sum())
                    .collect()
            });
        OpTest::new(format!("large max along {axis}"), vec![rand(&shape, 7)])
            .tol(Tol::Exact)
            .grad_samples(40)
            .run(&|g, v| g.max(v[0], &[axis as i64], true), &|d| {
                (0..shape[other])
                    .map(|j| {
                        group(&d[0], j)
                            .into_iter()
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .collect()
            });
        OpTest::new(
            format!("large variance along {axis}"),
            vec![rand(&shape, 8)],
        )
        .grad_samples(40)
        .run(&|g, v| g.variance(v[0], &[axis as i64], 1, false), &|d| {
            (0..shape[other])
                .map(|j| {
                    let x = group(&d[0], j);
                    let m = x.iter().sum::<f64>() / x.len() as f64;
                    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
                })
                .collect()
        });
        OpTest::new(
            format!("large log_softmax along {axis}"),
            vec![rand(&shape, 9).map(|v| 4.0 * v)],
        )
        .grad_samples(40)
        .run(&|g, v| g.log_softmax(v[0], axis as i64), &|d| {
            crate::elementwise::softmax_reference(&d[0], &shape, axis, true)
        });
    }
}

#[test]
fn large_matmul_conv_and_pooling() {
    let (a_shape, b_shape) = ([3usize, 130, 257], [257usize, 70]);
    OpTest::new(
        "large batched matmul",
        vec![rand(&a_shape, 10), rand(&b_shape, 11)],
    )
    .tol(Tol::Terms(1e-5))
    .grad_samples(30)
    .run(&|g, v| g.matmul(v[0], v[1]), &|d| {
        crate::linalg::matmul_reference(&d[0], &a_shape, &d[1], &b_shape, false, false).0
    });
    let (xs, ws) = ([4usize, 8, 32, 32], [16usize, 8, 3, 3]);
    let options = Conv2d {
        padding: [1, 1],
        ..Default::default()
    };
    OpTest::new(
        "large conv2d",
        vec![rand(&xs, 12), rand(&ws, 13), rand(&[16], 14)],
    )
    .tol(Tol::Terms(1e-5))
    .grad_samples(12)
    .run(&|g, v| g.conv2d(v[0], v[1], Some(v[2]), &options), &|d| {
        crate::conv_pool::conv2d_reference(&d[0], xs, &d[1], ws, Some(&d[2]), &options)
    });
    // cifar's first layer: three input channels, the CPU's small-channel
    // weight-gradient path.
    let (xs, ws) = ([8usize, 3, 32, 32], [32usize, 3, 3, 3]);
    let options = Conv2d {
        padding: [1, 1],
        ..Default::default()
    };
    OpTest::new(
        "large conv2d, 3 input channels",
        vec![rand(&xs, 19), rand(&ws, 20), rand(&[32], 21)],
    )
    .tol(Tol::Terms(1e-5))
    .grad_samples(40)
    .run(&|g, v| g.conv2d(v[0], v[1], Some(v[2]), &options), &|d| {
        crate::conv_pool::conv2d_reference(&d[0], xs, &d[1], ws, Some(&d[2]), &options)
    });
    let options = Conv2d {
        stride: [2, 2],
        padding: [1, 1],
        output_padding: [1, 1],
        ..Default::default()
    };
    let (xs, ws) = ([2usize, 16, 16, 16], [16usize, 8, 3, 3]);
    OpTest::new("large conv_transpose2d", vec![rand(&xs, 15), rand(&ws, 16)])
        .tol(Tol::Terms(1e-5))
        .grad_samples(12)
        .run(
            &|g, v| g.conv_transpose2d(v[0], v[1], None, &options),
            &|d| crate::conv_pool::conv_transpose2d_reference(&d[0], xs, &d[1], ws, None, &options),
        );
    let xs = [4usize, 8, 32, 32];
    let pool = Pool2d {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        dilation: [1, 1],
        count_include_pad: false,
    };
    OpTest::new("large max_pool2d", vec![rand(&xs, 17)])
        .tol(Tol::Exact)
        .grad_samples(40)
        .run(&|g, v| g.max_pool2d(v[0], &pool), &|d| {
            crate::conv_pool::pool_reference(&d[0], xs, &pool, true)
        });
    OpTest::new("large avg_pool2d", vec![rand(&xs, 18)])
        .tol(Tol::Terms(1e-6))
        .grad_samples(40)
        .run(&|g, v| g.avg_pool2d(v[0], &pool), &|d| {
            crate::conv_pool::pool_reference(&d[0], xs, &pool, false)
        });
}

#[test]
fn large_embedding_normalisation_and_loss() {
    let (rows, width, count) = (1000usize, 64usize, 5000usize);
    // Many repeats: 5000 lookups into 1000 rows.
    let indices: Vec<i32> = crate::harness::values(count, 19)
        .iter()
        .map(|v| ((v + 1.0) * 500.0) as i32 % 1000)
        .collect();
    OpTest::new(
        "large embedding",
        vec![rand(&[rows, width], 20), ints(&[count], indices)],
    )
    .tol(Tol::Exact)
    .grad_samples(60)
    .run(&|g, v| g.embedding(v[0], v[1]), &|d| {
        d[1].iter()
            .flat_map(|&i| d[0][i as usize * width..(i as usize + 1) * width].to_vec())
            .collect()
    });
    let (n, c) = (512usize, 100usize);
    let labels: Vec<i32> = crate::harness::values(n, 21)
        .iter()
        .map(|v| ((v + 1.0) * 50.0) as i32 % 100)
        .collect();
    OpTest::new(
        "large softmax_cross_entropy",
        vec![rand(&[n, c], 22).map(|v| 3.0 * v), ints(&[n], labels)],
    )
    .grad_samples(60)
    .run(
        &|g, v| g.softmax_cross_entropy(v[0], v[1], 0.1, Reduction::Mean),
        &|d| {
            let total: f64 = (0..n)
                .map(|i| {
                    let row = &d[0][i * c..(i + 1) * c];
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
                    0.9 * (lse - row[d[1][i] as usize])
                        + 0.1 * row.iter().map(|z| lse - z).sum::<f64>() / c as f64
                })
                .sum();
            vec![total / n as f64]
        },
    );
    let shape = [64usize, 512];
    OpTest::new(
        "large layer_norm",
        vec![rand(&shape, 23), rand(&[512], 24), rand(&[512], 25)],
    )
    .grad_samples(40)
    .run(&|g, v| g.layer_norm(v[0], v[1], v[2], 1, 1e-5), &|d| {
        d[0].chunks(512)
            .flat_map(|row| {
                let mean = row.iter().sum::<f64>() / 512.0;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 512.0;
                row.iter()
                    .enumerate()
                    .map(move |(i, v)| (v - mean) / (var + 1e-5).sqrt() * d[1][i] + d[2][i])
                    .collect::<Vec<_>>()
            })
            .collect()
    });
}

/// Outputs of 8 MiB or more take the CPU's non-temporal store path, whose
/// task ranges start at arbitrary (unaligned) elements: 10,000 x 257 splits
/// into tasks of a size that is not a multiple of 4.
#[test]
fn huge_elementwise_outputs_are_written_whole() {
    let (a_shape, b_shape) = ([10_000usize, 257], [257usize]);
    OpTest::new(
        "huge relu([10000, 257] + [257])",
        vec![rand(&a_shape, 11), rand(&b_shape, 12)],
    )
    .forward_only()
    .run(&|g, v| g.relu(g.add(v[0], v[1])?), &|d| {
        (0..10_000 * 257)
            .map(|i| (d[0][i] + d[1][i % 257]).max(0.0))
            .collect()
    });
}
