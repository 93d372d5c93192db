// Max and average pooling, direct loops parallel over (image, channel)
// planes: every output and input-gradient element is written by one task.
// The common 2 x 2 max pooling has AVX-512 rows, 16 windows at a time,
// with the same window rule and so the same bits.
#include <algorithm>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "error.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {

namespace {

void check(const char *what, const PoolShape &s) {
    if (s.n < 0 || s.c < 0 || s.h < 0 || s.w < 0 || s.out_h < 0 || s.out_w < 0 || s.pad_h < 0 ||
        s.pad_w < 0) {
        fail(FM_ERR_INVALID_ARGUMENT, what, ": negative size or padding");
    }
    if (s.kh < 1 || s.kw < 1 || s.stride_h < 1 || s.stride_w < 1 || s.dilation_h < 1 ||
        s.dilation_w < 1) {
        fail(FM_ERR_INVALID_ARGUMENT, what, ": kernel (", s.kh, ", ", s.kw, "), stride (", s.stride_h,
             ", ", s.stride_w, ") and dilation (", s.dilation_h, ", ", s.dilation_w,
             ") must be at least 1");
    }
}

// One task per group of planes; the grouping depends on the sizes only.
template <class Body>
void for_each_plane(const char *what, const PoolShape &s, Body body) {
    check(what, s);
    const int64_t work = std::max<int64_t>(1, s.out_h * s.out_w * s.kh * s.kw + s.h * s.w);
    const size_t grain = size_t(std::max<int64_t>(1, (int64_t(1) << 15) / work));
    ThreadPool::global().parallel_for(size_t(s.n * s.c), grain, [&](size_t begin, size_t end) {
        for (size_t p = begin; p < end; ++p) body(int64_t(p));
    });
}

// The common 2 x 2 window with stride 2 and no padding or dilation: the
// windows tile the input, so each input element has at most one window.
bool is_tiling_2x2(const PoolShape &s) {
    return s.kh == 2 && s.kw == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 && s.pad_w == 0 &&
           s.dilation_h == 1 && s.dilation_w == 1 && s.out_h * 2 <= s.h && s.out_w * 2 <= s.w;
}

// window_argmax's rule (the first maximum in row-major order, the first NaN
// over any number) for the four taps a b / c d, as a tap index 0..3.
inline int first_max4(float a, float b, float c, float d) {
    int at = 0;
    float best = a;
    const float taps[3] = {b, c, d};
    for (int t = 0; t < 3; ++t) {
        const float v = taps[t];
        const bool wins = v > best || (v != v && best == best);
        at = wins ? t + 1 : at;
        best = wins ? v : best;
    }
    return at;
}

// One output row of 2 x 2 pooling from column `from` on: r0, r1 are the
// window rows, out the outputs (forward), or grad the row's gradient and
// d0, d1 the gradient rows under it (backward).
void max_pool_2x2_row(const float *r0, const float *r1, int64_t from, int64_t out_w, float *out) {
    for (int64_t ox = from; ox < out_w; ++ox) {
        const float v[4] = {r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]};
        out[ox] = v[first_max4(v[0], v[1], v[2], v[3])];
    }
}

