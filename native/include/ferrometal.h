/*
 * ferrometal.h — the C ABI of ferrometal, and its manual.
 *
 * ferrometal trains and runs neural networks with all state resident on the
 * accelerator. Every object is an opaque `uintptr_t` handle; every function
 * returns an `fm_status` and passes results through out-pointers.
 *
 * A tour (level 1: devices and buffers):
 *
 *     #include "ferrometal.h"
 *     #include <stdio.h>
 *
 *     int main(void) {
 *         fm_device dev = 0;
 *         fm_buffer buf = 0;
 *         float host[4] = {1, 2, 3, 4}, back[4] = {0};
 *         if (fm_device_open_best(&dev) != FM_OK) goto fail;
 *         if (fm_buffer_new(&buf, dev, FM_DTYPE_F32, 4) != FM_OK) goto fail;
 *         if (fm_buffer_write(buf, 0, host, 4, 0) != FM_OK) goto fail;
 *         if (fm_buffer_read(buf, 0, back, 4, 0) != FM_OK) goto fail;
 *         printf("%g %g %g %g\n", back[0], back[1], back[2], back[3]);
 *         fm_release(buf);
 *         fm_release(dev);
 *         return 0;
 *     fail:
 *         fprintf(stderr, "error: %s\n", fm_last_error());
 *         fm_release(buf);   (releasing 0 reports an error but is harmless)
 *         fm_release(dev);
 *         return 1;
 *     }
 *
 * Conventions, for every function below:
 *   - The return value is FM_OK (0) or an error status. On error, out-pointers
 *     are left unchanged and fm_last_error() names the function, the argument
 *     and what was wrong. No function aborts, and no C++ exception escapes.
 *   - A handle that is zero, forged, already released, or of the wrong kind
 *     gives FM_ERR_INVALID_HANDLE. Releasing a handle twice is such an error.
 *   - "Returns a new reference" means the caller owns one reference to the
 *     out-handle and must fm_release() it.
 *   - Counts and offsets of buffers are in elements of the buffer's dtype.
 *   - Thread-safety is stated per group. The handle table itself is
 *     thread-safe: any thread may retain or release any handle.
 *
 * This header compiles as C99 and C++. Only 64-bit platforms are supported.
 */
#ifndef FERROMETAL_H
#define FERROMETAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* In C++ every enum gets `int` as its underlying type, so any value a C host
 * passes is a valid value of the type there and is refused by the checks,
 * instead of being undefined behaviour. */
#ifdef __cplusplus
#define FM_ENUM(name) enum name : int
#else
#define FM_ENUM(name) enum name
#endif

/* ---------------------------------------------------------------------------
 * Versions
 * ------------------------------------------------------------------------- */

/** Version of this header's ABI. Incremented on any incompatible change. */
#define FM_ABI_VERSION 1

#define FM_VERSION_MAJOR 0
#define FM_VERSION_MINOR 1
#define FM_VERSION_PATCH 0

/** The library's version as "major.minor.patch" (static storage, never NULL). */
const char *fm_version(void);

/** The FM_ABI_VERSION the library was compiled with. A host compares it with
 *  its own FM_ABI_VERSION to detect a mismatched header and library. */
uint32_t fm_abi_version(void);

/* ---------------------------------------------------------------------------
 * Status codes and errors
 * ------------------------------------------------------------------------- */

/** Result of every fallible function. Values are stable; new ones are only
 *  ever added before FM_STATUS_COUNT. */
