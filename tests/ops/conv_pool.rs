//! Convolutions and pooling against direct float64 loops.

use ferrometal::{Conv2d, Device, Pool2d};

use crate::harness::{check, input};

/// y[n, o, oy, ox] = sum over (c in group, ki, kj) of x * w, with padding as zeros.
fn conv_reference(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    o: &Conv2d,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [co, cg, kh, kw] = ws;
    let (sh, sw) = (o.stride[0] as usize, o.stride[1] as usize);
    let (ph, pw) = (o.padding[0], o.padding[1]);
    let (dh, dw) = (o.dilation[0], o.dilation[1]);
    let groups = o.groups as usize;
    let oh = (h as i64 + 2 * ph - dh * (kh as i64 - 1) - 1) as usize / sh + 1;
    let ow = (wd as i64 + 2 * pw - dw * (kw as i64 - 1) - 1) as usize / sw + 1;
    let og = co / groups;
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for oc in 0..co {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0.0;
                    for ic in 0..cg {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * sh) as i64 - ph + ki as i64 * dh;
                                let ix = (ox * sw) as i64 - pw + kj as i64 * dw;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xi =
                                    ((b * c + g * cg + ic) * h + iy as usize) * wd + ix as usize;
                                let wi = ((oc * cg + ic) * kh + ki) * kw + kj;
                                sum += x[xi] * w[wi];
                            }
                        }
                    }
                    y[((b * co + oc) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
    (y, [n, co, oh, ow])
}

#[test]
fn conv2d_with_stride_padding_dilation_and_groups() {
    let device = Device::cpu().unwrap();
    let cases = [
        ([2, 3, 7, 6], [4, 3, 3, 3], Conv2d::default()),
        (
            [1, 4, 8, 8],
            [6, 2, 3, 2],
            Conv2d {
                stride: [2, 1],
                padding: [1, 2],
                groups: 2,
                ..Default::default()
            },
        ),
        (
            [2, 4, 9, 7],
            [4, 1, 3, 3],
            Conv2d {
                padding: [2, 2],
                dilation: [2, 1],
                groups: 4,
                ..Default::default()
            },
        ),
        (
            [3, 2, 5, 5],
            [3, 2, 1, 1],
            Conv2d {
                stride: [3, 2],
                ..Default::default()
            },
        ),
        (
            [1, 1, 4, 4],
            [2, 1, 5, 5],
            Conv2d {
                padding: [3, 3],
                ..Default::default()
            },
        ),
    ];
    for (seed, (xs, ws, options)) in cases.into_iter().enumerate() {
        let inputs = [input(&xs, seed as u64), input(&ws, 100 + seed as u64)];
        check(
            &device,
            &inputs,
            &|g, v| g.conv2d(v[0], v[1], None, &options),
            &|d| conv_reference(&d[0], xs, &d[1], ws, &options).0,
            1e-4,
        );
    }
}

#[test]
fn conv2d_bias_is_added_per_channel() {
    let device = Device::cpu().unwrap();
    let (xs, ws) = ([2, 2, 5, 4], [3, 2, 2, 2]);
    let inputs = [input(&xs, 1), input(&ws, 2), input(&[3], 3)];
    check(
        &device,
        &inputs,
        &|g, v| g.conv2d(v[0], v[1], Some(v[2]), &Conv2d::default()),
        &|d| {
            let (mut y, [n, co, oh, ow]) = conv_reference(&d[0], xs, &d[1], ws, &Conv2d::default());
            for (i, v) in y.iter_mut().enumerate() {
                *v += d[2][i / (oh * ow) % co];
            }
            let _ = n;
            y
        },
        1e-4,
    );
}

/// The transposed convolution as the adjoint of conv2d: y = Aᵀ x where A is
/// conv2d with the same weight read as [c_in_of_y... ]: computed by scattering.
fn conv_transpose_reference(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    o: &Conv2d,
) -> Vec<f64> {
    let [n, c, h, wd] = xs;
    let [_, og, kh, kw] = ws;
    let groups = o.groups as usize;
    let co = og * groups;
    let cg = c / groups;
    let size = |i: usize, k: usize, a: usize| {
        (i - 1) * o.stride[a] as usize
            + o.dilation[a] as usize * (k - 1)
            + o.output_padding[a] as usize
            + 1
            - 2 * o.padding[a] as usize
    };
    let (oh, ow) = (size(h, kh, 0), size(wd, kw, 1));
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for ic in 0..c {
            let g = ic / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    for oc in 0..og {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let y_row = (iy * o.stride[0] as usize
                                    + ki * o.dilation[0] as usize)
                                    as i64
                                    - o.padding[0];
                                let y_col = (ix * o.stride[1] as usize
                                    + kj * o.dilation[1] as usize)
                                    as i64
                                    - o.padding[1];
                                if y_row < 0
                                    || y_col < 0
                                    || y_row >= oh as i64
                                    || y_col >= ow as i64
                                {
                                    continue;
                                }
                                let yi = ((b * co + g * og + oc) * oh + y_row as usize) * ow
                                    + y_col as usize;
                                y[yi] += x[((b * c + ic) * h + iy) * wd + ix]
                                    * w[((ic * og + oc) * kh + ki) * kw + kj];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[test]
fn conv_transpose2d_is_the_adjoint_scatter() {
    let device = Device::cpu().unwrap();
    let cases = [
        (
            [2, 3, 4, 3],
            [3, 2, 3, 3],
            Conv2d {
                stride: [2, 2],
                padding: [1, 1],
                output_padding: [1, 0],
                ..Default::default()
            },
        ),
        (
            [1, 4, 3, 3],
            [4, 1, 2, 2],
            Conv2d {
                stride: [1, 2],
                groups: 2,
                ..Default::default()
            },
        ),
    ];
    for (seed, (xs, ws, options)) in cases.into_iter().enumerate() {
        let inputs = [input(&xs, 10 + seed as u64), input(&ws, 20 + seed as u64)];
        check(
            &device,
            &inputs,
            &|g, v| g.conv_transpose2d(v[0], v[1], None, &options),
            &|d| conv_transpose_reference(&d[0], xs, &d[1], ws, &options),
            1e-4,
        );
    }
}

fn pool_reference(x: &[f64], xs: [usize; 4], p: &Pool2d, max: bool) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
    let stride = |a: usize| {
        if p.stride[a] == 0 {
            p.kernel[a] as usize
        } else {
            p.stride[a] as usize
        }
    };
    let (sh, sw) = (stride(0), stride(1));
    let (ph, pw) = (p.padding[0], p.padding[1]);
    let dil = |a: usize| if max { p.dilation[a] as usize } else { 1 };
    let oh = (h as i64 + 2 * ph - (dil(0) * (kh - 1)) as i64 - 1) as usize / sh + 1;
    let ow = (w as i64 + 2 * pw - (dil(1) * (kw - 1)) as i64 - 1) as usize / sw + 1;
    let mut y = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut sum, mut inside) = (f64::NEG_INFINITY, 0.0, 0usize);
                for ki in 0..kh {
                    for kj in 0..kw {
                        let iy = (oy * sh + ki * dil(0)) as i64 - ph;
                        let ix = (ox * sw + kj * dil(1)) as i64 - pw;
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
                    // The window clipped to the padded input, as PyTorch counts it.
                    let y0 = (oy * sh) as i64 - ph;
                    let x0 = (ox * sw) as i64 - pw;
                    let y1 = (y0 + kh as i64).min(h as i64 + ph);
                    let x1 = (x0 + kw as i64).min(w as i64 + pw);
                    ((y1 - y0) * (x1 - x0)) as f64
                } else {
                    inside as f64
                };
                y.push(if max { best } else { sum / divisor });
            }
        }
    }
    y
}