void max_pool_2x2_backward_row(const float *r0, const float *r1, const float *grad, int64_t from, int64_t out_w,
                               float *d0, float *d1) {
    for (int64_t ox = from; ox < out_w; ++ox) {
        const int at = first_max4(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
        const float g = 0.0f + grad[ox];  // as the general path's 0 += g
        d0[2 * ox] = at == 0 ? g : 0.0f;
        d0[2 * ox + 1] = at == 1 ? g : 0.0f;
        d1[2 * ox] = at == 2 ? g : 0.0f;
        d1[2 * ox + 1] = at == 3 ? g : 0.0f;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
// AVX-512: 16 windows at a time. Their taps come as four vectors of 16
// floats: the top rows' first and second halves, the bottom rows' too
// (t0, t1, b0, b1; window k's taps are elements 2k, 2k + 1 of t0:t1 and
// b0:b1). Rows of 16 windows or more give a block per 32 columns; rows of
// 8 or 4 windows give a block per 2 or 4 output rows.
struct Block16 {
    __m512 t0, t1, b0, b1;
};

struct Windows16 {
    __m512 best;
    __mmask16 tap[4];
};

__attribute__((target("avx512f"), always_inline)) inline __mmask16 beats(__m512 v, __m512 best) {
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
           (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
}

// first_max4 for 16 windows: the first maximum and which tap holds it.
__attribute__((target("avx512f"), always_inline)) inline Windows16 windows16(const Block16 &b) {
    alignas(64) static const int32_t even[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    alignas(64) static const int32_t odd[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    const __m512i e = _mm512_load_si512(even), o = _mm512_load_si512(odd);
    const __m512 a = _mm512_permutex2var_ps(b.t0, e, b.t1), bb = _mm512_permutex2var_ps(b.t0, o, b.t1);
    const __m512 c = _mm512_permutex2var_ps(b.b0, e, b.b1), d = _mm512_permutex2var_ps(b.b0, o, b.b1);
    const __mmask16 wb = beats(bb, a);
    const __m512 m1 = _mm512_mask_blend_ps(wb, a, bb);
    const __mmask16 wc = beats(c, m1);
    const __m512 m2 = _mm512_mask_blend_ps(wc, m1, c);
    const __mmask16 wd = beats(d, m2);
    Windows16 w;
    w.best = _mm512_mask_blend_ps(wd, m2, d);
    w.tap[3] = wd;
    w.tap[2] = __mmask16(wc & ~wd);
    w.tap[1] = __mmask16(wb & ~wc & ~wd);
    w.tap[0] = __mmask16(~(wb | wc | wd));
    return w;
}

// The gradient under 16 windows, as Block16 lays out their taps.
__attribute__((target("avx512f"), always_inline)) inline Block16 spread_gradient(const Windows16 &w, const float *grad) {
    alignas(64) static const int32_t first_half[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    alignas(64) static const int32_t second_half[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i lo = _mm512_load_si512(first_half), hi = _mm512_load_si512(second_half);
    const __m512 g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_loadu_ps(grad));  // as 0 += g
    const __m512 v0 = _mm512_maskz_mov_ps(w.tap[0], g), v1 = _mm512_maskz_mov_ps(w.tap[1], g);
    const __m512 v2 = _mm512_maskz_mov_ps(w.tap[2], g), v3 = _mm512_maskz_mov_ps(w.tap[3], g);
    return Block16{_mm512_permutex2var_ps(v0, lo, v1), _mm512_permutex2var_ps(v0, hi, v1),
                   _mm512_permutex2var_ps(v2, lo, v3), _mm512_permutex2var_ps(v2, hi, v3)};
}

// 8 floats at `first`, then 8 at `second` (second >= first + 8: both are
// rows of one plane). Masked loads and stores, which touch only the
// elements they keep.
__attribute__((target("avx512f"), always_inline)) inline __m512 load_halves(const float *first, const float *second) {
    return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(0x00FF, first), 0xFF00, second - 8);
}

__attribute__((target("avx512f"), always_inline)) inline void store_halves(__m512 v, float *first, float *second) {
    _mm512_mask_storeu_ps(first, 0x00FF, v);
    _mm512_mask_storeu_ps(second - 8, 0xFF00, v);
}

// Where block `k` of a plane's windows lies: rows of 16 windows or more
// (k counts 16-window steps along output row `oy`), of 8 (output rows
// 2 oy, 2 oy + 1) or of 4 (output rows 4 oy .. 4 oy + 3).
struct BlockPlace {
    const float *t0, *t1, *b0, *b1;  // the first float of each of Block16's vectors
    bool halves;                     // 8 floats each from t0 and t0 + 2 w (and so on)
};

BlockPlace place_block(const float *plane, int64_t w, int64_t out_w, int64_t oy, int64_t t) {
    if (out_w >= 16) {
        const float *r0 = plane + 2 * oy * w + 2 * t, *r1 = r0 + w;
        return {r0, r0 + 16, r1, r1 + 16, false};
    }
    if (out_w == 8) {
        const float *r = plane + 4 * oy * w;
        return {r, r + 2 * w, r + w, r + 3 * w, false};
    }
    const float *r = plane + 8 * oy * w;  // out_w == 4
    return {r, r + 4 * w, r + w, r + 5 * w, true};
}

__attribute__((target("avx512f"), always_inline)) inline Block16 load_block(const BlockPlace &at, int64_t w) {
    if (!at.halves) {
        return {_mm512_loadu_ps(at.t0), _mm512_loadu_ps(at.t1), _mm512_loadu_ps(at.b0), _mm512_loadu_ps(at.b1)};
    }
    return {load_halves(at.t0, at.t0 + 2 * w), load_halves(at.t1, at.t1 + 2 * w), load_halves(at.b0, at.b0 + 2 * w),
            load_halves(at.b1, at.b1 + 2 * w)};
}

// Block16 `v` into `out` where `at` places it in `plane` (out has its layout).
__attribute__((target("avx512f"), always_inline)) inline void store_block(const Block16 &v, const BlockPlace &at,
                                                                        const float *plane, float *out, int64_t w) {
    const int64_t offset[4] = {at.t0 - plane, at.t1 - plane, at.b0 - plane, at.b1 - plane};
    const __m512 parts[4] = {v.t0, v.t1, v.b0, v.b1};
    for (int i = 0; i < 4; ++i) {
        if (at.halves) {
            store_halves(parts[i], out + offset[i], out + offset[i] + 2 * w);
        } else {
            _mm512_storeu_ps(out + offset[i], parts[i]);
        }
    }
}

// Output rows [0, returned) of a plane (whole rows, tails included).
__attribute__((target("avx512f"))) int64_t max_pool_2x2_plane_avx512(const PoolShape &s, const float *plane,
                                                                     float *out) {
    if (s.out_w >= 16) {
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            float *row = out + oy * s.out_w;
            int64_t t = 0;
            for (; t + 16 <= s.out_w; t += 16) {
                _mm512_storeu_ps(row + t, windows16(load_block(place_block(plane, s.w, s.out_w, oy, t), s.w)).best);
            }
            // The tail (rare) in portable code: calling it costs a switch
            // out of AVX-512 state even when there is nothing left to do.
            if (t < s.out_w) max_pool_2x2_row(plane + 2 * oy * s.w, plane + (2 * oy + 1) * s.w, t, s.out_w, row);
        }
        return s.out_h;
    }
    if (s.out_w != 8 && s.out_w != 4) return 0;
    const int64_t rows = 16 / s.out_w, blocks = s.out_h / rows;
    for (int64_t k = 0; k < blocks; ++k) {
        _mm512_storeu_ps(out + 16 * k, windows16(load_block(place_block(plane, s.w, s.out_w, k, 0), s.w)).best);
    }
    return blocks * rows;
}

__attribute__((target("avx512f"))) int64_t max_pool_2x2_backward_plane_avx512(const PoolShape &s, const float *plane,
                                                                              const float *grad, float *out) {
    if (s.out_w >= 16) {
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            int64_t t = 0;
            for (; t + 16 <= s.out_w; t += 16) {
                const BlockPlace at = place_block(plane, s.w, s.out_w, oy, t);
                store_block(spread_gradient(windows16(load_block(at, s.w)), grad + oy * s.out_w + t), at, plane, out, s.w);
            }
            if (t < s.out_w) {
                max_pool_2x2_backward_row(plane + 2 * oy * s.w, plane + (2 * oy + 1) * s.w, grad + oy * s.out_w, t,
                                          s.out_w, out + 2 * oy * s.w, out + (2 * oy + 1) * s.w);
            }
        }
        return s.out_h;
    }
    if (s.out_w != 8 && s.out_w != 4) return 0;
    const int64_t rows = 16 / s.out_w, blocks = s.out_h / rows;
    for (int64_t k = 0; k < blocks; ++k) {
        const BlockPlace at = place_block(plane, s.w, s.out_w, k, 0);
        store_block(spread_gradient(windows16(load_block(at, s.w)), grad + 16 * k), at, plane, out, s.w);
    }
    return blocks * rows;
}
#endif

}  // namespace

void max_pool2d_forward(const PoolShape &s, const float *x, float *y) {
    if (is_tiling_2x2(s)) {
        for_each_plane("max_pool2d_forward", s, [&](int64_t p) {
            const float *plane = x + p * s.h * s.w;
            float *out = y + p * s.out_h * s.out_w;
            int64_t oy = 0;
#if defined(__x86_64__) && defined(__GNUC__)
            if (avx512_kernels()) oy = max_pool_2x2_plane_avx512(s, plane, out);
#endif
            for (; oy < s.out_h; ++oy) {
                max_pool_2x2_row(plane + 2 * oy * s.w, plane + (2 * oy + 1) * s.w, 0, s.out_w, out + oy * s.out_w);
            }
        });
        return;
    }
    for_each_plane("max_pool2d_forward", s, [&](int64_t p) {
        const float *plane = x + p * s.h * s.w;
        float *out = y + p * s.out_h * s.out_w;
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                int64_t at = window_argmax(s, plane, oy, ox);
                out[oy * s.out_w + ox] = at < 0 ? -std::numeric_limits<float>::infinity() : plane[at];
            }
        }
    });
}

void max_pool2d_backward(const PoolShape &s, const float *x, const float *dy, float *dx) {
    if (is_tiling_2x2(s)) {
        for_each_plane("max_pool2d_backward", s, [&](int64_t p) {
            const float *plane = x + p * s.h * s.w;
            const float *grad = dy + p * s.out_h * s.out_w;
            float *out = dx + p * s.h * s.w;
            // Rows and columns no window covers (odd sizes) get no gradient.
            std::fill(out + 2 * s.out_h * s.w, out + s.h * s.w, 0.0f);
            for (int64_t oy = 0; oy < s.out_h && 2 * s.out_w < s.w; ++oy) {
                std::fill(out + 2 * oy * s.w + 2 * s.out_w, out + (2 * oy + 1) * s.w, 0.0f);
                std::fill(out + (2 * oy + 1) * s.w + 2 * s.out_w, out + (2 * oy + 2) * s.w, 0.0f);
            }
            int64_t oy = 0;
#if defined(__x86_64__) && defined(__GNUC__)
            if (avx512_kernels()) oy = max_pool_2x2_backward_plane_avx512(s, plane, grad, out);
#endif
            for (; oy < s.out_h; ++oy) {
                max_pool_2x2_backward_row(plane + 2 * oy * s.w, plane + (2 * oy + 1) * s.w, grad + oy * s.out_w, 0,
                                          s.out_w, out + 2 * oy * s.w, out + (2 * oy + 1) * s.w);
            }
        });
        return;
    }
    for_each_plane("max_pool2d_backward", s, [&](int64_t p) {
        const float *plane = x + p * s.h * s.w;
        const float *grad = dy + p * s.out_h * s.out_w;
        float *out = dx + p * s.h * s.w;
        std::fill(out, out + s.h * s.w, 0.0f);
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                int64_t at = window_argmax(s, plane, oy, ox);
                if (at >= 0) out[at] += grad[oy * s.out_w + ox];
            }
        }
    });
}

