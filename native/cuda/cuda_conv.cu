// Convolution as im2col + cuBLAS GEMMs, and pooling, on the GPU.
//
// Images go in chunks (sized by the shape only, bounding the workspace).
// For a chunk of cn images the column matrix is [C*kh*kw, cn*P] (P output
// pixels per image); strided-batched GEMMs, one product per image, read
// and write NCHW tensors in place, so nothing is permuted:
//   forward          y[n] (Cout x P)  = W (Cout x CKK) * col[:, n]
//   data gradient    col[:, n]        = W^T * dy[n], then col2im gathers into dx
//   weight gradient  partial[n]       = dy[n] * col[:, n]^T, summed over n in order
// col2im gathers (each dx element sums its own taps), so no atomics and the
// sums have a fixed order. Pooling kernels use the core's window arithmetic
// (kernel_shapes.h), so the CPU and CUDA pick the same maximum.
#include <algorithm>
#include <cmath>

#include "cuda_check.h"
#include "cuda_kernels.h"
#include "error.h"

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
    // Columns, and the weight gradient's per-image partial products.
    int64_t per_image = std::max<int64_t>(1, c.ckk * c.pixels + s.c_out * (c.ckk / std::max<int64_t>(1, s.groups)));
    c.images = std::clamp<int64_t>(kMaxWorkspaceFloats / per_image, 1, std::max<int64_t>(1, s.n));
    return c;
}

// The shape in the kernel's index type: int32_t whenever the tensors have
// fewer than 2^31 elements, since 64-bit division costs several times more.
template <class I>
struct Dims {
    I n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w;
    explicit Dims(const ConvShape &s)
        : n(I(s.n)), c_in(I(s.c_in)), h(I(s.h)), w(I(s.w)), c_out(I(s.c_out)), kh(I(s.kh)), kw(I(s.kw)),
          stride_h(I(s.stride_h)), stride_w(I(s.stride_w)), pad_h(I(s.pad_h)), pad_w(I(s.pad_w)),
          dilation_h(I(s.dilation_h)), dilation_w(I(s.dilation_w)), out_h(I(s.out_h)), out_w(I(s.out_w)) {}
};

template <class I>
__global__ void im2col_kernel(Dims<I> s, const float *x, I n0, I cn, float *col) {
    const I pixels = s.out_h * s.out_w, columns = cn * pixels;
    const I total = s.c_in * s.kh * s.kw * columns;
    const I stride = I(gridDim.x) * I(blockDim.x);
    for (I idx = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); idx < total; idx += stride) {
        const I row = idx / columns, q = idx - row * columns;
        const I image = q / pixels, p = q - image * pixels;
        const I n = n0 + image;
        const I oy = p / s.out_w, ox = p - oy * s.out_w;
        const I c = row / (s.kh * s.kw), i = row / s.kw % s.kh, j = row % s.kw;
        const I iy = oy * s.stride_h - s.pad_h + i * s.dilation_h;
        const I ix = ox * s.stride_w - s.pad_w + j * s.dilation_w;
        float v = 0.0f;
        if (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w) v = x[((n * s.c_in + c) * s.h + iy) * s.w + ix];
        col[idx] = v;
    }
}

// The same with one row (c, i, j) per blockIdx.y: the row's arithmetic is
// done once per thread rather than per element, which leaves two divisions
// per element (the kernel was bound by them, not by memory).
template <class I>
__global__ void im2col_rows_kernel(Dims<I> s, const float *x, I n0, I cn, float *col) {
    const I pixels = s.out_h * s.out_w, columns = cn * pixels;
    const I row = I(blockIdx.y);
    const I c = row / (s.kh * s.kw), i = row / s.kw % s.kh, j = row % s.kw;
    const I shift_y = i * s.dilation_h - s.pad_h, shift_x = j * s.dilation_w - s.pad_w;
    const float *plane = x + (n0 * s.c_in + c) * s.h * s.w;
    const I image_stride = s.c_in * s.h * s.w;
    float *out = col + row * columns;
    const I stride = I(gridDim.x) * I(blockDim.x);
    for (I q = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); q < columns; q += stride) {
        const I image = q / pixels, p = q - image * pixels;
        const I oy = p / s.out_w, ox = p - oy * s.out_w;
        const I iy = oy * s.stride_h + shift_y, ix = ox * s.stride_w + shift_x;
        float v = 0.0f;
        if (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w) v = plane[image * image_stride + iy * s.w + ix];
        out[q] = v;
    }
}

