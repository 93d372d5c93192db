// Checks every CPU kernel of native/cpu/kernels.h except convolution and
// pooling against naive float64 loops written here (none calls a kernel),
// over many random shapes: rank 0 to 5, size-1 and size-0 dims, sizes that
// cross the kernels' block boundaries, and bad indices.
//
// Tolerances: layout, indexing, argmax and max/min must match exactly (bit
// for bit). Everything else must be within 1e-5 relative of the float64
// reference, with one documented loosening: for accumulations (matmul, sum,
// scatter_add) "relative" is measured against the sum of the absolute values
// of the terms, not the result, because a sum that cancels has no relative
// accuracy in float (its error bound is eps * k * sum |term|).
//
// Every output's bits go into a checksum printed as `checksum <hex>`; CTest
// compares it between runs with 1 and 3 threads, which must be identical.
// `test_cpu_kernels --bench` instead times the reference models' matmuls and
// prints GFLOP/s. FERROMETAL_CPU_ISA picks the micro-kernel (CTest compares
// the AVX2 and AVX-512 ones: both must give the same bits).
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

using fm::cpu::MatmulShape;
using fm::cpu::Reduction;

using namespace kernel_test;


// ---- Comparisons -------------------------------------------------------------

constexpr double kRelTol = 1e-5;

bool same_float(float got, double ref) {
    if (std::isnan(ref)) return std::isnan(got);
    const float expected = float(ref);
    return std::memcmp(&got, &expected, sizeof got) == 0;
}

// got[i] must equal float(ref[i]) bit for bit (NaN matches any NaN).
void expect_exact(const float *got, const std::vector<double> &ref) {
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (!same_float(got[i], ref[i]) && ++bad <= 3) {
            std::fprintf(stderr, "  [%zu] got %.9g, want %.9g\n", i, double(got[i]), ref[i]);
        }
    }
    CHECK(bad == 0);
}

// |got - ref| <= kRelTol * max(|ref|, scale[i]); `scale` may be empty.
void expect_close(const float *got, const std::vector<double> &ref,
                  const std::vector<double> &scale = {}) {
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        bool ok;
        if (std::isnan(ref[i]) || std::isinf(ref[i])) {
            ok = same_float(got[i], ref[i]);
        } else {
            const double s = std::max(std::fabs(ref[i]), scale.empty() ? 0.0 : scale[i]);
            ok = std::fabs(double(got[i]) - ref[i]) <= kRelTol * s;
        }
        if (!ok && ++bad <= 3) {
            std::fprintf(stderr, "  [%zu] got %.9g, want %.9g\n", i, double(got[i]), ref[i]);
        }
    }
    CHECK(bad == 0);
}

template <class Body>
void expect_out_of_range(const char *expected_text, Body body) {
    bool threw = false;
    try {
        body();
    } catch (const fm::Error &e) {
        threw = true;
        CHECK(e.status() == FM_ERR_OUT_OF_RANGE);
        const bool names_it = std::strstr(e.what(), expected_text) != nullptr;
        if (!names_it) std::fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", e.what(), expected_text);
        CHECK(names_it);
    }
    CHECK(threw);
}

// ---- Index helpers for the reference loops ---------------------------------

