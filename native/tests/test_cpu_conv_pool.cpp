// Checks the convolution and pooling kernels of native/cpu/kernels.h against
// naive float64 loops written here (none calls a kernel), over many random
// shapes: batch 1-3, non-square images and kernels, stride 1-3, padding
// 0-2, dilation 1-2, groups 1/2/4 and depthwise, size-1 dims.
//
// Tolerances:
// - conv (all three) and avg pool: |got - ref| <= 1e-5 * S, where S is the
//   sum of the absolute values of the terms summed into that element (in
//   float, a sum that cancels has no relative accuracy: its error bound is
//   eps * terms * S). An element with no terms must be exactly 0.
// - max pool forward and backward: bit-exact (a max is a copy; each dx
//   element gets the dy of the windows whose first maximum it is, and the
//   test uses values whose sums are exact in float).
// - finite differences (tiny shapes): every backward kernel against central
//   differences of the float64 forward reference, |got - fd| <= 1e-5 * S
//   + 1e-9 (the second term bounds the rounding of the difference quotient).
//
// Every output's bits go into a checksum printed as `checksum <hex>`; CTest
// compares it between runs with 1 and 3 threads, which must be identical.
// `test_cpu_conv_pool --bench` instead times one conv2d_forward.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "error.h"
#include "kernel_test_support.h"
#include "kernels.h"
#include "thread_pool.h"

namespace {

using fm::cpu::ConvShape;
using fm::cpu::PoolShape;

using namespace kernel_test;

// ---- Comparisons -------------------------------------------------------------

constexpr double kRelTol = 1e-5;

// |got - ref| <= kRelTol * scale[i] + slack (scale: sum of |terms|).
void expect_close(const Output<float> &got, const std::vector<double> &ref,
                  const std::vector<double> &scale, double slack = 0.0) {
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = double(got[i]);
        if (!(std::fabs(g - ref[i]) <= kRelTol * scale[i] + slack) && ++bad <= 3) {
            std::fprintf(stderr, "  [%zu] got %.9g, want %.9g (scale %.3g)\n", i, g, ref[i], scale[i]);
        }
    }
    CHECK(got.size() == ref.size());
    CHECK(bad == 0);
}

void expect_exact(const Output<float> &got, const std::vector<double> &ref) {
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const float want = float(ref[i]);
        if (std::memcmp(&want, got.data() + i, sizeof want) != 0 && ++bad <= 3) {
            std::fprintf(stderr, "  [%zu] got %.9g, want %.9g\n", i, double(got[i]), ref[i]);
        }
    }
    CHECK(bad == 0);
}

std::vector<double> to_double(const std::vector<float> &v) { return {v.begin(), v.end()}; }

// ---- Convolution reference ----------------------------------------------------

int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;  // C++ division truncates toward 0
}

std::string conv_str(const ConvShape &s) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "n%" PRId64 " cin%" PRId64 " %" PRId64 "x%" PRId64 " cout%" PRId64 " k%" PRId64
                  "x%" PRId64 " s%" PRId64 ",%" PRId64 " p%" PRId64 ",%" PRId64 " d%" PRId64 ",%" PRId64
                  " g%" PRId64 " out%" PRId64 "x%" PRId64,
                  s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_h,
                  s.pad_w, s.dilation_h, s.dilation_w, s.groups, s.out_h, s.out_w);
    return buf;
}

// Calls term(xi, wi, yi) for every product x[xi] * w[wi] that the forward
// convolution adds into y[yi]: the definition, written out.
template <class Term>
void conv_terms(const ConvShape &s, Term term) {
    const int64_t cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
    for (int64_t b = 0; b < s.n; ++b)
        for (int64_t o = 0; o < s.c_out; ++o)
            for (int64_t oy = 0; oy < s.out_h; ++oy)
                for (int64_t ox = 0; ox < s.out_w; ++ox)
                    for (int64_t c = 0; c < cin_g; ++c)
                        for (int64_t i = 0; i < s.kh; ++i)
                            for (int64_t j = 0; j < s.kw; ++j) {
                                const int64_t iy = oy * s.stride_h - s.pad_h + i * s.dilation_h;
                                const int64_t ix = ox * s.stride_w - s.pad_w + j * s.dilation_w;
                                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                                const int64_t ci = (o / cout_g) * cin_g + c;
                                term(((b * s.c_in + ci) * s.h + iy) * s.w + ix,
                                     ((o * cin_g + c) * s.kh + i) * s.kw + j,
                                     ((b * s.c_out + o) * s.out_h + oy) * s.out_w + ox);
                            }
}

struct Reference {
    std::vector<double> value, scale;
};

