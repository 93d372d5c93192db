//! Graph-level misuse: each gives the documented error with a message that
//! names what is wrong; none crashes, and a failed run changes nothing.

use ferrometal::{
    sys, Attrs, DType, Error, Exec, Graph, Optimizer, Reduction, Tensor, Value, BATCH,
};

use crate::harness::devices;

/// Asserts `error` is of the variant matched by `kind` and its message
/// contains every one of `words`.
macro_rules! assert_error {
    ($result:expr, $kind:pat $(, $word:expr)* $(,)?) => {{
        let error = match $result {
            Ok(_) => panic!("{} succeeded, expected an error", stringify!($result)),
            Err(e) => e,
        };
        assert!(matches!(error, $kind), "{}: wrong kind of error: {error}", stringify!($result));
        let words: &[&str] = &[$($word),*];
        for word in words {
            assert!(error.message().contains(word), "{}: {error:?} does not mention {word:?}", stringify!($result));
        }
        error
    }};
}

#[test]
fn shape_mismatches_name_the_op_and_the_shapes() {
    let g = Graph::new().unwrap();
    let a = g.placeholder("a", DType::F32, &[2, 3]).unwrap();
    let b = g.placeholder("b", DType::F32, &[4]).unwrap();
    assert_error!(g.add(a, b), Error::ShapeMismatch(_), "add", "[2, 3]", "[4]");
    assert_error!(
        g.where_(a, a, b),
        Error::ShapeMismatch(_),
        "where",
        "[2, 3]",
        "[4]"
    );
    let w = g.placeholder("w", DType::F32, &[5, 4]).unwrap();
    assert_error!(
        g.matmul(a, w),
        Error::ShapeMismatch(_),
        "matmul",
        "[2, 3]",
        "[5, 4]",
        "3 vs 5"
    );
    assert_error!(g.linear(a, w, None), Error::ShapeMismatch(_), "linear");
    assert_error!(
        g.reshape(a, &[4, 2]),
        Error::ShapeMismatch(_),
        "reshape",
        "[2, 3]"
    );
    assert_error!(
        g.concat(&[a, w], 0),
        Error::ShapeMismatch(_),
        "concat",
        "[2, 3]",
        "[5, 4]"
    );
    assert_error!(
        g.broadcast_to(a, &[3, 3]),
        Error::ShapeMismatch(_),
        "broadcast_to",
        "[2, 3]"
    );
    assert_error!(g.mse(a, b), Error::ShapeMismatch(_), "mse", "[2, 3]", "[4]");
    let image = g.placeholder("image", DType::F32, &[1, 3, 8, 8]).unwrap();
    let kernel = g.placeholder("kernel", DType::F32, &[4, 2, 3, 3]).unwrap();
    assert_error!(
        g.conv2d(image, kernel, None, &Default::default()),
        Error::ShapeMismatch(_),
        "conv2d"
    );
    let gamma = g.placeholder("gamma", DType::F32, &[4]).unwrap();
    assert_error!(
        g.layer_norm(a, gamma, gamma, 1, 1e-5),
        Error::ShapeMismatch(_),
        "layer_norm",
        "[3]",
        "[4]"
    );
    // A squeeze of a dim that is not 1.
    assert!(g.squeeze(a, &[0]).is_err());
}

#[test]
fn shape_errors_with_a_batch_dim_name_the_declared_shapes() {
    let g = Graph::new().unwrap();
    let a = g.placeholder("a", DType::F32, &[BATCH, 3]).unwrap();
    let b = g.placeholder("b", DType::F32, &[BATCH, 4]).unwrap();
    let error = assert_error!(
        g.add(a, b),
        Error::ShapeMismatch(_),
        "add",
        "[-1, 3]",
        "[-1, 4]"
    );
    assert!(!error.message().contains("10007"), "{error:?}");
    assert_error!(
        g.matmul(a, b),
        Error::ShapeMismatch(_),
        "matmul",
        "[-1, 3]",
        "[-1, 4]"
    );
}

