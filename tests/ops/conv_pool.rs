//! Convolutions and pooling (NCHW) against direct float64 loops.
//! Convolution tolerances are relative to the sum of |terms| (Tol::Terms).

use ferrometal::{Conv2d, Pool2d};

use crate::harness::{rand, Arg, OpTest, Tol};

/// conv2d: y[b, o, oy, ox] = bias[o] + sum over (c of o's group, ki, kj) of
/// x[b, c, oy·s - p + ki·d, ox·s - p + kj·d] · w[o, c, ki, kj], zero padding.
pub fn conv2d_reference(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    bias: Option<&[f64]>,
    o: &Conv2d,
) -> Vec<f64> {
    let [n, c, h, wd] = xs;
    let [co, cg, kh, kw] = ws;
    let [oh, ow] = conv2d_out(xs, ws, o);
    let groups = o.groups as usize;
    assert_eq!(c, cg * groups, "test shapes");
    let og = co / groups;
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for oc in 0..co {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias.map_or(0.0, |bias| bias[oc]);
                    for ic in 0..cg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy as i64) * o.stride[0] - o.padding[0]
                                    + ki as i64 * o.dilation[0];
                                let ix = (ox as i64) * o.stride[1] - o.padding[1]
                                    + kj as i64 * o.dilation[1];
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xi =
                                    ((b * c + g * cg + ic) * h + iy as usize) * wd + ix as usize;
                                sum += x[xi] * w[((oc * cg + ic) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    y[((b * co + oc) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
    y
}

fn conv2d_out(xs: [usize; 4], ws: [usize; 4], o: &Conv2d) -> [usize; 2] {
    let size = |a: usize| {
        let span = o.dilation[a] * (ws[2 + a] as i64 - 1) + 1;
        ((xs[2 + a] as i64 + 2 * o.padding[a] - span) / o.stride[a] + 1) as usize
    };
    [size(0), size(1)]
}

/// conv_transpose2d as the scatter it is defined by: every input element
/// x[b, c, iy, ix] adds x · w[c, oc, ki, kj] to y[b, g·og + oc, iy·s - p +
/// ki·d, ix·s - p + kj·d] (when inside), g the group of c.
pub fn conv_transpose2d_reference(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    bias: Option<&[f64]>,
    o: &Conv2d,
) -> Vec<f64> {
    let [n, c, h, wd] = xs;
    let [wc, og, kh, kw] = ws;
    assert_eq!(wc, c, "test shapes");
    let groups = o.groups as usize;
    let (co, cg) = (og * groups, c / groups);
    let [oh, ow] = conv_transpose2d_out(xs, ws, o);
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for oc in 0..co {
            for i in 0..oh * ow {
                y[(b * co + oc) * oh * ow + i] = bias.map_or(0.0, |bias| bias[oc]);
            }
        }
        for ic in 0..c {
            let g = ic / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((b * c + ic) * h + iy) * wd + ix];
                    for oc in 0..og {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let yy = iy as i64 * o.stride[0] - o.padding[0]
                                    + ki as i64 * o.dilation[0];
                                let yx = ix as i64 * o.stride[1] - o.padding[1]
                                    + kj as i64 * o.dilation[1];
                                if yy < 0 || yx < 0 || yy >= oh as i64 || yx >= ow as i64 {
                                    continue;
                                }
                                let yi =
                                    ((b * co + g * og + oc) * oh + yy as usize) * ow + yx as usize;
                                y[yi] += xv * w[((ic * og + oc) * kh + ki) * kw + kj];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

fn conv_transpose2d_out(xs: [usize; 4], ws: [usize; 4], o: &Conv2d) -> [usize; 2] {
    let size = |a: usize| {
        ((xs[2 + a] as i64 - 1) * o.stride[a] - 2 * o.padding[a]
            + o.dilation[a] * (ws[2 + a] as i64 - 1)
            + o.output_padding[a]
            + 1) as usize
    };
    [size(0), size(1)]
}

fn conv_inputs(xs: [usize; 4], ws: [usize; 4], bias: bool, seed: u64) -> Vec<Arg> {
    let mut args = vec![rand(&xs, seed), rand(&ws, seed + 1)];
    if bias {
        let channels = ws[0];
        args.push(rand(&[channels], seed + 2));
    }
    args
}

#[test]
fn conv2d_stride_padding_dilation_groups_bias() {
    let cases: Vec<(&str, [usize; 4], [usize; 4], bool, Conv2d)> = vec![
        (
            "plain 3x3",
            [2, 3, 7, 6],
            [4, 3, 3, 3],
            false,
            Conv2d::default(),
        ),
        (
            "plain 3x3 with bias",
            [2, 3, 7, 6],
            [4, 3, 3, 3],
            true,
            Conv2d::default(),
        ),
        (
            "stride [2, 1], padding [1, 2], 2 groups",
            [1, 4, 8, 8],
            [6, 2, 3, 2],
            false,
            Conv2d {
                stride: [2, 1],
                padding: [1, 2],
                groups: 2,
                ..Default::default()
            },
        ),
        (
            "depthwise, dilation [2, 1], padding 2",
            [2, 4, 9, 7],
            [4, 1, 3, 3],
            true,
            Conv2d {
                padding: [2, 2],
                dilation: [2, 1],
                groups: 4,
                ..Default::default()
            },
        ),
        (
            "depthwise with channel multiplier 2, stride 2, padding 1",
            [1, 3, 6, 7],
            [6, 1, 3, 3],
            true,
            Conv2d {
                stride: [2, 2],
                padding: [1, 1],
                groups: 3,
                ..Default::default()
            },
        ),
        (
            "1x1, stride [3, 2]",
            [3, 2, 5, 5],
            [3, 2, 1, 1],
            false,
            Conv2d {
                stride: [3, 2],
                ..Default::default()
            },
        ),
        (
            "kernel larger than the input, padding 3",
            [1, 1, 4, 4],
            [2, 1, 5, 5],
            true,
            Conv2d {
                padding: [3, 3],
                ..Default::default()
            },
        ),
        (
            "stride 2, padding 1, dilation 2, bias",
            [2, 2, 9, 8],
            [3, 2, 3, 3],
            true,
            Conv2d {
                stride: [2, 2],
                padding: [1, 1],
                dilation: [2, 2],
                ..Default::default()
            },
        ),
        (
            "wider: 16 channels in, 8 out, 3x3, padding 1 (GEMM path)",
            [2, 16, 10, 10],
            [8, 16, 3, 3],
            true,
            Conv2d {
                padding: [1, 1],
                ..Default::default()
            },
        ),
        // Rows of 8 and 24: the stride-1 path that reads the padded image in
        // place takes them in quarter tiles on AVX-512 (in half tiles on AVX2).
        (
            "rows of 8, stride 1, padding 1 (in place, quarter tiles)",
            [2, 8, 8, 8],
            [16, 8, 3, 3],
            true,
            Conv2d {
                padding: [1, 1],
                ..Default::default()
            },
        ),
        (
            "rows of 24, stride 1, padding 1 (in place, quarter tiles)",
            [1, 4, 4, 24],
            [8, 4, 3, 3],
            false,
            Conv2d {
                padding: [1, 1],
                ..Default::default()
            },
        ),
    ];
    for (seed, (name, xs, ws, bias, options)) in cases.into_iter().enumerate() {
        let [oh, ow] = conv2d_out(xs, ws, &options);
        OpTest::new(
            format!("conv2d {name}"),
            conv_inputs(xs, ws, bias, 10 * seed as u64),
        )
        .shape(&[xs[0], ws[0], oh, ow])
        .tol(Tol::Terms(1e-5))
        .run(
            &|g, v| g.conv2d(v[0], v[1], v.get(2).copied(), &options),
            &|d| conv2d_reference(&d[0], xs, &d[1], ws, d.get(2).map(Vec::as_slice), &options),
        );
    }
}

#[test]
fn conv_transpose2d_stride_padding_output_padding_groups_bias() {
    let cases: Vec<(&str, [usize; 4], [usize; 4], bool, Conv2d)> = vec![
        (
            "stride 2, padding 1, output_padding [1, 0]",
            [2, 3, 4, 3],
            [3, 2, 3, 3],
            false,
            Conv2d {
                stride: [2, 2],
                padding: [1, 1],
                output_padding: [1, 0],
                ..Default::default()
            },
        ),
        (
            "stride 2 (upsampling x2), bias",
            [1, 2, 3, 3],
            [2, 3, 2, 2],
            true,
            Conv2d {
                stride: [2, 2],
                ..Default::default()
            },
        ),
        (
            "stride [1, 2], 2 groups",
            [1, 4, 3, 3],
            [4, 1, 2, 2],
            false,
            Conv2d {
                stride: [1, 2],
                groups: 2,
                ..Default::default()
            },
        ),
        (
            "stride 2, padding [0, 1], output_padding 1, 2 groups, bias",
            [2, 4, 3, 4],
            [4, 3, 3, 3],
            true,
            Conv2d {
                stride: [2, 2],
                padding: [0, 1],
                output_padding: [1, 1],
                groups: 2,
                ..Default::default()
            },
        ),
        (
            "dilation 2, padding 1",
            [1, 2, 4, 4],
            [2, 2, 3, 3],
            false,
            Conv2d {
                padding: [1, 1],
                dilation: [2, 2],
                ..Default::default()
            },
        ),
    ];
    for (seed, (name, xs, ws, bias, options)) in cases.into_iter().enumerate() {
        let [oh, ow] = conv_transpose2d_out(xs, ws, &options);
        let mut args = vec![rand(&xs, 100 + seed as u64), rand(&ws, 200 + seed as u64)];
        if bias {
            args.push(rand(&[ws[1] * options.groups as usize], 300 + seed as u64));
        }
        OpTest::new(format!("conv_transpose2d {name}"), args)
            .shape(&[xs[0], ws[1] * options.groups as usize, oh, ow])
            .tol(Tol::Terms(1e-5))
            .run(
                &|g, v| g.conv_transpose2d(v[0], v[1], v.get(2).copied(), &options),
                &|d| {
                    conv_transpose2d_reference(
                        &d[0],
                        xs,
                        &d[1],
                        ws,
                        d.get(2).map(Vec::as_slice),
                        &options,
                    )
                },
            );
    }
}

/// Max or average pooling. Padding counts as -inf for max; for average it
/// counts as zeros in the divisor only with `count_include_pad`.
pub fn pool_reference(x: &[f64], xs: [usize; 4], p: &Pool2d, max: bool) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let [oh, ow] = pool_out(xs, p, max);
    let stride = pool_stride(p);
    let dilation = if max { p.dilation } else { [1, 1] };
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut sum, mut inside) = (f64::NEG_INFINITY, 0.0, 0usize);
                for ki in 0..p.kernel[0] {
                    for kj in 0..p.kernel[1] {
                        let iy = oy as i64 * stride[0] - p.padding[0] + ki * dilation[0];
                        let ix = ox as i64 * stride[1] - p.padding[1] + kj * dilation[1];
                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        }
                        let v = x[(plane * h + iy as usize) * w + ix as usize];
                        best = best.max(v);
                        sum += v;
                        inside += 1;
                    }
                }
                let divisor = if p.count_include_pad {
                    (p.kernel[0] * p.kernel[1]) as f64
                } else {
                    inside as f64
                };
                y.push(if max { best } else { sum / divisor });
            }
        }
    }
    y
}