Reference conv_forward_ref(const ConvShape &s, const std::vector<double> &x,
                           const std::vector<double> &w) {
    Reference r{std::vector<double>(size_t(s.n * s.c_out * s.out_h * s.out_w)), {}};
    r.scale = r.value;
    conv_terms(s, [&](int64_t xi, int64_t wi, int64_t yi) {
        const double t = x[size_t(xi)] * w[size_t(wi)];
        r.value[size_t(yi)] += t;
        r.scale[size_t(yi)] += std::fabs(t);
    });
    return r;
}

Reference conv_backward_input_ref(const ConvShape &s, const std::vector<double> &dy,
                                  const std::vector<double> &w) {
    Reference r{std::vector<double>(size_t(s.n * s.c_in * s.h * s.w)), {}};
    r.scale = r.value;
    conv_terms(s, [&](int64_t xi, int64_t wi, int64_t yi) {
        const double t = dy[size_t(yi)] * w[size_t(wi)];
        r.value[size_t(xi)] += t;
        r.scale[size_t(xi)] += std::fabs(t);
    });
    return r;
}

Reference conv_backward_weight_ref(const ConvShape &s, const std::vector<double> &x,
                                   const std::vector<double> &dy) {
    Reference r{std::vector<double>(size_t(s.c_out * (s.c_in / s.groups) * s.kh * s.kw)), {}};
    r.scale = r.value;
    conv_terms(s, [&](int64_t xi, int64_t wi, int64_t yi) {
        const double t = x[size_t(xi)] * dy[size_t(yi)];
        r.value[size_t(wi)] += t;
        r.scale[size_t(wi)] += std::fabs(t);
    });
    return r;
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
    double sum = 0;
    for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
    return sum;
}

// d/dv[i] of loss(v), by central differences.
template <class Loss>
std::vector<double> finite_differences(std::vector<double> v, Loss loss, double h) {
    std::vector<double> grad(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        const double keep = v[i];
        v[i] = keep + h;
        const double up = loss(v);
        v[i] = keep - h;
        const double down = loss(v);
        v[i] = keep;
        grad[i] = (up - down) / (2 * h);
    }
    return grad;
}

void run_conv_case(Rng &rng, const ConvShape &s, bool with_fd) {
    g_case = "conv " + conv_str(s);
    const size_t x_size = size_t(s.n * s.c_in * s.h * s.w);
    const size_t w_size = size_t(s.c_out * (s.c_in / s.groups) * s.kh * s.kw);
    const size_t y_size = size_t(s.n * s.c_out * s.out_h * s.out_w);
    const auto x = rng.floats(x_size), w = rng.floats(w_size), dy = rng.floats(y_size);
    const auto xd = to_double(x), wd = to_double(w), dyd = to_double(dy);

    Output<float> y(y_size), dx(x_size), dw(w_size);
    fm::cpu::conv2d_forward(s, x.data(), w.data(), y.data());
    fm::cpu::conv2d_backward_input(s, dy.data(), w.data(), dx.data());
    fm::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data());
    const Reference yr = conv_forward_ref(s, xd, wd);
    const Reference dxr = conv_backward_input_ref(s, dyd, wd);
    const Reference dwr = conv_backward_weight_ref(s, xd, dyd);
    g_case = "conv2d_forward " + conv_str(s);
    expect_close(y, yr.value, yr.scale);
    y.finish();
    g_case = "conv2d_backward_input " + conv_str(s);
    expect_close(dx, dxr.value, dxr.scale);
    dx.finish();
    g_case = "conv2d_backward_weight " + conv_str(s);
    expect_close(dw, dwr.value, dwr.scale);
    dw.finish();
    // With a bias: the forward pass, then one add per element (same bits).
    const auto bias = rng.floats(size_t(s.c_out));
    Output<float> yb(y_size);
    Output<float> sums(size_t(s.c_out));
    fm::cpu::conv2d_forward_bias(s, x.data(), w.data(), bias.data(), yb.data(), sums.data());
    std::vector<double> ybr(y_size);
    const int64_t plane = s.out_h * s.out_w;
    for (size_t i = 0; i < y_size; ++i) ybr[i] = double(y[i] + bias[size_t(int64_t(i) / plane % s.c_out)]);
    g_case = "conv2d_forward_bias " + conv_str(s);
    expect_exact(yb, ybr);
    // Its channel sums, against float64 sums of those outputs.
    std::vector<double> sums_ref(size_t(s.c_out)), sums_scale(size_t(s.c_out));
    for (size_t i = 0; i < y_size; ++i) {
        sums_ref[size_t(int64_t(i) / plane % s.c_out)] += ybr[i];
        sums_scale[size_t(int64_t(i) / plane % s.c_out)] += std::fabs(ybr[i]);
    }
    g_case = "conv2d_forward_bias channel sums " + conv_str(s);
    expect_close(sums, sums_ref, sums_scale);
    sums.finish();
    yb.finish();
    if (!with_fd) return;

    // loss = <conv(x, w), dy>, so d loss/dx = conv2d_backward_input(dy) and
    // d loss/dw = conv2d_backward_weight(x, dy).
    const double h = 1e-3;
    g_case = "conv2d_backward_input (finite differences) " + conv_str(s);
    expect_close(dx,
                 finite_differences(xd, [&](const std::vector<double> &v) {
                     return dot(conv_forward_ref(s, v, wd).value, dyd);
                 }, h),
                 dxr.scale, 1e-9);
    g_case = "conv2d_backward_weight (finite differences) " + conv_str(s);
    expect_close(dw,
                 finite_differences(wd, [&](const std::vector<double> &v) {
                     return dot(conv_forward_ref(s, xd, v).value, dyd);
                 }, h),
                 dwr.scale, 1e-9);
}

