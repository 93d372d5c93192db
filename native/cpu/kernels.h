// CPU kernels for the graph engine's non-elementwise primitives (the fused
// elementwise interpreter lives in elementwise.cpp). All tensors are dense,
// row-major (NCHW for images), float32 unless stated; outputs are fully
// overwritten, never accumulated into. Every kernel parallelises through
// ThreadPool::global() with a split that depends on the problem size only,
// and sums in a fixed order, so results do not depend on the thread count.
// Kernels throw fm::Error for data-dependent errors (an index out of range).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernel_shapes.h"

namespace fm::cpu {

// The shape structs are the core's (kernel_shapes.h), shared with the GPU backends.
using fm::ConvShape;
using fm::MatmulShape;
using fm::PoolShape;

// ---- Matrix multiplication ------------------------------------------------

void matmul(const MatmulShape &shape, const float *a, const float *b, float *c);
// The micro-kernel matmul uses on this CPU: "avx512", "avx2" or "generic".
const char *matmul_isa();
// Whether the other kernels' AVX-512 paths run too: they follow the
// micro-kernel's choice, so FERROMETAL_CPU_ISA=avx2 tests the portable
// paths on an AVX-512 machine.
bool avx512_kernels();

// ---- Convolution and pooling (NCHW) ---------------------------------------

void conv2d_forward(const ConvShape &s, const float *x, const float *weight, float *y);
// The same, then y[:, o] += bias[o] (bias: [c_out]), while the block is in
// cache; and, if channel_sums is not null, channel_sums[o] = the sum of
// y[:, o] (in double: per task in a fixed order, tasks added in order);
// and, if variance_sums is not null too, variance_sums[o] = the sum of
// (y[:, o] - mean_o)^2, mean_o = that sum / its count, computed as
// sum y^2 - (sum y)^2 / count in double.
void conv2d_forward_bias(const ConvShape &s, const float *x, const float *weight, const float *bias, float *y,
                         float *channel_sums = nullptr, float *variance_sums = nullptr);
// dx = d(loss)/dx given dy; also the forward pass of conv_transpose2d.
void conv2d_backward_input(const ConvShape &s, const float *dy, const float *weight, float *dx);
// dweight = d(loss)/dweight given x and dy.
void conv2d_backward_weight(const ConvShape &s, const float *x, const float *dy, float *dweight);

void max_pool2d_forward(const PoolShape &s, const float *x, float *y);
// The gradient of each window goes to its first maximum (row-major), as in PyTorch.
void max_pool2d_backward(const PoolShape &s, const float *x, const float *dy, float *dx);
void avg_pool2d_forward(const PoolShape &s, const float *x, float *y);
void avg_pool2d_backward(const PoolShape &s, const float *dy, float *dx);

// ---- Reductions -----------------------------------------------------------

enum class Reduction { Sum, Max, Min };
// Reduces the axes whose bit is set in `axes_mask` (bit i = axis i) of x
// (shape[0..rank)); y has the same rank with those axes of size 1. Sums
// accumulate in double. Max/Min propagate NaN.
void reduce(Reduction kind, const int64_t *shape, int rank, uint32_t axes_mask, const float *x,
            float *y);
// Index (int32) of the first maximum along `axis`; y has that axis removed.
void argmax(const int64_t *shape, int rank, int axis, const float *x, int32_t *y);

// ---- Layout ---------------------------------------------------------------

// y = x with its axes permuted: y.shape[i] = x.shape[perm[i]]. Works on
// elements of `element_size` bytes (4 for f32 and i32).
void permute(const int64_t *shape, int rank, const int64_t *perm, const void *x, void *y,
             size_t element_size);
// Broadcasts x (in_shape, same rank as out_shape, each dim equal or 1) to out_shape.
void broadcast_to(const int64_t *in_shape, const int64_t *out_shape, int rank, const float *x,
                  float *y);
// y = x[starts[i] : starts[i] + y_shape[i]] along every axis (step 1).
void slice(const int64_t *x_shape, int rank, const int64_t *starts, const int64_t *y_shape,
           const float *x, float *y);
// y (y_shape) = `value` everywhere, with x (x_shape) placed at offset `before[i]`.
void pad(const int64_t *x_shape, int rank, const int64_t *before, const int64_t *y_shape,
         float value, const float *x, float *y);
// Concatenates `count` inputs along `axis`; all shapes agree except on `axis`.
void concat(const float *const *inputs, const int64_t *const *input_shapes, size_t count, int rank,
            int axis, float *y);

// ---- Softmax family (over the middle dim of [outer, classes, inner]) -------

void softmax(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y);
void log_softmax(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y);

// ---- Indexing -------------------------------------------------------------

// y[i, :] = table[indices[i], :]; table [rows, width], indices [count].
// Throws FM_ERR_OUT_OF_RANGE naming the position and value of a bad index.
void gather_rows(const float *table, int64_t rows, int64_t width, const int32_t *indices,
                 int64_t count, float *y);
// dtable = 0, then dtable[indices[i], :] += dy[i, :], in increasing i.
void scatter_add_rows(const float *dy, int64_t width, const int32_t *indices, int64_t count,
                      int64_t rows, float *dtable);
// y[i, j] = (indices[i] == j) as 1.0f / 0.0f; y: [count, depth]. Throws on a bad index.
void one_hot(const int32_t *indices, int64_t count, int64_t depth, float *y);
// For x [outer, classes, inner] and labels [outer, inner]:
// y[o, i] = x[o, labels[o, i], i]. Throws on a label outside [0, classes).
void pick(int64_t outer, int64_t classes, int64_t inner, const float *x, const int32_t *labels,
          float *y);
// dx = 0 except dx[o, labels[o, i], i] = dy[o, i].
void pick_backward(int64_t outer, int64_t classes, int64_t inner, const float *dy,
                   const int32_t *labels, float *dx);

}  // namespace fm::cpu