typedef FM_ENUM(fm_status) {
    FM_OK = 0,
    /** A handle was zero, forged, released, or of the wrong kind. */
    FM_ERR_INVALID_HANDLE = 1,
    /** An argument was invalid: a NULL pointer, an unknown enum value, a
     *  size that overflows, a value that does not fit the dtype. */
    FM_ERR_INVALID_ARGUMENT = 2,
    /** An offset + count reaches past the end of a buffer. */
    FM_ERR_OUT_OF_RANGE = 3,
    /** Two buffers, or a buffer and an operation, disagree on dtype. */
    FM_ERR_DTYPE_MISMATCH = 4,
    /** Shapes do not fit together (graphs and models). */
    FM_ERR_SHAPE_MISMATCH = 5,
    /** The device (or host, for staging) has no memory left for the request.
     *  The pool stays usable. */
    FM_ERR_OUT_OF_MEMORY = 6,
    /** No device with that backend and index exists on this machine. */
    FM_ERR_DEVICE_NOT_FOUND = 7,
    /** The backend was not compiled into this library (e.g. CUDA without the
     *  `cuda` feature). */
    FM_ERR_NOT_COMPILED = 8,
    /** The backend exists but does not support this operation or dtype. */
    FM_ERR_UNSUPPORTED = 9,
    /** The device driver or runtime reported a failure. */
    FM_ERR_BACKEND = 10,
    /** Reading or writing a file failed, or a file was malformed. */
    FM_ERR_IO = 11,
    /** A computation produced NaN or Inf where a finite value was required. */
    FM_ERR_NUMERICAL = 12,
    /** A bug in ferrometal. Please report it with the fm_last_error() text. */
    FM_ERR_INTERNAL = 13,
    FM_STATUS_COUNT
} fm_status;

/** A static, human-readable name for a status ("FM_ERR_OUT_OF_RANGE").
 *  Unknown values give "FM_STATUS_UNKNOWN". Never NULL. */
const char *fm_status_str(fm_status status);

/** The message of the most recent failed call on the calling thread, naming
 *  the function and the argument, e.g.
 *  "fm_buffer_read: argument 'count': offset 8 + count 4 exceeds buffer of 10
 *  elements". Empty if no call on this thread has failed. The pointer stays
 *  valid until the next ferrometal call on this thread. */
const char *fm_last_error(void);

/* ---------------------------------------------------------------------------
 * Element types
 * ------------------------------------------------------------------------- */

/** Element types. Values are stable; new ones only before FM_DTYPE_COUNT. */
typedef FM_ENUM(fm_dtype) {
    FM_DTYPE_F32 = 0,
    FM_DTYPE_F16 = 1,
    FM_DTYPE_BF16 = 2,
    FM_DTYPE_I32 = 3,
    FM_DTYPE_I8 = 4,
    FM_DTYPE_U8 = 5,
    FM_DTYPE_COUNT
} fm_dtype;

/** A static name for a dtype ("f32", "bf16", ...); "unknown" if invalid. */
const char *fm_dtype_str(fm_dtype dtype);

/** Size of one element of `dtype` in bytes.
 *  Errors: FM_ERR_INVALID_ARGUMENT for an unknown dtype or NULL `out_bytes`. */
fm_status fm_dtype_size(size_t *out_bytes, fm_dtype dtype);

/* ---------------------------------------------------------------------------
 * Handles and reference counting
 * ------------------------------------------------------------------------- */

/** An open device (CPU, a CUDA GPU, a Metal GPU). Shareable across threads. */
typedef uintptr_t fm_device;
/** A typed, contiguous allocation in a device's memory. */
typedef uintptr_t fm_buffer;
/** An ordered queue of asynchronous work on one device. */
typedef uintptr_t fm_stream;

/** Adds one reference to any ferrometal handle.
 *  Errors: FM_ERR_INVALID_HANDLE. Thread-safe. */
fm_status fm_retain(uintptr_t handle);

/** Drops one reference to any ferrometal handle; the object is destroyed
 *  when the last reference goes. Afterwards the handle value is invalid, and
 *  using or releasing it again gives FM_ERR_INVALID_HANDLE. Objects keep what
 *  they depend on alive: a buffer keeps its device open.
 *  Errors: FM_ERR_INVALID_HANDLE. Thread-safe. */
fm_status fm_release(uintptr_t handle);

/* ---------------------------------------------------------------------------
 * fm_device_* — devices
 *
 * Thread-safety: a device handle may be used from any number of threads at
 * once. Opening the same backend and index twice gives two handles to the
 * same device (one memory pool).
 * ------------------------------------------------------------------------- */

