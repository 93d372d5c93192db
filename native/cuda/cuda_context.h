// The CUDA backend's per-device and per-stream state, shared by its .cu
// files. Only this folder includes it; the core sees opaque contexts.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <unordered_map>
#include <string>
#include <vector>

#include "backend.h"

namespace fm {
namespace cuda {

// The first failure of work that CUDA cannot report itself (host callbacks),
// kept until the owner synchronizes. record() runs inside host callbacks, so
// it never throws and never allocates.
class ErrorSlot {
public:
    void record(const char *message) noexcept;
    // Moves the recorded message into *out; false when there is none.
    bool take(std::string *out);

private:
    std::mutex mutex_;
    bool set_ = false;
    char message_[256] = {};
};

class StagingCache;

// A pinned host block. While a transfer owns it, the `pending_*` fields tell
// its host callback what to do; they live in the block so that callbacks
// need no allocation.
struct StagingBlock {
    void *host = nullptr;
    size_t capacity = 0;
    int size_class = 0;
    StagingCache *owner = nullptr;
    StagingBlock *next_free = nullptr;
    void *pending_dst = nullptr;  // reads: where the callback copies to
    size_t pending_bytes = 0;
    ErrorSlot *pending_errors = nullptr;
};

// Pinned staging blocks of one device, cached by power-of-two size class.
// release() is called from host callbacks: it only relinks a free list under
// a mutex, so it cannot call CUDA, allocate or throw.
class StagingCache {
public:
    // Largest block; larger transfers are split into chunks of this size.
    static constexpr size_t kMaxBlock = size_t(64) << 20;

    StagingCache() = default;
    StagingCache(const StagingCache &) = delete;
    StagingCache &operator=(const StagingCache &) = delete;

    // A block of at least `bytes` (<= kMaxBlock). Throws FM_ERR_OUT_OF_MEMORY
    // when the host cannot pin more memory.
    StagingBlock *acquire(size_t bytes);
    void release(StagingBlock *block) noexcept;
    // Frees every block, idle or not; the device must be idle.
    void free_all() noexcept;

private:
    static constexpr size_t kMinBlock = size_t(64) << 10;
    static constexpr int kClasses = 11;  // 64 KiB .. 64 MiB
    // Idle pinned memory beyond this is returned to the OS: pinned pages are
    // unavailable to everything else on the host.
    static constexpr size_t kMaxIdleBytes = size_t(256) << 20;

    static int class_of(size_t bytes);
    // Unlinks idle blocks until at most `keep` idle bytes remain (under the
    // lock); the caller frees them outside it.
    void detach_idle(size_t keep, std::vector<StagingBlock *> *out);
    static void destroy(const std::vector<StagingBlock *> &blocks) noexcept;

    std::mutex mutex_;
    StagingBlock *free_[kClasses] = {};
    size_t idle_bytes_ = 0;
    std::set<StagingBlock *> all_;  // every live block, idle or lent out
};

struct Stream;
struct DeviceExec;  // cuda_exec.cu: what the plans of a device share

struct Context {
    int index = 0;
    // Work that has no stream of the caller's: synchronous transfers, and
    // plans run without a stream.
    cudaStream_t internal = nullptr;
    // Allocations only, so that waiting for one never waits for queued work.
    cudaStream_t allocation = nullptr;
    ErrorSlot internal_errors;
    cudaMemPool_t pool = nullptr;
    StagingCache staging;

    std::mutex pool_mutex;  // pairs an allocation with its reserve readings
    uint64_t allocations = 0;
    uint64_t system_allocations = 0;

    std::mutex streams_mutex;
    std::set<Stream *> streams;  // so device_synchronize can report their errors

    std::mutex exec_mutex;  // creates `exec`
    DeviceExec *exec = nullptr;

    // Outputs of runs queued without a stream, by device address, with an
    // event after the copy that writes them: a later run fed one of them
    // waits for that copy (cuda_exec.cu).
    std::mutex produced_mutex;
    std::unordered_map<const void *, cudaEvent_t> produced;
};

struct Stream {
    Context *ctx = nullptr;
    cudaStream_t handle = nullptr;
    ErrorSlot errors;
};

inline Context &context(void *device_ctx) { return *static_cast<Context *>(device_ctx); }

// cudaSetDevice is per host thread, and a device's entry can run on any
// thread, so every entry point calls this first.
void activate(const Context &ctx);

// The CUDA stream behind a stream context (null: the internal stream), and
// the slot where its callbacks record failures.
cudaStream_t queue_of(Context &ctx, void *stream_ctx);
ErrorSlot &errors_of(Context &ctx, void *stream_ctx);
// Waits for the queue and throws the first error of its work (CUDA's, then
// its callbacks').
void synchronize_queue(Context &ctx, void *stream_ctx);

// Interface members, defined in the file of their concern.
void *pool_alloc(void *device_ctx, size_t bytes);
void pool_free(void *device_ctx, void *ptr, size_t bytes, void *stream_ctx);
void pool_stats(void *device_ctx, fm_pool_stats *out);
void pool_trim(void *device_ctx);
void pool_reset_peak(void *device_ctx);
cudaMemPool_t create_pool(int index);

void *stream_new(void *device_ctx);
void stream_free(void *device_ctx, void *stream_ctx);
void stream_synchronize(void *device_ctx, void *stream_ctx);
void device_synchronize(void *device_ctx);

void transfer_write(void *device_ctx, void *dst, size_t dst_offset, const void *src,
                    size_t bytes, void *stream_ctx);
void transfer_read(void *device_ctx, const void *src, size_t src_offset, void *dst, size_t bytes,
                   void *stream_ctx);
void transfer_copy(void *device_ctx, void *dst, size_t dst_offset, const void *src,
                   size_t src_offset, size_t bytes, void *stream_ctx);
void transfer_fill(void *device_ctx, void *dst, size_t dst_offset, size_t count,
                   const void *pattern, size_t pattern_bytes, void *stream_ctx);
void *host_alloc(void *device_ctx, size_t bytes);
void host_free(void *device_ctx, void *ptr);
void transfer_write_from_host(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes,
                              void *stream_ctx);
void transfer_write_queued(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes);

void *exec_compile(void *device_ctx, const Plan &plan);
void exec_run(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *stream_ctx);
void exec_release(void *device_ctx, void *exec_ctx);
void exec_check(void *device_ctx, void *exec_ctx);
// Frees what device_exec() created; the device must be idle.
void release_exec(Context &ctx) noexcept;

}  // namespace cuda
}  // namespace fm
