//! Shape ops: pure data movement, so forward results are exact; each is
//! written here as "output element at these coordinates comes from input
//! element at those" and its gradient checked like any other op's.

use ferrometal::{sys, Attrs};

use crate::harness::{broadcast_index, coords, rand, strides, OpTest, Tol};

/// y[out coordinates] = x[source(out coordinates)] or `fill` where None.
fn gather(
    x: &[f64],
    x_shape: &[usize],
    out_shape: &[usize],
    fill: f64,
    source: impl Fn(&[usize]) -> Option<Vec<usize>>,
) -> Vec<f64> {
    let s = strides(x_shape);
    (0..out_shape.iter().product())
        .map(|i| match source(&coords(out_shape, i)) {
            Some(c) => x[c.iter().zip(&s).map(|(c, s)| c * s).sum::<usize>()],
            None => fill,
        })
        .collect()
}

#[test]
fn reshape_and_flatten_keep_row_major_order() {
    let x_shape = [2usize, 3, 4];
    let same = |d: &[Vec<f64>]| d[0].clone();
    let cases: [(&[i64], &[usize]); 5] = [
        (&[4, -1], &[4, 6]),
        (&[24], &[24]),
        (&[-1], &[24]),
        (&[3, 2, 2, 2], &[3, 2, 2, 2]),
        (&[1, 24, 1], &[1, 24, 1]),
    ];
    for (target, out) in cases {
        OpTest::new(
            format!("reshape {x_shape:?} to {target:?}"),
            vec![rand(&x_shape, 1)],
        )
        .shape(out)
        .tol(Tol::Exact)
        .run(&|g, v| g.reshape(v[0], target), &same);
    }
    for (x_shape, out) in [
        (&[2usize, 3, 4][..], [2usize, 12]),
        (&[2, 3, 2, 2], [2, 12]),
        (&[3, 5], [3, 5]),
    ] {
        OpTest::new(format!("flatten {x_shape:?}"), vec![rand(x_shape, 2)])
            .shape(&out)
            .tol(Tol::Exact)
            .run(&|g, v| g.flatten(v[0]), &same);
    }
}

#[test]
fn permute_and_transpose_reorder_dims() {
    let cases: [(&[usize], &[i64]); 5] = [
        (&[2, 3, 4], &[2, 0, 1]),
        (&[2, 3, 4], &[1, 2, 0]),
        (&[2, 3, 4], &[-1, 0, 1]),
        (&[2, 3, 4, 5], &[0, 2, 3, 1]),
        (&[3, 4], &[1, 0]),
    ];
    for (seed, (x_shape, axes)) in cases.into_iter().enumerate() {
        let r = x_shape.len();
        let perm: Vec<usize> = axes
            .iter()
            .map(|&a| {
                if a < 0 {
                    (a + r as i64) as usize
                } else {
                    a as usize
                }
            })
            .collect();
        let out: Vec<usize> = perm.iter().map(|&p| x_shape[p]).collect();
        let p = perm.clone();
        OpTest::new(
            format!("permute {x_shape:?} by {axes:?}"),
            vec![rand(x_shape, seed as u64)],
        )
        .shape(&out)
        .tol(Tol::Exact)
        .run(&|g, v| g.permute(v[0], axes), &|d| {
            gather(&d[0], x_shape, &out, 0.0, |c| {
                let mut src = vec![0; r];
                for (i, &pi) in p.iter().enumerate() {
                    src[pi] = c[i];
                }
                Some(src)
            })
        });
    }
    // transpose(a, b) swaps two dims; without axes, the last two.
    let x_shape = [2usize, 3, 4];
    let swapped = |i: usize, j: usize| {
        move |d: &[Vec<f64>]| {
            let mut out = x_shape.to_vec();
            out.swap(i, j);
            gather(&d[0], &x_shape, &out, 0.0, |c| {
                let mut src = c.to_vec();
                src.swap(i, j);
                Some(src)
            })
        }
    };
    OpTest::new("transpose 0, -1", vec![rand(&x_shape, 5)])
        .shape(&[4, 3, 2])
        .tol(Tol::Exact)
        .run(&|g, v| g.transpose(v[0], 0, -1), &swapped(0, 2));
    OpTest::new("transpose 1, 0", vec![rand(&x_shape, 6)])
        .shape(&[3, 2, 4])
        .tol(Tol::Exact)
        .run(&|g, v| g.transpose(v[0], 1, 0), &swapped(0, 1));
    OpTest::new("transpose without axes", vec![rand(&x_shape, 7)])
        .shape(&[2, 4, 3])
        .tol(Tol::Exact)
        .run(
            &|g, v| g.op(sys::FM_OP_TRANSPOSE, &[v[0]], &Attrs::default()),
            &swapped(1, 2),
        );
}

