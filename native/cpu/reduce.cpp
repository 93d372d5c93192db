// Reductions over any set of axes, and argmax along one.
//
// After merging, the input is a nest of dims alternating between kept and
// reduced. Each output element folds its inputs in an order fixed by the
// shape alone: row-major over the reduced dims, where a contiguous reduced
// run is summed with four interleaved double accumulators (so the adds
// pipeline). Work is split over output elements only, except for a
// reduction to one element, which is split into fixed-size chunks whose
// results are combined in order.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"
#include "strides.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

constexpr int64_t kTaskElements = int64_t(1) << 15;  // inputs read per task, at least
constexpr int64_t kChunk = int64_t(1) << 16;         // of a reduction to one element
constexpr int64_t kColumns = 256;                    // kept contiguous outputs per task

size_t grain_for(int64_t elements_per_item) {
    return size_t(std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_item)));
}

// The fold of each kind: a double accumulator for sums, the value itself for
// max/min. NaN wins every comparison, so one NaN input makes a NaN output.
struct SumFold {
    using Acc = double;
    static Acc first(float v) { return v; }
    static void add(Acc &acc, float v) { acc += v; }
    static void merge(Acc &acc, Acc v) { acc += v; }
    static float empty() { return 0.0f; }

    static Acc run(const float *x, int64_t n) {
        double lanes[4] = {0, 0, 0, 0};
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            for (int l = 0; l < 4; ++l) lanes[l] += x[j + l];
        }
        double tail = 0;
        for (; j < n; ++j) tail += x[j];
        return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + tail;
    }
};

template <bool IsMax>
struct ExtremumFold {
    using Acc = float;
    static Acc first(float v) { return v; }
    static void add(Acc &acc, float v) {
        if ((IsMax ? v > acc : v < acc) || std::isnan(v)) acc = v;
    }
    static void merge(Acc &acc, Acc v) { add(acc, v); }
    static float empty() {
        return IsMax ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
    }
    static Acc run(const float *x, int64_t n) {
        Acc acc = first(x[0]);
        for (int64_t j = 1; j < n; ++j) add(acc, x[j]);
        return acc;
    }
};

using ReduceLoop = StridedLoop<1>;  // strides into x

// The input as merged dims, split into the loop over kept dims (its
// row-major index is the output index) and the loop over reduced dims.
struct ReducePlan {
    ReduceLoop kept, reduced;
    bool inner_reduced = false;  // which kind the innermost merged dim is
};

ReducePlan plan_reduce(const int64_t *shape, int rank, uint32_t axes_mask) {
    int64_t strides[kMaxRank];
    dense_strides(shape, rank, strides);
    ReducePlan plan;
    int last_kind = -1;
    for (int d = 0; d < rank; ++d) {
        if (shape[d] == 1) continue;
        const int kind = (axes_mask >> d) & 1;
        ReduceLoop &loop = kind ? plan.reduced : plan.kept;
        if (kind == last_kind) {
            // Dense input: a dim always merges into the previous dim of its kind.
            loop.shape[loop.rank - 1] *= shape[d];
            loop.strides[0][loop.rank - 1] = strides[d];
        } else {
            loop.push_dim(shape[d], {strides[d]});
        }
        last_kind = kind;
    }
    plan.inner_reduced = last_kind == 1;
    return plan;
}

// The innermost dim is reduced: each output folds contiguous runs.
template <class Fold>
void reduce_runs(const ReducePlan &plan, const float *x, float *y) {
    const ReduceLoop &reduced = plan.reduced;
    const int outer_dims = reduced.rank - 1;
    const int64_t run = reduced.shape[outer_dims];
    const int64_t runs = reduced.count(outer_dims);
    const int64_t outputs = plan.kept.count(plan.kept.rank);
    auto fold_output = [&](const float *base) {
        StridedCursor<1> r(reduced, outer_dims, 0);
        typename Fold::Acc acc = Fold::run(base + r.offset(0), run);
        for (int64_t i = 1; i < runs; ++i) {
            r.next();
            Fold::merge(acc, Fold::run(base + r.offset(0), run));
        }
        return acc;
    };
    if (outputs == 1 && runs == 1 && run > kChunk) {
        const int64_t chunks = (run + kChunk - 1) / kChunk;
        std::vector<typename Fold::Acc> partial(size_t(chunks), 0);
        ThreadPool::global().run(size_t(chunks), [&](size_t c) {
            const int64_t begin = int64_t(c) * kChunk;
            partial[c] = Fold::run(x + begin, std::min(kChunk, run - begin));
        });
        typename Fold::Acc acc = partial[0];
        for (int64_t c = 1; c < chunks; ++c) Fold::merge(acc, partial[size_t(c)]);
        y[0] = float(acc);
        return;
    }
    ThreadPool::global().parallel_for(
        size_t(outputs), grain_for(run * runs), [&](size_t begin, size_t end) {
            StridedCursor<1> k(plan.kept, plan.kept.rank, int64_t(begin));
            for (size_t o = begin; o < end; ++o, k.next()) y[o] = float(fold_output(x + k.offset(0)));
        });
}