/** Backends. Values are stable; new ones only before FM_BACKEND_COUNT. */
typedef FM_ENUM(fm_backend) {
    FM_BACKEND_CPU = 0,
    FM_BACKEND_CUDA = 1,
    FM_BACKEND_METAL = 2,
    FM_BACKEND_COUNT
} fm_backend;

/** A static name for a backend ("cpu", "cuda", "metal"); "unknown" if invalid. */
const char *fm_backend_str(fm_backend backend);

/** Whether `backend` was compiled into this library (1) or not (0).
 *  Errors: FM_ERR_INVALID_ARGUMENT for an unknown backend or NULL out. */
fm_status fm_backend_is_compiled(int *out_compiled, fm_backend backend);

/** Number of devices of `backend` on this machine (the CPU backend always has
 *  exactly one). A compiled backend with no usable device reports 0.
 *  Errors: FM_ERR_NOT_COMPILED, FM_ERR_INVALID_ARGUMENT. */
fm_status fm_device_count(size_t *out_count, fm_backend backend);

/** Opens device `index` of `backend`. Returns a new reference in *out_device.
 *  Errors: FM_ERR_NOT_COMPILED if the backend is not built in;
 *  FM_ERR_DEVICE_NOT_FOUND if `index` >= fm_device_count();
 *  FM_ERR_BACKEND if the driver fails to initialise the device. */
fm_status fm_device_open(fm_device *out_device, fm_backend backend, size_t index);

/** Opens the best device available: CUDA device 0, else Metal device 0, else
 *  the CPU. Returns a new reference in *out_device. */
fm_status fm_device_open_best(fm_device *out_device);

/** Static facts and current memory of a device. */
typedef struct fm_device_info {
    fm_backend backend;
    size_t index;
    /** NUL-terminated, e.g. "NVIDIA H100 80GB HBM3" or "cpu (x86_64, 16 threads)". */
    char name[128];
    /** Total memory usable by the device, in bytes. */
    uint64_t total_memory;
    /** Memory currently free on the device, in bytes (for the CPU: available
     *  system memory). */
    uint64_t free_memory;
} fm_device_info;

/** Fills *out_info. Errors: FM_ERR_INVALID_HANDLE, FM_ERR_INVALID_ARGUMENT. */
fm_status fm_device_info_get(fm_device_info *out_info, fm_device device);

/** Blocks until all work submitted to any stream of `device` has completed.
 *  Returns the first asynchronous error that happened on it, if any. */
fm_status fm_device_synchronize(fm_device device);

/* ---------------------------------------------------------------------------
 * Memory pool — one caching pool per device
 *
 * Released buffers return to the pool and are reused by later allocations
 * of a similar size without asking the driver again. Thread-safe.
 * ------------------------------------------------------------------------- */

typedef struct fm_pool_stats {
    /** Bytes held by live buffers (rounded up to the pool's block sizes). */
    uint64_t bytes_in_use;
    /** Bytes held by the pool but not by any buffer, ready for reuse. */
    uint64_t bytes_cached;
    /** Highest bytes_in_use since the device was first opened or the peak
     *  was last reset. */
    uint64_t peak_bytes_in_use;
    /** Number of buffer allocations served by the pool. */
    uint64_t allocations;
    /** Number of those that had to ask the system or driver for memory
     *  (the rest were served from the cache). */
    uint64_t system_allocations;
} fm_pool_stats;

/** Fills *out_stats for `device`'s pool. */
fm_status fm_device_pool_stats(fm_pool_stats *out_stats, fm_device device);

/** Returns all cached (unused) memory of `device`'s pool to the system. Live
 *  buffers are untouched. Waits for pending frees on the device first. */
fm_status fm_device_pool_trim(fm_device device);

/** Sets peak_bytes_in_use to the current bytes_in_use. */
fm_status fm_device_pool_reset_peak(fm_device device);

