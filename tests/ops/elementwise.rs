//! Elementwise ops: unary math and activations, binary arithmetic with
//! NumPy broadcasting, comparisons, where, softmax and log-softmax.

use ferrometal::{sys, Attrs, Graph, Result, Value};

use crate::harness::{
    broadcast_index, broadcast_shape, coords, erf, from, rand, sigmoid, softplus, OpTest, Tol,
};

type Unary = for<'g> fn(&'g Graph, Value<'g>) -> Result<Value<'g>>;
type Binary = for<'g> fn(&'g Graph, Value<'g>, Value<'g>) -> Result<Value<'g>>;

fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// Domain of the inputs of a unary case.
#[derive(Clone, Copy)]
enum Domain {
    /// (-2.5, 2.5), away from the listed kinks.
    Signed(&'static [f64]),
    /// (0.2, 3).
    Positive,
}

#[test]
fn unary_math_and_activations() {
    let cases: Vec<(&str, Unary, fn(f64) -> f64, Domain)> = vec![
        ("neg", |g, x| g.neg(x), |x| -x, Domain::Signed(&[])),
        ("abs", |g, x| g.abs(x), f64::abs, Domain::Signed(&[0.0])),
        ("exp", |g, x| g.exp(x), f64::exp, Domain::Signed(&[])),
        ("log", |g, x| g.log(x), f64::ln, Domain::Positive),
        ("sqrt", |g, x| g.sqrt(x), f64::sqrt, Domain::Positive),
        (
            "rsqrt",
            |g, x| g.rsqrt(x),
            |x| 1.0 / x.sqrt(),
            Domain::Positive,
        ),
        (
            "pow 2.5",
            |g, x| g.pow(x, 2.5),
            |x| x.powf(2.5),
            Domain::Positive,
        ),
        (
            "pow -0.5",
            |g, x| g.pow(x, -0.5),
            |x| x.powf(-0.5),
            Domain::Positive,
        ),
        (
            "pow 3 (negative x)",
            |g, x| g.pow(x, 3.0),
            |x| x.powi(3),
            Domain::Signed(&[]),
        ),
        (
            "pow 2 (negative x)",
            |g, x| g.pow(x, 2.0),
            |x| x * x,
            Domain::Signed(&[]),
        ),
        (
            "clamp [-0.5, 0.4]",
            |g, x| g.clamp(x, -0.5, 0.4),
            |x| x.clamp(-0.5, 0.4),
            Domain::Signed(&[-0.5, 0.4]),
        ),
        (
            "clamp [-inf, 0.3] (max only)",
            |g, x| g.clamp(x, f64::NEG_INFINITY, 0.3),
            |x| x.min(0.3),
            Domain::Signed(&[0.3]),
        ),
        (
            "relu",
            |g, x| g.relu(x),
            |x| x.max(0.0),
            Domain::Signed(&[0.0]),
        ),
        (
            "leaky_relu 0.1",
            |g, x| g.leaky_relu(x, 0.1),
            |x| if x > 0.0 { x } else { 0.1 * x },
            Domain::Signed(&[0.0]),
        ),
        (
            "leaky_relu default slope 0.01",
            |g, x| g.op(sys::FM_OP_LEAKY_RELU, &[x], &Attrs::default()),
            |x| if x > 0.0 { x } else { 0.01 * x },
            Domain::Signed(&[0.0]),
        ),
        (
            "elu 1.5",
            |g, x| g.elu(x, 1.5),
            |x| if x > 0.0 { x } else { 1.5 * x.exp_m1() },
            Domain::Signed(&[0.0]),
        ),
        (
            "elu default alpha 1",
            |g, x| g.op(sys::FM_OP_ELU, &[x], &Attrs::default()),
            |x| if x > 0.0 { x } else { x.exp_m1() },
            Domain::Signed(&[0.0]),
        ),
        ("sigmoid", |g, x| g.sigmoid(x), sigmoid, Domain::Signed(&[])),
        ("tanh", |g, x| g.tanh(x), f64::tanh, Domain::Signed(&[])),
        (
            "silu",
            |g, x| g.silu(x),
            |x| x * sigmoid(x),
            Domain::Signed(&[]),
        ),
        (
            "gelu (erf)",
            |g, x| g.gelu(x, false),
            |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
            Domain::Signed(&[]),
        ),
        (
            "gelu (tanh)",
            |g, x| g.gelu(x, true),
            gelu_tanh,
            Domain::Signed(&[]),
        ),
        (
            "softplus",
            |g, x| g.softplus(x),
            softplus,
            Domain::Signed(&[]),
        ),
    ];
    for (seed, (name, build, f, domain)) in cases.into_iter().enumerate() {
        let x = rand(&[3, 7], seed as u64);
        let x = match domain {
            Domain::Signed(kinks) => x.map(|v| v * 2.5).away_from(kinks, 0.02),
            Domain::Positive => x.map(|v| 0.2 + 1.4 * (v + 1.0)),
        };
        OpTest::new(name, vec![x])
            .shape(&[3, 7])
            .run(&|g, v| build(g, v[0]), &|d| {
                d[0].iter().map(|&v| f(v)).collect()
            });
    }
}

#[test]
fn activations_stay_finite_and_exact_at_large_magnitudes() {
    let big = vec![-80.0, -50.0, -20.0, -9.0, 9.0, 20.0, 50.0, 80.0];
    let cases: Vec<(&str, Unary, fn(f64) -> f64)> = vec![
        ("sigmoid", |g, x| g.sigmoid(x), sigmoid),
        ("tanh", |g, x| g.tanh(x), f64::tanh),
        ("silu", |g, x| g.silu(x), |x| x * sigmoid(x)),
        ("softplus", |g, x| g.softplus(x), softplus),
        (
            "gelu (erf)",
            |g, x| g.gelu(x, false),
            |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        ),
        ("gelu (tanh)", |g, x| g.gelu(x, true), gelu_tanh),
        (
            "elu",
            |g, x| g.elu(x, 1.0),
            |x| if x > 0.0 { x } else { x.exp_m1() },
        ),
    ];
    for (name, build, f) in cases {
        // Gradients too: they saturate to 0 or 1 there, and must not be NaN.
        OpTest::new(
            format!("{name} at large |x|"),
            vec![from(&[8], big.clone())],
        )
        .run(&|g, v| build(g, v[0]), &|d| {
            d[0].iter().map(|&v| f(v)).collect()
        });
    }
}

/// Values on a grid of step 0.01 offset by `offset`: two such inputs with
/// offsets 0.0025 and 0.0075 never come closer than 0.005, so maximum and
/// minimum have no ties for the finite differences to straddle.
fn gridded(shape: &[usize], seed: u64, offset: f64) -> crate::harness::Arg {
    rand(shape, seed).map(|v| (v * 100.0).round() / 100.0 + offset)
}

fn binary_reference(
    f: fn(f64, f64) -> f64,
    a: &[usize],
    b: &[usize],
) -> impl Fn(&[Vec<f64>]) -> Vec<f64> {
    let (a, b) = (a.to_vec(), b.to_vec());
    move |d| {
        let out = broadcast_shape(&a, &b);
        let count: usize = out.iter().product();
        (0..count)
            .map(|i| {
                let c = coords(&out, i);
                f(d[0][broadcast_index(&a, &c)], d[1][broadcast_index(&b, &c)])
            })
            .collect()
    }
}

const BROADCASTS: [(&[usize], &[usize]); 6] = [
    (&[2, 3], &[2, 3]),
    (&[2, 3], &[3]),
    (&[3], &[2, 3]),
    (&[2, 1, 4], &[3, 1]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
];

#[test]
fn binary_arithmetic_broadcasts_like_numpy() {
    let ops: Vec<(&str, Binary, fn(f64, f64) -> f64)> = vec![
        ("add", |g, a, b| g.add(a, b), |a, b| a + b),
        ("sub", |g, a, b| g.sub(a, b), |a, b| a - b),
        ("mul", |g, a, b| g.mul(a, b), |a, b| a * b),
        ("div", |g, a, b| g.div(a, b), |a, b| a / b),
        ("maximum", |g, a, b| g.maximum(a, b), f64::max),
        ("minimum", |g, a, b| g.minimum(a, b), f64::min),
    ];
    for (k, (name, build, f)) in ops.into_iter().enumerate() {
        for (s, (a_shape, b_shape)) in BROADCASTS.iter().enumerate() {
            let seed = (k * 10 + s) as u64;
            let a = gridded(a_shape, seed, 0.0025);
            // The divisor stays away from zero.
            let b = gridded(b_shape, seed + 100, 0.0075).away_from(&[0.0], 0.3);
            OpTest::new(format!("{name} {a_shape:?} with {b_shape:?}"), vec![a, b])
                .shape(&broadcast_shape(a_shape, b_shape))
                .run(
                    &|g, v| build(g, v[0], v[1]),
                    &binary_reference(f, a_shape, b_shape),
                );
        }
    }
}

#[test]
fn operators_on_values_build_the_same_ops() {
    let a = rand(&[2, 3], 1);
    let b = rand(&[3], 2).away_from(&[0.0], 0.3);
    OpTest::new("(a + b) * a - a / b, then -", vec![a, b]).run(
        &|_, v| {
            let sum = (v[0] + v[1])?;
            let product = (sum * v[0])?;
            let quotient = (v[0] / v[1])?;
            let difference = (product - quotient)?;
            -difference
        },
        &|d| {
            (0..6)
                .map(|i| {
                    let (a, b) = (d[0][i], d[1][i % 3]);
                    -((a + b) * a - a / b)
                })
                .collect()
        },
    );
}

#[test]
fn comparisons_give_ones_and_zeros_and_no_gradient() {
    let ops: Vec<(&str, Binary, fn(f64, f64) -> bool)> = vec![
        ("equal", |g, a, b| g.equal(a, b), |a, b| a == b),
        ("not_equal", |g, a, b| g.not_equal(a, b), |a, b| a != b),
        ("less", |g, a, b| g.less(a, b), |a, b| a < b),
        ("less_equal", |g, a, b| g.less_equal(a, b), |a, b| a <= b),
        ("greater", |g, a, b| g.greater(a, b), |a, b| a > b),
        (
            "greater_equal",
            |g, a, b| g.greater_equal(a, b),
            |a, b| a >= b,
        ),
    ];
    for (k, (name, build, f)) in ops.into_iter().enumerate() {
        for (s, (a_shape, b_shape)) in BROADCASTS.iter().enumerate() {
            let seed = (k * 10 + s) as u64;
            let compare = |d: &[Vec<f64>]| -> Vec<f64> {
                let out = broadcast_shape(a_shape, b_shape);
                (0..out.iter().product())
                    .map(|i| {
                        let c = coords(&out, i);
                        let x = d[0][broadcast_index(a_shape, &c)];
                        let y = d[1][broadcast_index(b_shape, &c)];
                        f64::from(u8::from(f(x, y)))
                    })
                    .collect()
            };
            // Forward with many ties: values in {-1, -0.5, 0, 0.5, 1}.
            let a = rand(a_shape, seed).map(|v| (v * 2.0).round() / 2.0);
            let b = rand(b_shape, seed + 50).map(|v| (v * 2.0).round() / 2.0);
            OpTest::new(format!("{name} {a_shape:?} with {b_shape:?}"), vec![a, b])
                .shape(&broadcast_shape(a_shape, b_shape))
                .tol(Tol::Exact)
                .forward_only()
                .run(&|g, v| build(g, v[0], v[1]), &compare);
            // No gradient flows through a comparison.
            let a = gridded(a_shape, seed, 0.0025).zero_grad();
            let b = gridded(b_shape, seed + 50, 0.0075).zero_grad();
            OpTest::new(format!("{name} gradient"), vec![a, b])
                .tol(Tol::Exact)
                .run(&|g, v| build(g, v[0], v[1]), &compare);
        }
    }
}

#[test]
fn where_picks_a_or_b_and_routes_gradients() {
    // (condition, a, b) shapes: same; and all three broadcasting.
    let cases: [(&[usize], &[usize], &[usize]); 3] = [
        (&[2, 3], &[2, 3], &[2, 3]),
        (&[2, 1, 4], &[3, 1], &[]),
        (&[4], &[3, 4], &[3, 1]),
    ];
    for (seed, (c_shape, a_shape, b_shape)) in cases.into_iter().enumerate() {
        let seed = seed as u64;
        // Nonzero values of either sign and fractions count as true.
        let condition = rand(c_shape, seed).map(|v| match (v * 4.0).floor() as i64 {
            -4 | -3 => 0.0,
            -2 => -2.0,
            -1 => 0.0,
            0 => 0.5,
            _ => 1.0,
        });
        let out = broadcast_shape(&broadcast_shape(c_shape, a_shape), b_shape);
        let (c_s, a_s, b_s, o) = (
            c_shape.to_vec(),
            a_shape.to_vec(),
            b_shape.to_vec(),
            out.clone(),
        );
        OpTest::new(
            format!("where {c_shape:?} {a_shape:?} {b_shape:?}"),
            vec![
                condition.zero_grad(),
                rand(a_shape, seed + 10),
                rand(b_shape, seed + 20),
            ],
        )
        .shape(&out)
        .run(&|g, v| g.where_(v[0], v[1], v[2]), &move |d| {
            (0..o.iter().product())
                .map(|i| {
                    let c = coords(&o, i);
                    if d[0][broadcast_index(&c_s, &c)] != 0.0 {
                        d[1][broadcast_index(&a_s, &c)]
                    } else {
                        d[2][broadcast_index(&b_s, &c)]
                    }
                })
                .collect()
        });
    }
}

/// Softmax (or log-softmax) of `x` with `shape` along `axis`, in f64.
pub fn softmax_reference(x: &[f64], shape: &[usize], axis: usize, log: bool) -> Vec<f64> {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let max = (0..n).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n).map(|k| (x[at(k)] - max).exp()).sum();
            for k in 0..n {
                let z = x[at(k)] - max;
                y[at(k)] = if log { z - sum.ln() } else { z.exp() / sum };
            }
        }
    }
    y
}

