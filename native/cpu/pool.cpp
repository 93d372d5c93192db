// Max and average pooling, direct loops parallel over (image, channel)
// planes: every output and input-gradient element is written by one task.
#include <algorithm>
#include <limits>

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

}  // namespace

void max_pool2d_forward(const PoolShape &s, const float *x, float *y) {
    if (is_tiling_2x2(s)) {
        for_each_plane("max_pool2d_forward", s, [&](int64_t p) {
            const float *plane = x + p * s.h * s.w;
            float *out = y + p * s.out_h * s.out_w;
            for (int64_t oy = 0; oy < s.out_h; ++oy) {
                const float *r0 = plane + 2 * oy * s.w, *r1 = r0 + s.w;
                for (int64_t ox = 0; ox < s.out_w; ++ox) {
                    const float v[4] = {r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]};
                    out[oy * s.out_w + ox] = v[first_max4(v[0], v[1], v[2], v[3])];
                }
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
            for (int64_t oy = 0; oy < s.out_h; ++oy) {
                const float *r0 = plane + 2 * oy * s.w, *r1 = r0 + s.w;
                float *d0 = out + 2 * oy * s.w, *d1 = d0 + s.w;
                for (int64_t ox = 0; ox < s.out_w; ++ox) {
                    const int at = first_max4(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                    const float g = 0.0f + grad[oy * s.out_w + ox];  // as the general path's 0 += g
                    d0[2 * ox] = at == 0 ? g : 0.0f;
                    d0[2 * ox + 1] = at == 1 ? g : 0.0f;
                    d1[2 * ox] = at == 2 ? g : 0.0f;
                    d1[2 * ox + 1] = at == 3 ? g : 0.0f;
                }
                std::fill(d0 + 2 * s.out_w, d0 + s.w, 0.0f);
                std::fill(d1 + 2 * s.out_w, d1 + s.w, 0.0f);
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