template <class I>
__global__ void col2im_kernel(Dims<I> s, const float *col, I n0, I cn, float *dx) {
    const I pixels = s.out_h * s.out_w, columns = cn * pixels;
    const I total = cn * s.c_in * s.h * s.w;
    const I stride = I(gridDim.x) * I(blockDim.x);
    for (I idx = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); idx < total; idx += stride) {
        const I ix = idx % s.w, iy = idx / s.w % s.h, c = idx / (s.w * s.h) % s.c_in;
        const I n = idx / (s.w * s.h * s.c_in);
        float sum = 0.0f;
        for (I i = 0; i < s.kh; ++i) {
            const I ty = iy + s.pad_h - i * s.dilation_h;
            if (ty < 0 || ty % s.stride_h != 0 || ty / s.stride_h >= s.out_h) continue;
            const I oy = ty / s.stride_h;
            for (I j = 0; j < s.kw; ++j) {
                const I tx = ix + s.pad_w - j * s.dilation_w;
                if (tx < 0 || tx % s.stride_w != 0 || tx / s.stride_w >= s.out_w) continue;
                const I ox = tx / s.stride_w;
                const I row = (c * s.kh + i) * s.kw + j;
                sum += col[row * columns + n * pixels + oy * s.out_w + ox];
            }
        }
        dx[((n0 + n) * s.c_in + c) * s.h * s.w + iy * s.w + ix] = sum;
    }
}

// Sums `splits` partial results of `count` floats each, in order, into
// out (adding to it when `accumulate`).
__global__ void sum_partials_kernel(const float *partials, int64_t splits, int64_t count, float *out,
                                    bool accumulate) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        float sum = accumulate ? out[i] : 0.0f;
        for (int64_t s = 0; s < splits; ++s) sum += partials[s * count + i];
        out[i] = sum;
    }
}

// The largest gridDim.y.
constexpr int64_t kMaxGridY = 65535;

// Whether every index of a chunk's kernels fits in int32_t.
bool fits_int32(const ConvShape &s, int64_t cn, int64_t n0) {
    const int64_t limit = kInt32Limit;
    const int64_t col = s.c_in * s.kh * s.kw * cn * s.out_h * s.out_w;
    const int64_t x = (n0 + cn) * s.c_in * s.h * s.w;
    return col < limit && x < limit;
}

void im2col(const KernelContext &k, const ConvShape &s, const float *x, int64_t n0, int64_t cn, float *col) {
    const Chunking c = chunking(s);
    if (c.ckk <= kMaxGridY && fits_int32(s, cn, n0)) {
        const int64_t columns = cn * c.pixels;
        const int64_t cap = std::max<int64_t>(1, (int64_t(k.sm_count) * 32 + c.ckk - 1) / c.ckk);
        const dim3 grid(unsigned(std::clamp<int64_t>((columns + kThreads - 1) / kThreads, 1, cap)), unsigned(c.ckk));
        im2col_rows_kernel<int32_t><<<grid, kThreads, 0, k.stream>>>(Dims<int32_t>(s), x, int32_t(n0), int32_t(cn), col);
        return check_launch("im2col");
    }
    const unsigned blocks = blocks_for(c.ckk * cn * c.pixels, k);
    if (fits_int32(s, cn, n0)) {
        im2col_kernel<int32_t><<<blocks, kThreads, 0, k.stream>>>(Dims<int32_t>(s), x, int32_t(n0), int32_t(cn), col);
    } else {
        im2col_kernel<int64_t><<<blocks, kThreads, 0, k.stream>>>(Dims<int64_t>(s), x, n0, cn, col);
    }
    check_launch("im2col");
}

