// Reductions over any set of axes, argmax, and softmax on the GPU.
//
// A reduction sees its input as kept dims (one output each) and reduced
// dims. Short reductions run one thread per output; long ones one block per
// output, split into a fixed number of slices when there are few outputs
// (a BatchNorm's per-channel sums), with the slices' partials combined in
// order by a second kernel. The split depends on the shape only, and every
// tree combines in a fixed order, so results are deterministic. Sums
// accumulate in double, as on the CPU; max/min propagate NaN.
#include <algorithm>
#include <cfloat>

#include "cuda_kernels.h"

namespace fm {
namespace cuda {

namespace {

constexpr int64_t kLongReduction = 64;   // from here on, a block per output
constexpr int64_t kTargetBlocks = 528;   // blocks to aim for (4 per SM on an H100)
constexpr int64_t kMinSlice = 2048;      // inputs per slice, at least

struct Geometry {
    int kept_rank = 0, reduced_rank = 0;
    int64_t kept[FM_MAX_RANK], kept_strides[FM_MAX_RANK];
    int64_t reduced[FM_MAX_RANK], reduced_strides[FM_MAX_RANK];
    int64_t outputs = 1, length = 1;  // outputs, and inputs per output
};

Geometry geometry(const Shape &shape, uint32_t mask) {
    Geometry g;
    int64_t stride = 1;
    int64_t strides[FM_MAX_RANK];
    for (size_t d = shape.size(); d-- > 0;) {
        strides[d] = stride;
        stride *= shape[d];
    }
    for (size_t d = 0; d < shape.size(); ++d) {
        if (mask & (1u << d)) {
            g.reduced[g.reduced_rank] = shape[d], g.reduced_strides[g.reduced_rank++] = strides[d];
            g.length *= shape[d];
        } else {
            g.kept[g.kept_rank] = shape[d], g.kept_strides[g.kept_rank++] = strides[d];
            g.outputs *= shape[d];
        }
    }
    return g;
}

int64_t slices_for(const Geometry &g) {
    if (g.length < kLongReduction) return 0;  // thread per output
    int64_t want = (kTargetBlocks + g.outputs - 1) / g.outputs;
    return std::clamp<int64_t>(std::min(want, g.length / kMinSlice), 1, 256);
}

// I is int32_t when the input has fewer than 2^31 elements (64-bit
// division costs several times more).
template <class I>
__device__ I offset_of(I index, int rank, const int64_t *dims, const int64_t *strides) {
    I offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
        offset += index % I(dims[d]) * I(strides[d]);
        index /= I(dims[d]);
    }
    return offset;
}

template <Reduction Kind>
struct Fold {
    using Acc = double;
    __device__ static Acc identity() { return 0.0; }
    __device__ static Acc add(Acc a, float v) { return a + v; }
    __device__ static Acc merge(Acc a, Acc b) { return a + b; }
};
template <>
struct Fold<Reduction::Max> {
    using Acc = float;
    __device__ static Acc identity() { return -INFINITY; }
    __device__ static Acc add(Acc a, float v) { return (v > a || v != v) && a == a ? v : a; }
    __device__ static Acc merge(Acc a, Acc b) { return add(a, b); }
};
template <>
struct Fold<Reduction::Min> {
    using Acc = float;
    __device__ static Acc identity() { return INFINITY; }
    __device__ static Acc add(Acc a, float v) { return (v < a || v != v) && a == a ? v : a; }
    __device__ static Acc merge(Acc a, Acc b) { return add(a, b); }
};

template <Reduction Kind, class I>
__global__ void reduce_per_thread(Geometry g, const float *x, float *y) {
    using F = Fold<Kind>;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < g.outputs; o += stride) {
        const float *base = x + offset_of<I>(I(o), g.kept_rank, g.kept, g.kept_strides);
        typename F::Acc acc = F::identity();
        for (I j = 0; j < I(g.length); ++j) {
            acc = F::add(acc, base[offset_of<I>(j, g.reduced_rank, g.reduced, g.reduced_strides)]);
        }
        y[o] = float(acc);
    }
}

// Block (o, slice) folds inputs [slice * per_slice, ...) of output o; with
// one slice it writes y, else its partial.
template <Reduction Kind, class I>
__global__ void reduce_per_block(Geometry g, int64_t slices, const float *x, float *y,
                                 typename Fold<Kind>::Acc *partials) {
    using F = Fold<Kind>;
    using Acc = typename F::Acc;
    __shared__ Acc lanes[kThreads];
    const int64_t o = blockIdx.x, slice = blockIdx.y;
    const int64_t per_slice = (g.length + slices - 1) / slices;
    const int64_t begin = slice * per_slice, end = min(g.length, begin + per_slice);
    const float *base = x + offset_of<I>(I(o), g.kept_rank, g.kept, g.kept_strides);
    Acc acc = F::identity();
    for (I j = I(begin) + I(threadIdx.x); j < I(end); j += I(blockDim.x)) {
        acc = F::add(acc, base[offset_of<I>(j, g.reduced_rank, g.reduced, g.reduced_strides)]);
    }
    lanes[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (int(threadIdx.x) < half) lanes[threadIdx.x] = F::merge(lanes[threadIdx.x], lanes[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    if (slices == 1) {
        y[o] = float(lanes[0]);
    } else {
        partials[o * slices + slice] = lanes[0];
    }
}

template <Reduction Kind>
__global__ void combine_partials(int64_t outputs, int64_t slices, const typename Fold<Kind>::Acc *partials,
                                 float *y) {
    using F = Fold<Kind>;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < outputs; o += stride) {
        typename F::Acc acc = F::identity();
        for (int64_t s = 0; s < slices; ++s) acc = F::merge(acc, partials[o * slices + s]);
        y[o] = float(acc);
    }
}

template <Reduction Kind, class I>
void run_reduce(const KernelContext &k, const Geometry &g, const float *x, float *y) {
    using Acc = typename Fold<Kind>::Acc;
    const int64_t slices = slices_for(g);
    if (slices == 0) {
        reduce_per_thread<Kind, I><<<blocks_for(g.outputs, k), kThreads, 0, k.stream>>>(g, x, y);
        return check_launch("reduce");
    }
    Acc *partials = static_cast<Acc *>(k.workspace);
    dim3 grid(unsigned(g.outputs), unsigned(slices));
    reduce_per_block<Kind, I><<<grid, kThreads, 0, k.stream>>>(g, slices, x, y, partials);
    check_launch("reduce");
    if (slices > 1) {
        combine_partials<Kind><<<blocks_for(g.outputs, k), kThreads, 0, k.stream>>>(g.outputs, slices, partials, y);
        check_launch("reduce (combining slices)");
    }
}

__global__ void argmax_kernel(int64_t outer, int64_t n, int64_t inner, const float *x, int32_t *y) {
    const int64_t total = outer * inner, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const float *base = x + idx / inner * n * inner + idx % inner;
        float best = base[0];
        int32_t index = 0;
        for (int64_t i = 1; i < n; ++i) {
            const float v = base[i * inner];
            if (v > best || (v != v && best == best)) best = v, index = int32_t(i);
        }
        y[idx] = index;
    }
}

// One warp per row when the classes are contiguous (inner == 1).
template <bool Log>
__global__ void softmax_rows(int64_t rows, int64_t classes, const float *x, float *y) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
    for (int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        const float *in = x + row * classes;
        float *out = y + row * classes;
        float max = -INFINITY;
        bool nan = false;
        for (int64_t c = lane; c < classes; c += 32) {
            float v = in[c];
            nan |= v != v;
            max = v > max ? v : max;
        }
        for (int off = 16; off > 0; off /= 2) {
            max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, off));
            nan |= __shfl_xor_sync(0xffffffffu, int(nan), off) != 0;
        }
        if (nan) max = NAN;
        double sum = 0;
        for (int64_t c = lane; c < classes; c += 32) sum += expf(in[c] - max);
        for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        const double scale = Log ? log(sum) : 1.0 / sum;
        for (int64_t c = lane; c < classes; c += 32) {
            if (Log) {
                out[c] = float(double(in[c] - max) - scale);
            } else {
                out[c] = float(double(expf(in[c] - max)) * scale);
            }
        }
    }
}

