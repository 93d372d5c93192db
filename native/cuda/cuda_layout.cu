// Data movement on the GPU: one strided-copy kernel serves permute,
// broadcast, slice, pad and concat (the executor expresses each as strides
// over an index space), plus fills and guarded copies.
#include <algorithm>

#include "cuda_kernels.h"
#include "error.h"

namespace fm {
namespace cuda {

namespace {

struct Strides {
    int rank;
    int64_t dims[FM_MAX_RANK];
    int64_t src[FM_MAX_RANK], dst[FM_MAX_RANK];
};

// I is int32_t when source and destination have fewer than 2^31
// elements (64-bit division costs several times more).
template <class T, class I>
__global__ void strided_copy_kernel(Strides s, I total, const T *src, T *dst) {
    const I stride = I(gridDim.x) * I(blockDim.x);
    for (I idx = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); idx < total; idx += stride) {
        I rest = idx, from = 0, to = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            const I at = rest % I(s.dims[d]);
            rest /= I(s.dims[d]);
            from += at * I(s.src[d]);
            to += at * I(s.dst[d]);
        }
        dst[to] = src[from];
    }
}

__global__ void fill_kernel(float *dst, int64_t count, float value) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) dst[i] = value;
}

// A copy that does nothing once a data error aborted the run, so that the
// assignments of a bad step leave variables as they were.
__global__ void guarded_copy_kernel(const uint32_t *src, uint32_t *dst, int64_t words, const int32_t *abort) {
    if (*abort) return;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += stride) dst[i] = src[i];
}

__global__ void guarded_copy_bytes_kernel(const unsigned char *src, unsigned char *dst, int64_t bytes,
                                          const int32_t *abort) {
    if (*abort) return;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < bytes; i += stride) dst[i] = src[i];
}

template <class T>
void launch(const KernelContext &k, const Strides &s, int64_t total, const void *src, void *dst) {
    // The largest offset either side reaches bounds the index type.
    int64_t src_reach = 1, dst_reach = 1;
    for (int d = 0; d < s.rank; ++d) {
        src_reach += (s.dims[d] - 1) * s.src[d];
        dst_reach += (s.dims[d] - 1) * s.dst[d];
    }
    const int64_t reach = std::max({total, src_reach, dst_reach});
    const auto *from = static_cast<const T *>(src);
    auto *to = static_cast<T *>(dst);
    if (reach < kInt32Limit) {
        strided_copy_kernel<T, int32_t><<<blocks_for(total, k), kThreads, 0, k.stream>>>(s, int32_t(total), from, to);
    } else {
        strided_copy_kernel<T, int64_t><<<blocks_for(total, k), kThreads, 0, k.stream>>>(s, total, from, to);
    }
}

}  // namespace

void strided_copy(const KernelContext &k, const Shape &dims, const void *src, const int64_t *src_strides,
                  void *dst, const int64_t *dst_strides, size_t element_size) {
    Strides s{};
    s.rank = int(dims.size());
    int64_t total = 1;
    for (int d = 0; d < s.rank; ++d) {
        s.dims[d] = dims[size_t(d)], s.src[d] = src_strides[d], s.dst[d] = dst_strides[d];
        total *= dims[size_t(d)];
    }
    if (total == 0) return;
    switch (element_size) {
        case 1: launch<uint8_t>(k, s, total, src, dst); break;
        case 2: launch<uint16_t>(k, s, total, src, dst); break;
        case 4: launch<uint32_t>(k, s, total, src, dst); break;
        case 8: launch<uint64_t>(k, s, total, src, dst); break;
        default: fail(FM_ERR_INTERNAL, "strided_copy: element size ", element_size);
    }
    check_launch("strided copy");
}

void fill(const KernelContext &k, float *dst, int64_t count, float value) {
    if (count == 0) return;
    fill_kernel<<<blocks_for(count, k), kThreads, 0, k.stream>>>(dst, count, value);
    check_launch("fill");
}

void copy_bytes(const KernelContext &k, void *dst, const void *src, size_t bytes, bool guarded) {
    if (bytes == 0 || dst == src) return;
    if (!guarded || k.abort == nullptr) {
        cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, k.stream);
        if (err != cudaSuccess) check_launch("cudaMemcpyAsync");
        return;
    }
    if (bytes % 4 != 0) {
        guarded_copy_bytes_kernel<<<blocks_for(int64_t(bytes), k), kThreads, 0, k.stream>>>(
            static_cast<const unsigned char *>(src), static_cast<unsigned char *>(dst), int64_t(bytes), k.abort);
        return check_launch("guarded copy");
    }
    const int64_t words = int64_t(bytes / 4);
    guarded_copy_kernel<<<blocks_for(words, k), kThreads, 0, k.stream>>>(static_cast<const uint32_t *>(src),
                                                                         static_cast<uint32_t *>(dst), words, k.abort);
    check_launch("guarded copy");
}

}  // namespace cuda
}  // namespace fm