ConvShape random_conv(Rng &rng, bool tiny) {
    for (;;) {
        ConvShape s;
        s.n = rng.range(1, tiny ? 2 : 3);
        const int64_t pick = rng.range(0, 3);
        s.groups = pick == 0 ? 1 : pick == 1 ? 2 : pick == 2 ? 4 : 0;  // 0: depthwise below
        const int64_t cin_g = rng.range(1, tiny ? 2 : 5);
        if (s.groups == 0) {
            s.groups = rng.range(1, tiny ? 3 : 8);
            s.c_in = s.groups;
            s.c_out = s.groups * rng.range(1, 2);  // depthwise, with multiplier 1 or 2
        } else {
            s.c_in = s.groups * cin_g;
            s.c_out = s.groups * rng.range(1, tiny ? 2 : 6);
        }
        s.h = rng.range(1, tiny ? 5 : 17);
        s.w = rng.chance(20) ? s.h : rng.range(1, tiny ? 5 : 17);
        s.kh = rng.range(1, tiny ? 3 : 5);
        s.kw = rng.chance(50) ? s.kh : rng.range(1, tiny ? 3 : 5);
        s.stride_h = rng.range(1, 3);
        s.stride_w = rng.chance(50) ? s.stride_h : rng.range(1, 3);
        s.pad_h = rng.range(0, 2);
        s.pad_w = rng.chance(50) ? s.pad_h : rng.range(0, 2);
        s.dilation_h = rng.range(1, 2);
        s.dilation_w = rng.chance(50) ? s.dilation_h : rng.range(1, 2);
        s.out_h = out_size(s.h, s.kh, s.stride_h, s.pad_h, s.dilation_h);
        s.out_w = out_size(s.w, s.kw, s.stride_w, s.pad_w, s.dilation_w);
        if (s.out_h >= 1 && s.out_w >= 1) return s;
    }
}