#[test]
fn wrong_dtypes_are_refused() {
    let g = Graph::new().unwrap();
    let i = g.placeholder("i", DType::I32, &[3]).unwrap();
    let x = g.placeholder("x", DType::F32, &[3]).unwrap();
    assert_error!(g.relu(i), Error::DtypeMismatch(_), "relu", "i32");
    assert_error!(g.add(x, i), Error::DtypeMismatch(_), "add");
    // Indices must be i32.
    let table = g.placeholder("table", DType::F32, &[4, 2]).unwrap();
    assert_error!(g.embedding(table, x), Error::DtypeMismatch(_), "embedding");
    assert_error!(g.one_hot(x, 3), Error::DtypeMismatch(_), "one_hot");
    let logits = g.placeholder("logits", DType::F32, &[3, 4]).unwrap();
    assert_error!(
        g.softmax_cross_entropy(logits, x, 0.0, Reduction::Mean),
        Error::DtypeMismatch(_),
        "softmax_cross_entropy"
    );
    // Gradients exist only for f32 values.
    let loss = g.sum(g.embedding(table, i).unwrap(), &[], false).unwrap();
    assert_error!(g.gradients(loss, &[i]), Error::DtypeMismatch(_), "f32");
}

#[test]
fn values_of_another_graph_are_refused() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let h = Graph::new().unwrap();
        let x = g.placeholder("x", DType::F32, &[2]).unwrap();
        let y = h.placeholder("y", DType::F32, &[2]).unwrap();
        assert_error!(g.add(x, y), Error::InvalidArgument(_), "another graph");
        assert_error!(g.group(&[y]), Error::InvalidArgument(_), "another graph");
        let loss = g.sum(x, &[], false).unwrap();
        assert_error!(
            g.gradients(loss, &[y]),
            Error::InvalidArgument(_),
            "another graph"
        );
        let other_loss = h.sum(y, &[], false).unwrap();
        assert_error!(
            g.gradients(other_loss, &[x]),
            Error::InvalidArgument(_),
            "another graph"
        );
        // Through the C ABI directly: the value numbers carry their graph.
        let mut out = 0;
        let inputs = [x.as_raw(), y.as_raw()];
        // SAFETY: valid pointers; the library checks the values.
        let status = unsafe {
            sys::fm_graph_op(
                &mut out,
                g.as_raw(),
                sys::FM_OP_ADD,
                inputs.as_ptr(),
                2,
                std::ptr::null(),
            )
        };
        assert_eq!(status, sys::FM_ERR_INVALID_ARGUMENT);
        // Fed or fetched in a run of the other graph's executable.
        let mut exec = g.compile(&device).unwrap();
        let ys = Tensor::from_slice(&device, &[2], &[1.0f32, 2.0]).unwrap();
        assert_error!(
            exec.run(&[(x, &ys)], &[y]),
            Error::InvalidArgument(_),
            "another graph"
        );
        assert_error!(exec.run(&[(y, &ys)], &[loss]), Error::InvalidArgument(_));
    }
}

#[test]
fn gradients_of_a_non_scalar_are_refused() {
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[2, 3]).unwrap();
    let y = g.relu(x).unwrap();
    assert_error!(
        g.gradients(y, &[x]),
        Error::ShapeMismatch(_),
        "scalar",
        "[2, 3]"
    );
    // A batch-sized [BATCH] sum is not a scalar either.
    let b = g.placeholder("b", DType::F32, &[BATCH, 3]).unwrap();
    let per_row = g.sum(b, &[1], false).unwrap();
    assert_error!(
        g.gradients(per_row, &[b]),
        Error::ShapeMismatch(_),
        "scalar"
    );
    // A [1] keep_dims sum has one element: accepted.
    let one = g.sum(x, &[], true).unwrap();
    assert_eq!(one.shape().unwrap(), [1, 1]);
}