int64_t numel(const Shape &shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

Shape unravel(int64_t linear, const Shape &shape) {
    Shape index(shape.size());
    for (size_t d = shape.size(); d-- > 0;) {
        index[d] = linear % shape[d];
        linear /= shape[d];
    }
    return index;
}

int64_t ravel(const Shape &index, const Shape &shape) {
    int64_t linear = 0;
    for (size_t d = 0; d < shape.size(); ++d) linear = linear * shape[d] + index[d];
    return linear;
}

// ---- matmul --------------------------------------------------------------------

void check_matmul(Rng &rng, int64_t batch, int64_t m, int64_t n, int64_t k, bool ta, bool tb,
                  bool broadcast_a, bool broadcast_b, int64_t gap) {
    MatmulShape s;
    s.batch = batch;
    s.m = m;
    s.n = n;
    s.k = k;
    s.transpose_a = ta;
    s.transpose_b = tb;
    s.a_batch_stride = broadcast_a ? 0 : m * k + gap;
    s.b_batch_stride = broadcast_b ? 0 : k * n + gap;
    s.c_batch_stride = m * n + gap;
    g_case = "matmul batch " + std::to_string(batch) + " m " + std::to_string(m) + " n " +
             std::to_string(n) + " k " + std::to_string(k) + " ta " + std::to_string(ta) + " tb " +
             std::to_string(tb) + " bcast " + std::to_string(broadcast_a) +
             std::to_string(broadcast_b) + " gap " + std::to_string(gap);
    const int64_t a_count = broadcast_a ? m * k : batch * (m * k + gap);
    const int64_t b_count = broadcast_b ? k * n : batch * (k * n + gap);
    const std::vector<float> a = rng.floats(size_t(a_count)), b = rng.floats(size_t(b_count));
    Output<float> c(static_cast<size_t>(batch * (m * n + gap)));
    fm::cpu::matmul(s, a.data(), b.data(), c.data());

    std::vector<double> ref, scale;
    std::vector<float> got;
    for (int64_t bi = 0; bi < batch; ++bi) {
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
                double sum = 0, abs_sum = 0;
                for (int64_t p = 0; p < k; ++p) {
                    const double av = a[size_t(bi * s.a_batch_stride + (ta ? p * m + i : i * k + p))];
                    const double bv = b[size_t(bi * s.b_batch_stride + (tb ? j * k + p : p * n + j))];
                    sum += av * bv;
                    abs_sum += std::fabs(av * bv);
                }
                ref.push_back(sum);
                scale.push_back(abs_sum);
                got.push_back(c[size_t(bi * s.c_batch_stride + i * n + j)]);
            }
        }
        for (int64_t g = 0; g < gap; ++g) {  // between batches: untouched
            CHECK(same_float(c[size_t(bi * s.c_batch_stride + m * n + g)], kUnwritten));
        }
    }
    expect_close(got.data(), ref, scale);
    c.finish();
}

void test_matmul(Rng &rng) {
    for (int t = 0; t < 30; ++t) {
        const int64_t batch = rng.range(1, 3);
        const int64_t m = rng.chance(15) ? 1 : rng.range(1, 70);
        const int64_t n = rng.chance(15) ? 1 : rng.range(1, 140);
        const int64_t k = rng.chance(15) ? 1 : rng.range(1, 150);
        const int64_t gap = rng.chance(30) ? rng.range(1, 5) : 0;
        for (int combo = 0; combo < 4; ++combo) {
            const int bcast = batch > 1 ? int(rng.range(0, 2)) : 0;  // none, A, B
            check_matmul(rng, batch, m, n, k, combo & 1, combo & 2, bcast == 1, bcast == 2, gap);
        }
    }
    // Several tasks, several panels along n and k, a partial last panel.
    for (int combo = 0; combo < 4; ++combo) {
        check_matmul(rng, 1, 200, 150, 260, combo & 1, combo & 2, false, false, 0);
        check_matmul(rng, 5, 33, 65, 129, combo & 1, combo & 2, combo == 1, combo == 2, 0);
    }
    // The packed GEMM's blocks: several depth slices (KC = 256), row blocks
    // (MB = 256) and column blocks (NB = 512), micro-tile edges in both
    // directions (8 x 32, 6 x 16, 4 x 16 tiles), a broadcast operand.
    for (int combo = 0; combo < 4; ++combo) {
        check_matmul(rng, 1, 301, 547, 530, combo & 1, combo & 2, false, false, 0);
        check_matmul(rng, 3, 9, 33, 257, combo & 1, combo & 2, combo == 1, combo == 2, 1);
        check_matmul(rng, 2, 67, 17, 1031, combo & 1, combo & 2, false, true, 0);
    }
    // Empty sizes: k == 0 gives zeros; m, n or batch == 0 writes nothing.
    check_matmul(rng, 2, 3, 4, 0, false, false, false, false, 2);
    check_matmul(rng, 2, 0, 4, 5, false, true, false, false, 0);
    check_matmul(rng, 2, 3, 0, 5, true, false, false, false, 0);
    check_matmul(rng, 0, 3, 4, 5, true, true, false, false, 0);
}

// ---- reduce and argmax -------------------------------------------------------

