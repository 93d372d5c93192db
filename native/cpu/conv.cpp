// 2-D convolution (NCHW) on the packed GEMM of matmul.cpp (gemm.h), with
// the im2col matrix never materialised: at stride 1 the GEMM reads a
// zero-bordered copy of the image in place (row r of col is the padded
// plane shifted by r's tap: gemm::multiply_indirect); otherwise its
// B-packing step builds each KC x NB slice of col straight from the image.
// Either way the image stays in cache and col costs no memory traffic.
//
// - forward: y_n[group] (cout_g x P) = W_g (cout_g x K) * col_n (K x P),
//   one task per (image, group, block of output positions); optionally
//   + bias and per-channel sums of the result, while the block is in cache.
// - input gradient, stride 1: a forward convolution of dy with the
//   flipped, transposed kernel (padding d * (k - 1) - pad); other strides:
//   dcol = W^T dy through matmul, then col2im.
// - weight gradient: dW_g (cout_g x K) = sum over images of dy_n (cout_g x P)
//   * col_n^T (P x K), on the GEMM (both operands transposed while packing,
//   col^T straight from the padded image at stride 1) or, for few output
//   channels, by dot-product tiles (gemm::dot_tile: both
//   operands contiguous in P, no packing); the images split into fixed
//   parts (from the batch size only), each part summed over its images in
//   order, the parts then added in order.
//
// Determinism: every split depends on the shapes only, and every sum runs
// in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "error.h"
#include "elementwise.h"
#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

// The strided input gradient's column buffer (one chunk of images) stays
// below 64 MiB whatever the batch; a single image may exceed it.
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

// A run of output positions within one output row: positions
// [j, j + length) are (oy, ox .. ox + length), written at out + offset.
struct Segment {
    int64_t oy, ox, length, offset;
};

