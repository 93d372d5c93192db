// Convolution as im2col + cuBLAS GEMM, and pooling, on the GPU.
//
// Images go in chunks (sized by the shape only, bounding the workspace).
// For a chunk of cn images the column matrix is [C*kh*kw, cn*P] (P output
// pixels per image), so one GEMM per group covers the whole chunk:
//   forward          tmp[Cout, cn*P] = W[Cout, CKK] * col, then permuted to y[cn, Cout, P]
//   data gradient    col = W^T * dy (permuted to [Cout, cn*P]), then col2im gathers into dx
//   weight gradient  dW += dy (permuted) * col^T, chunk after chunk
// col2im gathers (each dx element sums its own taps), so no atomics and the
// sums have a fixed order. Pooling kernels use the core's window arithmetic
// (kernel_shapes.h), so the CPU and CUDA pick the same maximum.
#include <algorithm>

#include "cuda_kernels.h"

namespace fm {
namespace cuda {

namespace {

// Columns plus the permuted output of one chunk stay below 1 GiB.
constexpr int64_t kMaxWorkspaceFloats = int64_t(256) << 20;

struct Chunking {
    int64_t images;  // per chunk
    int64_t ckk, pixels;
};

Chunking chunking(const ConvShape &s) {
    Chunking c;
    c.ckk = s.c_in * s.kh * s.kw;
    c.pixels = s.out_h * s.out_w;
    int64_t per_image = std::max<int64_t>(1, (c.ckk + s.c_out) * c.pixels);
    c.images = std::clamp<int64_t>(kMaxWorkspaceFloats / per_image, 1, std::max<int64_t>(1, s.n));
    return c;
}

__global__ void im2col_kernel(ConvShape s, const float *x, int64_t n0, int64_t cn, float *col) {
    const int64_t pixels = s.out_h * s.out_w, columns = cn * pixels;
    const int64_t total = s.c_in * s.kh * s.kw * columns;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t row = idx / columns, q = idx % columns;
        const int64_t n = n0 + q / pixels, p = q % pixels;
        const int64_t oy = p / s.out_w, ox = p % s.out_w;
        const int64_t c = row / (s.kh * s.kw), i = row / s.kw % s.kh, j = row % s.kw;
        const int64_t iy = oy * s.stride_h - s.pad_h + i * s.dilation_h;
        const int64_t ix = ox * s.stride_w - s.pad_w + j * s.dilation_w;
        float v = 0.0f;
        if (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w) v = x[((n * s.c_in + c) * s.h + iy) * s.w + ix];
        col[idx] = v;
    }
}

__global__ void col2im_kernel(ConvShape s, const float *col, int64_t n0, int64_t cn, float *dx) {
    const int64_t pixels = s.out_h * s.out_w, columns = cn * pixels;
    const int64_t total = cn * s.c_in * s.h * s.w;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t ix = idx % s.w, iy = idx / s.w % s.h, c = idx / (s.w * s.h) % s.c_in;
        const int64_t n = idx / (s.w * s.h * s.c_in);
        float sum = 0.0f;
        for (int64_t i = 0; i < s.kh; ++i) {
            const int64_t ty = iy + s.pad_h - i * s.dilation_h;
            if (ty < 0 || ty % s.stride_h != 0 || ty / s.stride_h >= s.out_h) continue;
            const int64_t oy = ty / s.stride_h;
            for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t tx = ix + s.pad_w - j * s.dilation_w;
                if (tx < 0 || tx % s.stride_w != 0 || tx / s.stride_w >= s.out_w) continue;
                const int64_t ox = tx / s.stride_w;
                const int64_t row = (c * s.kh + i) * s.kw + j;
                sum += col[row * columns + n * pixels + oy * s.out_w + ox];
            }
        }
        dx[((n0 + n) * s.c_in + c) * s.h * s.w + iy * s.w + ix] = sum;
    }
}

// [cn, Cout, P] <-> [Cout, cn*P]
void to_channel_major(const KernelContext &k, const float *src, float *dst, int64_t cn, int64_t c_out,
                      int64_t pixels) {
    Shape dims{cn, c_out, pixels};
    int64_t src_strides[3] = {c_out * pixels, pixels, 1};
    int64_t dst_strides[3] = {pixels, cn * pixels, 1};
    strided_copy(k, dims, src, src_strides, dst, dst_strides, sizeof(float));
}

void from_channel_major(const KernelContext &k, const float *src, float *dst, int64_t cn, int64_t c_out,
                        int64_t pixels) {
    Shape dims{cn, c_out, pixels};
    int64_t src_strides[3] = {pixels, cn * pixels, 1};
    int64_t dst_strides[3] = {c_out * pixels, pixels, 1};
    strided_copy(k, dims, src, src_strides, dst, dst_strides, sizeof(float));
}

