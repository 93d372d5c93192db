//! Indexing: embedding (gather of rows, whose gradient scatters and adds
//! for repeated indices) and one_hot.

use crate::harness::{ints, rand, OpTest, Tol};

#[test]
fn embedding_gathers_rows_and_accumulates_gradients_of_repeats() {
    // (table rows, width, index shape, indices): repeats, first and last rows, unused rows.
    let cases: Vec<(usize, usize, Vec<usize>, Vec<i32>)> = vec![
        (5, 3, vec![2, 3], vec![4, 0, 4, 1, 4, 0]),
        (4, 2, vec![6], vec![3, 3, 3, 3, 3, 3]),
        (7, 5, vec![2, 2, 2], vec![6, 1, 1, 2, 0, 6, 6, 1]),
        (3, 4, vec![], vec![2]),
    ];
    for (seed, (rows, width, index_shape, indices)) in cases.into_iter().enumerate() {
        let mut out = index_shape.clone();
        out.push(width);
        OpTest::new(
            format!("embedding [{rows}, {width}] by {index_shape:?} {indices:?}"),
            vec![
                rand(&[rows, width], seed as u64),
                ints(&index_shape, indices),
            ],
        )
        .shape(&out)
        .tol(Tol::Exact)
        .run(&|g, v| g.embedding(v[0], v[1]), &|d| {
            d[1].iter()
                .flat_map(|&i| d[0][i as usize * width..(i as usize + 1) * width].to_vec())
                .collect()
        });
    }
}

#[test]
fn one_hot_gives_f32_rows() {
    let cases: Vec<(Vec<usize>, Vec<i32>, i64)> = vec![
        (vec![4], vec![0, 3, 1, 3], 4),
        (vec![2, 3], vec![2, 0, 1, 1, 4, 0], 5),
        (vec![], vec![1], 2),
    ];
    for (shape, indices, depth) in cases {
        let mut out = shape.clone();
        out.push(depth as usize);
        OpTest::new(
            format!("one_hot {indices:?} depth {depth}"),
            vec![ints(&shape, indices)],
        )
        .shape(&out)
        .tol(Tol::Exact)
        .forward_only()
        .run(&|g, v| g.one_hot(v[0], depth), &|d| {
            d[0].iter()
                .flat_map(|&i| (0..depth).map(move |k| f64::from(u8::from(k as f64 == i))))
                .collect()
        });
    }
    // A one-hot row is f32 and blocks gradients: d/dx sum(one_hot(i) * x) = 0 through the
    // indices, while x gets the one-hot rows.
    OpTest::new(
        "one_hot times x",
        vec![ints(&[3], vec![2, 0, 2]), rand(&[3, 3], 1)],
    )
    .tol(Tol::Exact)
    .run(&|g, v| g.mul(g.one_hot(v[0], 3)?, v[1]), &|d| {
        (0..9)
            .map(|i| {
                if d[0][i / 3] as usize == i % 3 {
                    d[1][i]
                } else {
                    0.0
                }
            })
            .collect()
    });
}