#[test]
fn concat_joins_along_an_axis() {
    // Three inputs differing along the axis.
    let cases: [(i64, usize, [[usize; 3]; 3]); 4] = [
        (0, 0, [[1, 3, 2], [2, 3, 2], [3, 3, 2]]),
        (1, 1, [[2, 1, 2], [2, 4, 2], [2, 2, 2]]),
        (-1, 2, [[2, 3, 3], [2, 3, 1], [2, 3, 2]]),
        (2, 2, [[2, 3, 1], [2, 3, 1], [2, 3, 1]]),
    ];
    for (seed, (axis, resolved, shapes)) in cases.into_iter().enumerate() {
        let mut out = shapes[0].to_vec();
        out[resolved] = shapes.iter().map(|s| s[resolved]).sum();
        let args = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| rand(s, (seed * 3 + k) as u64))
            .collect();
        OpTest::new(format!("concat {shapes:?} along {axis}"), args)
            .shape(&out)
            .tol(Tol::Exact)
            .run(&|g, v| g.concat(v, axis), &|d| {
                (0..out.iter().product())
                    .map(|i| {
                        let mut c = coords(&out, i);
                        let mut k = 0;
                        while c[resolved] >= shapes[k][resolved] {
                            c[resolved] -= shapes[k][resolved];
                            k += 1;
                        }
                        d[k][c
                            .iter()
                            .zip(strides(&shapes[k]))
                            .map(|(c, s)| c * s)
                            .sum::<usize>()]
                    })
                    .collect()
            });
    }
    OpTest::new("concat of one input", vec![rand(&[2, 3], 9)])
        .tol(Tol::Exact)
        .run(&|g, v| g.concat(&v[..1], 0), &|d| d[0].clone());
}

#[test]
fn slice_with_negative_and_clamped_bounds() {
    let x_shape = [4usize, 5, 3];
    // (axes, starts, ends) and the resolved [start, end) per dim.
    let cases: Vec<(Vec<i64>, Vec<i64>, Vec<i64>, [(usize, usize); 3])> = vec![
        (vec![1], vec![1], vec![-1], [(0, 4), (1, 4), (0, 3)]),
        (vec![-2], vec![-3], vec![100], [(0, 4), (2, 5), (0, 3)]),
        (vec![0], vec![-4], vec![-2], [(0, 2), (0, 5), (0, 3)]),
        (
            vec![0, 2],
            vec![1, -2],
            vec![3, i64::MAX],
            [(1, 3), (0, 5), (1, 3)],
        ),
        (
            vec![2, 1, 0],
            vec![0, 4, -1],
            vec![1, 5, 4],
            [(3, 4), (4, 5), (0, 1)],
        ),
    ];
    for (seed, (axes, starts, ends, kept)) in cases.into_iter().enumerate() {
        let out: Vec<usize> = kept.iter().map(|(s, e)| e - s).collect();
        let mut attrs = Attrs::default().axes(&axes);
        for (i, (&s, &e)) in starts.iter().zip(&ends).enumerate() {
            attrs.0.starts[i] = s;
            attrs.0.ends[i] = e;
        }
        OpTest::new(
            format!("slice {x_shape:?} axes {axes:?} [{starts:?}, {ends:?})"),
            vec![rand(&x_shape, seed as u64)],
        )
        .shape(&out)
        .tol(Tol::Exact)
        .run(&|g, v| g.op(sys::FM_OP_SLICE, &[v[0]], &attrs), &|d| {
            gather(&d[0], &x_shape, &out, 0.0, |c| {
                Some((0..3).map(|k| c[k] + kept[k].0).collect())
            })
        });
    }
    // The single-axis shorthand.
    OpTest::new("slice(-1, 1, -1)", vec![rand(&[4, 5], 11)])
        .shape(&[4, 3])
        .tol(Tol::Exact)
        .run(&|g, v| g.slice(v[0], -1, 1, -1), &|d| {
            gather(&d[0], &[4, 5], &[4, 3], 0.0, |c| Some(vec![c[0], c[1] + 1]))
        });
}

