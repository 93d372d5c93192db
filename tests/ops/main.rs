//! Op conformance: every op of `fm_op` (ferrometal.h, level 2) checked
//! forward against an independent float64 reference written in these tests
//! and backward against central finite differences of that reference (see
//! harness.rs), plus the ops with effects or randomness (batch norm's
//! running statistics, dropout, assign/group) and the errors of bad input.
//!
//! Run with `cargo test --release --test ops`.

// Case tables read best as tuples (of shapes, options and fn pointers).
#![allow(clippy::type_complexity)]

mod bad_input;
mod composition;
mod conv_pool;
mod effects;
mod elementwise;
mod harness;
mod indexing;
mod large;
mod linalg;
mod loss;
mod norm;
mod optimizers;
mod reduce;
mod shape;

#[path = "../common/mod.rs"]
mod common;

use ferrometal::sys;

/// Where each op of `fm_op` is tested.
const COVERAGE: [(sys::fm_op, &str); 69] = [
    (sys::FM_OP_NEG, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_ABS, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_EXP, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_LOG, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_SQRT, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_RSQRT, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_POW, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_CLAMP, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_RELU, "elementwise::unary_math_and_activations"),
    (
        sys::FM_OP_LEAKY_RELU,
        "elementwise::unary_math_and_activations",
    ),
    (sys::FM_OP_ELU, "elementwise::unary_math_and_activations"),
    (
        sys::FM_OP_SIGMOID,
        "elementwise::unary_math_and_activations",
    ),
    (sys::FM_OP_TANH, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_SILU, "elementwise::unary_math_and_activations"),
    (sys::FM_OP_GELU, "elementwise::unary_math_and_activations"),
    (
        sys::FM_OP_SOFTPLUS,
        "elementwise::unary_math_and_activations",
    ),
    (
        sys::FM_OP_ADD,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_SUB,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_MUL,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_DIV,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_MAXIMUM,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_MINIMUM,
        "elementwise::binary_arithmetic_broadcasts_like_numpy",
    ),
    (
        sys::FM_OP_EQUAL,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_NOT_EQUAL,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_LESS,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_LESS_EQUAL,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_GREATER,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_GREATER_EQUAL,
        "elementwise::comparisons_give_ones_and_zeros_and_no_gradient",
    ),
    (
        sys::FM_OP_WHERE,
        "elementwise::where_picks_a_or_b_and_routes_gradients",
    ),
    (
        sys::FM_OP_SOFTMAX,
        "elementwise::softmax_and_log_softmax_along_any_axis",
    ),
    (
        sys::FM_OP_LOG_SOFTMAX,
        "elementwise::softmax_and_log_softmax_along_any_axis",
    ),
    (
        sys::FM_OP_MATMUL,
        "linalg::matmul_all_transposes_batched_and_broadcast",
    ),
    (sys::FM_OP_LINEAR, "linalg::linear_with_and_without_bias"),
    (
        sys::FM_OP_CONV2D,
        "conv_pool::conv2d_stride_padding_dilation_groups_bias",
    ),
    (
        sys::FM_OP_CONV_TRANSPOSE2D,
        "conv_pool::conv_transpose2d_stride_padding_output_padding_groups_bias",
    ),
    (
        sys::FM_OP_MAX_POOL2D,
        "conv_pool::max_pool2d_padding_stride_dilation",
    ),
    (
        sys::FM_OP_AVG_POOL2D,
        "conv_pool::avg_pool2d_padding_stride_count_include_pad",
    ),
    (
        sys::FM_OP_GLOBAL_AVG_POOL,
        "conv_pool::global_avg_pool_means_each_plane",
    ),
    (
        sys::FM_OP_RESHAPE,
        "shape::reshape_and_flatten_keep_row_major_order",
    ),
    (
        sys::FM_OP_FLATTEN,
        "shape::reshape_and_flatten_keep_row_major_order",
    ),
    (
        sys::FM_OP_PERMUTE,
        "shape::permute_and_transpose_reorder_dims",
    ),
    (
        sys::FM_OP_TRANSPOSE,
        "shape::permute_and_transpose_reorder_dims",
    ),
    (sys::FM_OP_CONCAT, "shape::concat_joins_along_an_axis"),
    (
        sys::FM_OP_SLICE,
        "shape::slice_with_negative_and_clamped_bounds",
    ),
    (sys::FM_OP_PAD, "shape::pad_adds_a_constant_border"),
    (
        sys::FM_OP_BROADCAST_TO,
        "shape::broadcast_to_repeats_and_sums_gradients",
    ),
    (sys::FM_OP_SQUEEZE, "shape::squeeze_and_unsqueeze"),
    (sys::FM_OP_UNSQUEEZE, "shape::squeeze_and_unsqueeze"),
    (
        sys::FM_OP_SUM,
        "reduce::sum_mean_max_min_variance_over_axis_sets",
    ),
    (
        sys::FM_OP_MEAN,
        "reduce::sum_mean_max_min_variance_over_axis_sets",
    ),
    (
        sys::FM_OP_MAX,
        "reduce::sum_mean_max_min_variance_over_axis_sets",
    ),
    (
        sys::FM_OP_MIN,
        "reduce::sum_mean_max_min_variance_over_axis_sets",
    ),
    (
        sys::FM_OP_VARIANCE,
        "reduce::sum_mean_max_min_variance_over_axis_sets",
    ),
    (
        sys::FM_OP_ARGMAX,
        "reduce::argmax_returns_the_first_maximum_as_i32",
    ),
    (sys::FM_OP_BATCH_NORM, "norm::batch_norm_*"),
    (
        sys::FM_OP_LAYER_NORM,
        "norm::layer_norm_over_the_trailing_dims",
    ),
    (sys::FM_OP_DROPOUT, "norm::dropout_*"),
    (
        sys::FM_OP_EMBEDDING,
        "indexing::embedding_gathers_rows_and_accumulates_gradients_of_repeats",
    ),
    (sys::FM_OP_ONE_HOT, "indexing::one_hot_gives_f32_rows"),
    (
        sys::FM_OP_SOFTMAX_CROSS_ENTROPY,
        "loss::softmax_cross_entropy_with_and_without_label_smoothing",
    ),
    (
        sys::FM_OP_CATEGORICAL_CROSS_ENTROPY,
        "loss::categorical_cross_entropy_on_probabilities",
    ),
    (
        sys::FM_OP_BINARY_CROSS_ENTROPY,
        "loss::binary_cross_entropy_on_probabilities",
    ),
    (
        sys::FM_OP_BCE_WITH_LOGITS,
        "loss::bce_with_logits_is_stable_at_large_logits",
    ),
    (sys::FM_OP_MSE, "loss::mse_mae_huber"),
    (sys::FM_OP_MAE, "loss::mse_mae_huber"),
    (sys::FM_OP_HUBER, "loss::mse_mae_huber"),
    (
        sys::FM_OP_ASSIGN,
        "effects::a_fetched_assignment_happens_at_the_end_of_the_run",
    ),
    (
        sys::FM_OP_GROUP,
        "effects::a_fetched_group_performs_all_its_assignments_reading_old_values",
    ),
    (
        sys::FM_OP_STOP_GRADIENT,
        "effects::stop_gradient_is_the_identity_with_zero_gradient",
    ),
];

/// Every op of the enum is listed in COVERAGE exactly once, so an op added
/// to the header without a test fails here.
#[test]
fn every_op_is_covered() {
    assert_eq!(
        COVERAGE.len(),
        sys::FM_OP_COUNT as usize,
        "fm_op gained ops: add conformance tests for them and list them in COVERAGE"
    );
    for (i, (op, test)) in COVERAGE.iter().enumerate() {
        assert_eq!(*op as usize, i, "COVERAGE is in enum order; {test}");
        // SAFETY: fm_op_str takes any value and returns a static string.
        let name = unsafe { std::ffi::CStr::from_ptr(sys::fm_op_str(*op)) };
        assert_ne!(name.to_str().unwrap(), "unknown", "op {op}");
    }
}