void check_reduce(Reduction kind, const Shape &shape, uint32_t mask, const std::vector<float> &x) {
    static const char *const kNames[] = {"sum", "max", "min"};
    g_case = std::string("reduce ") + kNames[int(kind)] + " " + shape_str(shape) + " mask " +
             std::to_string(mask);
    Shape y_shape = shape;
    for (size_t d = 0; d < shape.size(); ++d) {
        if ((mask >> d) & 1) y_shape[d] = 1;
    }
    const size_t outputs = size_t(numel(y_shape));
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> ref(outputs, kind == Reduction::Sum ? 0.0 : kind == Reduction::Max ? -inf : inf);
    std::vector<double> scale(outputs, 0.0);
    std::vector<bool> has_nan(outputs, false);
    for (int64_t i = 0; i < numel(shape); ++i) {
        Shape index = unravel(i, shape);
        for (size_t d = 0; d < shape.size(); ++d) {
            if ((mask >> d) & 1) index[d] = 0;
        }
        const size_t o = size_t(ravel(index, y_shape));
        const double v = x[size_t(i)];
        if (std::isnan(v)) has_nan[o] = true;
        if (kind == Reduction::Sum) ref[o] += v;
        if (kind == Reduction::Max) ref[o] = std::max(ref[o], v);
        if (kind == Reduction::Min) ref[o] = std::min(ref[o], v);
        scale[o] += std::fabs(v);
    }
    for (size_t o = 0; o < outputs; ++o) {
        if (has_nan[o]) ref[o] = std::nan("");
    }
    Output<float> y(outputs);
    fm::cpu::reduce(kind, shape.data(), int(shape.size()), mask, x.data(), y.data());
    if (kind == Reduction::Sum) {
        expect_close(y.data(), ref, scale);
    } else {
        expect_exact(y.data(), ref);
    }
    y.finish();
}

void check_reduce_all_kinds(const Shape &shape, uint32_t mask, const std::vector<float> &x) {
    for (Reduction kind : {Reduction::Sum, Reduction::Max, Reduction::Min}) {
        check_reduce(kind, shape, mask, x);
    }
}

void test_reduce(Rng &rng) {
    // Every axis mask of rank-4 tensors, some with size-1 and size-0 dims.
    const Shape rank4[] = {{2, 3, 4, 5}, {3, 1, 4, 2}, {1, 5, 1, 3}, {2, 0, 3, 2}, {4, 3, 2, 70}};
    for (const Shape &shape : rank4) {
        const auto x = rng.floats(size_t(numel(shape)));
        for (uint32_t mask = 0; mask < 16; ++mask) check_reduce_all_kinds(shape, mask, x);
    }
    for (int t = 0; t < 40; ++t) {
        const int rank = int(rng.range(0, 5));
        const Shape shape = rng.shape(rank, 1, 7);
        const uint32_t mask = uint32_t(rng.range(0, (1 << rank) - 1));
        check_reduce_all_kinds(shape, mask, rng.floats(size_t(numel(shape))));
    }
    // NaN anywhere in a group makes that output NaN, for max and min too.
    for (int t = 0; t < 12; ++t) {
        const int rank = int(rng.range(1, 5));
        const Shape shape = rng.shape(rank, 1, 6);
        auto x = rng.floats(size_t(numel(shape)));
        for (auto &v : x) {
            if (rng.chance(4)) v = std::nanf("");
        }
        x[size_t(rng.range(0, int64_t(x.size()) - 1))] = std::nanf("");
        check_reduce_all_kinds(shape, uint32_t(rng.range(0, (1 << rank) - 1)), x);
    }
    // Large: a full reduction split into chunks, and wide kept rows.
    const Shape full = {300001};
    check_reduce_all_kinds(full, 1, rng.floats(size_t(numel(full))));
    const Shape full3 = {7, 211, 257};
    check_reduce_all_kinds(full3, 7, rng.floats(size_t(numel(full3))));
    const Shape wide = {700, 600};
    const auto xw = rng.floats(size_t(numel(wide)));
    for (uint32_t mask = 1; mask < 4; ++mask) check_reduce_all_kinds(wide, mask, xw);
    const Shape mixed = {30, 40, 50, 3};
    const auto xm = rng.floats(size_t(numel(mixed)));
    for (uint32_t mask : {5u, 10u, 6u, 9u}) check_reduce_all_kinds(mixed, mask, xm);
}

void check_argmax(const Shape &shape, int axis, const std::vector<float> &x) {
    g_case = "argmax " + shape_str(shape) + " axis " + std::to_string(axis);
    Shape y_shape = shape;
    y_shape.erase(y_shape.begin() + axis);
    Shape index_shape = shape;
    index_shape[size_t(axis)] = 1;
    std::vector<int32_t> ref(static_cast<size_t>(numel(y_shape)));
    for (int64_t o = 0; o < numel(index_shape); ++o) {
        Shape index = unravel(o, index_shape);
        int32_t best = -1;
        double best_value = 0;
        for (int64_t i = 0; i < shape[size_t(axis)]; ++i) {
            index[size_t(axis)] = i;
            const double v = x[size_t(ravel(index, shape))];
            if (best >= 0 && std::isnan(best_value)) break;  // the first NaN wins
            if (best < 0 || v > best_value || std::isnan(v)) {
                best = int32_t(i);
                best_value = v;
            }
        }
        ref[size_t(o)] = best;
    }
    Output<int32_t> y(ref.size(), -5);
    fm::cpu::argmax(shape.data(), int(shape.size()), axis, x.data(), y.data());
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) bad += y[i] != ref[i];
    CHECK(bad == 0);
    y.finish();
}