void col2im(const KernelContext &k, const ConvShape &s, const float *col, int64_t n0, int64_t cn, float *dx) {
    const unsigned blocks = blocks_for(cn * s.c_in * s.h * s.w, k);
    if (fits_int32(s, cn, n0)) {
        col2im_kernel<int32_t><<<blocks, kThreads, 0, k.stream>>>(Dims<int32_t>(s), col, int32_t(n0), int32_t(cn), dx);
    } else {
        col2im_kernel<int64_t><<<blocks, kThreads, 0, k.stream>>>(Dims<int64_t>(s), col, n0, cn, dx);
    }
    check_launch("col2im");
}

}  // namespace

size_t conv_workspace_bytes(const ConvShape &s) {
    const Chunking c = chunking(s);
    return size_t(c.ckk * c.pixels * c.images + c.images * s.c_out * (c.ckk / s.groups)) * sizeof(float);
}

void conv2d_forward(const KernelContext &k, const ConvShape &s, const float *x, const float *w, float *y) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups, P = c.pixels;
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * P;
        im2col(k, s, x, n0, cn, col);
        for (int64_t g = 0; g < s.groups; ++g) {
            gemm_batched(k, false, false, cout_g, P, ckk_g, w + g * cout_g * ckk_g, ckk_g, 0, col + g * ckk_g * columns,
                         columns, P, y + (n0 * s.c_out + g * cout_g) * P, P, s.c_out * P, cn);
        }
    }
}

void conv2d_backward_input(const KernelContext &k, const ConvShape &s, const float *dy, const float *w,
                           float *dx) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups, P = c.pixels;
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * P;
        for (int64_t g = 0; g < s.groups; ++g) {
            gemm_batched(k, true, false, ckk_g, P, cout_g, w + g * cout_g * ckk_g, ckk_g, 0,
                         dy + (n0 * s.c_out + g * cout_g) * P, P, s.c_out * P, col + g * ckk_g * columns, columns, P,
                         cn);
        }
        col2im(k, s, col, n0, cn, dx);
    }
}

void conv2d_backward_weight(const KernelContext &k, const ConvShape &s, const float *x, const float *dy,
                            float *dw) {
    const Chunking c = chunking(s);
    float *col = static_cast<float *>(k.workspace);
    float *partials = col + c.ckk * c.pixels * c.images;
    const int64_t cout_g = s.c_out / s.groups, ckk_g = c.ckk / s.groups, P = c.pixels;
    const int64_t count = s.c_out * ckk_g;
    if (s.n == 0 || P == 0) return fill(k, dw, count, 0.0f);
    for (int64_t n0 = 0; n0 < s.n; n0 += c.images) {
        const int64_t cn = std::min(c.images, s.n - n0), columns = cn * P;
        im2col(k, s, x, n0, cn, col);
        for (int64_t g = 0; g < s.groups; ++g) {
            gemm_batched(k, false, true, cout_g, ckk_g, P, dy + (n0 * s.c_out + g * cout_g) * P, P, s.c_out * P,
                         col + g * ckk_g * columns, columns, P, partials + g * cout_g * ckk_g, ckk_g, count, cn);
        }
        sum_partials_kernel<<<blocks_for(count, k), kThreads, 0, k.stream>>>(partials, cn, count, dw, n0 > 0);
        check_launch("conv2d_backward_weight (summing images)");
    }
}