fn pool_stride(p: &Pool2d) -> [i64; 2] {
    [0, 1].map(|a| {
        if p.stride[a] == 0 {
            p.kernel[a]
        } else {
            p.stride[a]
        }
    })
}

fn pool_out(xs: [usize; 4], p: &Pool2d, max: bool) -> [usize; 2] {
    let stride = pool_stride(p);
    [0, 1].map(|a| {
        let dilation = if max { p.dilation[a] } else { 1 };
        let span = dilation * (p.kernel[a] - 1) + 1;
        ((xs[2 + a] as i64 + 2 * p.padding[a] - span) / stride[a] + 1) as usize
    })
}

fn pool(
    kernel: [i64; 2],
    stride: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
    count_include_pad: bool,
) -> Pool2d {
    Pool2d {
        kernel,
        stride,
        padding,
        dilation,
        count_include_pad,
    }
}

#[test]
fn max_pool2d_padding_stride_dilation() {
    let cases = [
        ([2, 3, 6, 6], Pool2d::square(2)),
        ([1, 2, 7, 5], pool([3, 2], [2, 1], [1, 1], [1, 1], true)),
        ([1, 2, 7, 6], pool([3, 3], [2, 2], [1, 1], [1, 1], true)),
        ([1, 1, 5, 5], pool([3, 3], [1, 1], [0, 0], [1, 1], true)),
        ([2, 1, 9, 9], pool([2, 2], [2, 3], [0, 1], [2, 1], true)),
        ([1, 2, 8, 7], pool([3, 2], [0, 0], [1, 0], [1, 1], true)),
    ];
    for (seed, (xs, options)) in cases.into_iter().enumerate() {
        // Random values never tie, so every window has one maximum and the
        // gradient is defined.
        let [oh, ow] = pool_out(xs, &options, true);
        OpTest::new(
            format!("max_pool2d {xs:?} {options:?}"),
            vec![rand(&xs, 30 + seed as u64)],
        )
        .shape(&[xs[0], xs[1], oh, ow])
        .tol(Tol::Exact)
        .run(&|g, v| g.max_pool2d(v[0], &options), &|d| {
            pool_reference(&d[0], xs, &options, true)
        });
    }
}

