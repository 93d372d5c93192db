// 2-D convolution (NCHW) as im2col + the blocked matmul of matmul.cpp.
//
// Images are processed in chunks whose size depends on the shape only (to
// bound the column buffer). For each chunk, im2col runs in parallel, then
// one matmul per group covers every image of the chunk through its batch
// strides: matmul parallelises internally, and ThreadPool::run is not
// reentrant, so no parallel loop ever surrounds a matmul call.
//
// Determinism: im2col and col2im only copy, or sum into each dx plane in
// one task in a fixed order; matmul sums in a fixed order; the weight
// gradient is summed over the batch inside matmul's k loop (images in
// order), and over chunks in chunk order. No split depends on the thread
// count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "error.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

// The column buffer of one chunk stays below 64 MiB whatever the batch;
// a single image may exceed it (it cannot be split further).
constexpr int64_t kMaxColumnFloats = int64_t(16) << 20;
// Rows of im2col / planes of col2im per task, at least this many elements.
constexpr int64_t kCopyGrainElements = int64_t(1) << 15;

struct Geometry {
    int64_t cin_g, cout_g;  // channels per group
    int64_t k;              // rows of a column matrix: cin_g * kh * kw
    int64_t p;              // columns: out_h * out_w
    int64_t chunk;          // images per chunk
};

Geometry check_and_measure(const char *what, const ConvShape &s) {
    if (s.n < 0 || s.c_in < 0 || s.h < 0 || s.w < 0 || s.c_out < 0 || s.kh < 0 || s.kw < 0 ||
        s.out_h < 0 || s.out_w < 0 || s.pad_h < 0 || s.pad_w < 0) {
        fail(FM_ERR_INVALID_ARGUMENT, what, ": negative size or padding");
    }
    if (s.stride_h < 1 || s.stride_w < 1 || s.dilation_h < 1 || s.dilation_w < 1) {
        fail(FM_ERR_INVALID_ARGUMENT, what, ": stride (", s.stride_h, ", ", s.stride_w,
             ") and dilation (", s.dilation_h, ", ", s.dilation_w, ") must be at least 1");
    }
    if (s.groups < 1 || s.c_in % s.groups != 0 || s.c_out % s.groups != 0) {
        fail(FM_ERR_INVALID_ARGUMENT, what, ": groups ", s.groups, " must divide c_in ", s.c_in,
             " and c_out ", s.c_out);
    }
    Geometry g;
    g.cin_g = s.c_in / s.groups;
    g.cout_g = s.c_out / s.groups;
    g.k = g.cin_g * s.kh * s.kw;
    g.p = s.out_h * s.out_w;
    const int64_t per_image = std::max<int64_t>(1, s.groups * g.k * g.p);
    g.chunk = std::max<int64_t>(1, std::min<int64_t>(s.n, kMaxColumnFloats / per_image));
    return g;
}

// The range [lo, hi) of output positions o whose input o * stride + offset
// lies in [0, size).
void valid_range(int64_t offset, int64_t stride, int64_t size, int64_t out, int64_t &lo,
                 int64_t &hi) {
    lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    hi = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride;
    lo = std::min(lo, out);
    hi = std::clamp(hi, lo, out);
}

// Writes the column rows of input channels [c_begin, c_end) of one image
// plane set `x` (channels of one group): row r = (c * kh + i) * kw + j at
// col + r * row_stride, out_h * out_w values each.
void im2col_rows(const ConvShape &s, const float *x, int64_t c_begin, int64_t c_end, float *col,
                 int64_t row_stride) {
    for (int64_t c = c_begin; c < c_end; ++c) {
        const float *plane = x + c * s.h * s.w;
        for (int64_t i = 0; i < s.kh; ++i) {
            const int64_t off_h = i * s.dilation_h - s.pad_h;
            int64_t y_lo, y_hi;
            valid_range(off_h, s.stride_h, s.h, s.out_h, y_lo, y_hi);
            for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t off_w = j * s.dilation_w - s.pad_w;
                int64_t x_lo, x_hi;
                valid_range(off_w, s.stride_w, s.w, s.out_w, x_lo, x_hi);
                float *row = col + ((c * s.kh + i) * s.kw + j) * row_stride;
                std::fill(row, row + y_lo * s.out_w, 0.0f);
                for (int64_t oy = y_lo; oy < y_hi; ++oy) {
                    const float *in = plane + (oy * s.stride_h + off_h) * s.w + off_w;
                    float *out = row + oy * s.out_w;
                    std::fill(out, out + x_lo, 0.0f);
                    if (s.stride_w == 1) {
                        std::copy(in + x_lo, in + x_hi, out + x_lo);
                    } else {
                        for (int64_t ox = x_lo; ox < x_hi; ++ox) out[ox] = in[ox * s.stride_w];
                    }
                    std::fill(out + x_hi, out + s.out_w, 0.0f);
                }
                std::fill(row + y_hi * s.out_w, row + s.out_h * s.out_w, 0.0f);
            }
        }
    }
}