void test_argmax(Rng &rng) {
    for (int t = 0; t < 40; ++t) {
        const int rank = int(rng.range(1, 5));
        const Shape shape = rng.shape(rank, 1, 7);
        std::vector<float> x(static_cast<size_t>(numel(shape)));
        for (auto &v : x) v = float(rng.range(0, 3));  // many ties: the first must win
        if (t % 4 == 3) {
            for (auto &v : x) {
                if (rng.chance(10)) v = std::nanf("");
            }
        }
        check_argmax(shape, int(rng.range(0, rank - 1)), x);
    }
    const Shape big = {20, 300, 90};
    const auto xb = rng.floats(size_t(numel(big)));
    for (int axis = 0; axis < 3; ++axis) check_argmax(big, axis, xb);
}

// ---- Layout ----------------------------------------------------------------------

void check_permute(Rng &rng, const Shape &shape, const Shape &perm, size_t element_size) {
    g_case = "permute " + shape_str(shape) + " perm " + shape_str(perm) + " element_size " +
             std::to_string(element_size);
    const size_t count = size_t(numel(shape));
    std::vector<unsigned char> x(count * element_size);
    for (auto &byte : x) byte = static_cast<unsigned char>(rng.next());
    Shape y_shape(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) y_shape[i] = shape[size_t(perm[i])];
    std::vector<unsigned char> ref(x.size());
    for (size_t o = 0; o < count; ++o) {
        const Shape y_index = unravel(int64_t(o), y_shape);
        Shape x_index(shape.size());
        for (size_t i = 0; i < shape.size(); ++i) x_index[size_t(perm[i])] = y_index[i];
        std::memcpy(&ref[o * element_size], &x[size_t(ravel(x_index, shape)) * element_size],
                    element_size);
    }
    Output<unsigned char> y(ref.size(), 0x5A);
    fm::cpu::permute(shape.data(), int(shape.size()), perm.data(), x.data(), y.data(), element_size);
    CHECK(ref.empty() || std::memcmp(y.data(), ref.data(), ref.size()) == 0);
    y.finish();
}

Shape random_perm(Rng &rng, size_t rank) {
    Shape perm(rank);
    for (size_t i = 0; i < rank; ++i) perm[i] = int64_t(i);
    for (size_t i = rank; i > 1; --i) std::swap(perm[i - 1], perm[size_t(rng.range(0, int64_t(i) - 1))]);
    return perm;
}

void test_permute(Rng &rng) {
    const size_t sizes[] = {4, 1, 2, 8, 12};
    for (int t = 0; t < 60; ++t) {
        const int rank = int(rng.range(0, 5));
        const Shape shape = rng.shape(rank, rng.chance(10) ? 0 : 1, 6);
        check_permute(rng, shape, random_perm(rng, size_t(rank)), sizes[t % 5]);
    }
    // Transposes large enough for the tiled path and several tasks.
    check_permute(rng, {300, 500}, {1, 0}, 4);
    check_permute(rng, {3, 70, 90}, {0, 2, 1}, 4);
    check_permute(rng, {8, 30, 40, 3}, {0, 3, 1, 2}, 4);
    check_permute(rng, {8, 3, 30, 40}, {0, 2, 3, 1}, 4);
    check_permute(rng, {4, 5, 6, 7, 8}, {4, 2, 0, 3, 1}, 4);
    check_permute(rng, {4, 5, 6, 7, 8}, {0, 1, 2, 4, 3}, 2);
    check_permute(rng, {5, 40, 30}, {2, 1, 0}, 12);
}

void check_broadcast(Rng &rng, const Shape &in_shape, const Shape &out_shape) {
    g_case = "broadcast_to " + shape_str(in_shape) + " -> " + shape_str(out_shape);
    const auto x = rng.floats(size_t(numel(in_shape)));
    std::vector<double> ref(static_cast<size_t>(numel(out_shape)));
    for (size_t o = 0; o < ref.size(); ++o) {
        Shape index = unravel(int64_t(o), out_shape);
        for (size_t d = 0; d < index.size(); ++d) {
            if (in_shape[d] == 1) index[d] = 0;
        }
        ref[o] = x[size_t(ravel(index, in_shape))];
    }
    Output<float> y(ref.size());
    fm::cpu::broadcast_to(in_shape.data(), out_shape.data(), int(in_shape.size()), x.data(), y.data());
    expect_exact(y.data(), ref);
    y.finish();
}

