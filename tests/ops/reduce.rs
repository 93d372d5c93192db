//! Reductions (sum, mean, max, min, variance) over several axis sets, with
//! and without kept dims, and argmax.

use ferrometal::{sys, Attrs};

use crate::harness::{coords, from, rand, OpTest, Tol};

/// Groups the elements of `x` by their coordinates outside `axes` (in
/// output order) and reduces each group with `f`.
fn reduce(x: &[f64], shape: &[usize], axes: &[usize], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let count: usize = kept.iter().map(|&d| shape[d]).product();
    let mut groups = vec![Vec::new(); count];
    for (i, &v) in x.iter().enumerate() {
        let c = coords(shape, i);
        let at = kept.iter().fold(0, |acc, &d| acc * shape[d] + c[d]);
        groups[at].push(v);
    }
    groups.iter().map(|g| f(g)).collect()
}

fn mean(g: &[f64]) -> f64 {
    g.iter().sum::<f64>() / g.len() as f64
}

fn reduced_shape(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| match (axes.contains(&d), keep) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

#[test]
fn sum_mean_max_min_variance_over_axis_sets() {
    let shape = [2usize, 3, 4];
    // (axes as given, resolved); empty means all.
    let axis_sets: [(&[i64], &[usize]); 9] = [
        (&[], &[0, 1, 2]),
        (&[0], &[0]),
        (&[1], &[1]),
        (&[2], &[2]),
        (&[-1], &[2]),
        (&[0, 2], &[0, 2]),
        (&[2, -3], &[0, 2]),
        (&[1, 2], &[1, 2]),
        (&[0, 1, 2], &[0, 1, 2]),
    ];
    for (seed, (axes, resolved)) in axis_sets.into_iter().enumerate() {
        for keep in [false, true] {
            let out = reduced_shape(&shape, resolved, keep);
            let x = rand(&shape, seed as u64);
            let name = |op: &str| format!("{op} over {axes:?} keep_dims {keep}");
            OpTest::new(name("sum"), vec![x.clone()])
                .shape(&out)
                .tol(Tol::Terms(1e-6))
                .run(&|g, v| g.sum(v[0], axes, keep), &|d| {
                    reduce(&d[0], &shape, resolved, &|g| g.iter().sum())
                });
            OpTest::new(name("mean"), vec![x.clone()])
                .shape(&out)
                .tol(Tol::Terms(1e-6))
                .run(&|g, v| g.mean(v[0], axes, keep), &|d| {
                    reduce(&d[0], &shape, resolved, &mean)
                });
            // Random values do not tie, so max and min have one arg each.
            OpTest::new(name("max"), vec![x.clone()])
                .shape(&out)
                .tol(Tol::Exact)
                .run(&|g, v| g.max(v[0], axes, keep), &|d| {
                    reduce(&d[0], &shape, resolved, &|g| {
                        g.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    })
                });
            OpTest::new(name("min"), vec![x.clone()])
                .shape(&out)
                .tol(Tol::Exact)
                .run(&|g, v| g.min(v[0], axes, keep), &|d| {
                    reduce(&d[0], &shape, resolved, &|g| {
                        g.iter().copied().fold(f64::INFINITY, f64::min)
                    })
                });
            for correction in [0, 1] {
                OpTest::new(
                    name(&format!("variance (correction {correction})")),
                    vec![x.clone()],
                )
                .shape(&out)
                .run(&|g, v| g.variance(v[0], axes, correction, keep), &|d| {
                    reduce(&d[0], &shape, resolved, &|g| {
                        let m = mean(g);
                        g.iter().map(|v| (v - m) * (v - m)).sum::<f64>()
                            / (g.len() as f64 - f64::from(correction))
                    })
                });
            }
        }
    }
}

#[test]
fn reductions_of_a_large_row_stay_accurate() {
    // 5000 elements of one sign: the sum grows large, the error relative to
    // it must stay small.
    let x = rand(&[2, 5000], 3).map(|v| v.abs() + 0.5);
    OpTest::new("sum of 5000", vec![x.clone()])
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.sum(v[0], &[1], false), &|d| {
            reduce(&d[0], &[2, 5000], &[1], &|g| g.iter().sum())
        });
    OpTest::new("variance of 5000", vec![x]).run(&|g, v| g.variance(v[0], &[-1], 1, false), &|d| {
        reduce(&d[0], &[2, 5000], &[1], &|g| {
            let m = mean(g);
            g.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (g.len() as f64 - 1.0)
        })
    });
}

/// Index of the first maximum of each group along `axis`.
fn argmax_reference(x: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut y = Vec::new();
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            for k in 1..n {
                if x[(o * n + k) * inner + i] > x[(o * n + best) * inner + i] {
                    best = k;
                }
            }
            y.push(best as f64);
        }
    }
    y
}

#[test]
fn argmax_returns_the_first_maximum_as_i32() {
    // Ties everywhere (values in {-1, -0.5, 0, 0.5, 1}): the first wins.
    let shape = [3usize, 4, 5];
    let x = rand(&shape, 4).map(|v| (v * 2.0).round() / 2.0);
    for (axis, resolved) in [(0i64, 0usize), (1, 1), (2, 2), (-1, 2), (-2, 1)] {
        let mut out = shape.to_vec();
        out.remove(resolved);
        OpTest::new(format!("argmax {shape:?} along {axis}"), vec![x.clone()])
            .shape(&out)
            .tol(Tol::Exact)
            .forward_only()
            .run(&|g, v| g.argmax(v[0], axis), &|d| {
                argmax_reference(&d[0], &shape, resolved)
            });
    }
    // keep_dims, read like the other reductions'.
    OpTest::new("argmax keep_dims", vec![x])
        .shape(&[3, 1, 5])
        .tol(Tol::Exact)
        .forward_only()
        .run(
            &|g, v| {
                g.op(
                    sys::FM_OP_ARGMAX,
                    &[v[0]],
                    &Attrs::default().axes(&[1]).keep_dims(true),
                )
            },
            &|d| argmax_reference(&d[0], &shape, 1),
        );
    let g = ferrometal::Graph::new().unwrap();
    let x = g.placeholder("x", ferrometal::DType::F32, &[2, 3]).unwrap();
    assert_eq!(
        g.argmax(x, 1).unwrap().dtype().unwrap(),
        ferrometal::DType::I32
    );
    // An explicit example: first of tied maxima, negative values, -inf.
    OpTest::new(
        "argmax explicit",
        vec![from(
            &[3, 4],
            vec![
                1.0,
                3.0,
                3.0,
                2.0,
                -1.0,
                -2.0,
                -0.5,
                -0.5,
                f64::NEG_INFINITY,
                -7.0,
                -7.0,
                -8.0,
            ],
        )],
    )
    .tol(Tol::Exact)
    .forward_only()
    .run(&|g, v| g.argmax(v[0], 1), &|_| vec![1.0, 2.0, 1.0]);
}
