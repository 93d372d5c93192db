// Runs a fused elementwise group of a plan on the CPU.
#pragma once

#include <vector>

#include "plan.h"

namespace fm::cpu {

// `loads` and `stores` are the resolved addresses of fused.loads and
// fused.stores; `run_index` seeds dropout masks.
void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index);

// The sum of x[0, n) in double, in a fixed order whatever the ISA (16
// lanes added pairwise, then the tail).
double sum_run(const float *x, int64_t n);
// In one pass: x[i] += bias (if add_bias), then *sum = sum_run(x, n) and
// *squares = the sum of x[i]^2 (each in double, in sum_run's order), for
// those not null.
void add_and_sum_run(float *x, int64_t n, float bias, bool add_bias, double *sum, double *squares);

// dst[r * dst_stride + i] = src[r * src_stride + i] for r < rows, i < n:
// short rows without a library call each (vectorised like add_rows).
void copy_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows, int64_t n);

// dst[r * dst_stride + i] += src[r * src_stride + i] for r < rows, i < n
// (vectorised for the widest ISA present).
void add_rows(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows, int64_t n);

// A sum over all axes but one, computed during the pass: out[c] = the sum,
// in double, of register `reg` over the elements e with (e / inner) %
// channels == c (the channel axis of NCHW, or the columns of a matrix).
// The pass's chunks (fixed by the size) each sum their elements in order;
// the chunks' sums are then added in order, so the result does not depend
// on the thread count.
struct ChannelSum {
    int32_t reg = -1;
    int64_t channels = 0, inner = 1;
    float *out = nullptr;
};

// run_fused, also computing `sums`, and skipping the stores whose
// `skip_store` entry is true (values no later step reads).
void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index, const std::vector<ChannelSum> &sums, const std::vector<bool> &skip_store);

}  // namespace fm::cpu