// One GEMM per group, as a strided batch over the groups.
MatmulShape grouped(const ConvShape &s, int64_t m, int64_t n, int64_t kk, bool ta, bool tb) {
    MatmulShape g;
    g.batch = s.groups, g.m = m, g.n = n, g.k = kk, g.transpose_a = ta, g.transpose_b = tb;
    return g;
}

void im2col(const KernelContext &k, const ConvShape &s, const float *x, int64_t n0, int64_t cn, float *col) {
    const Chunking c = chunking(s);
    im2col_kernel<<<blocks_for(c.ckk * cn * c.pixels, k), kThreads, 0, k.stream>>>(s, x, n0, cn, col);
    check_launch("im2col");
}

}  // namespace

size_t conv_workspace_bytes(const ConvShape &s) {
    const Chunking c = chunking(s);
    return size_t((c.ckk + s.c_out) * c.pixels * c.images) * sizeof(float);
}

void conv2d_forward(const KernelContext &k, const ConvShape &s, const float *x, const float *w, float *y) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    float *tmp = col + c.ckk * c.pixels * c.images;
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups;
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * c.pixels;
        im2col(k, s, x, n0, cn, col);
        MatmulShape g = grouped(s, cout_g, columns, ckk_g, false, false);
        g.a_batch_stride = cout_g * ckk_g, g.b_batch_stride = ckk_g * columns, g.c_batch_stride = cout_g * columns;
        // One image needs no permute: [Cout, P] is already its layout.
        float *out = cn == 1 ? y + n0 * s.c_out * c.pixels : tmp;
        matmul(k, g, w, col, out);
        if (cn > 1) from_channel_major(k, tmp, y + n0 * s.c_out * c.pixels, cn, s.c_out, c.pixels);
    }
}

void conv2d_backward_input(const KernelContext &k, const ConvShape &s, const float *dy, const float *w,
                           float *dx) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    float *tmp = col + c.ckk * c.pixels * c.images;
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups;
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * c.pixels;
        const float *grad = dy + n0 * s.c_out * c.pixels;
        if (cn > 1) {
            to_channel_major(k, grad, tmp, cn, s.c_out, c.pixels);
            grad = tmp;
        }
        MatmulShape g = grouped(s, ckk_g, columns, cout_g, true, false);
        g.a_batch_stride = cout_g * ckk_g, g.b_batch_stride = cout_g * columns, g.c_batch_stride = ckk_g * columns;
        matmul(k, g, w, grad, col);
        const int64_t total = cn * s.c_in * s.h * s.w;
        col2im_kernel<<<blocks_for(total, k), kThreads, 0, k.stream>>>(s, col, n0, cn, dx);
        check_launch("col2im");
    }
}

void conv2d_backward_weight(const KernelContext &k, const ConvShape &s, const float *x, const float *dy,
                            float *dw) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    float *tmp = col + c.ckk * c.pixels * c.images;
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups;
    if (s.n == 0 || c.pixels == 0) return fill(k, dw, s.c_out * ckk_g, 0.0f);
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * c.pixels;
        const float *grad = dy + n0 * s.c_out * c.pixels;
        if (cn > 1) {
            to_channel_major(k, grad, tmp, cn, s.c_out, c.pixels);
            grad = tmp;
        }
        im2col(k, s, x, n0, cn, col);
        MatmulShape g = grouped(s, cout_g, ckk_g, columns, false, true);
        g.a_batch_stride = cout_g * columns, g.b_batch_stride = ckk_g * columns, g.c_batch_stride = cout_g * ckk_g;
        matmul(k, g, grad, col, dw, n0 == 0 ? 0.0f : 1.0f);
    }
}

// ---- Pooling ----------------------------------------------------------------

namespace {

__global__ void max_pool_forward_kernel(PoolShape s, const float *x, float *y) {
    const int64_t total = s.n * s.c * s.out_h * s.out_w;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t ox = idx % s.out_w, oy = idx / s.out_w % s.out_h, plane = idx / (s.out_w * s.out_h);
        const float *in = x + plane * s.h * s.w;
        const int64_t at = window_argmax(s, in, oy, ox);
        y[idx] = at < 0 ? -INFINITY : in[at];
    }
}

