//! Elementwise ops, activations and broadcasting.

use ferrometal::{Device, Graph, Tensor, Value};

use crate::harness::{check, input, Input};

type Build = for<'g> fn(&'g Graph, Value<'g>) -> ferrometal::Result<Value<'g>>;

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; integrate the series.
    let mut sum = 0.0f64;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) && n < 200.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn unary_ops_and_activations() {
    let device = Device::cpu().unwrap();
    let cases: Vec<(&str, Build, fn(f64) -> f64, bool)> = vec![
        ("neg", |g, x| g.neg(x), |x| -x, false),
        ("abs", |g, x| g.abs(x), f64::abs, false),
        ("exp", |g, x| g.exp(x), f64::exp, false),
        ("log", |g, x| g.log(x), f64::ln, true),
        ("sqrt", |g, x| g.sqrt(x), f64::sqrt, true),
        ("rsqrt", |g, x| g.rsqrt(x), |x| 1.0 / x.sqrt(), true),
        ("pow", |g, x| g.pow(x, 2.5), |x| x.powf(2.5), true),
        (
            "clamp",
            |g, x| g.clamp(x, -0.5, 0.4),
            |x| x.clamp(-0.5, 0.4),
            false,
        ),
        ("relu", |g, x| g.relu(x), |x| x.max(0.0), false),
        (
            "leaky_relu",
            |g, x| g.leaky_relu(x, 0.1),
            |x| if x > 0.0 { x } else { 0.1 * x },
            false,
        ),
        (
            "elu",
            |g, x| g.elu(x, 1.5),
            |x| if x > 0.0 { x } else { 1.5 * (x.exp() - 1.0) },
            false,
        ),
        ("sigmoid", |g, x| g.sigmoid(x), sigmoid, false),
        ("tanh", |g, x| g.tanh(x), f64::tanh, false),
        ("silu", |g, x| g.silu(x), |x| x * sigmoid(x), false),
        (
            "gelu",
            |g, x| g.gelu(x, false),
            |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
            false,
        ),
        (
            "gelu_tanh",
            |g, x| g.gelu(x, true),
            |x| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            },
            false,
        ),
        (
            "softplus",
            |g, x| g.softplus(x),
            |x| (1.0 + x.exp()).ln(),
            false,
        ),
    ];
    for (seed, (name, build, f, positive)) in cases.into_iter().enumerate() {
        let mut x = input(&[3, 7], seed as u64);
        // Away from kinks (0 for relu/abs, the clamp bounds) so gradients are defined.
        for v in &mut x.data {
            if positive {
                *v = v.abs() + 0.2;
            } else if v.abs() < 0.05 || (*v - 0.4).abs() < 0.05 || (*v + 0.5).abs() < 0.05 {
                *v += 0.12;
            }
            *v *= 2.0;
            if positive {
                *v = v.abs();
            }
        }
        let x = Input {
            shape: x.shape,
            data: x.data,
        };
        eprintln!("{name}");
        check(
            &device,
            &[x],
            &|g, v| build(g, v[0]),
            &|d| d[0].iter().map(|&v| f(v)).collect(),
            2e-5,
        );
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let device = Device::cpu().unwrap();
    type BuildBinary = for<'g> fn(&'g Graph, Value<'g>, Value<'g>) -> ferrometal::Result<Value<'g>>;
    let ops: Vec<(BuildBinary, fn(f64, f64) -> f64)> = vec![
        (|g, a, b| g.add(a, b), |a, b| a + b),
        (|g, a, b| g.sub(a, b), |a, b| a - b),
        (|g, a, b| g.mul(a, b), |a, b| a * b),
        (|g, a, b| g.div(a, b), |a, b| a / b),
        (|g, a, b| g.maximum(a, b), f64::max),
        (|g, a, b| g.minimum(a, b), f64::min),
    ];
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[2, 3], &[3]),
        (&[2, 1, 4], &[3, 1]),
        (&[], &[2, 3]),
        (&[2, 3], &[2, 3]),
    ];
    for (k, (build, f)) in ops.into_iter().enumerate() {
        for (s, (a_shape, b_shape)) in shapes.iter().enumerate() {
            let a = input(a_shape, (k * 10 + s) as u64);
            let mut b = input(b_shape, (k * 10 + s + 5) as u64);
            for v in &mut b.data {
                *v = if v.abs() < 0.3 {
                    v.signum() * 0.3 + *v
                } else {
                    *v
                }; // no division by ~0
            }
            let out_shape = broadcast(a_shape, b_shape);
            let (ash, bsh) = (a_shape.to_vec(), b_shape.to_vec());
            check(
                &device,
                &[a, b],
                &|g, v| build(g, v[0], v[1]),
                &|d| {
                    let count: usize = out_shape.iter().product();
                    (0..count)
                        .map(|i| {
                            f(
                                d[0][index(&ash, &out_shape, i)],
                                d[1][index(&bsh, &out_shape, i)],
                            )
                        })
                        .collect()
                },
                1e-5,
            );
        }
    }
}

fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            da.max(db)
        })
        .collect()
}

/// The element of `shape` (broadcast against `out`) at flat output index `i`.
pub fn index(shape: &[usize], out: &[usize], mut i: usize) -> usize {
    let mut at = 0;
    let mut stride = 1;
    for d in (0..out.len()).rev() {
        let coordinate = i % out[d];
        i /= out[d];
        if d + shape.len() >= out.len() {
            let size = shape[d + shape.len() - out.len()];
            if size != 1 {
                at += coordinate * stride;
            }
            stride *= size;
        }
    }
    at
}

#[test]
fn comparisons_and_where() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let a = g.constant(&[4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let b = g.constant(&[4], &[2.0f32, 2.0, 2.0, 5.0]).unwrap();
    let outputs = [
        (g.equal(a, b).unwrap(), [0.0, 1.0, 0.0, 0.0]),
        (g.not_equal(a, b).unwrap(), [1.0, 0.0, 1.0, 1.0]),
        (g.less(a, b).unwrap(), [1.0, 0.0, 0.0, 1.0]),
        (g.less_equal(a, b).unwrap(), [1.0, 1.0, 0.0, 1.0]),
        (g.greater(a, b).unwrap(), [0.0, 0.0, 1.0, 0.0]),
        (g.greater_equal(a, b).unwrap(), [0.0, 1.0, 1.0, 0.0]),
    ];
    let fetches: Vec<Value> = outputs.iter().map(|o| o.0).collect();
    let results = g.compile(&device).unwrap().run(&[], &fetches).unwrap();
    for (result, (_, expected)) in results.iter().zip(&outputs) {
        assert_eq!(result.to_vec::<f32>().unwrap(), expected);
    }
    // where: gradient flows to the branch that was taken, not to the condition.
    let condition = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    let inputs = [input(&[6], 3), input(&[6], 4)];
    check(
        &device,
        &inputs,
        &|g, v| {
            let c = g.constant(&[6], &condition.map(|c| c as f32))?;
            g.where_(c, v[0], v[1])
        },
        &|d| {
            (0..6)
                .map(|i| {
                    if condition[i] != 0.0 {
                        d[0][i]
                    } else {
                        d[1][i]
                    }
                })
                .collect()
        },
        1e-6,
    );
    let _ = Tensor::zeros(&device, ferrometal::DType::F32, &[1]);
}

#[test]
fn softmax_and_log_softmax_on_any_axis() {
    let device = Device::cpu().unwrap();
    for axis in [0i64, 1, -1] {
        let shape = [3usize, 4];
        let ax = if axis < 0 { 1 } else { axis as usize };
        let reference = move |d: &[Vec<f64>], log: bool| -> Vec<f64> {
            let x = &d[0];
            let mut y = vec![0.0; 12];
            let (outer, inner) = if ax == 0 { (1, 4) } else { (3, 1) };
            let n = shape[ax];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| o * n * inner + k * inner + i;
                    let max = (0..n).map(|k| x[at(k)]).fold(f64::MIN, f64::max);
                    let sum: f64 = (0..n).map(|k| (x[at(k)] - max).exp()).sum();
                    for k in 0..n {
                        y[at(k)] = if log {
                            x[at(k)] - max - sum.ln()
                        } else {
                            (x[at(k)] - max).exp() / sum
                        };
                    }
                }
            }
            y
        };
        let inp = [input(&shape, 40 + ax as u64)];
        check(
            &device,
            &inp,
            &|g, v| g.softmax(v[0], axis),
            &|d| reference(d, false),
            1e-5,
        );
        let inp = [input(&shape, 50 + ax as u64)];
        check(
            &device,
            &inp,
            &|g, v| g.log_softmax(v[0], axis),
            &|d| reference(d, true),
            1e-5,
        );
    }
    // Extreme logits stay finite.
    let g = Graph::new().unwrap();
    let x = g.constant(&[1, 3], &[1e30f32, -1e30, 0.0]).unwrap();
    let out = g
        .compile(&device)
        .unwrap()
        .run(
            &[],
            &[g.softmax(x, -1).unwrap(), g.log_softmax(x, -1).unwrap()],
        )
        .unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [1.0, 0.0, 0.0]);
    assert!(out[1].to_vec::<f32>().unwrap().iter().all(|v| !v.is_nan()));
}
