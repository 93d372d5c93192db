//! Losses, each with both reductions: mean (over the batch for the
//! per-row losses, over all elements for the elementwise ones) and sum.

use ferrometal::{sys, Attrs, Graph, Op, Reduction, Result, Value};

use crate::harness::{from, ints, rand, sigmoid, softplus, values, Arg, OpTest};

const REDUCTIONS: [Reduction; 2] = [Reduction::Mean, Reduction::Sum];

/// Sum of `per` divided by `count` for the mean.
fn reduce(per: &[f64], count: usize, reduction: Reduction) -> Vec<f64> {
    let sum: f64 = per.iter().sum();
    vec![match reduction {
        Reduction::Mean => sum / count as f64,
        Reduction::Sum => sum,
    }]
}

fn loss<'g>(
    g: &'g Graph,
    op: Op,
    v: &[Value<'g>],
    attrs: Attrs,
    reduction: Reduction,
) -> Result<Value<'g>> {
    g.loss(op, v[0], v[1], attrs, reduction)
}

#[test]
fn softmax_cross_entropy_with_and_without_label_smoothing() {
    let (n, c) = (5usize, 4usize);
    let labels = vec![0, 3, 1, 3, 2];
    for smoothing in [0.0, 0.1] {
        for reduction in REDUCTIONS {
            OpTest::new(
                format!("softmax_cross_entropy smoothing {smoothing} {reduction:?}"),
                vec![
                    rand(&[n, c], 1).map(|v| 3.0 * v),
                    ints(&[n], labels.clone()),
                ],
            )
            .shape(&[])
            .run(
                &|g, v| g.softmax_cross_entropy(v[0], v[1], smoothing, reduction),
                &|d| {
                    let per: Vec<f64> = (0..n)
                        .map(|i| {
                            let row = &d[0][i * c..(i + 1) * c];
                            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
                            let nll = lse - row[d[1][i] as usize];
                            let uniform = row.iter().map(|z| lse - z).sum::<f64>() / c as f64;
                            (1.0 - smoothing) * nll + smoothing * uniform
                        })
                        .collect();
                    reduce(&per, n, reduction)
                },
            );
        }
    }
    // Large logits stay exact: the log-sum-exp is taken stably.
    OpTest::new(
        "softmax_cross_entropy of logits ±100",
        vec![
            from(&[2, 3], vec![100.0, -100.0, 0.0, -100.0, 100.0, 99.0]),
            ints(&[2], vec![1, 2]),
        ],
    )
    .run(
        &|g, v| g.softmax_cross_entropy(v[0], v[1], 0.0, Reduction::Sum),
        &|d| {
            let lse = |r: &[f64]| {
                let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                m + r.iter().map(|z| (z - m).exp()).sum::<f64>().ln()
            };
            vec![lse(&d[0][..3]) - d[0][1] + lse(&d[0][3..]) - d[0][5]]
        },
    );
}

#[test]
fn categorical_cross_entropy_on_probabilities() {
    let (n, c) = (4usize, 5usize);
    for reduction in REDUCTIONS {
        let probabilities = rand(&[n, c], 2).map(|v| 0.55 + 0.45 * v);
        let targets = rand(&[n, c], 3).map(|v| 0.5 + 0.5 * v);
        OpTest::new(
            format!("categorical_cross_entropy {reduction:?}"),
            vec![probabilities, targets],
        )
        .shape(&[])
        .run(
            &|g, v| {
                loss(
                    g,
                    sys::FM_OP_CATEGORICAL_CROSS_ENTROPY,
                    v,
                    Attrs::default(),
                    reduction,
                )
            },
            &|d| {
                let per: Vec<f64> = (0..n)
                    .map(|i| {
                        -(0..c)
                            .map(|k| d[1][i * c + k] * d[0][i * c + k].ln())
                            .sum::<f64>()
                    })
                    .collect();
                reduce(&per, n, reduction)
            },
        );
    }
    // The typed shorthand is the mean.
    OpTest::new(
        "categorical_cross_entropy shorthand",
        vec![rand(&[2, 3], 4).map(|v| 0.5 + 0.4 * v), rand(&[2, 3], 5)],
    )
    .run(&|g, v| g.categorical_cross_entropy(v[0], v[1]), &|d| {
        let per: Vec<f64> = (0..2)
            .map(|i| {
                -(0..3)
                    .map(|k| d[1][i * 3 + k] * d[0][i * 3 + k].ln())
                    .sum::<f64>()
            })
            .collect();
        reduce(&per, 2, Reduction::Mean)
    });
}