// The innermost dim is kept: a block of neighbouring outputs folds
// neighbouring inputs together, so the inner loop runs over contiguous
// memory for every reduced index.
template <class Fold>
void reduce_columns(const ReducePlan &plan, const float *x, float *y) {
    const ReduceLoop &kept = plan.kept;
    const int outer_dims = kept.rank - 1;
    const int64_t width = kept.shape[outer_dims];
    const int64_t blocks = (width + kColumns - 1) / kColumns;
    const int64_t reduced_count = plan.reduced.count(plan.reduced.rank);
    const int64_t items = kept.count(outer_dims) * blocks;
    ThreadPool::global().parallel_for(
        size_t(items), grain_for(reduced_count * kColumns), [&](size_t begin, size_t end) {
            typename Fold::Acc acc[kColumns];
            for (size_t item = begin; item < end; ++item) {
                const int64_t outer = int64_t(item) / blocks;
                const int64_t c0 = int64_t(item) % blocks * kColumns;
                const int64_t n = std::min(kColumns, width - c0);
                const float *base = x + StridedCursor<1>(kept, outer_dims, outer).offset(0) + c0;
                StridedCursor<1> r(plan.reduced, plan.reduced.rank, 0);
                for (int64_t j = 0; j < n; ++j) acc[j] = Fold::first(base[r.offset(0) + j]);
                for (int64_t i = 1; i < reduced_count; ++i) {
                    r.next();
                    const float *row = base + r.offset(0);
                    for (int64_t j = 0; j < n; ++j) Fold::add(acc[j], row[j]);
                }
                float *out = y + outer * width + c0;
                for (int64_t j = 0; j < n; ++j) out[j] = float(acc[j]);
            }
        });
}

template <class Fold>
void reduce_with(const int64_t *shape, int rank, uint32_t axes_mask, const float *x, float *y) {
    int64_t outputs = 1, inputs = 1;
    for (int d = 0; d < rank; ++d) {
        inputs *= shape[d];
        if (!((axes_mask >> d) & 1)) outputs *= shape[d];
    }
    if (outputs == 0) return;
    if (inputs == 0) {
        // Folding nothing gives the fold's identity (PyTorch raises for max/min).
        std::fill(y, y + outputs, Fold::empty());
        return;
    }
    const ReducePlan plan = plan_reduce(shape, rank, axes_mask);
    if (plan.reduced.rank == 0) {
        std::copy(x, x + outputs, y);  // every reduced axis has size 1
    } else if (plan.inner_reduced) {
        reduce_runs<Fold>(plan, x, y);
    } else {
        reduce_columns<Fold>(plan, x, y);
    }
}

}  // namespace

void reduce(Reduction kind, const int64_t *shape, int rank, uint32_t axes_mask, const float *x,
            float *y) {
    check_rank(rank, "reduce");
    if ((axes_mask >> rank) != 0) {
        fail(FM_ERR_INVALID_ARGUMENT, "reduce: axes mask 0x", std::hex, axes_mask, std::dec,
             " names an axis beyond rank ", rank);
    }
    switch (kind) {
        case Reduction::Sum: return reduce_with<SumFold>(shape, rank, axes_mask, x, y);
        case Reduction::Max: return reduce_with<ExtremumFold<true>>(shape, rank, axes_mask, x, y);
        case Reduction::Min: return reduce_with<ExtremumFold<false>>(shape, rank, axes_mask, x, y);
    }
    fail(FM_ERR_INVALID_ARGUMENT, "reduce: unknown reduction ", int(kind));
}

// The first maximum, where NaN counts as the maximum (as in PyTorch): the
// first NaN wins, and nothing replaces it.
void argmax(const int64_t *shape, int rank, int axis, const float *x, int32_t *y) {
    check_rank(rank, "argmax");
    if (axis < 0 || axis >= rank) {
        fail(FM_ERR_INVALID_ARGUMENT, "argmax: axis ", axis, " is outside [0, ", rank, ")");
    }
    const int64_t outer = element_count(shape, axis);
    const int64_t n = shape[axis];
    const int64_t inner = element_count(shape + axis + 1, rank - axis - 1);
    if (outer * inner == 0) return;
    if (n == 0) fail(FM_ERR_INVALID_ARGUMENT, "argmax: axis ", axis, " has size 0");
    const int64_t blocks = (inner + kColumns - 1) / kColumns;
    ThreadPool::global().parallel_for(
        size_t(outer * blocks), grain_for(n * std::min(inner, kColumns)), [&](size_t begin, size_t end) {
            float best[kColumns];
            int32_t index[kColumns];
            for (size_t item = begin; item < end; ++item) {
                const int64_t o = int64_t(item) / blocks;
                const int64_t c0 = int64_t(item) % blocks * kColumns;
                const int64_t width = std::min(kColumns, inner - c0);
                const float *base = x + o * n * inner + c0;
                for (int64_t j = 0; j < width; ++j) {
                    best[j] = base[j];
                    index[j] = 0;
                }
                for (int64_t i = 1; i < n; ++i) {
                    const float *row = base + i * inner;
                    for (int64_t j = 0; j < width; ++j) {
                        const float v = row[j];
                        if (v > best[j] || (std::isnan(v) && !std::isnan(best[j]))) {
                            best[j] = v;
                            index[j] = int32_t(i);
                        }
                    }
                }
                std::copy(index, index + width, y + o * inner + c0);
            }
        });
}

}  // namespace fm::cpu
