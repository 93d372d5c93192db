// Batched matrix multiplication: a cache-blocked loop kernel written so that
// the compiler vectorises it at -O2 with the baseline instruction set (no
// -march), to be replaced by packed micro-kernels for specific ISAs.
//
// For each block of kPanelCols columns and kPanelDepth rows of op(B), the
// block is copied into a contiguous, zero-padded panel (transposing it when
// transpose_b); then each row of C accumulates the panel's rows scaled by
// the row's elements of op(A). Every C element is summed over k in
// increasing order in float, whatever the blocking or thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "error.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

// A 128 x 64 panel is 32 KiB: it stays in L1 while every row of the task
// streams through it. 64 columns is 16 SSE (8 AVX) vectors, so the inner
// loop has a constant trip count, fully unrolled with no remainder.
constexpr int64_t kPanelCols = 64;
constexpr int64_t kPanelDepth = 128;
constexpr int64_t kMaxTaskRows = 64, kMinTaskRows = 16;
constexpr int64_t kMinTasks = 8;                            // to spread one small matmul
constexpr double kTaskFlops = 4e6;                          // per task, at least

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Compiled three times, for AVX-512, AVX2 with FMA, and the baseline ISA;
// the loader picks the best the CPU has (an ifunc), so the shipped build
// needs no -march flag. Each element is still summed over p in order, so
// results do not depend on the thread count (they do depend on the ISA:
// FMA rounds once where the baseline rounds twice).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define FM_ISA_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define FM_ISA_CLONES
#endif

// acc[j] += sum over p of a[p * a_step] * panel[p][j], for p increasing.
FM_ISA_CLONES void accumulate_row(const float *a, int64_t a_step, const float *__restrict panel, int64_t depth,
                    float *__restrict acc) {
    for (int64_t p = 0; p < depth; ++p) {
        const float ap = a[p * a_step];
        const float *__restrict b = panel + p * kPanelCols;
        // Unrolled so that loads of acc and b, and the multiply-adds, of
        // different vectors overlap: about 2x at -O2, which does not unroll.
#pragma GCC unroll 16
        for (int64_t j = 0; j < kPanelCols; ++j) acc[j] += ap * b[j];
    }
}

// The same as accumulate_row for four rows of A at once: each panel row is
// loaded once for four rows of C. Every element sees exactly the operations
// accumulate_row would do, in the same order, so the results are identical.
FM_ISA_CLONES void accumulate_rows4(const float *a0, const float *a1, const float *a2, const float *a3,
                                    int64_t a_step, const float *__restrict panel, int64_t depth,
                                    float *__restrict acc0, float *__restrict acc1, float *__restrict acc2,
                                    float *__restrict acc3) {
    for (int64_t p = 0; p < depth; ++p) {
        const float x0 = a0[p * a_step], x1 = a1[p * a_step], x2 = a2[p * a_step], x3 = a3[p * a_step];
        const float *__restrict b = panel + p * kPanelCols;
#pragma GCC unroll 16
        for (int64_t j = 0; j < kPanelCols; ++j) {
            acc0[j] += x0 * b[j];
            acc1[j] += x1 * b[j];
            acc2[j] += x2 * b[j];
            acc3[j] += x3 * b[j];
        }
    }
}

struct Operands {
    const float *a, *b;
    float *c;
    int64_t m, n, k;
    int64_t a_row_step, a_k_step;  // op(A)[i][p] = a[i * a_row_step + p * a_k_step]
    bool transpose_b;
};

// Rows [row_begin, row_end) of one C = op(A) * op(B).
// The running sums of one row of C: zero for the first depth block, else
// what the earlier blocks left in C.
void load_acc(const float *c_row, int64_t cols, int64_t k0, float *acc) {
    if (k0 == 0) {
        std::fill(acc, acc + kPanelCols, 0.0f);
    } else {
        std::copy(c_row, c_row + cols, acc);
        std::fill(acc + cols, acc + kPanelCols, 0.0f);
    }
}