#[test]
fn bad_attributes_and_input_counts_are_invalid_arguments() {
    let g = Graph::new().unwrap();
    let x = g.placeholder("x", DType::F32, &[2, 3]).unwrap();
    assert_error!(
        g.op(sys::FM_OP_ADD, &[x], &Attrs::default()),
        Error::InvalidArgument(_),
        "add",
        "2"
    );
    assert_error!(
        g.op(sys::FM_OP_COUNT, &[x], &Attrs::default()),
        Error::InvalidArgument(_),
        "op"
    );
    assert_error!(
        g.clamp(x, 1.0, -1.0),
        Error::InvalidArgument(_),
        "clamp",
        "min"
    );
    assert_error!(
        g.dropout(x, 1.5, 0, true),
        Error::InvalidArgument(_),
        "dropout",
        "p"
    );
    assert_error!(
        g.softmax(x, 2),
        Error::InvalidArgument(_),
        "softmax",
        "axis 2"
    );
    assert_error!(
        g.sum(x, &[0, -2], false),
        Error::InvalidArgument(_),
        "sum",
        "twice"
    );
    assert_error!(g.permute(x, &[0, 0]), Error::InvalidArgument(_), "permute");
    assert_error!(
        g.one_hot(g.placeholder("i", DType::I32, &[2]).unwrap(), 0),
        Error::InvalidArgument(_),
        "one_hot",
        "depth"
    );
    assert_error!(
        g.assign(x, x),
        Error::InvalidArgument(_),
        "assign",
        "variable"
    );
    assert_error!(
        g.placeholder("x", DType::F32, &[1]),
        Error::InvalidArgument(_),
        "'x'",
        "already used"
    );
    let image = g.placeholder("image", DType::F32, &[1, 1, 4, 4]).unwrap();
    let pool = ferrometal::Pool2d {
        kernel: [2, 2],
        stride: [0, 0],
        padding: [2, 2],
        dilation: [1, 1],
        count_include_pad: true,
    };
    assert_error!(
        g.max_pool2d(image, &pool),
        Error::InvalidArgument(_),
        "max_pool2d",
        "padding"
    );
    let weight = g.placeholder("weight", DType::F32, &[2, 1, 3, 3]).unwrap();
    let options = ferrometal::Conv2d {
        stride: [0, 1],
        ..Default::default()
    };
    assert_error!(
        g.conv2d(image, weight, None, &options),
        Error::InvalidArgument(_),
        "conv2d",
        "stride"
    );
    let mut huber = Attrs::default();
    huber.0.delta = 0.0;
    assert_error!(
        g.loss(sys::FM_OP_HUBER, x, x, huber, Reduction::Mean),
        Error::InvalidArgument(_),
        "huber",
        "delta"
    );
    let mut unknown = Attrs::default();
    unknown.0.reduction = sys::FM_REDUCTION_COUNT;
    assert_error!(
        g.op(sys::FM_OP_MSE, &[x, x], &unknown),
        Error::InvalidArgument(_),
        "reduction"
    );
}