void test_broadcast(Rng &rng) {
    for (int t = 0; t < 50; ++t) {
        const int rank = int(rng.range(0, 5));
        const Shape out = rng.shape(rank, rng.chance(10) ? 0 : 1, 6);
        Shape in = out;
        for (auto &d : in) {
            if (rng.chance(50)) d = 1;
        }
        check_broadcast(rng, in, out);
    }
    check_broadcast(rng, {1, 1000}, {300, 1000});
    check_broadcast(rng, {300, 1}, {300, 1000});
    check_broadcast(rng, {7, 1, 9, 1}, {7, 80, 9, 60});
}

void check_slice(Rng &rng, const Shape &x_shape, const Shape &starts, const Shape &y_shape) {
    g_case = "slice " + shape_str(x_shape) + " starts " + shape_str(starts) + " size " +
             shape_str(y_shape);
    const auto x = rng.floats(size_t(numel(x_shape)));
    std::vector<double> ref(static_cast<size_t>(numel(y_shape)));
    for (size_t o = 0; o < ref.size(); ++o) {
        Shape index = unravel(int64_t(o), y_shape);
        for (size_t d = 0; d < index.size(); ++d) index[d] += starts[d];
        ref[o] = x[size_t(ravel(index, x_shape))];
    }
    Output<float> y(ref.size());
    fm::cpu::slice(x_shape.data(), int(x_shape.size()), starts.data(), y_shape.data(), x.data(),
                   y.data());
    expect_exact(y.data(), ref);
    y.finish();
}

void test_slice(Rng &rng) {
    for (int t = 0; t < 60; ++t) {
        const int rank = int(rng.range(0, 5));
        const Shape x_shape = rng.shape(rank, 0, 7);
        Shape starts(static_cast<size_t>(rank)), y_shape(static_cast<size_t>(rank));
        for (size_t d = 0; d < size_t(rank); ++d) {
            starts[d] = rng.range(0, x_shape[d]);
            y_shape[d] = rng.range(0, x_shape[d] - starts[d]);
            if (rng.chance(30)) y_shape[d] = x_shape[d] - starts[d];
        }
        check_slice(rng, x_shape, starts, y_shape);
    }
    check_slice(rng, {400, 300}, {17, 3}, {350, 290});
    // A slice past the end is an error, not a read out of bounds.
    g_case = "slice out of bounds";
    const Shape x_shape = {4, 5}, starts = {1, 3}, y_shape = {2, 3};
    const std::vector<float> x(20, 1.0f);
    std::vector<float> y(6);
    expect_out_of_range("along dim 1", [&] {
        fm::cpu::slice(x_shape.data(), 2, starts.data(), y_shape.data(), x.data(), y.data());
    });
}

void check_pad(Rng &rng, const Shape &x_shape, const Shape &before, const Shape &after) {
    g_case = "pad " + shape_str(x_shape) + " before " + shape_str(before) + " after " +
             shape_str(after);
    Shape y_shape(x_shape.size());
    for (size_t d = 0; d < x_shape.size(); ++d) y_shape[d] = before[d] + x_shape[d] + after[d];
    const auto x = rng.floats(size_t(numel(x_shape)));
    const float value = rng.uniform(-3, 3);
    std::vector<double> ref(static_cast<size_t>(numel(y_shape)), value);
    for (int64_t i = 0; i < numel(x_shape); ++i) {
        Shape index = unravel(i, x_shape);
        for (size_t d = 0; d < index.size(); ++d) index[d] += before[d];
        ref[size_t(ravel(index, y_shape))] = x[size_t(i)];
    }
    Output<float> y(ref.size());
    fm::cpu::pad(x_shape.data(), int(x_shape.size()), before.data(), y_shape.data(), value, x.data(),
                 y.data());
    expect_exact(y.data(), ref);
    y.finish();
}

void test_pad(Rng &rng) {
    for (int t = 0; t < 60; ++t) {
        const int rank = int(rng.range(0, 5));
        const Shape x_shape = rng.shape(rank, 0, 6);
        Shape before(static_cast<size_t>(rank)), after(static_cast<size_t>(rank));
        for (size_t d = 0; d < size_t(rank); ++d) {
            before[d] = rng.chance(40) ? 0 : rng.range(0, 3);
            after[d] = rng.chance(40) ? 0 : rng.range(0, 3);
        }
        check_pad(rng, x_shape, before, after);
    }
    check_pad(rng, {2, 3, 224, 200}, {0, 0, 3, 3}, {0, 0, 3, 3});
}