void multiply_rows(const Operands &op, int64_t row_begin, int64_t row_end, float *panel) {
    alignas(64) float acc[kPanelCols];
    alignas(64) float acc4[4][kPanelCols];
    for (int64_t j0 = 0; j0 < op.n; j0 += kPanelCols) {
        const int64_t cols = std::min(kPanelCols, op.n - j0);
        for (int64_t k0 = 0; k0 < op.k; k0 += kPanelDepth) {
            const int64_t depth = std::min(kPanelDepth, op.k - k0);
            // Zero padding beyond `cols` lets the inner loop run full width;
            // those columns of acc are discarded.
            for (int64_t p = 0; p < depth; ++p) {
                float *row = panel + p * kPanelCols;
                if (op.transpose_b) {
                    for (int64_t j = 0; j < cols; ++j) row[j] = op.b[(j0 + j) * op.k + k0 + p];
                } else {
                    std::memcpy(row, op.b + (k0 + p) * op.n + j0, size_t(cols) * sizeof(float));
                }
                std::fill(row + cols, row + kPanelCols, 0.0f);
            }
            int64_t i = row_begin;
            for (; i + 4 <= row_end; i += 4) {
                for (int r = 0; r < 4; ++r) load_acc(op.c + (i + r) * op.n + j0, cols, k0, acc4[r]);
                const float *a = op.a + i * op.a_row_step + k0 * op.a_k_step;
                accumulate_rows4(a, a + op.a_row_step, a + 2 * op.a_row_step, a + 3 * op.a_row_step,
                                 op.a_k_step, panel, depth, acc4[0], acc4[1], acc4[2], acc4[3]);
                for (int r = 0; r < 4; ++r) std::copy(acc4[r], acc4[r] + cols, op.c + (i + r) * op.n + j0);
            }
            for (; i < row_end; ++i) {
                float *c_row = op.c + i * op.n + j0;
                load_acc(c_row, cols, k0, acc);
                accumulate_row(op.a + i * op.a_row_step + k0 * op.a_k_step, op.a_k_step, panel, depth,
                               acc);
                std::copy(acc, acc + cols, c_row);
            }
        }
    }
}

}  // namespace

void matmul(const MatmulShape &s, const float *a, const float *b, float *c) {
    if (s.batch < 0 || s.m < 0 || s.n < 0 || s.k < 0) {
        fail(FM_ERR_INVALID_ARGUMENT, "matmul: negative size (batch ", s.batch, ", m ", s.m, ", n ",
             s.n, ", k ", s.k, ")");
    }
    if (s.batch == 0 || s.m == 0 || s.n == 0) return;
    if (s.k == 0) {
        for (int64_t i = 0; i < s.batch; ++i) std::fill_n(c + i * s.c_batch_stride, s.m * s.n, 0.0f);
        return;
    }
    // Rows per task: as many as pack-once-use-often wants, fewer when that
    // would leave too few tasks to share out. Sizes alone decide.
    int64_t task_rows = kMaxTaskRows;
    while (task_rows > kMinTaskRows && s.batch * ceil_div(s.m, task_rows) < kMinTasks) task_rows /= 2;
    const int64_t row_blocks = ceil_div(s.m, task_rows);
    const double block_flops = 2.0 * double(task_rows) * double(s.n) * double(s.k);
    const size_t grain = size_t(std::max(1.0, kTaskFlops / block_flops));
    const int64_t panel_floats = std::min(kPanelDepth, s.k) * kPanelCols;

    ThreadPool::global().parallel_for(size_t(s.batch * row_blocks), grain, [&](size_t begin, size_t end) {
        std::vector<float> panel(static_cast<size_t>(panel_floats));
        for (size_t item = begin; item < end; ++item) {
            const int64_t batch = int64_t(item) / row_blocks;
            const int64_t row_begin = int64_t(item) % row_blocks * task_rows;
            Operands op;
            op.a = a + batch * s.a_batch_stride;
            op.b = b + batch * s.b_batch_stride;
            op.c = c + batch * s.c_batch_stride;
            op.m = s.m;
            op.n = s.n;
            op.k = s.k;
            op.a_row_step = s.transpose_a ? 1 : s.k;
            op.a_k_step = s.transpose_a ? s.m : 1;
            op.transpose_b = s.transpose_b;
            multiply_rows(op, row_begin, std::min(s.m, row_begin + task_rows), panel.data());
        }
    });
}

}  // namespace fm::cpu
