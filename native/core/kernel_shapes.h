// The geometry of the non-elementwise kernels, shared by every backend: the
// shape structs a kernel takes, how a plan step's attributes and shapes
// become one, and the window arithmetic of pooling. Functions marked
// FM_HOST_DEVICE compile for CUDA device code too, so every backend agrees
// on which input a window picks and what an average divides by.
#pragma once

#include <cstdint>

#include "ferrometal.h"
#include "shape.h"

#if defined(__CUDACC__)
#define FM_HOST_DEVICE __host__ __device__
#else
#define FM_HOST_DEVICE
#endif

namespace fm {

struct Step;

// For b in [0, batch): C[b] (m x n) = op(A[b]) * op(B[b]), where op(A) is A
// (stored m x k) or, with transpose_a, A stored k x m and transposed; the
// same for B (k x n, or n x k with transpose_b). A batch stride of 0
// broadcasts one matrix over the batch.
struct MatmulShape {
    int64_t batch = 1, m = 0, n = 0, k = 0;
    bool transpose_a = false, transpose_b = false;
    int64_t a_batch_stride = 0, b_batch_stride = 0, c_batch_stride = 0;  // in elements
};

// A MatMul step as strided batches. When the leading dims broadcast in a
// way strides cannot express (say [2, 1] against [1, 3]), `mixed` is set,
// shape.batch is 1, and matrix_offsets() gives each output matrix's inputs.
struct MatmulPlan {
    MatmulShape shape;
    bool mixed = false;
    int64_t outputs = 1;  // output matrices
};
MatmulPlan matmul_plan(const Step &step);
// Element offsets into A and B of output matrix `index` of a mixed plan.
void matrix_offsets(const Step &step, int64_t index, int64_t *a_offset, int64_t *b_offset);

// x: [n, c_in, h, w]; weight: [c_out, c_in / groups, kh, kw];
// y: [n, c_out, out_h, out_w] with out = (in + 2*pad - dil*(k-1) - 1) / stride + 1.
struct ConvShape {
    int64_t n = 0, c_in = 0, h = 0, w = 0;
    int64_t c_out = 0, kh = 0, kw = 0;
    int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
    int64_t groups = 1;
    int64_t out_h = 0, out_w = 0;
};
// Of a Conv2d, Conv2dBackwardInput or Conv2dBackwardWeight step.
ConvShape conv_shape(const Step &step);

// x: [n, c, h, w] -> y: [n, c, out_h, out_w]. Padding never wins a max
// (it counts as -inf); for average pooling `count_include_pad` chooses the
// divisor (PyTorch's default: true).
struct PoolShape {
    int64_t n = 0, c = 0, h = 0, w = 0;
    int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
    int64_t dilation_h = 1, dilation_w = 1;
    int64_t out_h = 0, out_w = 0;
    bool count_include_pad = true;
};
// Of a MaxPool2d(Backward) or AvgPool2d(Backward) step.
PoolShape pool_shape(const Step &step);

// `shape` with leading 1s up to `rank` (numpy broadcasting's alignment).
Shape padded(const Shape &shape, size_t rank);

// The axes a ReduceToLike of `x` sums over to become `like` (broadcasting
// undone), as a mask (bit i = axis i); 0 when nothing is reduced.
uint32_t reduce_to_like_mask(const Shape &x, const Shape &like);

// [outer, middle, inner] around `axis` of `shape`.
void axis_split(const int64_t *shape, size_t rank, int axis, int64_t *outer, int64_t *middle, int64_t *inner);

// The first maximum of a window in row-major order (a NaN beats any
// number), or -1 if the window holds only padding. `plane` is one h x w
// image channel.
FM_HOST_DEVICE inline int64_t window_argmax(const PoolShape &s, const float *plane, int64_t oy, int64_t ox) {
    int64_t best = -1;
    float value = 0.0f;
    for (int64_t ki = 0; ki < s.kh; ++ki) {
        int64_t iy = oy * s.stride_h - s.pad_h + ki * s.dilation_h;
        if (iy < 0 || iy >= s.h) continue;
        for (int64_t kj = 0; kj < s.kw; ++kj) {
            int64_t ix = ox * s.stride_w - s.pad_w + kj * s.dilation_w;
            if (ix < 0 || ix >= s.w) continue;
            float v = plane[iy * s.w + ix];
            if (best < 0 || v > value || (v != v && value == value)) {
                best = iy * s.w + ix;
                value = v;
            }
        }
    }
    return best;
}

// One axis of an average window: the taps k in [lo, hi) land inside the
// input, at first + k * step; `padded` taps land inside the padded input.
struct Taps {
    int64_t lo, hi, first, step, padded;
};

FM_HOST_DEVICE inline Taps average_taps(int64_t o, int64_t stride, int64_t pad, int64_t dilation, int64_t k,
                                        int64_t size) {
    const int64_t first = o * stride - pad;
    // Taps t with 0 <= first + t * dilation < limit, for t in [0, k).
    auto below = [&](int64_t limit) -> int64_t {
        if (limit - first <= 0) return 0;
        int64_t n = (limit - first + dilation - 1) / dilation;
        return n < k ? n : k;
    };
    int64_t lo = 0;
    if (first < 0) {
        lo = (-first + dilation - 1) / dilation;
        if (lo > k) lo = k;
    }
    int64_t hi = below(size), padded = below(size + pad);
    return {lo, hi > lo ? hi : lo, first, dilation, padded > lo ? padded : lo};
}

// The divisor PyTorch uses: taps inside the padded input (all of them for
// the documented out_h / out_w), or inside the input only. A window with
// no tap inside gets 1, so it averages to 0 rather than NaN.
FM_HOST_DEVICE inline int64_t average_divisor(const PoolShape &s, const Taps &ty, const Taps &tx) {
    const int64_t d = s.count_include_pad ? ty.padded * tx.padded : (ty.hi - ty.lo) * (tx.hi - tx.lo);
    return d > 1 ? d : 1;
}

}  // namespace fm