/// An elementwise loss checked with both reductions on `predictions` and
/// `targets`, the per-element reference `f(prediction, target)`.
fn elementwise_loss(
    name: &str,
    op: Op,
    attrs: Attrs,
    predictions: Arg,
    targets: Arg,
    f: fn(f64, f64, f64) -> f64,
    param: f64,
) {
    let count = predictions.shape.iter().product();
    for reduction in REDUCTIONS {
        OpTest::new(
            format!("{name} {reduction:?}"),
            vec![predictions.clone(), targets.clone()],
        )
        .shape(&[])
        .run(&|g, v| loss(g, op, v, attrs, reduction), &|d| {
            let per: Vec<f64> = d[0]
                .iter()
                .zip(&d[1])
                .map(|(&p, &t)| f(p, t, param))
                .collect();
            reduce(&per, count, reduction)
        });
    }
}

fn bce(p: f64, t: f64, _: f64) -> f64 {
    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
}

fn bce_logits(x: f64, t: f64, _: f64) -> f64 {
    // log(1 + e^x) - x t, written stably.
    softplus(x) - x * t
}

fn huber(p: f64, t: f64, delta: f64) -> f64 {
    let d = (p - t).abs();
    if d < delta {
        0.5 * d * d
    } else {
        delta * (d - 0.5 * delta)
    }
}

/// Targets = predictions - differences, the differences kept `gap` away
/// from each of `kinks` (in |difference|).
fn targets_for(predictions: &Arg, differences: Vec<f64>, kinks: &[f64], gap: f64) -> Arg {
    let crate::harness::Data::F32(p) = &predictions.data else {
        unreachable!()
    };
    let d = from(&predictions.shape, differences)
        .map(|x| x.abs())
        .away_from(kinks, gap);
    let crate::harness::Data::F32(d) = d.data else {
        unreachable!()
    };
    let signs = values(p.len(), 77);
    from(
        &predictions.shape,
        p.iter()
            .zip(&d)
            .zip(&signs)
            .map(|((p, d), s)| p - d * s.signum())
            .collect(),
    )
}

#[test]
fn binary_cross_entropy_on_probabilities() {
    let p = rand(&[3, 4], 1).map(|v| 0.5 + 0.45 * v);
    let t = rand(&[3, 4], 2).map(|v| 0.5 + 0.5 * v);
    elementwise_loss(
        "binary_cross_entropy",
        sys::FM_OP_BINARY_CROSS_ENTROPY,
        Attrs::default(),
        p.clone(),
        t.clone(),
        bce,
        0.0,
    );
    OpTest::new("binary_cross_entropy shorthand", vec![p, t]).run(
        &|g, v| g.binary_cross_entropy(v[0], v[1]),
        &|d| {
            reduce(
                &d[0]
                    .iter()
                    .zip(&d[1])
                    .map(|(&p, &t)| bce(p, t, 0.0))
                    .collect::<Vec<_>>(),
                12,
                Reduction::Mean,
            )
        },
    );
}

