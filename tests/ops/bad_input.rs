//! Graph-level misuse: each a clear error naming what is wrong, no crash.

use ferrometal::{DType, Device, Error, Graph, Reduction, Tensor, BATCH};

#[test]
fn shape_and_dtype_mismatches_name_the_op_and_shapes() {
    let g = Graph::new().unwrap();
    let a = g.placeholder("a", DType::F32, &[2, 3]).unwrap();
    let b = g.placeholder("b", DType::F32, &[4]).unwrap();
    let error = g.add(a, b).unwrap_err();
    assert!(matches!(error, Error::ShapeMismatch(_)), "{error}");
    assert!(
        error.message().contains("add")
            && error.message().contains("[2, 3]")
            && error.message().contains("[4]"),
        "{error}"
    );
    let i = g.placeholder("i", DType::I32, &[3]).unwrap();
    let error = g.relu(i).unwrap_err();
    assert!(
        matches!(error, Error::DtypeMismatch(_)) && error.message().contains("relu"),
        "{error}"
    );
    let w = g.placeholder("w", DType::F32, &[5, 4]).unwrap();
    let error = g.matmul(a, w).unwrap_err();
    assert!(
        error.message().contains("matmul") && error.message().contains("3 vs 5"),
        "{error}"
    );
    let error = g.reshape(a, &[4, 2]).unwrap_err();
    assert!(matches!(error, Error::ShapeMismatch(_)), "{error}");
    assert!(g
        .placeholder("a", DType::F32, &[1])
        .unwrap_err()
        .message()
        .contains("already used"));
}

#[test]
fn values_of_another_graph_and_non_scalar_gradients_are_refused() {
    let g = Graph::new().unwrap();
    let h = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[2]).unwrap();
    let y = h.placeholder("y", DType::F32, &[2]).unwrap();
    assert!(matches!(
        g.add(x, y).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    let error = g.gradients(x, &[x]).unwrap_err();
    assert!(
        matches!(error, Error::ShapeMismatch(_)) && error.message().contains("scalar"),
        "{error}"
    );
}

#[test]
fn feeds_that_do_not_fit_are_refused() {
    let device = Device::cpu().unwrap();
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[BATCH, 3]).unwrap();
    let labels = g.placeholder("labels", DType::I32, &[BATCH]).unwrap();
    let w = g.variable_from("w", &[4, 3], &[0.5f32; 12]).unwrap();
    let logits = g.linear(x, w, None).unwrap();
    let loss = g
        .softmax_cross_entropy(logits, labels, 0.0, Reduction::Mean)
        .unwrap();
    let grads = g.gradients(loss, &[w]).unwrap();
    let step = g
        .optimizer(&ferrometal::Optimizer::sgd(0.1), &[(w, grads[0])])
        .unwrap();
    let mut exec = g.compile(&device).unwrap();
    let xs = Tensor::from_slice(&device, &[2, 3], &[1.0f32; 6]).unwrap();
    let error = exec.run(&[(x, &xs)], &[loss]).unwrap_err();
    assert!(
        matches!(error, Error::InvalidArgument(_)) && error.message().contains("'labels'"),
        "{error}"
    );
    let wrong = Tensor::from_slice(&device, &[2, 4], &[1.0f32; 8]).unwrap();
    let ys = Tensor::from_slice(&device, &[2], &[0i32, 1]).unwrap();
    assert!(matches!(
        exec.run(&[(x, &wrong), (labels, &ys)], &[loss])
            .unwrap_err(),
        Error::ShapeMismatch(_)
    ));
    let float_labels = Tensor::from_slice(&device, &[2], &[0.0f32, 1.0]).unwrap();
    assert!(matches!(
        exec.run(&[(x, &xs), (labels, &float_labels)], &[loss])
            .unwrap_err(),
        Error::DtypeMismatch(_)
    ));
    let three = Tensor::from_slice(&device, &[3], &[0i32, 1, 2]).unwrap();
    let error = exec
        .run(&[(x, &xs), (labels, &three)], &[loss])
        .unwrap_err();
    assert!(error.message().contains("batch"), "{error}");
    // A label out of range is found while running; the update does not happen.
    let bad = Tensor::from_slice(&device, &[2], &[0i32, 9]).unwrap();
    let error = exec
        .run(&[(x, &xs), (labels, &bad)], &[loss, step])
        .unwrap_err();
    assert!(
        matches!(error, Error::OutOfRange(_)) && error.message().contains('9'),
        "{error}"
    );
    assert_eq!(exec.read_variable("w").unwrap(), vec![0.5f32; 12]);
}