#[test]
fn pad_adds_a_constant_border() {
    let cases: Vec<(Vec<usize>, Vec<(i64, i64)>, f64)> = vec![
        (vec![2, 3], vec![(1, 0), (2, 1)], 0.0),
        (vec![2, 3, 2], vec![(0, 0), (1, 1), (0, 2)], -1.5),
        (vec![3], vec![(2, 3)], 7.0),
    ];
    for (seed, (x_shape, padding, value)) in cases.into_iter().enumerate() {
        let out: Vec<usize> = x_shape
            .iter()
            .zip(&padding)
            .map(|(&d, &(b, a))| d + (b + a) as usize)
            .collect();
        OpTest::new(
            format!("pad {x_shape:?} by {padding:?} with {value}"),
            vec![rand(&x_shape, seed as u64)],
        )
        .shape(&out)
        .tol(Tol::Exact)
        .run(&|g, v| g.pad(v[0], &padding, value), &|d| {
            gather(&d[0], &x_shape, &out, value, |c| {
                let mut src = Vec::new();
                for (k, &ck) in c.iter().enumerate() {
                    let i = ck as i64 - padding[k].0;
                    if i < 0 || i >= x_shape[k] as i64 {
                        return None;
                    }
                    src.push(i as usize);
                }
                Some(src)
            })
        });
    }
}

#[test]
fn broadcast_to_repeats_and_sums_gradients() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 1], &[2, 3, 4]),
        (&[], &[2, 2]),
        (&[4], &[3, 4]),
        (&[2, 1, 3], &[2, 5, 3]),
    ];
    for (seed, (x_shape, out)) in cases.into_iter().enumerate() {
        let target: Vec<i64> = out.iter().map(|&d| d as i64).collect();
        OpTest::new(
            format!("broadcast_to {x_shape:?} to {out:?}"),
            vec![rand(x_shape, seed as u64)],
        )
        .shape(out)
        .tol(Tol::Exact)
        .run(&|g, v| g.broadcast_to(v[0], &target), &|d| {
            (0..out.iter().product())
                .map(|i| d[0][broadcast_index(x_shape, &coords(out, i))])
                .collect()
        });
    }
}

#[test]
fn squeeze_and_unsqueeze() {
    let same = |d: &[Vec<f64>]| d[0].clone();
    let squeezes: [(&[usize], &[i64], &[usize]); 4] = [
        (&[2, 1, 3, 1], &[], &[2, 3]),
        (&[2, 1, 3, 1], &[-1], &[2, 1, 3]),
        (&[2, 1, 3, 1], &[1], &[2, 3, 1]),
        (&[1, 1], &[], &[]),
    ];
    for (x_shape, axes, out) in squeezes {
        OpTest::new(
            format!("squeeze {x_shape:?} axes {axes:?}"),
            vec![rand(x_shape, 1)],
        )
        .shape(out)
        .tol(Tol::Exact)
        .run(&|g, v| g.squeeze(v[0], axes), &same);
    }
    let unsqueezes: [(&[usize], &[i64], &[usize]); 4] = [
        (&[2, 3], &[0, 3], &[1, 2, 3, 1]),
        (&[2, 3], &[-1], &[2, 3, 1]),
        (&[2, 3], &[1], &[2, 1, 3]),
        (&[], &[0], &[1]),
    ];
    for (x_shape, axes, out) in unsqueezes {
        OpTest::new(
            format!("unsqueeze {x_shape:?} axes {axes:?}"),
            vec![rand(x_shape, 2)],
        )
        .shape(out)
        .tol(Tol::Exact)
        .run(&|g, v| g.unsqueeze(v[0], axes), &same);
    }
}
