//! Matrix products.

use ferrometal::Device;

use crate::harness::{check, input};

fn matmul_reference(
    a: &[f64],
    b: &[f64],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    a_batched: bool,
    b_batched: bool,
) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for p in 0..batch {
        let ao = if a_batched { p * m * k } else { 0 };
        let bo = if b_batched { p * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0;
                for q in 0..k {
                    let av = if ta {
                        a[ao + q * m + i]
                    } else {
                        a[ao + i * k + q]
                    };
                    let bv = if tb {
                        b[bo + j * k + q]
                    } else {
                        b[bo + q * n + j]
                    };
                    sum += av * bv;
                }
                c[(p * m + i) * n + j] = sum;
            }
        }
    }
    c
}

#[test]
fn matmul_batched_transposed_and_broadcast() {
    let device = Device::cpu().unwrap();
    let (m, n, k) = (3, 4, 5);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (a_batched, b_batched) in [(true, true), (true, false), (false, true)] {
            let a_shape: Vec<usize> = [
                if a_batched { vec![2] } else { vec![] },
                if ta { vec![k, m] } else { vec![m, k] },
            ]
            .concat();
            let b_shape: Vec<usize> = [
                if b_batched { vec![2] } else { vec![] },
                if tb { vec![n, k] } else { vec![k, n] },
            ]
            .concat();
            let inputs = [input(&a_shape, 1), input(&b_shape, 2)];
            check(
                &device,
                &inputs,
                &|g, v| g.matmul_t(v[0], v[1], ta, tb),
                &|d| matmul_reference(&d[0], &d[1], 2, m, n, k, ta, tb, a_batched, b_batched),
                1e-5,
            );
        }
    }
}

#[test]
fn linear_with_and_without_bias() {
    let device = Device::cpu().unwrap();
    let inputs = [input(&[4, 6], 3), input(&[5, 6], 4), input(&[5], 5)];
    check(
        &device,
        &inputs,
        &|g, v| g.linear(v[0], v[1], Some(v[2])),
        &|d| {
            let mut y = matmul_reference(&d[0], &d[1], 1, 4, 5, 6, false, true, false, false);
            for (i, v) in y.iter_mut().enumerate() {
                *v += d[2][i % 5];
            }
            y
        },
        1e-5,
    );
    check(
        &device,
        &inputs[..2],
        &|g, v| g.linear(v[0], v[1], None),
        &|d| matmul_reference(&d[0], &d[1], 1, 4, 5, 6, false, true, false, false),
        1e-5,
    );
}