// Each input element gathers the gradient of the windows whose first
// maximum it is (a window reaches a given input through one tap at most).
__global__ void max_pool_backward_kernel(PoolShape s, const float *x, const float *dy, float *dx) {
    const int64_t total = s.n * s.c * s.h * s.w;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t ix = idx % s.w, iy = idx / s.w % s.h, plane = idx / (s.w * s.h);
        const float *in = x + plane * s.h * s.w;
        const float *grad = dy + plane * s.out_h * s.out_w;
        float sum = 0.0f;
        for (int64_t i = 0; i < s.kh; ++i) {
            const int64_t ty = iy + s.pad_h - i * s.dilation_h;
            if (ty < 0 || ty % s.stride_h != 0 || ty / s.stride_h >= s.out_h) continue;
            for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t tx = ix + s.pad_w - j * s.dilation_w;
                if (tx < 0 || tx % s.stride_w != 0 || tx / s.stride_w >= s.out_w) continue;
                const int64_t oy = ty / s.stride_h, ox = tx / s.stride_w;
                if (window_argmax(s, in, oy, ox) == iy * s.w + ix) sum += grad[oy * s.out_w + ox];
            }
        }
        dx[idx] = sum;
    }
}

__global__ void avg_pool_forward_kernel(PoolShape s, const float *x, float *y) {
    const int64_t total = s.n * s.c * s.out_h * s.out_w;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t ox = idx % s.out_w, oy = idx / s.out_w % s.out_h, plane = idx / (s.out_w * s.out_h);
        const float *in = x + plane * s.h * s.w;
        const Taps ty = average_taps(oy, s.stride_h, s.pad_h, s.dilation_h, s.kh, s.h);
        const Taps tx = average_taps(ox, s.stride_w, s.pad_w, s.dilation_w, s.kw, s.w);
        double sum = 0;
        for (int64_t i = ty.lo; i < ty.hi; ++i) {
            const float *row = in + (ty.first + i * ty.step) * s.w + tx.first;
            for (int64_t j = tx.lo; j < tx.hi; ++j) sum += row[j * tx.step];
        }
        y[idx] = float(sum / double(average_divisor(s, ty, tx)));
    }
}

__global__ void avg_pool_backward_kernel(PoolShape s, const float *dy, float *dx) {
    const int64_t total = s.n * s.c * s.h * s.w;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t ix = idx % s.w, iy = idx / s.w % s.h, plane = idx / (s.w * s.h);
        const float *grad = dy + plane * s.out_h * s.out_w;
        float sum = 0.0f;
        for (int64_t i = 0; i < s.kh; ++i) {
            const int64_t ty = iy + s.pad_h - i * s.dilation_h;
            if (ty < 0 || ty % s.stride_h != 0 || ty / s.stride_h >= s.out_h) continue;
            for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t tx = ix + s.pad_w - j * s.dilation_w;
                if (tx < 0 || tx % s.stride_w != 0 || tx / s.stride_w >= s.out_w) continue;
                const int64_t oy = ty / s.stride_h, ox = tx / s.stride_w;
                const Taps wy = average_taps(oy, s.stride_h, s.pad_h, s.dilation_h, s.kh, s.h);
                const Taps wx = average_taps(ox, s.stride_w, s.pad_w, s.dilation_w, s.kw, s.w);
                sum += grad[oy * s.out_w + ox] / float(average_divisor(s, wy, wx));
            }
        }
        dx[idx] = sum;
    }
}

}  // namespace

void max_pool2d_forward(const KernelContext &k, const PoolShape &s, const float *x, float *y) {
    max_pool_forward_kernel<<<blocks_for(s.n * s.c * s.out_h * s.out_w, k), kThreads, 0, k.stream>>>(s, x, y);
    check_launch("max_pool2d");
}

void max_pool2d_backward(const KernelContext &k, const PoolShape &s, const float *x, const float *dy, float *dx) {
    max_pool_backward_kernel<<<blocks_for(s.n * s.c * s.h * s.w, k), kThreads, 0, k.stream>>>(s, x, dy, dx);
    check_launch("max_pool2d_backward");
}

void avg_pool2d_forward(const KernelContext &k, const PoolShape &s, const float *x, float *y) {
    avg_pool_forward_kernel<<<blocks_for(s.n * s.c * s.out_h * s.out_w, k), kThreads, 0, k.stream>>>(s, x, y);
    check_launch("avg_pool2d");
}

void avg_pool2d_backward(const KernelContext &k, const PoolShape &s, const float *dy, float *dx) {
    avg_pool_backward_kernel<<<blocks_for(s.n * s.c * s.h * s.w, k), kThreads, 0, k.stream>>>(s, dy, dx);
    check_launch("avg_pool2d_backward");
}

}  // namespace cuda
}  // namespace fm