// The runs of output positions [begin, end), the one at position j written
// at `place(j)` (which must be contiguous within a run).
template <class Place>
void segments(const ConvShape &s, int64_t begin, int64_t end, int64_t max_run, Place place,
              std::vector<Segment> &out) {
    out.clear();
    for (int64_t j = begin; j < end;) {
        const int64_t oy = j / s.out_w, ox = j % s.out_w;
        const int64_t run = std::min({s.out_w - ox, end - j, max_run - (j - begin) % max_run});
        out.push_back(Segment{oy, ox, run, place(j)});
        j += run;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
// out[t] = in[2 t] for t < n, 16 at a time with AVX-512; reads stay below
// in + 2 n (the caller's row holds them).
__attribute__((target("avx512f"))) int64_t take_even_avx512(const float *in, int64_t n, float *out) {
    alignas(64) static const int32_t even[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const __m512i index = _mm512_load_si512(even);
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) {
        const __m512 lo = _mm512_loadu_ps(in + 2 * t), hi = _mm512_loadu_ps(in + 2 * t + 16);
        _mm512_storeu_ps(out + t, _mm512_permutex2var_ps(lo, index, hi));
    }
    return t;
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// For each of `rows` rows of n floats (row r at in + r * in_stride):
// even[t] = in[2 t], odd[t] = in[2 t + 1] (even and odd advancing by
// out_stride a row), 16 pairs at a time; masked loads and stores touch
// nothing past a row's n elements.
__attribute__((target("avx512f"))) void split_even_odd_avx512(const float *in, int64_t n, int64_t rows,
                                                              int64_t in_stride, float *even, float *odd,
                                                              int64_t out_stride) {
    alignas(64) static const int32_t even_index[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    alignas(64) static const int32_t odd_index[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    const __m512i e = _mm512_load_si512(even_index), o = _mm512_load_si512(odd_index);
    auto first = [](int64_t count) {  // a mask of the first `count` (clamped to [0, 16]) lanes
        return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
    };
    for (int64_t r = 0; r < rows; ++r, in += in_stride, even += out_stride, odd += out_stride) {
        for (int64_t i = 0; i < n; i += 32) {
            const int64_t left = n - i;
            const __m512 lo = _mm512_maskz_loadu_ps(first(left), in + i);
            const __m512 hi = _mm512_maskz_loadu_ps(first(left - 16), in + i + 16);
            _mm512_mask_storeu_ps(even + i / 2, first((left + 1) / 2), _mm512_permutex2var_ps(lo, e, hi));
            _mm512_mask_storeu_ps(odd + i / 2, first(left / 2), _mm512_permutex2var_ps(lo, o, hi));
        }
    }
}
#endif

// split_even_odd_avx512's contract, on any CPU.
void split_even_odd(const float *in, int64_t n, int64_t rows, int64_t in_stride, float *even, float *odd,
                    int64_t out_stride) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx512_kernels()) return split_even_odd_avx512(in, n, rows, in_stride, even, odd, out_stride);
#endif
    for (int64_t r = 0; r < rows; ++r) {
        const float *src = in + r * in_stride;
        float *e = even + r * out_stride, *o = odd + r * out_stride;
        for (int64_t t = 0; 2 * t < n; ++t) e[t] = src[2 * t];
        for (int64_t t = 0; 2 * t + 1 < n; ++t) o[t] = src[2 * t + 1];
    }
}

// out[t] = in[2 t] for t < n (stride-2 convolutions).
void take_even(const float *in, int64_t n, float *out) {
    int64_t t = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx512_kernels()) t = take_even_avx512(in, n, out);
#endif
    for (; t < n; ++t) out[t] = in[2 * t];
}

// A group's channels with a zero border, each padded row stored as its
// stride_w phases (padded columns j, j + s, j + 2 s, ... for j < s), so
// that at any stride the input of a run of consecutive output columns is
// contiguous for every tap: row r = (c, i, j) of the column matrix at
// output position (oy, ox) is element offset(r) + position(oy, ox). At
// stride 1 this is the plain zero-bordered image.
struct PhasedImage {
    int64_t hp, wp;  // padded height and width
    int64_t phase;   // floats per phase of a row: ceil(wp / stride_w)
    int64_t row;     // floats per row: stride_w * phase
    bool fits;       // every tap of every output lies in the padded image

    int64_t floats(int64_t channels) const { return channels * hp * row; }
    int64_t position(const ConvShape &s, int64_t oy, int64_t ox) const { return oy * s.stride_h * row + ox; }
    int64_t offset(const ConvShape &s, int64_t r) const {
        const int64_t c = r / (s.kh * s.kw), ki = r / s.kw % s.kh, kj = r % s.kw;
        const int64_t col = kj * s.dilation_w;
        return c * hp * row + ki * s.dilation_h * row + col % s.stride_w * phase + col / s.stride_w;
    }
};

PhasedImage phased_image(const ConvShape &s) {
    PhasedImage p;
    p.hp = s.h + 2 * s.pad_h;
    p.wp = s.w + 2 * s.pad_w;
    p.phase = (p.wp + s.stride_w - 1) / s.stride_w;
    p.row = s.stride_w * p.phase;
    p.fits = s.out_h > 0 && s.out_w > 0 && (s.out_h - 1) * s.stride_h + (s.kh - 1) * s.dilation_h < p.hp &&
             (s.out_w - 1) * s.stride_w + (s.kw - 1) * s.dilation_w < p.wp;
    return p;
}

// Writes `channels` planes of x (h x w each) into out in the PhasedImage
// layout, borders zero.
void fill_phased(const ConvShape &s, const PhasedImage &p, int64_t channels, const float *x, float *out) {
    for (int64_t c = 0; c < channels; ++c) {
        const float *plane = x + c * s.h * s.w;
        float *first_row = out + (c * p.hp + s.pad_h) * p.row;
        // Zeros where no input lands: the border rows, and in each row the
        // border columns (at stride 1) or, more simply, the whole row first.
        std::fill(out + c * p.hp * p.row, first_row, 0.0f);
        std::fill(first_row + s.h * p.row, out + (c + 1) * p.hp * p.row, 0.0f);
        for (int64_t iy = 0; iy < s.h; ++iy) {
            float *row = first_row + iy * p.row;
            if (s.stride_w == 1) {
                std::fill(row, row + s.pad_w, 0.0f);
                std::fill(row + s.pad_w + s.w, row + p.row, 0.0f);
            } else {
                std::fill(row, row + p.row, 0.0f);
            }
        }
        if (s.stride_w == 2) {  // even input columns land in phase pad_w % 2, odd ones in the other
            float *even = first_row + s.pad_w % 2 * p.phase + s.pad_w / 2;
            float *odd = first_row + (s.pad_w + 1) % 2 * p.phase + (s.pad_w + 1) / 2;
            split_even_odd(plane, s.w, s.h, s.w, even, odd, p.row);
            continue;
        }
        if (s.stride_w == 1) {
            copy_rows(first_row + s.pad_w, p.row, plane, s.w, s.h, s.w);
            continue;
        }
        for (int64_t iy = 0; iy < s.h; ++iy) {
            const float *src = plane + iy * s.w;
            float *dst = first_row + iy * p.row;
            // Input column ix is padded column ix + pad_w.
            for (int64_t phase = 0; phase < s.stride_w; ++phase) {
                const int64_t ix = (phase - s.pad_w % s.stride_w + s.stride_w) % s.stride_w;  // first ix of this phase
                float *d = dst + phase * p.phase + (ix + s.pad_w) / s.stride_w;
                for (int64_t t = 0; ix + t * s.stride_w < s.w; ++t) d[t] = src[ix + t * s.stride_w];
            }
        }
    }
}

// For row r = (c * kh + i) * kw + j of the column matrix of the channels
// `x` of one image and group: writes col[r][positions of each segment] to
// out + segment.offset + t * step (t = 0 .. length).
void im2col_row(const ConvShape &s, const float *x, int64_t r, const std::vector<Segment> &runs, float *out,
                int64_t step) {
    const int64_t c = r / (s.kh * s.kw), ki = r / s.kw % s.kh, kj = r % s.kw;
    const float *plane = x + c * s.h * s.w;
    const int64_t off_h = ki * s.dilation_h - s.pad_h, off_w = kj * s.dilation_w - s.pad_w;
    int64_t x_lo, x_hi;
    valid_range(off_w, s.stride_w, s.w, s.out_w, x_lo, x_hi);
    for (const Segment &run : runs) {
        float *dst = out + run.offset;
        const int64_t iy = run.oy * s.stride_h + off_h;
        const int64_t end = run.ox + run.length;
        const int64_t lo = iy < 0 || iy >= s.h ? end : std::clamp(x_lo, run.ox, end);
        const int64_t hi = std::clamp(x_hi, lo, end);
        for (int64_t ox = run.ox; ox < lo; ++ox) dst[(ox - run.ox) * step] = 0.0f;
        const float *in = plane + iy * s.w + off_w;
        if (step == 1 && s.stride_w == 1) {
            std::copy(in + lo, in + hi, dst + (lo - run.ox));
        } else if (step == 1 && s.stride_w == 2 && hi > lo) {
            // The last tap read, in[2 (hi - 1)], is inside the row; a vector
            // of 16 outputs reads 32 inputs, so keep one output in reserve.
            const int64_t n = hi - lo - 1;
            take_even(in + 2 * lo, n, dst + (lo - run.ox));
            dst[hi - 1 - run.ox] = in[2 * (hi - 1)];
        } else {
            for (int64_t ox = lo; ox < hi; ++ox) dst[(ox - run.ox) * step] = in[ox * s.stride_w];
        }
        for (int64_t ox = hi; ox < end; ++ox) dst[(ox - run.ox) * step] = 0.0f;
    }
}

// Output positions per task: as many as the cache allows, halved while
// there are too few tasks to share out and each is still worth one.
int64_t column_block(int64_t columns, int64_t other_tasks, double flops_per_column) {
    const int64_t nr = gemm::tile_cols();
    int64_t block = std::min<int64_t>((columns + nr - 1) / nr * nr, 512);
    auto tasks = [&] { return other_tasks * ((columns + block - 1) / block); };
    while (tasks() < 8 && block > nr && flops_per_column * double(block / 2) >= 1e6) {
        block = (block / 2 + nr - 1) / nr * nr;
    }
    return block;
}

// The images of a weight gradient fall in at most kParts parts of equal
// size (the batch size alone decides), each summed by its own tasks into
// its own partial dW; the parts are then added in order.
constexpr int64_t kParts = 16;

// The partial weight gradients of the parts of a batch: each part's
// tasks write all of its own (so the memory starts uninitialised), and the
// parts are then added in order. With one part, dweight itself.
class PartialGradients {
public:
    PartialGradients(int64_t parts, int64_t size)
        : parts_(parts), size_(size), data_(parts > 1 ? new float[size_t(parts * size)] : nullptr) {}
    float *of(int64_t part, float *dweight) const { return parts_ > 1 ? data_.get() + part * size_ : dweight; }
    void add_into(float *dweight) const {
        if (parts_ <= 1) return;
        ThreadPool::global().parallel_for(size_t(size_), 4096, [&](size_t begin, size_t end) {
            for (size_t i = begin; i < end; ++i) {
                float sum = data_[i];
                for (int64_t part = 1; part < parts_; ++part) sum += data_[size_t(part * size_) + i];
                dweight[i] = sum;
            }
        });
    }

private:
    int64_t parts_, size_;
    std::unique_ptr<float[]> data_;
};

// The weight gradient with col read in place, for ISAs with a gathered-A
// micro-kernel: dW_g^T (K x cout_g) = the sum over images of col_n (K x P)
// dy_n^T (P x cout_g), the rows of col straight from the padded
// (phase-split) image, dy_n^T packed a depth block at a time (dy's rows
// are its columns, so this is pack_rows_as_b). No col^T panels, which cost
// as much as the arithmetic when c_out is small. The same products in the
// same order (images, then positions) as backward_weight_gemm: the same bits.
void backward_weight_gathered(const ConvShape &s, const Geometry &g, const PhasedImage &layout,
                              gemm::GatheredAKernel kernel, const float *x, const float *dy, float *dweight) {
    const int64_t weight_size = s.c_out * g.k;
    const int64_t per_part = (s.n + kParts - 1) / kParts, parts = (s.n + per_part - 1) / per_part;
    const PartialGradients partial(parts, weight_size);
    const int64_t mr = gemm::tile_rows(), nr = gemm::tile_cols();
    const int64_t out_tiles = (g.cout_g + nr - 1) / nr, ldct = out_tiles * nr;
    const int64_t block = std::min<int64_t>((g.k + mr - 1) / mr * mr, 512);
    const int64_t blocks = (g.k + block - 1) / block;
    std::vector<int64_t> offsets(size_t(g.k)), pos(size_t(g.p));
    for (int64_t r = 0; r < g.k; ++r) offsets[size_t(r)] = layout.offset(s, r);
    for (int64_t p = 0; p < g.p; ++p) pos[size_t(p)] = layout.position(s, p / s.out_w, p % s.out_w);
    ThreadPool::global().parallel_for(size_t(parts * s.groups * blocks), 1, [&](size_t begin, size_t end) {
        thread_local std::vector<float> padded, panels, ct;
        panels.resize(size_t(out_tiles * std::min(g.p, gemm::kDepthBlock) * nr));
        ct.resize(size_t(block * ldct));
        for (size_t item = begin; item < end; ++item) {
            const int64_t part = int64_t(item) / (s.groups * blocks);
            const int64_t group = int64_t(item) / blocks % s.groups, j0 = int64_t(item) % blocks * block;
            const int64_t rows = std::min(block, g.k - j0);
            const int64_t first = part * per_part, last = std::min(s.n, first + per_part);
            for (int64_t image = first; image < last; ++image) {
                padded.resize(size_t(layout.floats(g.cin_g)));
                fill_phased(s, layout, g.cin_g, x + (image * s.c_in + group * g.cin_g) * s.h * s.w, padded.data());
                const float *dyg = dy + (image * s.c_out + group * g.cout_g) * g.p;
                for (int64_t p0 = 0; p0 < g.p; p0 += gemm::kDepthBlock) {
                    const int64_t kc = std::min(gemm::kDepthBlock, g.p - p0);
                    for (int64_t t = 0; t < out_tiles; ++t) {
                        const float *dy_rows[64];
                        const int64_t count = std::min(nr, g.cout_g - t * nr);
                        for (int64_t j = 0; j < count; ++j) dy_rows[j] = dyg + (t * nr + j) * g.p + p0;
                        gemm::pack_rows_as_b(dy_rows, count, kc, panels.data() + t * kc * nr);
                    }
                    const bool load = image > first || p0 > 0;
                    for (int64_t r0 = 0; r0 < rows; r0 += mr) {
                        // Rows past the block's end repeat its first row; their results are never read.
                        const float *col_rows[16];
                        for (int64_t i = 0; i < mr; ++i) {
                            col_rows[i] = padded.data() + offsets[size_t(j0 + (r0 + i < rows ? r0 + i : 0))];
                        }
                        for (int64_t t = 0; t < out_tiles; ++t) {
                            kernel(kc, col_rows, pos.data() + p0, panels.data() + t * kc * nr,
                                   ct.data() + r0 * ldct + t * nr, ldct, load);
                        }
                    }
                }
            }
            float *target = partial.of(part, dweight) + group * g.cout_g * g.k;
            for (int64_t o = 0; o < g.cout_g; ++o) {
                for (int64_t r = 0; r < rows; ++r) target[o * g.k + j0 + r] = ct[size_t(r * ldct + o)];
            }
        }
    });
    partial.add_into(dweight);
}

// The weight gradient on the packed GEMM: A = dy_n packed per image, B =
// col_n^T packed straight from the image (a transposing copy).
void backward_weight_gemm(const ConvShape &s, const Geometry &g, const float *x, const float *dy, float *dweight) {
    const int64_t weight_size = s.c_out * g.k;
    // The images in at most kParts parts of equal size (the batch size alone
    // decides), each summed by its own tasks into its own partial dW.
    const int64_t per_part = (s.n + kParts - 1) / kParts, parts = (s.n + per_part - 1) / per_part;
    const PartialGradients partial(parts, weight_size);
    const int64_t nr = gemm::tile_cols();
    const int64_t block = column_block(g.k, parts * s.groups, 2.0 * double(g.cout_g * g.p * per_part));
    const int64_t blocks = (g.k + block - 1) / block;
    // When the padded image covers every tap, col^T is packed straight
    // from a zero-bordered (phase-split) copy of the image, no im2col rows.
    const PhasedImage layout = phased_image(s);
    const bool phased = layout.fits;
    std::vector<int64_t> offsets, pos;
    if (phased) {
        offsets.resize(size_t(g.k));
        for (int64_t r = 0; r < g.k; ++r) offsets[size_t(r)] = layout.offset(s, r);
        pos.resize(size_t(g.p));
        for (int64_t p = 0; p < g.p; ++p) pos[size_t(p)] = layout.position(s, p / s.out_w, p % s.out_w);
    }
    ThreadPool::global().parallel_for(size_t(parts * s.groups * blocks), 1, [&](size_t begin, size_t end) {
        thread_local std::vector<float> a_buffer;
        const size_t a_floats = gemm::packed_a_size(g.cout_g, g.p);
        if (a_buffer.size() < a_floats) a_buffer.resize(a_floats);
        std::vector<Segment> runs;
        std::vector<float> rows;
        thread_local std::vector<float> padded;
        for (size_t item = begin; item < end; ++item) {
            const int64_t part = int64_t(item) / (s.groups * blocks);
            const int64_t group = int64_t(item) / blocks % s.groups, j0 = int64_t(item) % blocks * block;
            float *target = partial.of(part, dweight) + group * g.cout_g * g.k;
            const int64_t first = part * per_part, last = std::min(s.n, first + per_part);
            rows.resize(size_t(nr * std::min(g.p, gemm::kDepthBlock)));
            for (int64_t image = first; image < last; ++image) {
                const float *xg = x + (image * s.c_in + group * g.cin_g) * s.h * s.w;
                gemm::pack_a(dy + (image * s.c_out + group * g.cout_g) * g.p, g.p, 1, g.cout_g, g.p, a_buffer.data());
                if (phased) {
                    // Row r of col at position p is padded[offsets[r] + pos[p]].
                    padded.resize(size_t(layout.floats(g.cin_g)));
                    fill_phased(s, layout, g.cin_g, xg, padded.data());
                }
                // op(B) = col^T: the k index is the output position, the
                // column index the (channel, tap) row of col.
                gemm::multiply(
                    a_buffer.data(), g.p, 0, g.cout_g, j0, std::min(block, g.k - j0),
                    [&](int64_t p0, int64_t kc, int64_t c0, int64_t cols, float *out) {
                        if (phased) {
                            for (int64_t q = 0; q < cols; q += nr) {
                                const float *row_at[64];
                                const int64_t width = std::min(nr, cols - q);
                                for (int64_t r = 0; r < width; ++r) row_at[r] = padded.data() + offsets[size_t(c0 + q + r)];
                                gemm::pack_gathered_as_b(row_at, pos.data() + p0, width, kc, out + q * kc);
                            }
                            return;
                        }
                        // Each panel: its nr rows of col over positions
                        // [p0, p0 + kc), built contiguous, then transposed.
                        segments(s, p0, p0 + kc, kc, [&](int64_t j) { return j - p0; }, runs);
                        for (int64_t q = 0; q < cols; q += nr) {
                            const int64_t width = std::min(nr, cols - q);
                            const float *row_at[64];
                            for (int64_t r = 0; r < width; ++r) {
                                float *row = rows.data() + r * kc;
                                im2col_row(s, xg, c0 + q + r, runs, row, 1);
                                row_at[r] = row;
                            }
                            gemm::pack_rows_as_b(row_at, width, kc, out + q * kc);
                        }
                    },
                    target, g.k, image > first);
            }
        }
    });
    partial.add_into(dweight);
}

// The weight gradient by dot-product tiles.
void backward_weight_dot(const ConvShape &s, const Geometry &g, const float *x, const float *dy, float *dweight) {
    const int64_t weight_size = s.c_out * g.k;
    // dW_g (cout_g x K) = sum over images of dy_n (cout_g x P) * col_n^T:
    // both operands have rows contiguous in P, so dot-product tiles
    // (gemm::dot_tile) read them as they are: dy in place (or copied with
    // its rows zero-padded to a multiple of 16 positions), the column rows
    // of a block of K built for every image of a part into a buffer. The
    // images fall in at most kParts parts of equal size (the batch size
    // alone decides), each summed by its own tasks into its own partial dW.
    const int64_t per_part = (s.n + kParts - 1) / kParts, parts = (s.n + per_part - 1) / per_part;
    const int64_t padded = (g.p + gemm::kDotLanes - 1) / gemm::kDotLanes * gemm::kDotLanes;
    const bool pad_dy = padded != g.p;
    // Column rows per task: 16, fewer when K is smaller, more (up to all of
    // K, so each image is unpacked once) while the
    // buffer of a part stays under 256 KiB and the tasks stay at least 8.
    const int64_t tile = gemm::kDotTile;
    int64_t block = std::min<int64_t>((g.k + tile - 1) / tile * tile, 16);
    while (block < g.k && block * 2 * per_part * padded <= (int64_t(1) << 16) &&
           parts * s.groups * ((g.k + block * 2 - 1) / (block * 2)) >= 8) {
        block *= 2;
    }
    const int64_t blocks = (g.k + block - 1) / block;
    const PhasedImage layout = phased_image(s);
    const PartialGradients partial(parts, weight_size);
    ThreadPool::global().parallel_for(size_t(parts * s.groups * blocks), 1, [&](size_t begin, size_t end) {
        thread_local std::vector<float> buffer;
        const size_t col_floats = size_t(per_part * block * padded);
        const size_t dy_floats = pad_dy ? size_t(per_part * g.cout_g * padded) : 0;
        if (buffer.size() < col_floats + dy_floats) buffer.resize(col_floats + dy_floats);
        float *col = buffer.data(), *dy_copy = buffer.data() + col_floats;
        std::vector<Segment> runs;
        segments(s, 0, g.p, g.p, [](int64_t j) { return j; }, runs);
        thread_local std::vector<float> phased;
        for (size_t item = begin; item < end; ++item) {
            const int64_t part = int64_t(item) / (s.groups * blocks);
            const int64_t group = int64_t(item) / blocks % s.groups, r0 = int64_t(item) % blocks * block;
            const int64_t rows = std::min(block, g.k - r0);
            const int64_t first = part * per_part, images = std::min(s.n, first + per_part) - first;
            for (int64_t image = 0; image < images; ++image) {
                const float *xg = x + ((first + image) * s.c_in + group * g.cin_g) * s.h * s.w;
                if (layout.fits) {
                    // A row of col is a copy of one tap's shift of the
                    // padded (phase-split) image, an output row at a time.
                    phased.resize(size_t(layout.floats(g.cin_g)));
                    fill_phased(s, layout, g.cin_g, xg, phased.data());
                }
                for (int64_t r = 0; r < rows; ++r) {
                    float *row = col + (image * block + r) * padded;
                    if (layout.fits) {
                        copy_rows(row, s.out_w, phased.data() + layout.offset(s, r0 + r), layout.position(s, 1, 0),
                                  s.out_h, s.out_w);
                    } else {
                        im2col_row(s, xg, r0 + r, runs, row, 1);
                    }
                    std::fill(row + g.p, row + padded, 0.0f);
                }
            }
            const float *dyg = dy + (first * s.c_out + group * g.cout_g) * g.p;
            int64_t dy_image = s.c_out * g.p;
            if (pad_dy) {
                for (int64_t image = 0; image < images; ++image) {
                    for (int64_t o = 0; o < g.cout_g; ++o) {
                        const float *src = dyg + image * dy_image + o * g.p;
                        float *dst = dy_copy + (image * g.cout_g + o) * padded;
                        std::copy(src, src + g.p, dst);
                        std::fill(dst + g.p, dst + padded, 0.0f);
                    }
                }
                dyg = dy_copy;
                dy_image = g.cout_g * padded;
            }
            const int64_t dy_row = pad_dy ? padded : g.p;
            float *target = partial.of(part, dweight) + group * g.cout_g * g.k;
            for (int64_t o = 0; o < g.cout_g; o += tile) {
                for (int64_t r = 0; r < rows; r += tile) {
                    float *c = target + o * g.k + r0 + r;
                    const int tile_rows = int(std::min(tile, g.cout_g - o)), tile_cols = int(std::min(tile, rows - r));
                    for (int i = 0; i < tile_rows; ++i) std::fill(c + i * g.k, c + i * g.k + tile_cols, 0.0f);
                    gemm::dot_tile(padded, images, dyg + o * dy_row, dy_row, dy_image, col + r * padded, padded,
                                   block * padded, c, g.k, tile_rows, tile_cols);
                }
            }
        }
    });
    partial.add_into(dweight);
}

// The input gradient's phases: input row a * stride + phase (phase <
// stride) receives from kernel row `index` the output row a + shift. One
// dimension at a time (rows, or columns).
struct Tap {
    int64_t index, shift;
};

std::vector<Tap> taps_of(int64_t phase, int64_t stride, int64_t pad, int64_t dilation, int64_t k) {
    std::vector<Tap> taps;
    for (int64_t i = 0; i < k; ++i) {
        const int64_t from = phase + pad - i * dilation;  // output row * stride, less a * stride
        const int64_t rem = (from % stride + stride) % stride;
        if (rem == 0) taps.push_back({i, (from - rem) / stride});
    }
    return taps;
}

// The taps of every row phase (py < stride_h) and column phase (px <
// stride_w): the shape alone decides them.
struct PhaseTaps {
    std::vector<std::vector<Tap>> rows, cols;
};

PhaseTaps phase_taps(const ConvShape &s) {
    PhaseTaps t;
    for (int64_t py = 0; py < s.stride_h; ++py) t.rows.push_back(taps_of(py, s.stride_h, s.pad_h, s.dilation_h, s.kh));
    for (int64_t px = 0; px < s.stride_w; ++px) t.cols.push_back(taps_of(px, s.stride_w, s.pad_w, s.dilation_w, s.kw));
    return t;
}

// A strided input gradient as stride_h x stride_w stride-1 convolutions:
// phase (py, px) of dx (elements dx[a sh + py][b sw + px]) is, for each
// input channel c, the sum over output channels o and the taps (i, j) that
// reach the phase of w[o][c][i][j] dy[o][a + shift_i][b + shift_j]. Each
// phase is one GEMM reading a zero-bordered copy of dy in place (indirect,
// as the forward pass), written to a phase buffer and then spread into dx.
// Needs phases of equal size, rows of a multiple of 8 and planes of a
// multiple of 32 elements, which every ISA's indirect kernel takes (the
// choice must not depend on the ISA: this path rounds differently from the
// column-matrix one); returns false (nothing written) otherwise.
bool backward_input_by_phases(const ConvShape &s, const Geometry &g, const float *dy, const float *weight, float *dx) {
    if (s.h % s.stride_h != 0 || s.w % s.stride_w != 0) return false;
    const int64_t phase_h = s.h / s.stride_h, phase_w = s.w / s.stride_w, phase_p = phase_h * phase_w;
    if (phase_w % 8 != 0 || phase_p % 32 != 0) return false;
    const int64_t run = gemm::indirect_run(phase_w);
    if (run == 0 || phase_p % gemm::tile_cols() != 0) return false;  // kernels wider than any today
    const int64_t phases = s.stride_h * s.stride_w;
    const PhaseTaps taps_by_phase = phase_taps(s);
    const auto &rows = taps_by_phase.rows, &cols = taps_by_phase.cols;
    int64_t pad_y = 0, pad_x = 0;  // the border every shift needs
    for (const auto &list : rows) {
        for (const Tap &t : list) pad_y = std::max({pad_y, -t.shift, phase_h - 1 + t.shift - (s.out_h - 1)});
    }
    for (const auto &list : cols) {
        for (const Tap &t : list) pad_x = std::max({pad_x, -t.shift, phase_w - 1 + t.shift - (s.out_w - 1)});
    }
    // dy as a stride-1 image with that border.
    ConvShape t{};
    t.n = s.n, t.c_in = s.c_out, t.h = s.out_h, t.w = s.out_w, t.kh = 1, t.kw = 1;
    t.stride_h = t.stride_w = 1, t.dilation_h = t.dilation_w = 1, t.pad_h = pad_y, t.pad_w = pad_x;
    t.out_h = t.h + 2 * pad_y, t.out_w = t.w + 2 * pad_x, t.groups = 1;
    const PhasedImage padded_layout = phased_image(t);
    const int64_t row = padded_layout.row, plane = padded_layout.hp * row;
    // Per phase and group: the packed weights (cin_g x depth, depth = cout_g
    // x the phase's taps) and the depth rows' offsets in padded dy.
    struct Phase {
        int64_t depth = 0;
        std::vector<float> packed;  // groups x packed_a_size
        std::vector<int64_t> offsets;
    };
    std::vector<Phase> plan(static_cast<size_t>(phases));
    const int64_t taps = s.kh * s.kw;
    for (int64_t py = 0; py < s.stride_h; ++py) {
        for (int64_t px = 0; px < s.stride_w; ++px) {
            Phase &ph = plan[size_t(py * s.stride_w + px)];
            const auto &ti = rows[size_t(py)], &tj = cols[size_t(px)];
            ph.depth = g.cout_g * int64_t(ti.size() * tj.size());
            if (ph.depth == 0) continue;
            for (int64_t o = 0; o < g.cout_g; ++o) {
                for (const Tap &a : ti) {
                    for (const Tap &b : tj) ph.offsets.push_back(o * plane + (a.shift + pad_y) * row + b.shift + pad_x);
                }
            }
            const size_t group_floats = gemm::packed_a_size(g.cin_g, ph.depth);
            ph.packed.resize(group_floats * size_t(s.groups));
            std::vector<float> matrix(size_t(g.cin_g * ph.depth));
            for (int64_t group = 0; group < s.groups; ++group) {
                for (int64_t c = 0; c < g.cin_g; ++c) {
                    float *out = matrix.data() + c * ph.depth;
                    for (int64_t o = 0; o < g.cout_g; ++o) {
                        const float *w = weight + ((group * g.cout_g + o) * g.cin_g + c) * taps;
                        for (const Tap &a : ti) {
                            for (const Tap &b : tj) *out++ = w[a.index * s.kw + b.index];
                        }
                    }
                }
                gemm::pack_a(matrix.data(), ph.depth, 1, g.cin_g, ph.depth, ph.packed.data() + group * group_floats);
            }
        }
    }
    ThreadPool::global().parallel_for(size_t(s.n * s.groups), 1, [&](size_t begin, size_t end) {
        thread_local std::vector<float> padded, phase_out;
        std::vector<const float *> bases(size_t(phase_p / run));
        phase_out.resize(size_t(g.cin_g * phase_p));
        for (size_t item = begin; item < end; ++item) {
            const int64_t image = int64_t(item) / s.groups, group = int64_t(item) % s.groups;
            padded.resize(size_t(padded_layout.floats(g.cout_g)));
            fill_phased(t, padded_layout, g.cout_g, dy + (image * s.c_out + group * g.cout_g) * g.p, padded.data());
            for (int64_t j = 0; j < phase_p; j += run) {
                bases[size_t(j / run)] = padded.data() + padded_layout.position(t, j / phase_w, j % phase_w);
            }
            float *dxg = dx + (image * s.c_in + group * g.cin_g) * s.h * s.w;
            for (int64_t py = 0; py < s.stride_h; ++py) {
                for (int64_t px = 0; px < s.stride_w; ++px) {
                    const Phase &ph = plan[size_t(py * s.stride_w + px)];
                    if (ph.depth == 0) {
                        std::fill(phase_out.begin(), phase_out.end(), 0.0f);
                    } else {
                        gemm::multiply_indirect(ph.packed.data() + group * gemm::packed_a_size(g.cin_g, ph.depth),
                                                ph.depth, g.cin_g, ph.offsets.data(), bases.data(), run, phase_p,
                                                phase_out.data(), phase_p);
                    }
                    for (int64_t c = 0; c < g.cin_g; ++c) {
                        for (int64_t a = 0; a < phase_h; ++a) {
                            const float *src = phase_out.data() + c * phase_p + a * phase_w;
                            float *dst = dxg + (c * s.h + a * s.stride_h + py) * s.w + px;
                            for (int64_t b = 0; b < phase_w; ++b) dst[b * s.stride_w] = src[b];
                        }
                    }
                }
            }
        }
    });
    return true;
}

}  // namespace

void conv2d_forward(const ConvShape &s, const float *x, const float *weight, float *y) {
    conv2d_forward_bias(s, x, weight, nullptr, y);
}

void conv2d_forward_bias(const ConvShape &s, const float *x, const float *weight, const float *bias, float *y,
                         float *channel_sums, float *variance_sums) {
    if (!channel_sums) variance_sums = nullptr;
    const Geometry g = check_and_measure("conv2d_forward", s);
    if (s.n == 0 || s.c_out == 0 || g.p == 0) return;
    if (g.k == 0) {
        for (int64_t image = 0; image < s.n; ++image) {
            for (int64_t o = 0; o < s.c_out; ++o) {
                std::fill_n(y + (image * s.c_out + o) * g.p, g.p, bias ? 0.0f + bias[o] : 0.0f);
            }
        }
        if (channel_sums) {
            for (int64_t o = 0; o < s.c_out; ++o) {
                double sum = 0;
                for (int64_t image = 0; image < s.n; ++image) sum += sum_run(y + (image * s.c_out + o) * g.p, g.p);
                channel_sums[o] = float(sum);
                if (variance_sums) variance_sums[o] = 0.0f;  // a constant channel
            }
        }
        return;
    }
    const int64_t nr = gemm::tile_cols();
    const size_t group_floats = gemm::packed_a_size(g.cout_g, g.k);
    std::vector<float> packed(group_floats * size_t(s.groups));
    for (int64_t group = 0; group < s.groups; ++group) {
        gemm::pack_a(weight + group * g.cout_g * g.k, g.k, 1, g.cout_g, g.k, packed.data() + group * group_floats);
    }
    // Rows of output a multiple of the indirect kernels' run (half or a
    // quarter of a micro-tile), every tap inside the padded image: the GEMM
    // reads the padded (phase-split) image in place instead of packing
    // im2col slices.
    const int64_t run = gemm::indirect_run(s.out_w);
    const PhasedImage layout = phased_image(s);
    const bool indirect = run > 0 && g.p % nr == 0 && layout.fits;
    static std::atomic<uint64_t> calls{0};
    const uint64_t call = ++calls;
    // Row r of the column matrix starts at offsets[r] in the padded image.
    std::vector<int64_t> offsets(indirect ? size_t(g.k) : 0);
    for (size_t r = 0; r < offsets.size(); ++r) offsets[r] = layout.offset(s, int64_t(r));
    const int64_t block = column_block(g.p, s.n * s.groups, 2.0 * double(g.cout_g * g.k));
    const int64_t blocks = (g.p + block - 1) / block;
    const size_t grain = size_t(std::max<int64_t>(1, int64_t(2e6 / (2.0 * double(g.cout_g * g.k * block)))));
    // Per task and output channel of its group: the sum of its block.
    std::vector<double> partial(channel_sums ? size_t(s.n * s.groups * blocks * g.cout_g) : 0);
    std::vector<double> partial_squares(variance_sums ? partial.size() : 0);
    ThreadPool::global().parallel_for(size_t(s.n * s.groups * blocks), grain, [&](size_t begin, size_t end) {
        std::vector<Segment> runs;
        for (size_t item = begin; item < end; ++item) {
            const int64_t image = int64_t(item) / (s.groups * blocks);
            const int64_t group = int64_t(item) / blocks % s.groups, j0 = int64_t(item) % blocks * block;
            const float *xg = x + (image * s.c_in + group * g.cin_g) * s.h * s.w;
            if (indirect) {
                // The group's channels with a zero border, then the GEMM
                // reads B straight from it: row r = (c, i, j) of the column
                // matrix is the padded plane c shifted by tap (i, j).
                // A thread's next task is often the same image's next block:
                // the copy is kept for it (keyed by this call, image, group).
                thread_local std::vector<float> padded;
                thread_local std::vector<const float *> bases;
                thread_local uint64_t filled_call = 0;
                thread_local int64_t filled_item = -1;
                const int64_t image_group = image * s.groups + group;
                if (filled_call != call || filled_item != image_group) {
                    padded.resize(size_t(layout.floats(g.cin_g)));
                    fill_phased(s, layout, g.cin_g, xg, padded.data());
                    filled_call = call, filled_item = image_group;
                }
                const int64_t cols = std::min(block, g.p - j0);
                bases.resize(size_t(cols / run));
                for (int64_t j = 0; j < cols; j += run) {
                    const int64_t oy = (j0 + j) / s.out_w, ox = (j0 + j) % s.out_w;
                    bases[size_t(j / run)] = padded.data() + layout.position(s, oy, ox);
                }
                gemm::multiply_indirect(packed.data() + group * group_floats, g.k, g.cout_g, offsets.data(),
                                        bases.data(), run, cols, y + (image * s.c_out + group * g.cout_g) * g.p + j0,
                                        g.p);
            } else {
            gemm::multiply(
                packed.data() + group * group_floats, g.k, 0, g.cout_g, j0, std::min(block, g.p - j0),
                [&](int64_t p0, int64_t kc, int64_t first, int64_t cols, float *out) {
                    // Column j of the block goes to panel (j - first) / nr,
                    // slot (j - first) % nr; runs never cross panels.
                    segments(
                        s, first, first + cols, nr,
                        [&](int64_t j) { return (j - first) / nr * nr * kc + (j - first) % nr; }, runs);
                    if (cols % nr) {
                        const int64_t last = cols / nr * nr * kc;
                        for (int64_t r = 0; r < kc; ++r) {
                            std::fill(out + last + r * nr + cols % nr, out + last + (r + 1) * nr, 0.0f);
                        }
                    }
                    for (int64_t r = 0; r < kc; ++r) im2col_row(s, xg, p0 + r, runs, out + r * nr, 1);
                },
                y + (image * s.c_out + group * g.cout_g) * g.p, g.p, false);
            }
            // The epilogue, one pass over each row of the block while it is in
            // cache: + bias, then the row's sum (and sum of squares).
            if (bias || channel_sums) {
                const int64_t cols = std::min(block, g.p - j0);
                for (int64_t o = 0; o < g.cout_g; ++o) {
                    float *row = y + (image * s.c_out + group * g.cout_g + o) * g.p + j0;
                    const size_t at = item * size_t(g.cout_g) + size_t(o);
                    add_and_sum_run(row, cols, bias ? bias[group * g.cout_g + o] : 0.0f, bias != nullptr,
                                    channel_sums ? &partial[at] : nullptr,
                                    variance_sums ? &partial_squares[at] : nullptr);
                }
            }
        }
    });
    if (channel_sums) {  // tasks in order: image, then block
        for (int64_t o = 0; o < s.c_out; ++o) {
            const int64_t group = o / g.cout_g, within = o % g.cout_g;
            double sum = 0, squares = 0;
            for (int64_t image = 0; image < s.n; ++image) {
                for (int64_t b = 0; b < blocks; ++b) {
                    const size_t at = size_t(((image * s.groups + group) * blocks + b) * g.cout_g + within);
                    sum += partial[at];
                    if (variance_sums) squares += partial_squares[at];
                }
            }
            channel_sums[o] = float(sum);
            // Never below zero, as a sum of squares of differences is not.
            if (variance_sums) variance_sums[o] = float(std::max(0.0, squares - sum * sum / double(s.n * g.p)));
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
    // Stride 1: dx is the forward convolution of dy (padding d * (k - 1) -
    // pad) with the kernel flipped in space and transposed in channels,
    // W'[g][c][o][i][j] = W[g][o][c][kh - 1 - i][kw - 1 - j].
    const int64_t flip_pad_h = s.dilation_h * (s.kh - 1) - s.pad_h, flip_pad_w = s.dilation_w * (s.kw - 1) - s.pad_w;
    if (s.stride_h == 1 && s.stride_w == 1 && flip_pad_h >= 0 && flip_pad_w >= 0 &&
        s.out_h == s.h + 2 * s.pad_h - s.dilation_h * (s.kh - 1) &&
        s.out_w == s.w + 2 * s.pad_w - s.dilation_w * (s.kw - 1)) {
        std::vector<float> flipped(size_t(s.c_out * g.k));
        const int64_t taps = s.kh * s.kw;
        for (int64_t group = 0; group < s.groups; ++group) {
            for (int64_t o = 0; o < g.cout_g; ++o) {
                for (int64_t c = 0; c < g.cin_g; ++c) {
                    const float *src = weight + ((group * g.cout_g + o) * g.cin_g + c) * taps;
                    float *dst = flipped.data() + ((group * g.cin_g + c) * g.cout_g + o) * taps;
                    for (int64_t t = 0; t < taps; ++t) dst[t] = src[taps - 1 - t];
                }
            }
        }
        ConvShape t = s;
        t.c_in = s.c_out, t.h = s.out_h, t.w = s.out_w;
        t.c_out = s.c_in, t.pad_h = flip_pad_h, t.pad_w = flip_pad_w;
        t.out_h = s.h, t.out_w = s.w;
        conv2d_forward(t, dy, flipped.data(), dx);
        return;
    }
    if (backward_input_by_phases(s, g, dy, weight, dx)) return;
    // dcol = W_g^T dy_g, layout [image][group][k][p] as in the forward pass
    // (every element written by the matmul, so the buffer needs no zeroing).
    const int64_t image_stride = s.groups * g.k * g.p;
    const std::unique_ptr<float[]> dcol_buffer(new float[size_t(g.chunk * image_stride)]);
    float *dcol = dcol_buffer.get();
    // col2im in gather form: a dx plane splits into stride_h x stride_w
    // phase planes (element (a, b) of phase (py, px) is dx[a sh + py][b sw +
    // px]); each tap (i, j) that reaches a phase adds a shifted window of
    // its dcol row to it, taps in (i, j) order as a scatter would; then
    // the phases are interleaved into the plane. Which taps reach which
    // phase, and with what shift, depends on the shape only.
    const int64_t phase_h = (s.h + s.stride_h - 1) / s.stride_h, phase_w = (s.w + s.stride_w - 1) / s.stride_w;
    const PhaseTaps taps = phase_taps(s);
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
                   dcol + group * g.k * g.p);
        }
        // One task per dx plane, so no two tasks write the same element.
        const int64_t per_plane = std::max<int64_t>(1, s.kh * s.kw * g.p);
        ThreadPool::global().parallel_for(
            size_t(count * s.c_in), size_t(std::max<int64_t>(1, kCopyGrainElements / per_plane)),
            [&](size_t begin, size_t end) {
                thread_local std::vector<float> phase;
                phase.resize(size_t(phase_h * phase_w));
                for (size_t item = begin; item < end; ++item) {
                    const int64_t image = int64_t(item) / s.c_in, channel = int64_t(item) % s.c_in;
                    const int64_t group = channel / g.cin_g, c = channel % g.cin_g;
                    float *out = dx + ((first + image) * s.c_in + channel) * plane;
                    const float *rows = dcol + image * image_stride + group * g.k * g.p;
                    for (int64_t py = 0; py < s.stride_h && py < s.h; ++py) {
                        const int64_t height = (s.h - py + s.stride_h - 1) / s.stride_h;
                        for (int64_t px = 0; px < s.stride_w && px < s.w; ++px) {
                            const int64_t width = (s.w - px + s.stride_w - 1) / s.stride_w;
                            std::fill(phase.begin(), phase.begin() + height * phase_w, 0.0f);
                            for (const Tap &ti : taps.rows[size_t(py)]) {
                                const int64_t a_lo = std::max<int64_t>(0, -ti.shift);
                                const int64_t a_hi = std::min(height, s.out_h - ti.shift);
                                if (a_hi <= a_lo) continue;
                                for (const Tap &tj : taps.cols[size_t(px)]) {
                                    const int64_t b_lo = std::max<int64_t>(0, -tj.shift);
                                    const int64_t b_hi = std::min(width, s.out_w - tj.shift);
                                    if (b_hi <= b_lo) continue;
                                    const float *r = rows + ((c * s.kh + ti.index) * s.kw + tj.index) * g.p +
                                                     (a_lo + ti.shift) * s.out_w + b_lo + tj.shift;
                                    add_rows(phase.data() + a_lo * phase_w + b_lo, phase_w, r, s.out_w, a_hi - a_lo,
                                             b_hi - b_lo);
                                }
                            }
                            for (int64_t a = 0; a < height; ++a) {
                                const float *src = phase.data() + a * phase_w;
                                float *dst = out + (a * s.stride_h + py) * s.w + px;
                                if (s.stride_w == 1) {
                                    std::copy(src, src + width, dst);
                                } else {
                                    for (int64_t b = 0; b < width; ++b) dst[b * s.stride_w] = src[b];
                                }
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
    // Measured on the reference layers (one core): the GEMM, whose packs
    // transpose 16 x 16 blocks in registers, wins wherever it has two or
    // more micro-panels of output channels (cifar conv2 90 against 59
    // GFLOP/s, conv4 105 against 46); the dot tiles win for a single one
    // (cnn64 conv1: 0.63 against 0.89 ms).
    if (g.cout_g <= 8) return backward_weight_dot(s, g, x, dy, dweight);
    // With one micro-tile of output channels (32 on AVX-512) the packed col^T
    // costs as much as the products, and reading col in place wins (cifar
    // conv2 205 -> 255 GFLOP/s, cnn64 conv3 98 -> 119); with more, the
    // packed panels serve several tiles and the two measured even.
    const PhasedImage layout = phased_image(s);
    const gemm::GatheredAKernel kernel = gemm::gathered_a_kernel();
    if (kernel && layout.fits && g.cout_g <= gemm::tile_cols()) {
        return backward_weight_gathered(s, g, layout, kernel, x, dy, dweight);
    }
    return backward_weight_gemm(s, g, x, dy, dweight);
}

}  // namespace fm::cpu