#[test]
fn bce_with_logits_is_stable_at_large_logits() {
    let x = rand(&[3, 4], 3).map(|v| 4.0 * v);
    let t = rand(&[3, 4], 4).map(|v| 0.5 + 0.5 * v);
    elementwise_loss(
        "bce_with_logits",
        sys::FM_OP_BCE_WITH_LOGITS,
        Attrs::default(),
        x,
        t,
        bce_logits,
        0.0,
    );
    // |x| = 50: e^50 overflows nothing, and the result is exact.
    let x = from(&[6], vec![50.0, -50.0, 50.0, -50.0, 50.0, -50.0]);
    let t = from(&[6], vec![1.0, 0.0, 0.0, 1.0, 0.3, 0.7]);
    elementwise_loss(
        "bce_with_logits at |x| = 50",
        sys::FM_OP_BCE_WITH_LOGITS,
        Attrs::default(),
        x.clone(),
        t.clone(),
        bce_logits,
        0.0,
    );
    OpTest::new("bce_with_logits shorthand", vec![x, t]).run(
        &|g, v| g.bce_with_logits(v[0], v[1]),
        &|d| {
            let per: Vec<f64> = d[0]
                .iter()
                .zip(&d[1])
                .map(|(&x, &t)| bce_logits(x, t, 0.0))
                .collect();
            assert!((sigmoid(50.0) - 1.0).abs() < 1e-20);
            reduce(&per, 6, Reduction::Mean)
        },
    );
}

#[test]
fn mse_mae_huber() {
    let p = rand(&[4, 3], 5).map(|v| 2.0 * v);
    let spread: Vec<f64> = values(12, 6).iter().map(|v| 2.0 * v).collect();
    let t = targets_for(&p, spread.clone(), &[], 0.0);
    elementwise_loss(
        "mse",
        sys::FM_OP_MSE,
        Attrs::default(),
        p.clone(),
        t.clone(),
        |p, t, _| (p - t) * (p - t),
        0.0,
    );
    // |p - t| away from 0, the kink of mae.
    let t = targets_for(&p, spread.clone(), &[0.0], 0.05);
    elementwise_loss(
        "mae",
        sys::FM_OP_MAE,
        Attrs::default(),
        p.clone(),
        t,
        |p, t, _| (p - t).abs(),
        0.0,
    );
    // Huber: differences on both sides of delta, away from it.
    for delta in [1.0, 0.5, 2.5] {
        let t = targets_for(&p, spread.clone(), &[delta], 0.05);
        let mut attrs = Attrs::default();
        attrs.0.delta = delta;
        elementwise_loss(
            &format!("huber delta {delta}"),
            sys::FM_OP_HUBER,
            attrs,
            p.clone(),
            t,
            huber,
            delta,
        );
    }
    // The typed shorthands are the means (huber with the given delta; its default is 1).
    let t = targets_for(&p, spread, &[0.0, 0.7, 1.0], 0.05);
    let mean = |f: fn(f64, f64, f64) -> f64, param: f64| {
        move |d: &[Vec<f64>]| {
            reduce(
                &d[0]
                    .iter()
                    .zip(&d[1])
                    .map(|(&p, &t)| f(p, t, param))
                    .collect::<Vec<_>>(),
                12,
                Reduction::Mean,
            )
        }
    };
    let args = vec![p, t];
    OpTest::new("mse shorthand", args.clone()).run(
        &|g, v| g.mse(v[0], v[1]),
        &mean(|p, t, _| (p - t) * (p - t), 0.0),
    );
    OpTest::new("mae shorthand", args.clone()).run(
        &|g, v| g.mae(v[0], v[1]),
        &mean(|p, t, _| (p - t).abs(), 0.0),
    );
    OpTest::new("huber shorthand 0.7", args.clone())
        .run(&|g, v| g.huber(v[0], v[1], 0.7), &mean(huber, 0.7));
    OpTest::new("huber default delta", args).run(
        &|g, v| g.op(sys::FM_OP_HUBER, &[v[0], v[1]], &Attrs::default()),
        &mean(huber, 1.0),
    );
}