void check_concat(Rng &rng, const std::vector<Shape> &shapes, int axis) {
    g_case = "concat axis " + std::to_string(axis) + " of";
    for (const Shape &s : shapes) g_case += " " + shape_str(s);
    std::vector<std::vector<float>> inputs;
    std::vector<const float *> pointers;
    std::vector<const int64_t *> shape_pointers;
    for (const Shape &s : shapes) {
        inputs.push_back(rng.floats(size_t(numel(s))));
        shape_pointers.push_back(s.data());
    }
    for (const auto &in : inputs) pointers.push_back(in.data());
    Shape y_shape = shapes[0];
    y_shape[size_t(axis)] = 0;
    for (const Shape &s : shapes) y_shape[size_t(axis)] += s[size_t(axis)];
    std::vector<double> ref(static_cast<size_t>(numel(y_shape)));
    int64_t offset = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
        for (int64_t e = 0; e < numel(shapes[i]); ++e) {
            Shape index = unravel(e, shapes[i]);
            index[size_t(axis)] += offset;
            ref[size_t(ravel(index, y_shape))] = inputs[i][size_t(e)];
        }
        offset += shapes[i][size_t(axis)];
    }
    Output<float> y(ref.size());
    fm::cpu::concat(pointers.data(), shape_pointers.data(), shapes.size(), int(y_shape.size()), axis,
                    y.data());
    expect_exact(y.data(), ref);
    y.finish();
}

void test_concat(Rng &rng) {
    for (int t = 0; t < 60; ++t) {
        const int rank = int(rng.range(1, 5));
        const int axis = int(rng.range(0, rank - 1));
        const Shape base = rng.shape(rank, 1, 5);
        std::vector<Shape> shapes(static_cast<size_t>(rng.range(1, 4)), base);
        for (auto &s : shapes) s[size_t(axis)] = rng.range(0, 4);
        check_concat(rng, shapes, axis);
    }
    check_concat(rng, {{200, 300}, {1, 300}, {150, 300}}, 0);
    check_concat(rng, {{200, 300}, {200, 1}, {200, 150}}, 1);
}

// ---- Softmax ---------------------------------------------------------------------

void check_softmax(int64_t outer, int64_t classes, int64_t inner, const std::vector<float> &x) {
    for (bool log : {false, true}) {
        g_case = std::string(log ? "log_softmax" : "softmax") + " outer " + std::to_string(outer) +
                 " classes " + std::to_string(classes) + " inner " + std::to_string(inner);
        std::vector<double> ref(x.size());
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t i = 0; i < inner; ++i) {
                auto at = [&](int64_t c) { return size_t((o * classes + c) * inner + i); };
                double max = -std::numeric_limits<double>::infinity();
                for (int64_t c = 0; c < classes; ++c) max = std::max(max, double(x[at(c)]));
                double sum = 0;
                for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(x[at(c)]) - max);
                for (int64_t c = 0; c < classes; ++c) {
                    const double shifted = double(x[at(c)]) - max;
                    ref[at(c)] = log ? shifted - std::log(sum) : std::exp(shifted) / sum;
                }
            }
        }
        Output<float> y(ref.size());
        (log ? fm::cpu::log_softmax : fm::cpu::softmax)(outer, classes, inner, x.data(), y.data());
        expect_close(y.data(), ref);
        bool finite = true;
        for (size_t i = 0; i < ref.size(); ++i) finite = finite && std::isfinite(y[i]);
        CHECK(finite);
        y.finish();
    }
}

void test_softmax(Rng &rng) {
    for (int t = 0; t < 40; ++t) {
        const int64_t outer = rng.range(1, 6);
        const int64_t classes = rng.chance(10) ? 1 : rng.range(1, 40);
        const int64_t inner = rng.chance(50) ? 1 : rng.range(1, 140);
        check_softmax(outer, classes, inner, rng.floats(size_t(outer * classes * inner), -6, 6));
    }
    check_softmax(300, 10, 1, rng.floats(3000, -6, 6));
    check_softmax(0, 10, 3, {});
    // Extreme logits stay finite: the maximum is subtracted before exp().
    const std::vector<float> extreme = {1e30f, -1e30f, 0.0f, -1e30f, -1e30f, -1e30f,
                                        1e30f, 1e30f, -1e30f, 3.0f, -1e30f, 1e30f};
    check_softmax(4, 3, 1, extreme);
    check_softmax(1, 3, 4, extreme);
}

// ---- Indexing -----------------------------------------------------------------------

