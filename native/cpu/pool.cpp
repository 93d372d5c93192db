// Max and average pooling, direct loops parallel over (image, channel)
// planes: every output and input-gradient element is written by one task.
#include <algorithm>
#include <limits>

#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {

namespace {

template <class Body>
void for_each_plane(const PoolShape &s, Body body) {
    ThreadPool::global().parallel_for(size_t(s.n * s.c), 1, [&](size_t begin, size_t end) {
        for (size_t p = begin; p < end; ++p) body(int64_t(p));
    });
}

// The first maximum of a window in row-major order, or -1 if the window
// holds only padding.
int64_t window_argmax(const PoolShape &s, const float *plane, int64_t oy, int64_t ox) {
    int64_t best = -1;
    float value = -std::numeric_limits<float>::infinity();
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

// The window's bounds clipped to the input, and the divisor PyTorch uses.
struct Window {
    int64_t y0, y1, x0, x1, divisor;
};

Window average_window(const PoolShape &s, int64_t oy, int64_t ox) {
    int64_t y0 = oy * s.stride_h - s.pad_h, x0 = ox * s.stride_w - s.pad_w;
    int64_t y1 = std::min(y0 + s.kh, s.h + s.pad_h), x1 = std::min(x0 + s.kw, s.w + s.pad_w);
    int64_t padded = (y1 - y0) * (x1 - x0);
    y0 = std::max<int64_t>(y0, 0), x0 = std::max<int64_t>(x0, 0);
    y1 = std::min(y1, s.h), x1 = std::min(x1, s.w);
    int64_t inside = std::max<int64_t>(0, y1 - y0) * std::max<int64_t>(0, x1 - x0);
    return {y0, y1, x0, x1, std::max<int64_t>(1, s.count_include_pad ? padded : inside)};
}

}  // namespace

void max_pool2d_forward(const PoolShape &s, const float *x, float *y) {
    for_each_plane(s, [&](int64_t p) {
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
    for_each_plane(s, [&](int64_t p) {
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
    for_each_plane(s, [&](int64_t p) {
        const float *plane = x + p * s.h * s.w;
        float *out = y + p * s.out_h * s.out_w;
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                Window w = average_window(s, oy, ox);
                double sum = 0;
                for (int64_t iy = w.y0; iy < w.y1; ++iy) {
                    for (int64_t ix = w.x0; ix < w.x1; ++ix) sum += plane[iy * s.w + ix];
                }
                out[oy * s.out_w + ox] = float(sum / double(w.divisor));
            }
        }
    });
}

void avg_pool2d_backward(const PoolShape &s, const float *dy, float *dx) {
    for_each_plane(s, [&](int64_t p) {
        const float *grad = dy + p * s.out_h * s.out_w;
        float *out = dx + p * s.h * s.w;
        std::fill(out, out + s.h * s.w, 0.0f);
        for (int64_t oy = 0; oy < s.out_h; ++oy) {
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                Window w = average_window(s, oy, ox);
                float share = grad[oy * s.out_w + ox] / float(w.divisor);
                for (int64_t iy = w.y0; iy < w.y1; ++iy) {
                    for (int64_t ix = w.x0; ix < w.x1; ++ix) out[iy * s.w + ix] += share;
                }
            }
        }
    });
}

}  // namespace fm::cpu