void test_conv(Rng &rng) {
    for (int i = 0; i < 300; ++i) run_conv_case(rng, random_conv(rng, false), false);
    for (int i = 0; i < 60; ++i) run_conv_case(rng, random_conv(rng, true), true);

    // Sizes that cross matmul's blocks (64 columns, 128 deep, 16-64 rows).
    ConvShape s;
    s.n = 2, s.c_in = 24, s.h = 13, s.w = 11, s.c_out = 70, s.kh = 3, s.kw = 3;
    s.pad_h = 1, s.pad_w = 1;
    s.out_h = 13, s.out_w = 11;
    run_conv_case(rng, s, false);
    s.groups = 2, s.c_in = 300, s.c_out = 34, s.kh = 1, s.kw = 1, s.pad_h = 0, s.pad_w = 0;
    run_conv_case(rng, s, false);

    // A batch whose columns exceed the kernels' 16 Mi-float buffer is done
    // in chunks (here 7 images, then 1); dweight sums over chunks.
    s = ConvShape{};
    s.n = 8, s.c_in = 16, s.h = 128, s.w = 128, s.c_out = 2, s.kh = 3, s.kw = 3;
    s.pad_h = 1, s.pad_w = 1, s.out_h = 128, s.out_w = 128;
    run_conv_case(rng, s, false);

    // Large images, with few output channels per group (the weight
    // gradient's dot-product path) and more (its GEMM path): positions not a
    // multiple of 16, several images per part of the batch (more than 16
    // images), groups, stride 2.
    s = ConvShape{};
    s.n = 19, s.c_in = 6, s.h = 23, s.w = 23, s.c_out = 10, s.kh = 3, s.kw = 3, s.groups = 2;
    s.pad_h = 1, s.pad_w = 1, s.out_h = 23, s.out_w = 23;
    run_conv_case(rng, s, false);
    s.groups = 1, s.h = 45, s.w = 46, s.stride_h = 2, s.stride_w = 2, s.out_h = 23, s.out_w = 23;
    run_conv_case(rng, s, false);

    // Stride 1 with rows of 16 or 32 outputs: the forward pass (and the
    // input gradient) read the padded image in place (gemm::multiply_indirect);
    // channels that cut micro-tiles, groups, dilation, no padding.
    s = ConvShape{};
    s.n = 2, s.c_in = 6, s.h = 16, s.w = 16, s.c_out = 10, s.kh = 3, s.kw = 3, s.groups = 2;
    s.pad_h = 1, s.pad_w = 1, s.out_h = 16, s.out_w = 16;
    run_conv_case(rng, s, false);
    s.groups = 1, s.h = 36, s.w = 36, s.dilation_h = 2, s.dilation_w = 2, s.pad_h = 0, s.pad_w = 0;
    s.out_h = 32, s.out_w = 32;
    run_conv_case(rng, s, false);

    // Other strides read the padded image split into column phases the same
    // way (forward; weight gradient with more than 8 output channels):
    // stride 2 (cnn64's layers), stride 3 with a pad that is not a multiple
    // of it, dilation 2 at stride 2, unequal strides, an odd width whose
    // last column no window reaches.
    s = ConvShape{};
    s.n = 2, s.c_in = 3, s.h = 32, s.w = 32, s.c_out = 12, s.kh = 3, s.kw = 3, s.stride_h = 2, s.stride_w = 2;
    s.pad_h = 1, s.pad_w = 1, s.out_h = 16, s.out_w = 16;
    run_conv_case(rng, s, false);
    s.c_in = 5, s.h = 40, s.w = 46, s.c_out = 9, s.stride_h = 3, s.stride_w = 3, s.out_h = 14, s.out_w = 16;
    run_conv_case(rng, s, false);
    s.c_in = 4, s.h = 32, s.w = 31, s.c_out = 17, s.stride_h = 2, s.stride_w = 2, s.dilation_h = 2, s.dilation_w = 2;
    s.pad_h = 2, s.pad_w = 2, s.out_h = 16, s.out_w = 16;
    run_conv_case(rng, s, false);
    s = ConvShape{};
    s.n = 3, s.c_in = 2, s.h = 9, s.w = 33, s.c_out = 16, s.kh = 3, s.kw = 3, s.stride_h = 1, s.stride_w = 2;
    s.pad_h = 1, s.pad_w = 0, s.out_h = 9, s.out_w = 16;
    run_conv_case(rng, s, false);
    // Rows of 8 outputs (cifar's last block, cnn64's last layer): the weight
    // gradient's GEMM packs col^T two runs of 8 positions at a time.
    s = ConvShape{};
    s.n = 3, s.c_in = 5, s.h = 8, s.w = 8, s.c_out = 12, s.kh = 3, s.kw = 3, s.pad_h = 1, s.pad_w = 1;
    s.out_h = 8, s.out_w = 8;
    run_conv_case(rng, s, false);
    s.h = 16, s.w = 16, s.c_out = 16, s.stride_h = 2, s.stride_w = 2;
    run_conv_case(rng, s, false);

    // Degenerate: a 1x1 kernel at stride 1 is a matmul; a kernel as large as
    // the padded image gives a 1x1 output.
    s = ConvShape{};
    s.n = 3, s.c_in = 4, s.h = 6, s.w = 2, s.c_out = 5, s.kh = 1, s.kw = 1, s.out_h = 6, s.out_w = 2;
    run_conv_case(rng, s, true);
    s.kh = 8, s.kw = 4, s.pad_h = 1, s.pad_w = 1, s.out_h = 1, s.out_w = 1;
    run_conv_case(rng, s, true);

    // Bad groups are an error, not a crash.
    s = ConvShape{};
    s.n = 1, s.c_in = 3, s.h = 4, s.w = 4, s.c_out = 4, s.kh = 1, s.kw = 1, s.out_h = 4, s.out_w = 4;
    s.groups = 2;
    g_case = "conv2d_forward with groups not dividing c_in";
    bool threw = false;
    std::vector<float> x(48), w(8), y(64);
    try {
        fm::cpu::conv2d_forward(s, x.data(), w.data(), y.data());
    } catch (const fm::Error &e) {
        threw = e.status() == FM_ERR_INVALID_ARGUMENT;
    }
    CHECK(threw);
}