// im2col of images [first, first + count) into `col`: the block of (image
// i, group g) starts at col + i * image_stride + g * group_stride, rows
// row_stride apart.
void im2col(const ConvShape &s, const Geometry &g, const float *x, int64_t first, int64_t count,
            float *col, int64_t image_stride, int64_t group_stride, int64_t row_stride) {
    const int64_t channels = count * s.c_in;  // one item = one input channel of one image
    const int64_t per_channel = std::max<int64_t>(1, s.kh * s.kw * g.p);
    ThreadPool::global().parallel_for(
        size_t(channels), size_t(std::max<int64_t>(1, kCopyGrainElements / per_channel)),
        [&](size_t begin, size_t end) {
            for (int64_t item = int64_t(begin); item < int64_t(end);) {
                const int64_t image = item / s.c_in, channel = item % s.c_in;
                const int64_t group = channel / g.cin_g, c = channel % g.cin_g;
                // The run of channels of this (image, group) inside [begin, end).
                const int64_t c_end = std::min(g.cin_g, c + (int64_t(end) - item));
                const float *xg = x + ((first + image) * s.c_in + group * g.cin_g) * s.h * s.w;
                im2col_rows(s, xg, c, c_end, col + image * image_stride + group * group_stride,
                            row_stride);
                item += c_end - c;
            }
        });
}

}  // namespace

void conv2d_forward(const ConvShape &s, const float *x, const float *weight, float *y) {
    const Geometry g = check_and_measure("conv2d_forward", s);
    if (s.n == 0 || s.c_out == 0 || g.p == 0) return;
    // Column layout [image][group][k][p]: each group's block is the B of a
    // matmul with the image as batch.
    std::vector<float> col(size_t(g.chunk * s.groups * g.k * g.p));
    for (int64_t first = 0; first < s.n; first += g.chunk) {
        const int64_t count = std::min(g.chunk, s.n - first);
        im2col(s, g, x, first, count, col.data(), s.groups * g.k * g.p, g.k * g.p, g.p);
        for (int64_t group = 0; group < s.groups; ++group) {
            MatmulShape m;
            m.batch = count;
            m.m = g.cout_g;
            m.n = g.p;
            m.k = g.k;
            m.a_batch_stride = 0;
            m.b_batch_stride = s.groups * g.k * g.p;
            m.c_batch_stride = s.c_out * g.p;
            matmul(m, weight + group * g.cout_g * g.k, col.data() + group * g.k * g.p,
                   y + (first * s.c_out + group * g.cout_g) * g.p);
        }
    }
}

