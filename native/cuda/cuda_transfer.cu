// Host<->device transfers through pinned staging, device copies with
// memmove semantics, and fills. A null stream context means synchronous:
// the work goes on the device's internal stream, which is then waited for.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cuda_check.h"
#include "cuda_context.h"

namespace fm {
namespace cuda {

namespace {

// A synchronous transfer waits after this many chunks, so that a large one
// recycles a few blocks instead of pinning its whole size.
constexpr size_t kSyncChunksInFlight = 4;

// Ordering the chunks of an overlapping copy costs one cudaMemcpyAsync per
// (distance between the ranges) bytes; beyond this many, a temporary is
// cheaper.
constexpr size_t kMaxOrderedChunks = 16;

// Host callbacks run on a CUDA-owned thread: no CUDA calls, and nothing may
// propagate out of them.
void CUDART_CB recycle_block(void *user) {
    auto *block = static_cast<StagingBlock *>(user);
    block->owner->release(block);
}

void CUDART_CB deliver_read(void *user) {
    auto *block = static_cast<StagingBlock *>(user);
    std::memcpy(block->pending_dst, block->host, block->pending_bytes);
    block->owner->release(block);
}

// Queues `callback` after the copy that uses `block`. If that fails the
// block's copy may still be pending, so the block is only returned once the
// queue has drained.
void launch_callback(cudaStream_t queue, cudaHostFn_t callback, StagingBlock *block) {
    cudaError_t err = cudaLaunchHostFunc(queue, callback, block);
    if (err != cudaSuccess) {
        if (cudaStreamSynchronize(queue) == cudaSuccess) block->owner->release(block);
        fail_cuda(err, "cudaLaunchHostFunc");
    }
}

void copy_async(void *dst, const void *src, size_t bytes, cudaStream_t queue) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, queue), "cudaMemcpyAsync");
}

template <class T>
__global__ void fill_kernel(T *dst, size_t count, T value) {
    size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        dst[i] = value;
    }
}

template <class T>
void launch_fill(void *dst, size_t count, const void *pattern, cudaStream_t queue) {
    T value;
    std::memcpy(&value, pattern, sizeof value);
    constexpr unsigned kThreads = 256;
    // Enough blocks to fill an H100/H200 several times over; the loop in
    // the kernel covers the rest.
    size_t blocks = std::min<size_t>((count + kThreads - 1) / kThreads, 4096);
    fill_kernel<T><<<unsigned(blocks), kThreads, 0, queue>>>(static_cast<T *>(dst), count, value);
    check(cudaGetLastError(), "fill_kernel launch");
}

}  // namespace

void transfer_write(void *device_ctx, void *dst, size_t dst_offset, const void *src,
                    size_t bytes, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    cudaStream_t queue = queue_of(ctx, stream_ctx);
    auto *to = static_cast<char *>(dst) + dst_offset;
    auto *from = static_cast<const char *>(src);
    size_t chunks = 0;
    for (size_t done = 0; done < bytes; done += StagingCache::kMaxBlock) {
        size_t n = std::min(bytes - done, StagingCache::kMaxBlock);
        StagingBlock *block = ctx.staging.acquire(n);
        // Staged before returning, so the caller may reuse `src` at once.
        std::memcpy(block->host, from + done, n);
        block->pending_errors = &errors_of(ctx, stream_ctx);
        cudaError_t err =
            cudaMemcpyAsync(to + done, block->host, n, cudaMemcpyHostToDevice, queue);
        if (err != cudaSuccess) {
            ctx.staging.release(block);  // nothing was queued that reads it
            fail_cuda(err, "cudaMemcpyAsync");
        }
        launch_callback(queue, recycle_block, block);
        if (!stream_ctx && ++chunks % kSyncChunksInFlight == 0) synchronize_queue(ctx, nullptr);
    }
    if (!stream_ctx) synchronize_queue(ctx, nullptr);
}

void transfer_read(void *device_ctx, const void *src, size_t src_offset, void *dst, size_t bytes,
                   void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    cudaStream_t queue = queue_of(ctx, stream_ctx);
    auto *from = static_cast<const char *>(src) + src_offset;
    auto *to = static_cast<char *>(dst);
    size_t chunks = 0;
    try {
        for (size_t done = 0; done < bytes; done += StagingCache::kMaxBlock) {
            size_t n = std::min(bytes - done, StagingCache::kMaxBlock);
            StagingBlock *block = ctx.staging.acquire(n);
            block->pending_dst = to + done;
            block->pending_bytes = n;
            block->pending_errors = &errors_of(ctx, stream_ctx);
            cudaError_t err =
                cudaMemcpyAsync(block->host, from + done, n, cudaMemcpyDeviceToHost, queue);
            if (err != cudaSuccess) {
                ctx.staging.release(block);
                fail_cuda(err, "cudaMemcpyAsync");
            }
            // The callback, not the caller, moves the data to `dst`: with a
            // stream the caller has returned long before the copy completes.
            launch_callback(queue, deliver_read, block);
            if (!stream_ctx && ++chunks % kSyncChunksInFlight == 0) {
                synchronize_queue(ctx, nullptr);
            }
        }
    } catch (...) {
        // Chunks already queued still write into `dst`; told that the call
        // failed, the caller may free it, so let them land first.
        cudaStreamSynchronize(queue);
        throw;
    }
    if (!stream_ctx) synchronize_queue(ctx, nullptr);
}