std::vector<int32_t> random_indices(Rng &rng, int64_t count, int64_t limit) {
    std::vector<int32_t> v(static_cast<size_t>(count));
    for (auto &i : v) i = int32_t(rng.range(0, limit - 1));
    return v;
}

void test_gather_scatter(Rng &rng) {
    for (int t = 0; t < 40; ++t) {
        const int64_t rows = rng.range(1, 20), width = rng.chance(10) ? 0 : rng.range(1, 70);
        const int64_t count = rng.chance(10) ? 0 : rng.range(1, 40);
        g_case = "gather_rows rows " + std::to_string(rows) + " width " + std::to_string(width) +
                 " count " + std::to_string(count);
        const auto table = rng.floats(size_t(rows * width));
        const auto indices = random_indices(rng, count, rows);
        std::vector<double> ref;
        for (int64_t i = 0; i < count; ++i) {
            for (int64_t j = 0; j < width; ++j) ref.push_back(table[size_t(indices[size_t(i)] * width + j)]);
        }
        Output<float> y(ref.size());
        fm::cpu::gather_rows(table.data(), rows, width, indices.data(), count, y.data());
        expect_exact(y.data(), ref);
        y.finish();
    }
    // Repeated indices accumulate, in increasing i; sizes up to several tasks.
    const int64_t cases[][3] = {{5, 7, 30}, {1, 3, 10}, {3, 1, 0}, {50, 1500, 400}, {700, 64, 3000}};
    for (int t = 0; t < 40; ++t) {
        int64_t rows = rng.range(1, 10), width = rng.range(1, 70), count = rng.range(0, 50);
        if (t < 5) {
            rows = cases[t][0];
            width = cases[t][1];
            count = cases[t][2];
        }
        g_case = "scatter_add_rows rows " + std::to_string(rows) + " width " + std::to_string(width) +
                 " count " + std::to_string(count);
        const auto dy = rng.floats(size_t(count * width));
        const auto indices = random_indices(rng, count, rows);
        std::vector<double> ref(static_cast<size_t>(rows * width), 0.0), scale(ref.size(), 0.0);
        for (int64_t i = 0; i < count; ++i) {
            for (int64_t j = 0; j < width; ++j) {
                const size_t at = size_t(indices[size_t(i)] * width + j);
                ref[at] += dy[size_t(i * width + j)];
                scale[at] += std::fabs(dy[size_t(i * width + j)]);
            }
        }
        Output<float> dtable(ref.size());
        fm::cpu::scatter_add_rows(dy.data(), width, indices.data(), count, rows, dtable.data());
        expect_close(dtable.data(), ref, scale);
        dtable.finish();
    }
    g_case = "gather_rows / scatter_add_rows bad index";
    const std::vector<float> table(40, 1.0f);
    std::vector<float> out(50);
    const std::vector<int32_t> bad = {0, 9, 2, 12, 5}, negative = {0, -1, 3};
    expect_out_of_range("index 12 at position 3 is outside [0, 10)", [&] {
        fm::cpu::gather_rows(table.data(), 10, 4, bad.data(), 5, out.data());
    });
    expect_out_of_range("index -1 at position 1 is outside [0, 10)", [&] {
        fm::cpu::gather_rows(table.data(), 10, 4, negative.data(), 3, out.data());
    });
    expect_out_of_range("index 12 at position 3 is outside [0, 10)", [&] {
        fm::cpu::scatter_add_rows(table.data(), 4, bad.data(), 5, 10, out.data());
    });
}

void test_one_hot(Rng &rng) {
    for (int t = 0; t < 30; ++t) {
        const int64_t depth = rng.range(1, 20), count = rng.chance(10) ? 0 : rng.range(1, 40);
        g_case = "one_hot count " + std::to_string(count) + " depth " + std::to_string(depth);
        const auto indices = random_indices(rng, count, depth);
        std::vector<double> ref(static_cast<size_t>(count * depth), 0.0);
        for (int64_t i = 0; i < count; ++i) ref[size_t(i * depth + indices[size_t(i)])] = 1.0;
        Output<float> y(ref.size());
        fm::cpu::one_hot(indices.data(), count, depth, y.data());
        expect_exact(y.data(), ref);
        y.finish();
    }
    g_case = "one_hot bad index";
    const std::vector<int32_t> bad = {1, 2, 10};
    std::vector<float> y(30);
    expect_out_of_range("index 10 at position 2 is outside [0, 10)",
                        [&] { fm::cpu::one_hot(bad.data(), 3, 10, y.data()); });
}