#[test]
fn max_and_average_pooling() {
    let device = Device::cpu().unwrap();
    let cases = [
        ([2, 3, 6, 6], Pool2d::square(2)),
        (
            [1, 2, 7, 5],
            Pool2d {
                kernel: [3, 2],
                stride: [2, 1],
                padding: [1, 1],
                dilation: [1, 1],
                count_include_pad: true,
            },
        ),
        (
            [1, 2, 7, 6],
            Pool2d {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                count_include_pad: false,
            },
        ),
        (
            [2, 1, 9, 9],
            Pool2d {
                kernel: [2, 2],
                stride: [2, 3],
                padding: [0, 1],
                dilation: [2, 1],
                count_include_pad: true,
            },
        ),
    ];
    for (seed, (xs, options)) in cases.into_iter().enumerate() {
        // Random values almost never tie, so max pooling is differentiable here.
        let inputs = [input(&xs, 30 + seed as u64)];
        check(
            &device,
            &inputs,
            &|g, v| g.max_pool2d(v[0], &options),
            &|d| pool_reference(&d[0], xs, &options, true),
            1e-5,
        );
        if options.dilation == [1, 1] {
            check(
                &device,
                &inputs,
                &|g, v| g.avg_pool2d(v[0], &options),
                &|d| pool_reference(&d[0], xs, &options, false),
                1e-5,
            );
        }
    }
}

#[test]
fn global_average_pool() {
    let device = Device::cpu().unwrap();
    let xs = [2, 3, 4, 5];
    check(
        &device,
        &[input(&xs, 7)],
        &|g, v| g.global_avg_pool(v[0]),
        &|d| {
            d[0].chunks(20)
                .map(|plane| plane.iter().sum::<f64>() / 20.0)
                .collect()
        },
        1e-5,
    );
}