void avg_pool2d_forward(const PoolShape &s, const float *x, float *y) {
    for_each_plane("avg_pool2d_forward", s, [&](int64_t p) {
        const float *plane = x + p * s.h * s.w;
        float *out = y + p * s.out_h * s.out_w;
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                const Taps ty = average_taps(oy, s.stride_h, s.pad_h, s.dilation_h, s.kh, s.h);
                const Taps tx = average_taps(ox, s.stride_w, s.pad_w, s.dilation_w, s.kw, s.w);
                double sum = 0;
                for (int64_t i = ty.lo; i < ty.hi; ++i) {
                    const float *row = plane + (ty.first + i * ty.step) * s.w + tx.first;
                    for (int64_t j = tx.lo; j < tx.hi; ++j) sum += row[j * tx.step];
                }
                out[oy * s.out_w + ox] = float(sum / double(average_divisor(s, ty, tx)));
            }
        }
    });
}

void avg_pool2d_backward(const PoolShape &s, const float *dy, float *dx) {
    for_each_plane("avg_pool2d_backward", s, [&](int64_t p) {
        const float *grad = dy + p * s.out_h * s.out_w;
        float *out = dx + p * s.h * s.w;
        std::fill(out, out + s.h * s.w, 0.0f);
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                const Taps ty = average_taps(oy, s.stride_h, s.pad_h, s.dilation_h, s.kh, s.h);
                const Taps tx = average_taps(ox, s.stride_w, s.pad_w, s.dilation_w, s.kw, s.w);
                const float share = grad[oy * s.out_w + ox] / float(average_divisor(s, ty, tx));
                for (int64_t i = ty.lo; i < ty.hi; ++i) {
                    float *row = out + (ty.first + i * ty.step) * s.w + tx.first;
                    for (int64_t j = tx.lo; j < tx.hi; ++j) row[j * tx.step] += share;
                }
            }
        }
    });
}

}  // namespace fm::cpu