void test_pick(Rng &rng) {
    for (int t = 0; t < 40; ++t) {
        const int64_t outer = rng.range(0, 6), classes = rng.range(1, 12);
        const int64_t inner = rng.chance(50) ? 1 : rng.range(1, 30);
        g_case = "pick outer " + std::to_string(outer) + " classes " + std::to_string(classes) +
                 " inner " + std::to_string(inner);
        const auto x = rng.floats(size_t(outer * classes * inner));
        const auto labels = random_indices(rng, outer * inner, classes);
        const auto dy = rng.floats(size_t(outer * inner));
        std::vector<double> ref(static_cast<size_t>(outer * inner)), ref_dx(x.size(), 0.0);
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t i = 0; i < inner; ++i) {
                const size_t at = size_t((o * classes + labels[size_t(o * inner + i)]) * inner + i);
                ref[size_t(o * inner + i)] = x[at];
                ref_dx[at] = dy[size_t(o * inner + i)];
            }
        }
        Output<float> y(ref.size()), dx(ref_dx.size());
        fm::cpu::pick(outer, classes, inner, x.data(), labels.data(), y.data());
        fm::cpu::pick_backward(outer, classes, inner, dy.data(), labels.data(), dx.data());
        expect_exact(y.data(), ref);
        expect_exact(dx.data(), ref_dx);
        y.finish();
        dx.finish();
    }
    g_case = "pick bad label";
    const std::vector<float> x(2 * 10 * 2, 0.5f);
    std::vector<float> y(40);
    const std::vector<int32_t> bad = {3, 9, 1, 12};  // [outer 2, inner 2]
    expect_out_of_range("label 12 at position 3 is outside [0, 10)",
                        [&] { fm::cpu::pick(2, 10, 2, x.data(), bad.data(), y.data()); });
    expect_out_of_range("label 12 at position 3 is outside [0, 10)",
                        [&] { fm::cpu::pick_backward(2, 10, 2, x.data(), bad.data(), y.data()); });
}

// ---- Benchmark -------------------------------------------------------------------

// GFLOP/s of the products the reference models spend their time in.
int bench_matmul() {
    struct Case {
        const char *name;
        int64_t batch, m, n, k;
        bool ta, tb;
    };
    const Case cases[] = {
        {"mlp dense 128x784 @ (256x784)^T", 1, 128, 256, 784, false, true},
        {"mlp dense 128x784 @ 784x256 (no transpose)", 1, 128, 256, 784, false, false},
        {"mlp dense grad (128x256)^T @ 128x784", 1, 256, 784, 128, true, false},
        {"square 512", 1, 512, 512, 512, false, false},
        {"cifar conv64 fwd 64x576 @ 576x256 x128", 128, 64, 256, 576, false, false},
    };
    Rng rng{7};
    std::printf("matmul micro-kernel: %s, %zu threads\n", fm::cpu::matmul_isa(),
                fm::cpu::ThreadPool::global().threads());
    for (const Case &cs : cases) {
        MatmulShape s;
        s.batch = cs.batch, s.m = cs.m, s.n = cs.n, s.k = cs.k;
        s.transpose_a = cs.ta, s.transpose_b = cs.tb;
        s.a_batch_stride = 0, s.b_batch_stride = cs.k * cs.n, s.c_batch_stride = cs.m * cs.n;
        const auto a = rng.floats(size_t(s.m * s.k)), b = rng.floats(size_t(s.batch * s.k * s.n));
        std::vector<float> c(static_cast<size_t>(s.batch * s.m * s.n));
        fm::cpu::matmul(s, a.data(), b.data(), c.data());  // warm-up
        const double flops = 2.0 * double(s.batch * s.m * s.n * s.k);
        const int iterations = std::max(1, int(2e9 / flops));
        double best = 1e30;
        for (int rep = 0; rep < 5; ++rep) {
            const auto start = std::chrono::steady_clock::now();
            for (int i = 0; i < iterations; ++i) fm::cpu::matmul(s, a.data(), b.data(), c.data());
            const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
            best = std::min(best, elapsed.count() / iterations);
        }
        std::printf("%-42s %7.1f GFLOP/s (best of 5)\n", cs.name, flops / best / 1e9);
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench_matmul();
    Rng rng{20240601};
    test_matmul(rng);
    test_reduce(rng);
    test_argmax(rng);
    test_permute(rng);
    test_broadcast(rng);
    test_slice(rng);
    test_pad(rng);
    test_concat(rng);
    test_softmax(rng);
    test_gather_scatter(rng);
    test_one_hot(rng);
    test_pick(rng);
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    std::printf("checksum %016" PRIx64 "\n", g_checksum);
    return g_failures == 0 ? 0 : 1;
}
