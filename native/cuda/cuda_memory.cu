// Device memory from the driver's stream-ordered allocator: one dedicated
// cudaMemPool per device, so its statistics and trimming are ours alone and
// other libraries' use of the default pool does not disturb them.
#include <cstdint>
#include <cstdio>

#include "cuda_check.h"
#include "cuda_context.h"

namespace fm {
namespace cuda {

namespace {

uint64_t pool_attribute(cudaMemPool_t pool, cudaMemPoolAttr attr) {
    uint64_t value = 0;  // the attribute is a cuuint64_t
    check(cudaMemPoolGetAttribute(pool, attr, &value), "cudaMemPoolGetAttribute");
    return value;
}

// nullptr when the pool cannot grow. Counting happens here, under the lock,
// so that the reserve readings around the call belong to this allocation.
void *try_alloc(Context &ctx, size_t bytes) {
    std::lock_guard<std::mutex> lock(ctx.pool_mutex);
    uint64_t reserved_before = pool_attribute(ctx.pool, cudaMemPoolAttrReservedMemCurrent);
    void *ptr = nullptr;
    cudaError_t err = cudaMallocFromPoolAsync(&ptr, bytes, ctx.pool, ctx.allocation);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // out of memory is an answer, not a failure
        return nullptr;
    }
    check(err, "cudaMallocFromPoolAsync");
    uint64_t reserved_after = pool_attribute(ctx.pool, cudaMemPoolAttrReservedMemCurrent);
    ++ctx.allocations;
    // The driver does not say whether an allocation was served from the
    // pool's cache; the pool reserving more memory across the call is the
    // observable sign that it had to map new memory from the device.
    if (reserved_after > reserved_before) ++ctx.system_allocations;
    return ptr;
}

}  // namespace

cudaMemPool_t create_pool(int index) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = index;
    cudaMemPool_t pool = nullptr;
    check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate");
    // The default threshold (0) hands freed memory back to the device at
    // every synchronization; caching it is the point of a pool. pool_trim
    // releases it on request.
    uint64_t threshold = UINT64_MAX;
    cudaError_t err = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    // Allocation waits on its own stream; reusing a block freed on a
    // busy stream would make that wait include the busy stream's queued
    // work (a whole training step). Growing the pool instead is cheaper.
    int no_internal_dependencies = 0;
    if (err == cudaSuccess) {
        err = cudaMemPoolSetAttribute(pool, cudaMemPoolReuseAllowInternalDependencies, &no_internal_dependencies);
    }
    if (err != cudaSuccess) {
        cudaMemPoolDestroy(pool);
        fail_cuda(err, "cudaMemPoolSetAttribute");
    }
    return pool;
}

void *pool_alloc(void *device_ctx, size_t bytes) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    void *ptr = try_alloc(ctx, bytes);
    if (ptr == nullptr) {
        // Memory freed on other streams returns to the pool only once those
        // streams reach the free; wait for them before calling the device full.
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        ptr = try_alloc(ctx, bytes);
        if (ptr == nullptr) return nullptr;
    }
    // The allocation is ordered on the allocation stream only; once that
    // stream has passed it, any stream may use the memory without an event.
    // Nothing else is queued there, so this wait is short.
    cudaError_t err = cudaStreamSynchronize(ctx.allocation);
    if (err != cudaSuccess) {
        cudaFreeAsync(ptr, ctx.allocation);
        fail_cuda(err, "cudaStreamSynchronize");
    }
    return ptr;
}

void pool_free(void *device_ctx, void *ptr, size_t, void *stream_ctx) {
    // Called from noexcept deallocation: failures go to the stream's error
    // slot, to come out of its next synchronize.
    Context &ctx = context(device_ctx);
    ErrorSlot &errors = errors_of(ctx, stream_ctx);
    cudaError_t err = cudaSetDevice(ctx.index);
    // In the order of the stream the buffer was last used on, so the memory
    // is reused only after that work has read or written it.
    if (err == cudaSuccess) err = cudaFreeAsync(ptr, queue_of(ctx, stream_ctx));
    if (err != cudaSuccess) {
        cudaGetLastError();
        char message[200];
        std::snprintf(message, sizeof message, "cudaFreeAsync failed: %s", cudaGetErrorString(err));
        errors.record(message);
    }
}

void pool_stats(void *device_ctx, fm_pool_stats *out) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    std::lock_guard<std::mutex> lock(ctx.pool_mutex);
    uint64_t used = pool_attribute(ctx.pool, cudaMemPoolAttrUsedMemCurrent);
    uint64_t reserved = pool_attribute(ctx.pool, cudaMemPoolAttrReservedMemCurrent);
    out->bytes_in_use = used;
    out->bytes_cached = reserved > used ? reserved - used : 0;
    out->peak_bytes_in_use = pool_attribute(ctx.pool, cudaMemPoolAttrUsedMemHigh);
    out->allocations = ctx.allocations;
    out->system_allocations = ctx.system_allocations;
}

void pool_trim(void *device_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    // Memory whose free is still queued is not yet cached, so it would
    // escape the trim.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::lock_guard<std::mutex> lock(ctx.pool_mutex);
    check(cudaMemPoolTrimTo(ctx.pool, 0), "cudaMemPoolTrimTo");
}

void pool_reset_peak(void *device_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    // Zero is the only value the driver accepts: it resets the high-water
    // mark to the current use.
    uint64_t zero = 0;
    check(cudaMemPoolSetAttribute(ctx.pool, cudaMemPoolAttrUsedMemHigh, &zero),
          "cudaMemPoolSetAttribute");
}

}  // namespace cuda
}  // namespace fm
