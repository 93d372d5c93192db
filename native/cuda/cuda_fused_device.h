// Device code shared by the fused kernels compiled with the library (the
// interpreter, cuda_elementwise.cu) and those compiled at run time from
// generated source (cuda_jit.cu, which embeds this header), so that both
// reduce channel sums in the same order and give the same bits.
#pragma once

namespace fm {
namespace cuda {

// A block's sum of `value` (a deterministic tree: shuffles within warps,
// then warp 0 over the warps); the result is valid in thread 0.
// `warp_sums` is shared memory for one double per warp.
__device__ inline double block_sum(double value, double *warp_sums) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, warps = int(blockDim.x) / 32;
    __syncthreads();  // warp_sums is free again (a previous call read it)
    if (lane == 0) warp_sums[warp] = value;
    __syncthreads();
    value = lane < warps && warp == 0 ? warp_sums[lane] : 0.0;
    if (warp == 0) {
        for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    return value;
}

}  // namespace cuda
}  // namespace fm