// ---- Pooling reference --------------------------------------------------------

std::string pool_str(const PoolShape &s) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "n%" PRId64 " c%" PRId64 " %" PRId64 "x%" PRId64 " k%" PRId64 "x%" PRId64
                  " s%" PRId64 ",%" PRId64 " p%" PRId64 ",%" PRId64 " d%" PRId64 ",%" PRId64
                  " out%" PRId64 "x%" PRId64 " include_pad %d",
                  s.n, s.c, s.h, s.w, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
                  s.dilation_h, s.dilation_w, s.out_h, s.out_w, int(s.count_include_pad));
    return buf;
}

// Calls visit(out_index, in_index_or_minus_1) for every window position, in
// row-major window order, with -1 for a position in the padding.
template <class Visit>
void pool_positions(const PoolShape &s, int64_t plane, int64_t oy, int64_t ox, Visit visit) {
    for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) {
            const int64_t iy = oy * s.stride_h - s.pad_h + i * s.dilation_h;
            const int64_t ix = ox * s.stride_w - s.pad_w + j * s.dilation_w;
            const bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
            visit(inside ? (plane * s.h + iy) * s.w + ix : -1);
        }
}

// The first maximum of each window (-1: only padding), row-major.
std::vector<int64_t> max_pool_argmax_ref(const PoolShape &s, const std::vector<double> &x) {
    std::vector<int64_t> at;
    for (int64_t p = 0; p < s.n * s.c; ++p)
        for (int64_t oy = 0; oy < s.out_h; ++oy)
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
                int64_t best = -1;
                double value = -std::numeric_limits<double>::infinity();
                pool_positions(s, p, oy, ox, [&](int64_t in) {
                    if (in >= 0 && (best < 0 || x[size_t(in)] > value)) best = in, value = x[size_t(in)];
                });
                at.push_back(best);
            }
    return at;
}

// Average pooling as a weighted sum: y[o] = sum of x[in] / divisor(o).
// The divisor with count_include_pad counts every window position (all
// lie in the padded image for the documented out_h / out_w).
template <class Visit>
void avg_pool_terms(const PoolShape &s, Visit visit) {
    int64_t o = 0;
    for (int64_t p = 0; p < s.n * s.c; ++p)
        for (int64_t oy = 0; oy < s.out_h; ++oy)
            for (int64_t ox = 0; ox < s.out_w; ++ox, ++o) {
                std::vector<int64_t> inside;
                int64_t positions = 0;
                pool_positions(s, p, oy, ox, [&](int64_t in) {
                    ++positions;
                    if (in >= 0) inside.push_back(in);
                });
                const int64_t divisor = s.count_include_pad ? positions : int64_t(inside.size());
                for (int64_t in : inside) visit(o, in, 1.0 / double(divisor));
            }
}

Reference avg_pool_forward_ref(const PoolShape &s, const std::vector<double> &x) {
    Reference r{std::vector<double>(size_t(s.n * s.c * s.out_h * s.out_w)), {}};
    r.scale = r.value;
    avg_pool_terms(s, [&](int64_t o, int64_t in, double weight) {
        r.value[size_t(o)] += x[size_t(in)] * weight;
        r.scale[size_t(o)] += std::fabs(x[size_t(in)] * weight);
    });
    return r;
}

Reference avg_pool_backward_ref(const PoolShape &s, const std::vector<double> &dy) {
    Reference r{std::vector<double>(size_t(s.n * s.c * s.h * s.w)), {}};
    r.scale = r.value;
    avg_pool_terms(s, [&](int64_t o, int64_t in, double weight) {
        r.value[size_t(in)] += dy[size_t(o)] * weight;
        r.scale[size_t(in)] += std::fabs(dy[size_t(o)] * weight);
    });
    return r;
}

std::vector<double> max_pool_value_ref(const std::vector<int64_t> &at, const std::vector<double> &x) {
    std::vector<double> y(at.size());
    for (size_t o = 0; o < at.size(); ++o) {
        y[o] = at[o] < 0 ? -std::numeric_limits<double>::infinity() : x[size_t(at[o])];
    }
    return y;
}