float time_im2col_conv(KernelContext k, Prim prim, const ConvShape &s) {
    const int64_t x = s.n * s.c_in * s.h * s.w, w = s.c_out * (s.c_in / s.groups) * s.kh * s.kw;
    const int64_t y = s.n * s.c_out * s.out_h * s.out_w;
    const size_t bytes[4] = {size_t(x) * sizeof(float), size_t(w) * sizeof(float), size_t(y) * sizeof(float),
                             conv_workspace_bytes(s) + k.blas_workspace_bytes};
    void *memory[4] = {};
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    float best = INFINITY;
    auto release = [&] {
        for (void *ptr : memory) cudaFree(ptr);
        if (start) cudaEventDestroy(start);
        if (stop) cudaEventDestroy(stop);
        if (stream) cudaStreamDestroy(stream);
    };
    try {
        for (int i = 0; i < 4; ++i) {
            check(cudaMalloc(&memory[i], std::max<size_t>(bytes[i], 16)), "cudaMalloc");
            // Small nonzero values: timing on zeros can flatter a kernel.
            check(cudaMemset(memory[i], 0x3c, bytes[i]), "cudaMemset");
        }
        check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        check(cudaEventCreate(&start), "cudaEventCreate");
        check(cudaEventCreate(&stop), "cudaEventCreate");
        k.stream = stream;
        k.workspace = memory[3];
        k.blas_workspace = static_cast<char *>(memory[3]) + conv_workspace_bytes(s);
        const auto *xs = static_cast<const float *>(memory[0]), *ws = static_cast<const float *>(memory[1]);
        const auto *ys = static_cast<const float *>(memory[2]);
        for (int run = 0; run < 4; ++run) {  // the first warms up
            check(cudaEventRecord(start, stream), "cudaEventRecord");
            switch (prim) {
                case Prim::Conv2d: conv2d_forward(k, s, xs, ws, static_cast<float *>(memory[2])); break;
                case Prim::Conv2dBackwardInput:
                    conv2d_backward_input(k, s, ys, ws, static_cast<float *>(memory[0]));
                    break;
                default: conv2d_backward_weight(k, s, xs, ys, static_cast<float *>(memory[1])); break;
            }
            check(cudaEventRecord(stop, stream), "cudaEventRecord");
            check(cudaEventSynchronize(stop), "cudaEventSynchronize");
            float ms = 0;
            check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
            if (run > 0) best = std::min(best, ms);
        }
    } catch (...) {
        release();
        throw;
    }
    release();
    return best;
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

// Windows that do not overlap: each output hands its gradient to its own
// maximum (dx starts zeroed), one read of each window instead of a gather.
__global__ void max_pool_backward_disjoint_kernel(PoolShape s, const float *x, const float *dy, float *dx) {
    const int32_t out_w = int32_t(s.out_w), out_h = int32_t(s.out_h), plane_in = int32_t(s.h * s.w);
    const int32_t total = int32_t(s.n * s.c * s.out_h * s.out_w);
    const int32_t stride = int32_t(gridDim.x * blockDim.x);
    for (int32_t idx = int32_t(blockIdx.x * blockDim.x + threadIdx.x); idx < total; idx += stride) {
        const int32_t ox = idx % out_w, oy = idx / out_w % out_h, plane = idx / (out_w * out_h);
        const float *in = x + int64_t(plane) * plane_in;
        const int64_t at = window_argmax(s, in, oy, ox);
        if (at >= 0) dx[int64_t(plane) * plane_in + at] = dy[idx];
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
    const bool disjoint = s.stride_h >= s.dilation_h * (s.kh - 1) + 1 && s.stride_w >= s.dilation_w * (s.kw - 1) + 1;
    if (disjoint && s.n * s.c * s.h * s.w < kInt32Limit) {
        fill(k, dx, s.n * s.c * s.h * s.w, 0.0f);
        const int64_t outputs = s.n * s.c * s.out_h * s.out_w;
        if (outputs == 0) return;
        max_pool_backward_disjoint_kernel<<<blocks_for(outputs, k), kThreads, 0, k.stream>>>(s, x, dy, dx);
        return check_launch("max_pool2d_backward");
    }
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
