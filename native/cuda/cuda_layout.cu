// Data movement on the GPU: one strided-copy kernel serves permute,
// broadcast, slice, pad and concat (the executor expresses each as strides
// over an index space), plus fills and guarded copies.
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

template <class T>
__global__ void strided_copy_kernel(Strides s, int64_t total, const T *src, T *dst) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        int64_t rest = idx, from = 0, to = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            const int64_t at = rest % s.dims[d];
            rest /= s.dims[d];
            from += at * s.src[d];
            to += at * s.dst[d];
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

template <class T>
void launch(const KernelContext &k, const Strides &s, int64_t total, const void *src, void *dst) {
    strided_copy_kernel<T><<<blocks_for(total, k), kThreads, 0, k.stream>>>(s, total, static_cast<const T *>(src),
                                                                            static_cast<T *>(dst));
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
    if (bytes % 4 != 0) fail(FM_ERR_INTERNAL, "guarded copy of ", bytes, " bytes (not whole words)");
    const int64_t words = int64_t(bytes / 4);
    guarded_copy_kernel<<<blocks_for(words, k), kThreads, 0, k.stream>>>(static_cast<const uint32_t *>(src),
                                                                         static_cast<uint32_t *>(dst), words, k.abort);
    check_launch("guarded copy");
}

}  // namespace cuda
}  // namespace fm