template <bool Log>
__global__ void softmax_strided(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y) {
    const int64_t total = outer * inner, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int64_t offset = idx / inner * classes * inner + idx % inner;
        const float *in = x + offset;
        float *out = y + offset;
        float max = in[0];
        for (int64_t c = 1; c < classes; ++c) {
            float v = in[c * inner];
            if (v > max || v != v) max = v;
        }
        double sum = 0;
        for (int64_t c = 0; c < classes; ++c) sum += expf(in[c * inner] - max);
        const double scale = Log ? log(sum) : 1.0 / sum;
        for (int64_t c = 0; c < classes; ++c) {
            float v = in[c * inner];
            out[c * inner] = Log ? float(double(v - max) - scale) : float(double(expf(v - max)) * scale);
        }
    }
}

}  // namespace

size_t reduce_workspace_bytes(const Shape &shape, uint32_t axes_mask) {
    Geometry g = geometry(shape, axes_mask);
    int64_t slices = slices_for(g);
    return slices > 1 ? size_t(g.outputs * slices) * sizeof(double) : 0;
}

void reduce(const KernelContext &k, Reduction kind, const Shape &shape, uint32_t axes_mask, const float *x,
            float *y) {
    Geometry g = geometry(shape, axes_mask);
    if (g.outputs == 0) return;
    const bool small = g.outputs * g.length < kInt32Limit;
    switch (kind) {
        case Reduction::Sum:
            return small ? run_reduce<Reduction::Sum, int32_t>(k, g, x, y) : run_reduce<Reduction::Sum, int64_t>(k, g, x, y);
        case Reduction::Max:
            return small ? run_reduce<Reduction::Max, int32_t>(k, g, x, y) : run_reduce<Reduction::Max, int64_t>(k, g, x, y);
        case Reduction::Min:
            return small ? run_reduce<Reduction::Min, int32_t>(k, g, x, y) : run_reduce<Reduction::Min, int64_t>(k, g, x, y);
    }
}