void run_pool_case(Rng &rng, const PoolShape &s, bool ties, bool with_fd) {
    const size_t x_size = size_t(s.n * s.c * s.h * s.w);
    const size_t y_size = size_t(s.n * s.c * s.out_h * s.out_w);
    std::vector<float> x(x_size), dy(y_size);
    // Ties: few distinct values, so the first-maximum rule decides. dy: small
    // integers, so the sums into dx (max pool) are exact in float and order.
    for (auto &v : x) v = ties ? float(rng.range(-2, 2)) : rng.uniform(-2.0f, 2.0f);
    for (auto &v : dy) v = float(rng.range(-8, 8));
    const auto xd = to_double(x), dyd = to_double(dy);

    Output<float> y(y_size), dx(x_size);
    fm::cpu::max_pool2d_forward(s, x.data(), y.data());
    fm::cpu::max_pool2d_backward(s, x.data(), dy.data(), dx.data());
    const auto at = max_pool_argmax_ref(s, xd);
    std::vector<double> dxr(x_size);
    for (size_t o = 0; o < at.size(); ++o) {
        if (at[o] >= 0) dxr[size_t(at[o])] += dyd[o];
    }
    g_case = "max_pool2d_forward " + pool_str(s);
    expect_exact(y, max_pool_value_ref(at, xd));
    y.finish();
    g_case = "max_pool2d_backward " + pool_str(s);
    expect_exact(dx, dxr);
    dx.finish();

    const auto dyr = rng.floats(y_size);  // avg: any values
    const auto dyrd = to_double(dyr);
    Output<float> ya(y_size), dxa(x_size);
    fm::cpu::avg_pool2d_forward(s, x.data(), ya.data());
    fm::cpu::avg_pool2d_backward(s, dyr.data(), dxa.data());
    const Reference yar = avg_pool_forward_ref(s, xd);
    const Reference dxar = avg_pool_backward_ref(s, dyrd);
    g_case = "avg_pool2d_forward " + pool_str(s);
    expect_close(ya, yar.value, yar.scale);
    ya.finish();
    g_case = "avg_pool2d_backward " + pool_str(s);
    expect_close(dxa, dxar.value, dxar.scale);
    dxa.finish();
    if (!with_fd) return;

    g_case = "avg_pool2d_backward (finite differences) " + pool_str(s);
    expect_close(dxa,
                 finite_differences(xd, [&](const std::vector<double> &v) {
                     return dot(avg_pool_forward_ref(s, v).value, dyrd);
                 }, 1e-3),
                 dxar.scale, 1e-9);
    if (ties) return;  // a max with ties has no derivative
    // Max pool is piecewise linear; a step (1e-7) below the gap between
    // any two distinct inputs (2.4e-7, their resolution) stays on one piece. Windows of padding only give
    // -inf, which has no difference quotient: those terms are left out.
    std::vector<double> dy_finite = dyd;
    for (size_t o = 0; o < at.size(); ++o) {
        if (at[o] < 0) dy_finite[o] = 0;
    }
    // The loss is taken relative to the unperturbed output, so that it is
    // of the size of the step and its rounding does not swamp the quotient.
    const auto y0 = max_pool_value_ref(at, xd);
    const auto finite_dot = [&](const std::vector<double> &v) {
        const auto yv = max_pool_value_ref(max_pool_argmax_ref(s, v), v);
        double sum = 0;
        for (size_t o = 0; o < yv.size(); ++o) {
            if (dy_finite[o] != 0) sum += (yv[o] - y0[o]) * dy_finite[o];
        }
        return sum;
    };
    std::vector<double> abs_dy(x_size);
    for (size_t o = 0; o < at.size(); ++o) {
        if (at[o] >= 0) abs_dy[size_t(at[o])] += std::fabs(dyd[o]);
    }
    g_case = "max_pool2d_backward (finite differences) " + pool_str(s);
    expect_close(dx, finite_differences(xd, finite_dot, 1e-7), abs_dy, 1e-9);
}

PoolShape random_pool(Rng &rng, bool tiny) {
    for (;;) {
        PoolShape s;
        s.n = rng.range(1, tiny ? 2 : 3);
        s.c = rng.range(1, tiny ? 2 : 5);
        s.h = rng.range(1, tiny ? 6 : 19);
        s.w = rng.chance(20) ? s.h : rng.range(1, tiny ? 6 : 19);
        s.kh = rng.range(1, 4);
        s.kw = rng.chance(50) ? s.kh : rng.range(1, 4);
        s.stride_h = rng.range(1, 3);
        s.stride_w = rng.chance(50) ? s.stride_h : rng.range(1, 3);
        s.pad_h = rng.range(0, 2);
        s.pad_w = rng.chance(50) ? s.pad_h : rng.range(0, 2);
        s.dilation_h = rng.range(1, 2);
        s.dilation_w = rng.chance(50) ? s.dilation_h : rng.range(1, 2);
        s.count_include_pad = rng.chance(50);
        s.out_h = out_size(s.h, s.kh, s.stride_h, s.pad_h, s.dilation_h);
        s.out_w = out_size(s.w, s.kw, s.stride_w, s.pad_w, s.dilation_w);
        if (s.out_h >= 1 && s.out_w >= 1) return s;
    }
}

