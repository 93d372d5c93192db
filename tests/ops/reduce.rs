//! Reductions over axis sets, with and without kept dims.

use ferrometal::Device;

use crate::harness::{check, input};

/// Reduces `x` of `shape` over `axes` with `f` applied to each group.
fn reduce(x: &[f64], shape: &[usize], axes: &[usize], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let rank = shape.len();
    let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
    let out_count: usize = kept.iter().map(|&d| shape[d]).product();
    let mut groups = vec![Vec::new(); out_count];
    for (i, &v) in x.iter().enumerate() {
        let mut rest = i;
        let mut coords = vec![0; rank];
        for d in (0..rank).rev() {
            coords[d] = rest % shape[d];
            rest /= shape[d];
        }
        let at = kept.iter().fold(0, |acc, &d| acc * shape[d] + coords[d]);
        groups[at].push(v);
    }
    groups.iter().map(|g| f(g)).collect()
}

#[test]
fn sum_mean_max_min_variance_over_axis_sets() {
    let device = Device::cpu().unwrap();
    let shape = [2usize, 3, 4];
    for axes in [vec![], vec![0], vec![1], vec![2], vec![0, 2], vec![1, 2]] {
        let all: Vec<usize> = if axes.is_empty() {
            vec![0, 1, 2]
        } else {
            axes.clone()
        };
        let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        for keep in [false, true] {
            let x = [input(&shape, 11)];
            let mean = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
            check(
                &device,
                &x,
                &|g, v| g.sum(v[0], &ax, keep),
                &|d| reduce(&d[0], &shape, &all, &|g| g.iter().sum()),
                1e-5,
            );
            check(
                &device,
                &x,
                &|g, v| g.mean(v[0], &ax, keep),
                &|d| reduce(&d[0], &shape, &all, &mean),
                1e-5,
            );
            check(
                &device,
                &x,
                &|g, v| g.max(v[0], &ax, keep),
                &|d| {
                    reduce(&d[0], &shape, &all, &|g| {
                        g.iter().copied().fold(f64::MIN, f64::max)
                    })
                },
                1e-6,
            );
            check(
                &device,
                &x,
                &|g, v| g.min(v[0], &ax, keep),
                &|d| {
                    reduce(&d[0], &shape, &all, &|g| {
                        g.iter().copied().fold(f64::MAX, f64::min)
                    })
                },
                1e-6,
            );
            for correction in [0, 1] {
                check(
                    &device,
                    &x,
                    &|g, v| g.variance(v[0], &ax, correction, keep),
                    &|d| {
                        reduce(&d[0], &shape, &all, &|g| {
                            let m = mean(g);
                            g.iter().map(|v| (v - m) * (v - m)).sum::<f64>()
                                / (g.len() as f64 - f64::from(correction))
                        })
                    },
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn argmax_takes_the_first_maximum() {
    let device = Device::cpu().unwrap();
    let g = ferrometal::Graph::new().unwrap();
    let x = g
        .constant(&[2, 4], &[1.0f32, 3.0, 3.0, 2.0, -1.0, -2.0, -0.5, -0.5])
        .unwrap();
    let out = g
        .compile(&device)
        .unwrap()
        .run(&[], &[g.argmax(x, 1).unwrap(), g.argmax(x, 0).unwrap()])
        .unwrap();
    assert_eq!(out[0].to_vec::<i32>().unwrap(), [1, 2]);
    assert_eq!(out[1].to_vec::<i32>().unwrap(), [0, 0, 0, 0]);
}
