//! Shape ops: data movement only, checked exactly against index arithmetic.

use ferrometal::{Device, Graph};

use crate::harness::{check, input};

#[test]
fn reshape_flatten_squeeze_unsqueeze_keep_the_data() {
    let device = Device::cpu().unwrap();
    let x = [input(&[2, 3, 4], 1)];
    let same = |d: &[Vec<f64>]| d[0].clone();
    check(&device, &x, &|g, v| g.reshape(v[0], &[4, -1]), &same, 0.0);
    check(&device, &x, &|g, v| g.flatten(v[0]), &same, 0.0);
    check(&device, &x, &|g, v| g.unsqueeze(v[0], &[0, 3]), &same, 0.0);
    let y = [input(&[2, 1, 3, 1], 2)];
    check(&device, &y, &|g, v| g.squeeze(v[0], &[]), &same, 0.0);
    check(&device, &y, &|g, v| g.squeeze(v[0], &[-1]), &same, 0.0);
    let g = Graph::new().unwrap();
    let p = g
        .placeholder("p", ferrometal::DType::F32, &[ferrometal::BATCH, 3, 4])
        .unwrap();
    assert_eq!(
        g.flatten(p).unwrap().shape().unwrap(),
        [ferrometal::BATCH, 12]
    );
    assert_eq!(
        g.reshape(p, &[-1, 4]).unwrap().shape().unwrap(),
        [ferrometal::BATCH, 4]
    );
}

#[test]
fn permute_and_transpose() {
    let device = Device::cpu().unwrap();
    let shape = [2usize, 3, 4];
    check(
        &device,
        &[input(&shape, 3)],
        &|g, v| g.permute(v[0], &[2, 0, 1]),
        &|d| {
            let mut y = Vec::new();
            for k in 0..4 {
                for i in 0..2 {
                    for j in 0..3 {
                        y.push(d[0][(i * 3 + j) * 4 + k]);
                    }
                }
            }
            y
        },
        0.0,
    );
    check(
        &device,
        &[input(&shape, 4)],
        &|g, v| g.transpose(v[0], 0, -1),
        &|d| {
            let mut y = Vec::new();
            for k in 0..4 {
                for j in 0..3 {
                    for i in 0..2 {
                        y.push(d[0][(i * 3 + j) * 4 + k]);
                    }
                }
            }
            y
        },
        0.0,
    );
}

#[test]
fn concat_slice_pad_broadcast() {
    let device = Device::cpu().unwrap();
    check(
        &device,
        &[input(&[2, 3], 5), input(&[2, 2], 6)],
        &|g, v| g.concat(&[v[0], v[1]], 1),
        &|d| {
            (0..2)
                .flat_map(|r| {
                    d[0][r * 3..r * 3 + 3]
                        .iter()
                        .chain(&d[1][r * 2..r * 2 + 2])
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect()
        },
        0.0,
    );
    check(
        &device,
        &[input(&[4, 5], 7)],
        &|g, v| g.slice(v[0], -1, 1, -1),
        &|d| {
            (0..4)
                .flat_map(|r| d[0][r * 5 + 1..r * 5 + 4].to_vec())
                .collect()
        },
        0.0,
    );
    check(
        &device,
        &[input(&[2, 3], 8)],
        &|g, v| g.pad(v[0], &[(1, 0), (2, 1)], 0.0),
        &|d| {
            let mut y = vec![0.0; 3 * 6];
            for r in 0..2 {
                for c in 0..3 {
                    y[(r + 1) * 6 + c + 2] = d[0][r * 3 + c];
                }
            }
            y
        },
        0.0,
    );
    check(
        &device,
        &[input(&[3, 1], 9)],
        &|g, v| g.broadcast_to(v[0], &[2, 3, 4]),
        &|d| (0..24).map(|i| d[0][i / 4 % 3]).collect(),
        0.0,
    );
}