void argmax(const KernelContext &k, const Shape &shape, int axis, const float *x, int32_t *y) {
    int64_t outer, n, inner;
    axis_split(shape.data(), shape.size(), axis, &outer, &n, &inner);
    if (outer * inner == 0 || n == 0) return;
    argmax_kernel<<<blocks_for(outer * inner, k), kThreads, 0, k.stream>>>(outer, n, inner, x, y);
    check_launch("argmax");
}

void softmax(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *x, float *y,
             bool log) {
    if (outer * classes * inner == 0) return;
    if (inner == 1) {
        const int64_t warps_per_block = kThreads / 32;
        unsigned blocks = unsigned(std::min<int64_t>((outer + warps_per_block - 1) / warps_per_block,
                                                     int64_t(k.sm_count) * 32));
        if (log) {
            softmax_rows<true><<<blocks, kThreads, 0, k.stream>>>(outer, classes, x, y);
        } else {
            softmax_rows<false><<<blocks, kThreads, 0, k.stream>>>(outer, classes, x, y);
        }
    } else if (log) {
        softmax_strided<true><<<blocks_for(outer * inner, k), kThreads, 0, k.stream>>>(outer, classes, inner, x, y);
    } else {
        softmax_strided<false><<<blocks_for(outer * inner, k), kThreads, 0, k.stream>>>(outer, classes, inner, x, y);
    }
    check_launch("softmax");
}

}  // namespace cuda
}  // namespace fm
