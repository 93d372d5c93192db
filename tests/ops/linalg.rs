//! Matrix products: matmul (batched, transposed, broadcast batch dims) and
//! linear. Forward tolerance is relative to the sum of |terms| of each
//! output (Tol::Terms).

use crate::harness::{broadcast_index, broadcast_shape, coords, rand, OpTest, Tol};

/// a · b for a [..., m, k] (or [..., k, m] when `ta`) and b [..., k, n] (or
/// [..., n, k] when `tb`), batch dims broadcast. Returns (values, shape).
pub fn matmul_reference(
    a: &[f64],
    a_shape: &[usize],
    b: &[f64],
    b_shape: &[usize],
    ta: bool,
    tb: bool,
) -> (Vec<f64>, Vec<usize>) {
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (a_rows, a_cols) = (a_shape[ra - 2], a_shape[ra - 1]);
    let (b_rows, b_cols) = (b_shape[rb - 2], b_shape[rb - 1]);
    let (m, k) = if ta {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (k2, n) = if tb {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    assert_eq!(k, k2, "test shapes");
    let (a_batch, b_batch) = (&a_shape[..ra - 2], &b_shape[..rb - 2]);
    let batch = broadcast_shape(a_batch, b_batch);
    let count: usize = batch.iter().product();
    let mut y = Vec::with_capacity(count * m * n);
    for p in 0..count {
        let c = coords(&batch, p);
        let ao = broadcast_index(a_batch, &c) * m * k;
        let bo = broadcast_index(b_batch, &c) * k * n;
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
                y.push(sum);
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (y, shape)
}

#[test]
fn matmul_all_transposes_batched_and_broadcast() {
    let (m, k, n) = (3, 5, 4);
    // (a batch dims, b batch dims)
    let batches: [(&[usize], &[usize]); 6] = [
        (&[], &[]),
        (&[2], &[2]),
        (&[2], &[]),
        (&[], &[2]),
        (&[2, 1], &[3]),
        (&[1, 3], &[2, 1]),
    ];
    let mut seed = 0;
    for (a_batch, b_batch) in batches {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            seed += 2;
            let mut a_shape = a_batch.to_vec();
            a_shape.extend(if ta { [k, m] } else { [m, k] });
            let mut b_shape = b_batch.to_vec();
            b_shape.extend(if tb { [n, k] } else { [k, n] });
            let (_, out_shape) = matmul_reference(
                &vec![0.0; a_shape.iter().product()],
                &a_shape,
                &vec![0.0; b_shape.iter().product()],
                &b_shape,
                ta,
                tb,
            );
            OpTest::new(
                format!(
                    "matmul {a_shape:?}{} x {b_shape:?}{}",
                    if ta { "ᵀ" } else { "" },
                    if tb { "ᵀ" } else { "" }
                ),
                vec![rand(&a_shape, seed), rand(&b_shape, seed + 1)],
            )
            .shape(&out_shape)
            .tol(Tol::Terms(1e-5))
            .run(&|g, v| g.matmul_t(v[0], v[1], ta, tb), &|d| {
                matmul_reference(&d[0], &a_shape, &d[1], &b_shape, ta, tb).0
            });
        }
    }
    // The untransposed shorthand, and a product large enough for the
    // blocked kernel (several register tiles and a k remainder).
    for (a_shape, b_shape) in [([4usize, 6], [6usize, 5]), ([37, 70], [70, 29])] {
        OpTest::new(
            format!("matmul {a_shape:?} x {b_shape:?}"),
            vec![rand(&a_shape, 7), rand(&b_shape, 8)],
        )
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.matmul(v[0], v[1]), &|d| {
            matmul_reference(&d[0], &a_shape, &d[1], &b_shape, false, false).0
        });
    }
}

#[test]
fn linear_with_and_without_bias() {
    for x_shape in [vec![4usize, 6], vec![2, 3, 6]] {
        let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
        let mut out_shape = x_shape.clone();
        *out_shape.last_mut().unwrap() = 5;
        let product =
            |d: &[Vec<f64>]| matmul_reference(&d[0], &[rows, 6], &d[1], &[5, 6], false, true).0;
        OpTest::new(
            format!("linear {x_shape:?} with bias"),
            vec![rand(&x_shape, 1), rand(&[5, 6], 2), rand(&[5], 3)],
        )
        .shape(&out_shape)
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.linear(v[0], v[1], Some(v[2])), &|d| {
            product(d)
                .iter()
                .enumerate()
                .map(|(i, y)| y + d[2][i % 5])
                .collect()
        });
        OpTest::new(
            format!("linear {x_shape:?} without bias"),
            vec![rand(&x_shape, 4), rand(&[5, 6], 5)],
        )
        .shape(&out_shape)
        .tol(Tol::Terms(1e-5))
        .run(&|g, v| g.linear(v[0], v[1], None), &product);
    }
}