/* ---------------------------------------------------------------------------
 * fm_stream_* — asynchronous work queues
 *
 * Work submitted to one stream runs in submission order. Functions that
 * take a stream accept 0 for "synchronous": the call returns after the work
 * is complete. With a stream, the call returns once the work is queued; its
 * asynchronous errors are returned by the next fm_stream_synchronize().
 * The CPU backend completes work before returning even when given a stream.
 *
 * Thread-safety: a stream is used by one thread at a time.
 * ------------------------------------------------------------------------- */

/** Creates a stream on `device`. Returns a new reference in *out_stream. */
fm_status fm_stream_new(fm_stream *out_stream, fm_device device);

/** Blocks until all work submitted to `stream` has completed. Returns (and
 *  clears) the first asynchronous error of that work, if any. */
fm_status fm_stream_synchronize(fm_stream stream);

/* ---------------------------------------------------------------------------
 * fm_buffer_* — typed device memory
 *
 * Thread-safety: buffer handles may be shared across threads; concurrent
 * writes to overlapping ranges are the caller's race to avoid. Releasing a
 * buffer with work still queued on a stream is safe: its memory returns to
 * the pool in that stream's order.
 * ------------------------------------------------------------------------- */

/** Allocates `count` elements of `dtype` on `device`. The contents are
 *  unspecified until written or filled. `count` may be 0. Returns a new
 *  reference in *out_buffer.
 *  Errors: FM_ERR_INVALID_ARGUMENT (unknown dtype; count * element size
 *  overflows); FM_ERR_OUT_OF_MEMORY. */
fm_status fm_buffer_new(fm_buffer *out_buffer, fm_device device, fm_dtype dtype, size_t count);

/** Number of elements in `buffer`. */
fm_status fm_buffer_count(size_t *out_count, fm_buffer buffer);

/** Element type of `buffer`. */
fm_status fm_buffer_dtype(fm_dtype *out_dtype, fm_buffer buffer);

/** Size of `buffer` in bytes (count * element size). */
fm_status fm_buffer_nbytes(size_t *out_bytes, fm_buffer buffer);

/** The device `buffer` lives on. Returns a new reference in *out_device. */
fm_status fm_buffer_device(fm_device *out_device, fm_buffer buffer);

/** Copies `count` elements from host memory `src` (laid out as the buffer's
 *  dtype) into `dst` starting at element `dst_offset`. `src` may be reused as
 *  soon as the call returns, even with a stream: the data is staged first.
 *  Errors: FM_ERR_INVALID_ARGUMENT (NULL src with count > 0);
 *  FM_ERR_OUT_OF_RANGE (dst_offset + count > buffer count). */
fm_status fm_buffer_write(fm_buffer dst, size_t dst_offset, const void *src, size_t count,
                          fm_stream stream);

/** Copies `count` elements of `src`, from element `src_offset`, into host
 *  memory `dst`. With a stream, `dst` is filled by the time
 *  fm_stream_synchronize(stream) returns and must stay valid until then.
 *  Errors: FM_ERR_INVALID_ARGUMENT (NULL dst with count > 0);
 *  FM_ERR_OUT_OF_RANGE. */
fm_status fm_buffer_read(fm_buffer src, size_t src_offset, void *dst, size_t count,
                         fm_stream stream);

/** Copies `count` elements from `src` (from `src_offset`) to `dst` (from
 *  `dst_offset`). The buffers may be on different devices; overlapping ranges
 *  of one buffer are copied as if through a temporary.
 *  Errors: FM_ERR_DTYPE_MISMATCH; FM_ERR_OUT_OF_RANGE. */
fm_status fm_buffer_copy(fm_buffer dst, size_t dst_offset, fm_buffer src, size_t src_offset,
                         size_t count, fm_stream stream);

/** Sets `count` elements of `buffer`, from `offset`, to `value` converted to
 *  the buffer's dtype (round to nearest even for f16/bf16).
 *  Errors: FM_ERR_INVALID_ARGUMENT if `value` is not representable in an
 *  integer dtype (not an integer, or out of its range) or is NaN for one;
 *  FM_ERR_OUT_OF_RANGE. */
fm_status fm_buffer_fill(fm_buffer buffer, size_t offset, size_t count, double value,
                         fm_stream stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FERROMETAL_H */