#[test]
fn softmax_and_log_softmax_along_any_axis() {
    let cases: [(&[usize], i64, usize); 6] = [
        (&[3, 4], 0, 0),
        (&[3, 4], -1, 1),
        (&[3, 4], 1, 1),
        (&[2, 3, 4], 1, 1),
        (&[2, 3, 4], -3, 0),
        (&[5], 0, 0),
    ];
    for (seed, (shape, axis, resolved)) in cases.into_iter().enumerate() {
        for log in [false, true] {
            let x = rand(shape, seed as u64).map(|v| v * 3.0);
            let name = if log { "log_softmax" } else { "softmax" };
            OpTest::new(format!("{name} {shape:?} axis {axis}"), vec![x])
                .shape(shape)
                .run(
                    &|g, v| {
                        if log {
                            g.log_softmax(v[0], axis)
                        } else {
                            g.softmax(v[0], axis)
                        }
                    },
                    &|d| softmax_reference(&d[0], shape, resolved, log),
                );
        }
    }
    // Without an axis: the last one.
    for (op, log) in [(sys::FM_OP_SOFTMAX, false), (sys::FM_OP_LOG_SOFTMAX, true)] {
        OpTest::new(format!("op {op} without axes"), vec![rand(&[2, 3, 4], 9)])
            .run(&|g, v| g.op(op, &[v[0]], &Attrs::default()), &|d| {
                softmax_reference(&d[0], &[2, 3, 4], 2, log)
            });
    }
}

#[test]
fn softmax_is_stable_for_huge_logits() {
    let x = from(&[2, 3], vec![1e30, -1e30, 0.0, 80.0, 100.0, 90.0]);
    for log in [false, true] {
        OpTest::new(
            format!(
                "{} of huge logits",
                if log { "log_softmax" } else { "softmax" }
            ),
            vec![x.clone()],
        )
        .forward_only()
        .run(
            &|g, v| {
                if log {
                    g.log_softmax(v[0], -1)
                } else {
                    g.softmax(v[0], -1)
                }
            },
            &|d| softmax_reference(&d[0], &[2, 3], 1, log),
        );
    }
}