void conv2d_backward_input(const ConvShape &s, const float *dy, const float *weight, float *dx) {
    const Geometry g = check_and_measure("conv2d_backward_input", s);
    const int64_t plane = s.h * s.w;
    if (s.n == 0 || s.c_in == 0 || plane == 0) return;
    if (g.p == 0 || g.cout_g == 0 || s.kh == 0 || s.kw == 0) {
        std::fill_n(dx, s.n * s.c_in * plane, 0.0f);
        return;
    }
    // dcol = W_g^T dy_g, layout [image][group][k][p] as in the forward pass.
    std::vector<float> dcol(size_t(g.chunk * s.groups * g.k * g.p));
    const int64_t image_stride = s.groups * g.k * g.p;
    for (int64_t first = 0; first < s.n; first += g.chunk) {
        const int64_t count = std::min(g.chunk, s.n - first);
        for (int64_t group = 0; group < s.groups; ++group) {
            MatmulShape m;
            m.batch = count;
            m.m = g.k;
            m.n = g.p;
            m.k = g.cout_g;
            m.transpose_a = true;  // the weight block is stored cout_g x k
            m.a_batch_stride = 0;
            m.b_batch_stride = s.c_out * g.p;
            m.c_batch_stride = image_stride;
            matmul(m, weight + group * g.cout_g * g.k, dy + (first * s.c_out + group * g.cout_g) * g.p,
                   dcol.data() + group * g.k * g.p);
        }
        // col2im: one task per dx plane, which adds its kh * kw rows into it in
        // a fixed order, so no two tasks write the same element.
        const int64_t per_plane = std::max<int64_t>(1, s.kh * s.kw * g.p);
        ThreadPool::global().parallel_for(
            size_t(count * s.c_in), size_t(std::max<int64_t>(1, kCopyGrainElements / per_plane)),
            [&](size_t begin, size_t end) {
                for (size_t item = begin; item < end; ++item) {
                    const int64_t image = int64_t(item) / s.c_in, channel = int64_t(item) % s.c_in;
                    const int64_t group = channel / g.cin_g, c = channel % g.cin_g;
                    float *out = dx + ((first + image) * s.c_in + channel) * plane;
                    std::fill(out, out + plane, 0.0f);
                    const float *rows = dcol.data() + image * image_stride + group * g.k * g.p;
                    for (int64_t i = 0; i < s.kh; ++i) {
                        const int64_t off_h = i * s.dilation_h - s.pad_h;
                        int64_t y_lo, y_hi;
                        valid_range(off_h, s.stride_h, s.h, s.out_h, y_lo, y_hi);
                        for (int64_t j = 0; j < s.kw; ++j) {
                            const int64_t off_w = j * s.dilation_w - s.pad_w;
                            int64_t x_lo, x_hi;
                            valid_range(off_w, s.stride_w, s.w, s.out_w, x_lo, x_hi);
                            const float *row = rows + ((c * s.kh + i) * s.kw + j) * g.p;
                            for (int64_t oy = y_lo; oy < y_hi; ++oy) {
                                float *o = out + (oy * s.stride_h + off_h) * s.w + off_w;
                                const float *r = row + oy * s.out_w;
                                for (int64_t ox = x_lo; ox < x_hi; ++ox) o[ox * s.stride_w] += r[ox];
                            }
                        }
                    }
                }
            });
    }
}

void conv2d_backward_weight(const ConvShape &s, const float *x, const float *dy, float *dweight) {
    const Geometry g = check_and_measure("conv2d_backward_weight", s);
    const int64_t weight_size = s.c_out * g.k;
    if (weight_size == 0) return;
    if (s.n == 0 || g.p == 0) {
        std::fill_n(dweight, weight_size, 0.0f);
        return;
    }
    // Per chunk and group: dW_g (cout_g x k) = dy_g (cout_g x count*p) *
    // col_g^T, with col_g stored k x count*p, so matmul's k loop runs over
    // the chunk's images in order. Layouts: col [group][k][count*p], dy
    // packed [group][cout_g][count*p].
    const int64_t cols = g.chunk * g.p;
    std::vector<float> col(size_t(s.groups * g.k * cols));
    std::vector<float> dy_packed(size_t(s.c_out * cols));
    std::vector<float> partial(s.n > g.chunk ? size_t(weight_size) : 0);
    for (int64_t first = 0; first < s.n; first += g.chunk) {
        const int64_t count = std::min(g.chunk, s.n - first);
        const int64_t width = count * g.p;  // the last chunk may be narrower
        im2col(s, g, x, first, count, col.data(), g.p, g.k * width, width);
        for (int64_t image = 0; image < count; ++image) {
            for (int64_t o = 0; o < s.c_out; ++o) {
                const float *src = dy + ((first + image) * s.c_out + o) * g.p;
                std::copy(src, src + g.p, dy_packed.data() + o * width + image * g.p);
            }
        }
        MatmulShape m;
        m.batch = s.groups;
        m.m = g.cout_g;
        m.n = g.k;
        m.k = width;
        m.transpose_b = true;
        m.a_batch_stride = g.cout_g * width;
        m.b_batch_stride = g.k * width;
        m.c_batch_stride = g.cout_g * g.k;
        float *target = first == 0 ? dweight : partial.data();
        matmul(m, dy_packed.data(), col.data(), target);
        if (first != 0) {
            for (int64_t i = 0; i < weight_size; ++i) dweight[i] += partial[size_t(i)];
        }
    }
}

}  // namespace fm::cpu