#[test]
fn avg_pool2d_padding_stride_count_include_pad() {
    let cases = [
        ([2, 3, 6, 6], Pool2d::square(2)),
        ([1, 1, 5, 5], pool([3, 3], [1, 1], [0, 0], [1, 1], true)),
        ([1, 2, 7, 5], pool([3, 2], [2, 1], [1, 1], [1, 1], true)),
        ([1, 2, 7, 5], pool([3, 2], [2, 1], [1, 1], [1, 1], false)),
        ([1, 2, 7, 6], pool([3, 3], [2, 2], [1, 1], [1, 1], true)),
        ([1, 2, 7, 6], pool([3, 3], [2, 2], [1, 1], [1, 1], false)),
        ([2, 1, 6, 9], pool([2, 4], [1, 3], [1, 2], [1, 1], false)),
    ];
    for (seed, (xs, options)) in cases.into_iter().enumerate() {
        let [oh, ow] = pool_out(xs, &options, false);
        OpTest::new(
            format!("avg_pool2d {xs:?} {options:?}"),
            vec![rand(&xs, 40 + seed as u64)],
        )
        .shape(&[xs[0], xs[1], oh, ow])
        .tol(Tol::Terms(1e-6))
        .run(&|g, v| g.avg_pool2d(v[0], &options), &|d| {
            pool_reference(&d[0], xs, &options, false)
        });
    }
}

#[test]
fn global_avg_pool_means_each_plane() {
    for xs in [[2usize, 3, 4, 5], [1, 2, 1, 1], [3, 1, 7, 2]] {
        let plane = xs[2] * xs[3];
        OpTest::new(format!("global_avg_pool {xs:?}"), vec![rand(&xs, 7)])
            .shape(&xs[..2])
            .tol(Tol::Terms(1e-6))
            .run(&|g, v| g.global_avg_pool(v[0]), &|d| {
                d[0].chunks(plane)
                    .map(|p| p.iter().sum::<f64>() / plane as f64)
                    .collect()
            });
    }
}
