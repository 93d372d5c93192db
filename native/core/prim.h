// The primitives of the graph IR (graph.h). Alone in this header because
// the CUDA backend compiles it at run time too (NVRTC, for fused kernels),
// where no standard library exists: it must stay free of includes but
// <cstdint>.
#pragma once

#ifndef __CUDACC_RTC__
#include <cstdint>
#endif

namespace fm {

enum class Prim : uint8_t {
    // Sources.
    Placeholder, Variable, Constant,
    // Elementwise, one input (attrs: slope, alpha, exponent, min, max).
    Neg, Abs, Exp, Log, Sqrt, Rsqrt, Pow, Clamp, Relu, LeakyRelu, Elu, Sigmoid, Tanh, Silu,
    GeluErf, GeluTanh, Softplus, Step, Sign, GeluErfDerivative, GeluTanhDerivative,
    // Elementwise, two inputs with broadcasting.
    Add, Sub, Mul, Div, Maximum, Minimum, Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual,
    // Elementwise, three inputs.
    Where,
    // (x, mean, inv_std): (x - mean) * inv_std, where mean and inv_std must
    // be x's batch statistics over every axis but 1 (batch_norm builds it).
    // Its gradient carries theirs: it flows to x alone, as the whole
    // normalisation's, so the backward pass needs two channel sums and one
    // elementwise pass, and x's normalised copy is never stored.
    BatchNormalize,
    // Elementwise source: the dropout mask of its input's shape (attrs p, seed).
    DropoutMask,
    // Everything else.
    MatMul,              // (a, b): transpose_a/b, leading dims broadcast
    Conv2d,              // (x, w)
    Conv2dBackwardInput, // (dy, w), input size in attrs.shape[0..1]; conv_transpose2d's forward
    Conv2dBackwardWeight,// (x, dy), kernel size in attrs.shape[0..1]
    MaxPool2d, MaxPool2dBackward,  // (x) ; (x, dy)
    AvgPool2d, AvgPool2dBackward,  // (x) ; (dy), input size in attrs.shape[0..1]
    ReduceSum, ReduceMax, ReduceMin,  // axes, keep_dims
    ArgMax,              // axes[0] -> i32
    ElementCount,        // (x): f32 scalar, the number of elements of x in `axes` (all if none)
    ReduceToLike,        // (x, like): sum x down to like's shape (undoes broadcasting)
    BroadcastLike,       // (x, like) or (x) with attrs.shape: broadcast x up
    // Views (no data moves): (x, like) takes like's shape, else from attrs.
    Reshape,             // attrs.shape, one -1 inferred
    Flatten,             // [d0, d1, ...] -> [d0, d1 * ...]
    Squeeze,             // axes (resolved), or every size-1 dim when none
    Unsqueeze,           // axes (resolved, of the output)
    Permute,             // axes
    Slice,               // starts/ends per dim, raw (negative from the end, clamped)
    SliceBackward,       // (dy, x_like): dy placed where Slice took it, zeros elsewhere
    Pad,                 // pad_before, pad_after, value
    Concat,              // axes[0]
    Softmax, LogSoftmax, // axes[0]
    GatherRows,          // (table, indices)
    ScatterAddRows,      // (dy, indices), table shape in attrs.shape[0..1]
    OneHot,              // (indices) depth
    Pick, PickBackward,  // (x, labels) ; (dy, labels), classes in attrs.depth
    Assign,              // (variable, value)
    Group,               // (values...)
    StopGradient,        // (x)
    Count
};

}  // namespace fm
