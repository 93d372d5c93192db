// Indexing kernels: embedding lookup and its gradient, one-hot, and picking
// one class per position (the cross-entropy gather) and its gradient.
//
// Every index is validated in one sequential pass before any work is
// spread over threads, so the error names the first bad position whatever
// the thread count (a task's exception would be whichever failed first).
#include <algorithm>
#include <cstring>

#include "error.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

constexpr int64_t kTaskElements = int64_t(1) << 15;

size_t grain_for(int64_t elements_per_item) {
    return size_t(std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_item)));
}

void check_indices(const char *what, const int32_t *indices, int64_t count, int64_t limit) {
    for (int64_t i = 0; i < count; ++i) {
        if (indices[i] < 0 || indices[i] >= limit) {
            fail(FM_ERR_OUT_OF_RANGE, what, " ", indices[i], " at position ", i, " is outside [0, ",
                 limit, ")");
        }
    }
}

}  // namespace

void gather_rows(const float *table, int64_t rows, int64_t width, const int32_t *indices,
                 int64_t count, float *y) {
    check_indices("index", indices, count, rows);
    if (width == 0) return;
    ThreadPool::global().parallel_for(size_t(count), grain_for(width), [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
            std::memcpy(y + int64_t(i) * width, table + int64_t(indices[i]) * width,
                        size_t(width) * sizeof(float));
        }
    });
}

void scatter_add_rows(const float *dy, int64_t width, const int32_t *indices, int64_t count,
                      int64_t rows, float *dtable) {
    check_indices("index", indices, count, rows);
    if (rows * width == 0) return;
    // Tasks own disjoint blocks of dtable (row ranges x column blocks) and
    // each adds its rows' updates in increasing i, so every element sums in
    // the same order as a sequential loop. A task scans all the indices to
    // find its rows: cheap next to the adds while tasks are few.
    constexpr int64_t kColumns = 1024;
    const int64_t column_blocks = (width + kColumns - 1) / kColumns;
    const int64_t work = std::max(count, rows) * width;
    const int64_t row_blocks =
        std::clamp<int64_t>(work / kTaskElements / column_blocks, 1, std::min<int64_t>(rows, 64));
    const int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
    ThreadPool::global().run(size_t(row_blocks * column_blocks), [&](size_t task) {
        const int64_t r0 = int64_t(task) / column_blocks * rows_per_block;
        const int64_t r1 = std::min(rows, r0 + rows_per_block);
        const int64_t c0 = int64_t(task) % column_blocks * kColumns;
        const int64_t n = std::min(kColumns, width - c0);
        for (int64_t r = r0; r < r1; ++r) std::fill_n(dtable + r * width + c0, n, 0.0f);
        for (int64_t i = 0; i < count; ++i) {
            const int64_t r = indices[i];
            if (r < r0 || r >= r1) continue;
            float *out = dtable + r * width + c0;
            const float *in = dy + i * width + c0;
            for (int64_t j = 0; j < n; ++j) out[j] += in[j];
        }
    });
}

void one_hot(const int32_t *indices, int64_t count, int64_t depth, float *y) {
    check_indices("index", indices, count, depth);
    ThreadPool::global().parallel_for(size_t(count), grain_for(depth), [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
            float *row = y + int64_t(i) * depth;
            std::fill_n(row, depth, 0.0f);
            row[indices[i]] = 1.0f;
        }
    });
}

void pick(int64_t outer, int64_t classes, int64_t inner, const float *x, const int32_t *labels,
          float *y) {
    check_indices("label", labels, outer * inner, classes);
    ThreadPool::global().parallel_for(size_t(outer), grain_for(inner), [&](size_t b, size_t e) {
        for (size_t o = b; o < e; ++o) {
            const float *xo = x + int64_t(o) * classes * inner;
            const int32_t *lo = labels + int64_t(o) * inner;
            float *yo = y + int64_t(o) * inner;
            for (int64_t i = 0; i < inner; ++i) yo[i] = xo[int64_t(lo[i]) * inner + i];
        }
    });
}

void pick_backward(int64_t outer, int64_t classes, int64_t inner, const float *dy,
                   const int32_t *labels, float *dx) {
    check_indices("label", labels, outer * inner, classes);
    ThreadPool::global().parallel_for(
        size_t(outer), grain_for(classes * inner), [&](size_t b, size_t e) {
            for (size_t o = b; o < e; ++o) {
                float *dxo = dx + int64_t(o) * classes * inner;
                const int32_t *lo = labels + int64_t(o) * inner;
                const float *dyo = dy + int64_t(o) * inner;
                std::fill_n(dxo, classes * inner, 0.0f);
                for (int64_t i = 0; i < inner; ++i) dxo[int64_t(lo[i]) * inner + i] = dyo[i];
            }
        });
}

}  // namespace fm::cpu
