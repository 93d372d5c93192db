// The interface every backend implements (ggml-backend style: an interface
// struct of function pointers plus an opaque context). The core dispatches
// through it and handles the edge cases once (zero sizes, bounds, dtype
// checks, cross-device copies, synchronous calls), so each backend stays
// small. The core never includes a backend's header; backends include this.
//
// Members may throw fm::Error (see error.h); the ABI guard turns that into a
// status. Members marked "optional" may be null; backend.cpp supplies the
// default behaviour.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ferrometal.h"
#include "plan.h"

namespace fm {

// Raw memory of a device: a backend either hands out raw allocations that
// the core's CachingPool (pool.h) caches, or runs a pool of its own (CUDA
// uses the driver's stream-ordered pool) and fills the pool_* members.
struct MemoryIface {
    // Returns nullptr when the device has no memory left (never throws for
    // that). Required unless pool_alloc is given.
    void *(*raw_alloc)(void *device_ctx, size_t bytes) = nullptr;
    void (*raw_free)(void *device_ctx, void *ptr, size_t bytes) = nullptr;

    // Optional: a pool of the backend's own. When pool_alloc is set, all
    // five pool_* members must be set and raw_alloc/raw_free are unused.
    // pool_alloc returns nullptr on out-of-memory. `stream_ctx` is the stream
    // the memory was last used on (null: the device's internal stream), so
    // a stream-ordered pool can return it in that stream's order.
    void *(*pool_alloc)(void *device_ctx, size_t bytes) = nullptr;
    void (*pool_free)(void *device_ctx, void *ptr, size_t bytes, void *stream_ctx) = nullptr;
    void (*pool_stats)(void *device_ctx, fm_pool_stats *out) = nullptr;
    void (*pool_trim)(void *device_ctx) = nullptr;
    void (*pool_reset_peak)(void *device_ctx) = nullptr;

    // Optional: host memory the device copies from directly (CUDA: pinned).
    // Default: ordinary aligned host memory. host_alloc returns nullptr when
    // the host has no memory left.
    void *(*host_alloc)(void *device_ctx, size_t bytes) = nullptr;
    void (*host_free)(void *device_ctx, void *ptr) = nullptr;
};

// Work queues. A null stream_ctx in any member below means "synchronous":
// the member returns after the work has completed.
struct StreamIface {
    // Optional (default: the backend has no asynchrony; streams are null
    // contexts and synchronize does nothing).
    void *(*stream_new)(void *device_ctx) = nullptr;
    // Must wait for the stream's work before freeing it.
    void (*stream_free)(void *device_ctx, void *stream_ctx) = nullptr;
    // Throws the first asynchronous error of the stream's work, and clears it.
    void (*stream_synchronize)(void *device_ctx, void *stream_ctx) = nullptr;
    // Optional: wait for every stream of the device.
    void (*device_synchronize)(void *device_ctx) = nullptr;
};

// Data movement. Pointers are what the memory members returned; offsets and
// sizes are in bytes and already bounds-checked; sizes are never zero.
struct TransferIface {
    // `src` may be reused when the call returns (stage it if asynchronous).
    void (*write)(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes,
                  void *stream_ctx) = nullptr;
    // `dst` must stay valid until the stream is synchronized.
    void (*read)(void *device_ctx, const void *src, size_t src_offset, void *dst, size_t bytes,
                 void *stream_ctx) = nullptr;
    // Same-device copy; overlapping ranges must behave like memmove.
    void (*copy)(void *device_ctx, void *dst, size_t dst_offset, const void *src,
                 size_t src_offset, size_t bytes, void *stream_ctx) = nullptr;
    // Writes `count` copies of the `pattern_bytes`-byte `pattern` (1, 2 or 4).
    void (*fill)(void *device_ctx, void *dst, size_t dst_offset, size_t count, const void *pattern,
                 size_t pattern_bytes, void *stream_ctx) = nullptr;
    // Optional: a write queued in the order of the device's internal queue
    // (where plans run without a stream), returning without waiting; `src`
    // may be reused at once. Later work on that queue, and every synchronous
    // transfer, sees it. Used for small writes between training steps (a
    // learning rate), so that they do not wait for the step in flight.
    // Default: write(..., nullptr).
    void (*write_queued)(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes) = nullptr;
    // Optional: a write from memory host_alloc returned, copied directly (no
    // staging); with a stream, `src` must stay unchanged until the stream is
    // synchronized. Default: write().
    void (*write_from_host)(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes,
                            void *stream_ctx) = nullptr;
};

// Device pointers for every storage a plan refers to (see plan.h).
struct Bindings {
    void *arena = nullptr;
    std::vector<void *> variables;       // by variable slot; null where unused
    std::vector<const void *> constants; // by constant slot; null where unused
    std::vector<const void *> feeds;     // by placeholder slot; null where unfed
    std::vector<void *> outputs;
    const float *scalars = nullptr;      // the plan's scalars, in device memory
    uint64_t run_index = 0;              // counts runs of the executable (dropout masks)
};

// Running plans. A backend that cannot run some step must say so from
// compile (FM_ERR_UNSUPPORTED naming the op), never from run. With a null
// stream_ctx, run may return before the work completes if the work is
// queued where every later synchronous transfer waits for it (CUDA's
// internal stream); the feeds must have been consumed by the time it
// returns, so callers may overwrite them.
struct ExecIface {
    // Optional: prepares backend state for `plan` (null when nothing is needed).
    void *(*compile)(void *device_ctx, const Plan &plan) = nullptr;
    void (*run)(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings,
                void *stream_ctx) = nullptr;
    void (*release)(void *device_ctx, void *exec_ctx) = nullptr;  // optional
    // Optional: waits for the executable's runs so far and throws the data
    // error (an index out of range) one of them found. Backends that report
    // such errors from run itself leave it null.
    void (*check)(void *device_ctx, void *exec_ctx) = nullptr;
};

struct DeviceIface {
    void (*get_info)(void *device_ctx, fm_device_info *out) = nullptr;
    MemoryIface memory;
    StreamIface stream;
    TransferIface transfer;
    ExecIface exec;
};

// One registration per backend, returned by its registration function.
struct BackendReg {
    fm_backend backend = FM_BACKEND_COUNT;
    // Number of usable devices; 0 when the driver is missing or has none.
    size_t (*device_count)() = nullptr;
    // Opens device `index` (< device_count()). Throws fm::Error on failure.
    void *(*device_open)(size_t index) = nullptr;
    // Called once the last user of the device is gone; all buffers and
    // streams of the device have been freed by then.
    void (*device_close)(void *device_ctx) = nullptr;
    DeviceIface iface;
};

// Registration functions, one per compiled backend (defined in each
// backend's folder). backend.cpp consults them in the order of fm_backend.
const BackendReg *cpu_backend_reg();
#ifdef FM_WITH_CUDA
const BackendReg *cuda_backend_reg();
#endif
#ifdef FM_WITH_METAL
const BackendReg *metal_backend_reg();
#endif

}  // namespace fm