// A NaN beats every number, and the first NaN of a window wins (PyTorch's
// rule), on the vector path of 2 x 2 pooling too: one row of 32 windows.
void test_max_pool_nan() {
    PoolShape s;
    s.n = 1, s.c = 1, s.h = 2, s.w = 64, s.kh = 2, s.kw = 2, s.stride_h = 2, s.stride_w = 2;
    s.out_h = 1, s.out_w = 32;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> x(128, 1.0f), dy(32);
    for (size_t o = 0; o < 32; ++o) dy[o] = float(o + 1);
    // window -> the tap that must win: 3 (d only), 20 (a and b: a), 31 (c), 17 (b and d: b)
    x[64 + 2 * 3 + 1] = nan;
    x[2 * 20] = nan, x[2 * 20 + 1] = nan;
    x[64 + 2 * 31] = nan;
    x[2 * 17 + 1] = nan, x[64 + 2 * 17 + 1] = nan;
    const std::pair<size_t, size_t> winners[] = {{3, 64 + 7}, {20, 40}, {31, 126}, {17, 35}};
    Output<float> y(32), dx(128);
    fm::cpu::max_pool2d_forward(s, x.data(), y.data());
    fm::cpu::max_pool2d_backward(s, x.data(), dy.data(), dx.data());
    g_case = "max_pool2d with NaNs " + pool_str(s);
    for (const auto &[window, tap] : winners) {
        CHECK(std::isnan(y[window]));
        CHECK(dx[tap] == dy[window]);
    }
    float dx_total = 0.0f, dy_total = 0.0f;
    for (size_t i = 0; i < 128; ++i) dx_total += dx[i];
    for (float g : dy) dy_total += g;
    CHECK(dx_total == dy_total);  // every window's gradient lands once
    y.finish();
    dx.finish();
}

void test_pool(Rng &rng) {
    for (int i = 0; i < 300; ++i) run_pool_case(rng, random_pool(rng, false), rng.chance(30), false);
    for (int i = 0; i < 60; ++i) run_pool_case(rng, random_pool(rng, true), rng.chance(20), true);
    // The common 2x2 / 3x3-stride-2-pad-1 layers.
    PoolShape s;
    s.n = 2, s.c = 3, s.h = 8, s.w = 6, s.kh = 2, s.kw = 2, s.stride_h = 2, s.stride_w = 2;
    s.out_h = 4, s.out_w = 3;
    run_pool_case(rng, s, false, true);
    run_pool_case(rng, s, true, false);  // 2x2 stride 2 has its own kernel: ties,
    s.h = 7, s.w = 5, s.out_h = 3, s.out_w = 2;  // and rows / columns no window covers
    run_pool_case(rng, s, true, false);
    run_pool_case(rng, s, false, true);
    // Rows wide enough for the AVX-512 2x2 kernel (16 windows at a time),
    // with a tail, and an odd column no window covers.
    s.n = 2, s.c = 2, s.h = 6, s.w = 41, s.out_h = 3, s.out_w = 20;
    run_pool_case(rng, s, true, false);
    run_pool_case(rng, s, false, false);
    s.n = 1, s.c = 3, s.h = 4, s.w = 64, s.out_h = 2, s.out_w = 32;
    run_pool_case(rng, s, true, false);
    s.n = 2, s.c = 2, s.h = 11, s.w = 17, s.out_h = 5, s.out_w = 8;  // blocks of 2 rows of 8, a row left
    run_pool_case(rng, s, true, false);
    run_pool_case(rng, s, false, false);
    s.n = 1, s.c = 3, s.h = 18, s.w = 9, s.out_h = 9, s.out_w = 4;  // blocks of 4 rows of 4, a row left
    run_pool_case(rng, s, true, false);
    run_pool_case(rng, s, false, false);
    test_max_pool_nan();
    s.n = 2, s.c = 3, s.h = 8, s.w = 6, s.out_h = 4, s.out_w = 3;
    s.kh = 3, s.kw = 3, s.pad_h = 1, s.pad_w = 1, s.out_h = 4, s.out_w = 3;
    run_pool_case(rng, s, true, true);
    s.count_include_pad = false;
    run_pool_case(rng, s, false, true);
}

// ---- Benchmark -------------------------------------------------------------------

