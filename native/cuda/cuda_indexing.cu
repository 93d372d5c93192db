// Indexing on the GPU: embedding rows, their gradient, one-hot, and the
// cross-entropy pick. A bad index cannot throw from a kernel: the first one
// is recorded in the run's DataError (and sets the abort flag, so the run's
// variable updates are skipped); the executor reports it as
// FM_ERR_OUT_OF_RANGE. The bad element itself reads as 0.
#include "cuda_kernels.h"

namespace fm {
namespace cuda {

namespace {

__device__ bool valid(DataError *errors, int32_t tag, int32_t what, int32_t index, int64_t position,
                      int64_t limit) {
    if (index >= 0 && index < limit) return true;
    // The first step to find a bad index claims the record (kernels of a
    // run execute one after another); within it the lowest position wins.
    const int32_t owner = atomicCAS(&errors->set, 0, tag);
    if (owner == 0 || owner == tag) {
        errors->what = what;
        errors->limit = limit;
        // Stored complemented, so the zeroed record is the identity of max.
        atomicMax(&errors->key, ~((static_cast<unsigned long long>(position) << 32) | uint32_t(index)));
    }
    return false;
}

__global__ void gather_rows_kernel(const float *table, int64_t rows, int64_t width, const int32_t *indices,
                                   int64_t count, float *y, DataError *errors, int32_t tag) {
    const int64_t total = count * width, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t i = idx / width, j = idx % width;
        const int32_t r = indices[i];
        y[idx] = (j == 0 ? valid(errors, tag, kBadIndex, r, i, rows) : (r >= 0 && r < rows)) ? table[r * width + j] : 0.0f;
    }
}

// One thread per (row block, column): each adds its column's updates in
// increasing i, as the CPU does, so sums are deterministic without atomics.
__global__ void scatter_add_rows_kernel(const float *dy, int64_t width, const int32_t *indices, int64_t count,
                                        int64_t rows, float *dtable, DataError *errors, int32_t tag) {
    const int64_t total = rows * width, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t r = idx / width, j = idx % width;
        float sum = 0.0f;
        for (int64_t i = 0; i < count; ++i) {
            const int32_t at = indices[i];
            if (idx == 0) valid(errors, tag, kBadIndex, at, i, rows);
            if (at == r) sum += dy[i * width + j];
        }
        dtable[idx] = sum;
    }
}

__global__ void one_hot_kernel(const int32_t *indices, int64_t count, int64_t depth, float *y, DataError *errors, int32_t tag) {
    const int64_t total = count * depth, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t i = idx / depth, j = idx % depth;
        if (j == 0) valid(errors, tag, kBadIndex, indices[i], i, depth);
        y[idx] = indices[i] == j ? 1.0f : 0.0f;
    }
}

__global__ void pick_kernel(int64_t outer, int64_t classes, int64_t inner, const float *x, const int32_t *labels,
                            float *y, DataError *errors, int32_t tag) {
    const int64_t total = outer * inner, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t o = idx / inner, i = idx % inner;
        const int32_t label = labels[idx];
        y[idx] = valid(errors, tag, kBadLabel, label, idx, classes) ? x[(o * classes + label) * inner + i] : 0.0f;
    }
}

__global__ void pick_backward_kernel(int64_t outer, int64_t classes, int64_t inner, const float *dy,
                                     const int32_t *labels, float *dx) {
    const int64_t total = outer * classes * inner, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t i = idx % inner, c = idx / inner % classes, o = idx / (inner * classes);
        dx[idx] = labels[o * inner + i] == c ? dy[o * inner + i] : 0.0f;
    }
}

}  // namespace

void gather_rows(const KernelContext &k, const float *table, int64_t rows, int64_t width, const int32_t *indices,
                 int64_t count, float *y) {
    if (count * width == 0) return;
    gather_rows_kernel<<<blocks_for(count * width, k), kThreads, 0, k.stream>>>(table, rows, width, indices, count,
                                                                                y, k.errors, k.step_tag);
    check_launch("gather_rows");
}

void scatter_add_rows(const KernelContext &k, const float *dy, int64_t width, const int32_t *indices,
                      int64_t count, int64_t rows, float *dtable) {
    if (rows * width == 0) return;
    scatter_add_rows_kernel<<<blocks_for(rows * width, k), kThreads, 0, k.stream>>>(dy, width, indices, count, rows,
                                                                                    dtable, k.errors, k.step_tag);
    check_launch("scatter_add_rows");
}

void one_hot(const KernelContext &k, const int32_t *indices, int64_t count, int64_t depth, float *y) {
    if (count * depth == 0) return;
    one_hot_kernel<<<blocks_for(count * depth, k), kThreads, 0, k.stream>>>(indices, count, depth, y, k.errors, k.step_tag);
    check_launch("one_hot");
}

void pick(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *x,
          const int32_t *labels, float *y) {
    if (outer * inner == 0) return;
    pick_kernel<<<blocks_for(outer * inner, k), kThreads, 0, k.stream>>>(outer, classes, inner, x, labels, y,
                                                                        k.errors, k.step_tag);
    check_launch("pick");
}

void pick_backward(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *dy,
                   const int32_t *labels, float *dx) {
    if (outer * classes * inner == 0) return;
    pick_backward_kernel<<<blocks_for(outer * classes * inner, k), kThreads, 0, k.stream>>>(outer, classes, inner,
                                                                                            dy, labels, dx);
    check_launch("pick_backward");
}

}  // namespace cuda
}  // namespace fm