/// A classifier whose variable `w` an SGD step updates; for run-time errors.
#[test]
fn feeds_that_do_not_fit_are_refused_and_change_nothing() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let x = g.placeholder("x", DType::F32, &[BATCH, 3]).unwrap();
        let labels = g.placeholder("labels", DType::I32, &[BATCH]).unwrap();
        let w = g.variable_from("w", &[4, 3], &[0.5f32; 12]).unwrap();
        let logits = g.linear(x, w, None).unwrap();
        let loss = g
            .softmax_cross_entropy(logits, labels, 0.0, Reduction::Mean)
            .unwrap();
        let grads = g.gradients(loss, &[w]).unwrap();
        let step = g.optimizer(&Optimizer::sgd(0.1), &[(w, grads[0])]).unwrap();
        let mut exec = g.compile(&device).unwrap();
        let xs = Tensor::from_slice(&device, &[2, 3], &[1.0f32, 2.0, 3.0, -1.0, 0.0, 1.0]).unwrap();
        let ys = Tensor::from_slice(&device, &[2], &[0i32, 3]).unwrap();

        // A needed placeholder not fed.
        assert_error!(
            exec.run(&[(x, &xs)], &[loss]),
            Error::InvalidArgument(_),
            "'labels'"
        );
        // Wrong shape, wrong dtype.
        let wide = Tensor::from_slice(&device, &[2, 4], &[1.0f32; 8]).unwrap();
        assert_error!(
            exec.run(&[(x, &wide), (labels, &ys)], &[loss]),
            Error::ShapeMismatch(_),
            "'x'",
            "[2, 4]"
        );
        let rank3 = Tensor::from_slice(&device, &[2, 3, 1], &[1.0f32; 6]).unwrap();
        assert_error!(
            exec.run(&[(x, &rank3), (labels, &ys)], &[loss]),
            Error::ShapeMismatch(_),
            "'x'"
        );
        let float_labels = Tensor::from_slice(&device, &[2], &[0.0f32, 1.0]).unwrap();
        assert_error!(
            exec.run(&[(x, &xs), (labels, &float_labels)], &[loss]),
            Error::DtypeMismatch(_),
            "'labels'",
            "f32"
        );
        // Batch sizes that disagree between placeholders.
        let three = Tensor::from_slice(&device, &[3], &[0i32, 1, 2]).unwrap();
        assert_error!(
            exec.run(&[(x, &xs), (labels, &three)], &[loss]),
            Error::ShapeMismatch(_),
            "batch",
            "'labels'",
            "'x'"
        );
        // Feeding something that is not a placeholder; feeding twice.
        assert_error!(
            exec.run(&[(x, &xs), (labels, &ys), (logits, &xs)], &[loss]),
            Error::InvalidArgument(_),
            "placeholder"
        );
        assert_error!(
            exec.run(&[(x, &xs), (x, &xs), (labels, &ys)], &[loss]),
            Error::InvalidArgument(_),
            "twice"
        );
        assert_eq!(exec.read_variable("w").unwrap(), [0.5f32; 12]);

        // A label out of range is found while running: OutOfRange naming
        // it, and the step's assignments (at the end of the run) do not happen.
        for bad in [9, 4, -1] {
            let labels_bad = Tensor::from_slice(&device, &[2], &[0i32, bad]).unwrap();
            let error = assert_error!(
                run_checked(&mut exec, &[(x, &xs), (labels, &labels_bad)], &[loss, step]),
                Error::OutOfRange(_),
                "label",
            );
            assert!(
                error.message().contains(&bad.to_string()),
                "{error:?} does not name label {bad}"
            );
            assert_eq!(
                exec.read_variable("w").unwrap(),
                [0.5f32; 12],
                "a failed run changed w"
            );
            assert_eq!(
                exec.read_variable("optimizer.step").unwrap(),
                [0.0],
                "a failed run counted a step"
            );
        }
        // The executable still works afterwards, and then the step happens.
        let out = exec.run(&[(x, &xs), (labels, &ys)], &[loss, step]).unwrap();
        assert!(out[0].scalar().unwrap().is_finite());
        assert_ne!(exec.read_variable("w").unwrap(), [0.5f32; 12]);
        // Unknown variables.
        assert_error!(
            exec.read_variable("nope"),
            Error::InvalidArgument(_),
            "'nope'"
        );
        assert_error!(
            exec.write_variable("w", &[1.0; 3]),
            Error::ShapeMismatch(_),
            "'w'"
        );
    }
}

/// A run and then its data errors: on the CPU `run` reports them itself; a
/// GPU finds them after queueing, and `synchronize` reports them.
fn run_checked(
    exec: &mut Exec,
    feeds: &[(Value<'_>, &Tensor)],
    fetches: &[Value<'_>],
) -> ferrometal::Result<Vec<Tensor>> {
    let out = exec.run(feeds, fetches)?;
    exec.synchronize()?;
    Ok(out)
}

#[test]
fn indices_out_of_range_at_run_time() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let table = g
            .variable_from("table", &[3, 2], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap();
        let i = g.placeholder("i", DType::I32, &[BATCH]).unwrap();
        let rows = g.embedding(table, i).unwrap();
        let hot = g.one_hot(i, 3).unwrap();
        let mut exec = g.compile(&device).unwrap();
        for bad in [3, -1] {
            let is = Tensor::from_slice(&device, &[3], &[0i32, bad, 1]).unwrap();
            let error = assert_error!(
                run_checked(&mut exec, &[(i, &is)], &[rows]),
                Error::OutOfRange(_)
            );
            assert!(error.message().contains(&bad.to_string()), "{error:?}");
            let error = assert_error!(
                run_checked(&mut exec, &[(i, &is)], &[hot]),
                Error::OutOfRange(_)
            );
            assert!(error.message().contains(&bad.to_string()), "{error:?}");
        }
        let good = Tensor::from_slice(&device, &[2], &[2i32, 0]).unwrap();
        assert_eq!(
            exec.run(&[(i, &good)], &[rows]).unwrap()[0]
                .to_vec::<f32>()
                .unwrap(),
            [5.0, 6.0, 1.0, 2.0]
        );
    }
}