void transfer_copy(void *device_ctx, void *dst, size_t dst_offset, const void *src,
                   size_t src_offset, size_t bytes, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    cudaStream_t queue = queue_of(ctx, stream_ctx);
    auto *to = static_cast<char *>(dst) + dst_offset;
    auto *from = static_cast<const char *>(src) + src_offset;
    uintptr_t to_addr = reinterpret_cast<uintptr_t>(to);
    uintptr_t from_addr = reinterpret_cast<uintptr_t>(from);
    if (to_addr == from_addr) return;
    bool overlap = to_addr < from_addr + bytes && from_addr < to_addr + bytes;
    if (!overlap) {
        copy_async(to, from, bytes, queue);
    } else {
        // cudaMemcpy on overlapping ranges is undefined. Chunks no longer
        // than the distance between the ranges never read what an earlier
        // chunk wrote, if taken in the direction of the move; the stream
        // runs them in order.
        size_t distance = to_addr > from_addr ? to_addr - from_addr : from_addr - to_addr;
        void *temporary = nullptr;
        if ((bytes + distance - 1) / distance > kMaxOrderedChunks) {
            cudaError_t err = cudaMallocFromPoolAsync(&temporary, bytes, ctx.pool, queue);
            if (err == cudaErrorMemoryAllocation) {
                cudaGetLastError();  // fall back to ordered chunks: slow, but correct
                temporary = nullptr;
            } else {
                check(err, "cudaMallocFromPoolAsync");
            }
        }
        if (temporary) {
            // Stream-ordered on `queue`, so neither copy needs a synchronize.
            cudaError_t err =
                cudaMemcpyAsync(temporary, from, bytes, cudaMemcpyDeviceToDevice, queue);
            if (err == cudaSuccess) {
                err = cudaMemcpyAsync(to, temporary, bytes, cudaMemcpyDeviceToDevice, queue);
            }
            cudaFreeAsync(temporary, queue);
            if (err != cudaSuccess) fail_cuda(err, "cudaMemcpyAsync");
        } else if (to_addr < from_addr) {
            for (size_t done = 0; done < bytes; done += distance) {
                copy_async(to + done, from + done, std::min(distance, bytes - done), queue);
            }
        } else {
            for (size_t left = bytes; left > 0;) {
                size_t n = std::min(distance, left);
                left -= n;
                copy_async(to + left, from + left, n, queue);
            }
        }
    }
    if (!stream_ctx) synchronize_queue(ctx, nullptr);
}

void transfer_fill(void *device_ctx, void *dst, size_t dst_offset, size_t count,
                   const void *pattern, size_t pattern_bytes, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    cudaStream_t queue = queue_of(ctx, stream_ctx);
    void *to = static_cast<char *>(dst) + dst_offset;
    if (pattern_bytes != 1 && pattern_bytes != 2 && pattern_bytes != 4) {
        fail(FM_ERR_INTERNAL, "fill pattern of ", pattern_bytes, " bytes (expected 1, 2 or 4)");
    }
    if (reinterpret_cast<uintptr_t>(to) % pattern_bytes != 0) {
        fail(FM_ERR_INTERNAL, "fill of ", pattern_bytes, "-byte elements at a misaligned address");
    }
    const auto *bytes = static_cast<const unsigned char *>(pattern);
    bool uniform = std::all_of(bytes, bytes + pattern_bytes,
                               [&](unsigned char b) { return b == bytes[0]; });
    if (uniform) {
        // Zeros, and any pattern of one repeated byte, are a memset: the
        // driver's path is as fast as a kernel and needs no launch of ours.
        check(cudaMemsetAsync(to, bytes[0], count * pattern_bytes, queue), "cudaMemsetAsync");
    } else if (pattern_bytes == 2) {
        launch_fill<uint16_t>(to, count, pattern, queue);
    } else {
        launch_fill<uint32_t>(to, count, pattern, queue);
    }
    if (!stream_ctx) synchronize_queue(ctx, nullptr);
}

namespace {

// Small writes travel inside the kernel's parameters: no staging block, no
// host callback, nothing to wait for.
constexpr size_t kInlineBytes = 1024;
struct InlinePayload {
    unsigned char bytes[kInlineBytes];
};

__global__ void write_inline_kernel(unsigned char *dst, InlinePayload payload, size_t bytes) {
    for (size_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = payload.bytes[i];
}

}  // namespace

void transfer_write_queued(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes) {
    if (bytes > kInlineBytes) return transfer_write(device_ctx, dst, dst_offset, src, bytes, nullptr);
    Context &ctx = context(device_ctx);
    activate(ctx);
    InlinePayload payload;
    std::memcpy(payload.bytes, src, bytes);
    write_inline_kernel<<<1, 128, 0, ctx.internal>>>(static_cast<unsigned char *>(dst) + dst_offset, payload, bytes);
    check(cudaGetLastError(), "write_inline_kernel launch");
}

void *host_alloc(void *device_ctx, size_t bytes) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    void *ptr = nullptr;
    if (cudaMallocHost(&ptr, bytes) != cudaSuccess) {
        cudaGetLastError();  // out of pinnable memory is an answer, not a failure
        return nullptr;
    }
    return ptr;
}

void host_free(void *device_ctx, void *ptr) {
    Context &ctx = context(device_ctx);
    if (cudaSetDevice(ctx.index) == cudaSuccess) cudaFreeHost(ptr);
    cudaGetLastError();
}

void transfer_write_from_host(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes,
                              void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    // `src` is pinned: one DMA, no staging block.
    check(cudaMemcpyAsync(static_cast<char *>(dst) + dst_offset, src, bytes, cudaMemcpyHostToDevice,
                          queue_of(ctx, stream_ctx)),
          "cudaMemcpyAsync");
    if (!stream_ctx) synchronize_queue(ctx, nullptr);
}

}  // namespace cuda
}  // namespace fm