// Times the three convolution kernels on the reference models' layers.
int bench_conv() {
    struct Case {
        const char *name;
        int64_t n, c_in, hw, c_out, stride;
    };
    const Case cases[] = {
        {"cnn64 conv1 n32 3x64x64 -> 8 s2", 32, 3, 64, 8, 2},
        {"cnn64 conv2 n32 8x32x32 -> 16 s2", 32, 8, 32, 16, 2},
        {"cnn64 conv3 n32 16x16x16 -> 32 s2", 32, 16, 16, 32, 2},
        {"cifar conv1 n128 3x32x32 -> 32", 128, 3, 32, 32, 1},
        {"cifar conv2 n128 32x32x32 -> 32", 128, 32, 32, 32, 1},
        {"cifar conv3 n128 32x16x16 -> 64", 128, 32, 16, 64, 1},
        {"cifar conv4 n128 64x16x16 -> 64", 128, 64, 16, 64, 1},
        {"cifar conv5 n128 64x8x8 -> 128", 128, 64, 8, 128, 1},
    };
    Rng rng{7};
    std::printf("%zu threads, best of 3, GFLOP/s\n", fm::cpu::ThreadPool::global().threads());
    for (const Case &cs : cases) {
        ConvShape s;
        s.n = cs.n, s.c_in = cs.c_in, s.h = cs.hw, s.w = cs.hw, s.c_out = cs.c_out, s.kh = 3, s.kw = 3;
        s.stride_h = s.stride_w = cs.stride, s.pad_h = 1, s.pad_w = 1;
        s.out_h = s.out_w = (cs.hw + 2 - 3) / cs.stride + 1;
        const auto x = rng.floats(size_t(s.n * s.c_in * s.h * s.w));
        const auto w = rng.floats(size_t(s.c_out * s.c_in * s.kh * s.kw));
        const auto dy = rng.floats(size_t(s.n * s.c_out * s.out_h * s.out_w));
        std::vector<float> y(dy.size()), dx(x.size()), dw(w.size());
        const double flops = 2.0 * double(s.n * s.c_out * s.out_h * s.out_w * s.c_in * s.kh * s.kw);
        double rates[3];
        for (int which = 0; which < 3; ++which) {
            auto run = [&] {
                if (which == 0) fm::cpu::conv2d_forward(s, x.data(), w.data(), y.data());
                if (which == 1) fm::cpu::conv2d_backward_input(s, dy.data(), w.data(), dx.data());
                if (which == 2) fm::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data());
            };
            run();
            const int iterations = std::max(1, int(1e9 / flops));
            double best = 1e30;
            for (int rep = 0; rep < 3; ++rep) {
                const auto start = std::chrono::steady_clock::now();
                for (int i = 0; i < iterations; ++i) run();
                const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
                best = std::min(best, elapsed.count() / iterations);
            }
            rates[which] = flops / best / 1e9;
        }
        std::printf("%-36s forward %6.1f  input grad %6.1f  weight grad %6.1f\n", cs.name, rates[0], rates[1],
                    rates[2]);
    }
    // cifar's 2 x 2 max pooling layers, in ms.
    for (const int64_t c : {32, 64, 128}) {
        PoolShape s;
        s.n = 128, s.c = c, s.h = s.w = 32 * 32 / c, s.kh = s.kw = 2, s.stride_h = s.stride_w = 2;
        s.out_h = s.out_w = s.h / 2;
        const auto x = rng.floats(size_t(s.n * s.c * s.h * s.w)), dy = rng.floats(size_t(s.n * s.c * s.h * s.w / 4));
        std::vector<float> y(dy.size()), dx(x.size());
        double best[2] = {1e30, 1e30};
        for (int rep = 0; rep < 5; ++rep) {
            for (int which = 0; which < 2; ++which) {
                const auto start = std::chrono::steady_clock::now();
                if (which == 0) fm::cpu::max_pool2d_forward(s, x.data(), y.data());
                if (which == 1) fm::cpu::max_pool2d_backward(s, x.data(), dy.data(), dx.data());
                const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
                best[which] = std::min(best[which], elapsed.count());
            }
        }
        std::printf("max_pool2d 2x2 n128 %3" PRId64 "x%" PRId64 "x%" PRId64 "      forward %5.2f ms  backward %5.2f ms\n",
                    c, s.h, s.w, best[0] * 1e3, best[1] * 1e3);
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench_conv();
    Rng rng{20240607};
    try {
        test_conv(rng);
        test_pool(rng);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception in %s: %s\n", g_case.c_str(), e.what());
        return 1;
    }
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    std::printf("checksum %016" PRIx64 "\n", g_checksum);
    return g_failures == 0 ? 0 : 1;
}
