/*
 * ferrometal.h — the C ABI of ferrometal, and its manual.
 *
 * ferrometal trains and runs neural networks with all state resident on the
 * accelerator. Every object is an opaque `uintptr_t` handle; every function
 * returns an `fm_status` and passes results through out-pointers.
 *
 * A tour: open a device, build a model, take one training step, read the
 * loss, release (error handling shortened to one check per call):
 *
 *     #include "ferrometal.h"
 *     #include <stdio.h>
 *
 *     int main(void) {
 *         fm_device dev = 0;  fm_trainer trainer = 0;  fm_tensor x = 0, y = 0;
 *         fm_layer_spec layers[3] = {fm_layer_spec_default(FM_LAYER_DENSE),
 *                                    fm_layer_spec_default(FM_LAYER_RELU),
 *                                    fm_layer_spec_default(FM_LAYER_DENSE)};
 *         fm_optimizer adam = fm_optimizer_default(FM_OPTIMIZER_ADAM);
 *         fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
 *         int64_t input[1] = {4}, xs[2] = {8, 4}, ys[1] = {8};
 *         float loss_value = 0;
 *         layers[0].units = 16;  layers[2].units = 3;
 *         if (fm_device_open_best(&dev) != FM_OK ||
 *             fm_trainer_new(&trainer, dev, layers, 3, input, 1, &adam, &loss, 42, NULL) != FM_OK ||
 *             fm_tensor_new(&x, dev, FM_DTYPE_F32, xs, 2) != FM_OK ||
 *             fm_tensor_new(&y, dev, FM_DTYPE_I32, ys, 1) != FM_OK) goto fail;
 *         (fill x and y through fm_tensor_buffer + fm_buffer_write)
 *         if (fm_trainer_step(trainer, x, y, &loss_value) != FM_OK) goto fail;
 *         printf("loss %f\n", loss_value);
 *         fm_release(x); fm_release(y); fm_release(trainer); fm_release(dev);
 *         return 0;
 *     fail:
 *         fprintf(stderr, "error: %s\n", fm_last_error());
 *         return 1;
 *     }
 *
 * Level 1 (fm_device_*, fm_buffer_*, fm_stream_*) moves data; level 2
 * (fm_graph_*, fm_exec_*) builds and runs computations; level 3
 * (fm_trainer_*, fm_inference_*) trains and deploys layer models.
 *
 * Conventions, for every function below:
 *   - The return value is FM_OK (0) or an error status. On error, out-pointers
 *     are left unchanged and fm_last_error() names the function, the argument
 *     and what was wrong. No function aborts, and no C++ exception escapes.
 *   - A handle that is zero, forged, already released, or of the wrong kind
 *     gives FM_ERR_INVALID_HANDLE. Releasing a handle twice is such an error.
 *   - "Returns a new reference" means the caller owns one reference to the
 *     out-handle and must fm_release() it.
 *   - Pointers passed in (strings, arrays, structs and what they point to)
 *     are read during the call only: the library copies whatever it keeps,
 *     so the caller may free or reuse them as soon as the call returns.
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
#define FM_ABI_VERSION 2

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
/** Host memory the device copies from directly (fm_staging_new). */
typedef uintptr_t fm_staging;

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
 * A synchronous call (stream 0) is not ordered after work queued on other
 * streams: synchronize those first if the call depends on them.
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

/** Host memory for data on its way to `device` (a batch being collated):
 *  page-locked (pinned) on CUDA, so fm_buffer_write_staged moves it in one
 *  DMA without the extra copy fm_buffer_write makes; ordinary host memory,
 *  aligned to 64 bytes, on the CPU. Fill it through fm_staging_data.
 *  Returns a new reference.
 *  Errors: FM_ERR_OUT_OF_MEMORY when the host cannot provide (or pin) it. */
fm_status fm_staging_new(fm_staging *out_staging, fm_device device, size_t bytes);

/** The host address and size of `staging`. The memory stays valid while
 *  the staging buffer lives. */
fm_status fm_staging_data(void **out_ptr, size_t *out_bytes, fm_staging staging);

/** Copies `bytes` bytes of `src` (from byte `src_offset`) into `dst` (from
 *  element `dst_offset`; `bytes` must be whole elements). Both must belong
 *  to the same device. With a stream the call returns once the copy is
 *  queued, and `src` must stay alive and unchanged until the stream is
 *  synchronized; with stream 0 it returns when the copy is done.
 *  Errors: FM_ERR_INVALID_ARGUMENT (different devices, part of an element);
 *  FM_ERR_OUT_OF_RANGE (either range outside its buffer). */
fm_status fm_buffer_write_staged(fm_buffer dst, size_t dst_offset, fm_staging src, size_t src_offset,
                                 size_t bytes, fm_stream stream);

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

/* ===========================================================================
 * Level 2: tensors, graphs, executables
 *
 * A graph is device-independent IR: placeholders (inputs fed per run),
 * variables (parameters that live on the device between runs), constants and
 * ops. fm_graph_gradients adds the backward pass as more IR, and
 * fm_graph_optimizer adds the update step, so forward, backward and update
 * are planned together. fm_graph_compile binds a graph to a device as an
 * executable: it owns the variables and compiles one plan per combination of
 * feed shapes and fetched values, on first use, cached (any batch size works).
 * ========================================================================= */

/** Highest tensor rank. */
#define FM_MAX_RANK 8
/** A placeholder dimension fixed only when fed: the batch (only in dim 0).
 *  In the shape of a value it marks a dim equal to the batch. */
#define FM_BATCH (-1)
/** In the shape of a value: a dim that varies with the batch without being
 *  equal to it, e.g. batch * 3 after reshaping [batch, 3, 4] to [-1, 4]. */
#define FM_BATCH_DEPENDENT (-2)

/* ---------------------------------------------------------------------------
 * fm_tensor_* — a buffer with a shape
 *
 * Thread-safety: as buffers.
 * ------------------------------------------------------------------------- */

typedef uintptr_t fm_tensor;

/** A tensor of `shape` (rank dims, each >= 0) on `device`, contents
 *  unspecified. Returns a new reference.
 *  Errors: FM_ERR_INVALID_ARGUMENT (rank > FM_MAX_RANK, negative dim, NULL
 *  shape with rank > 0, size overflow); FM_ERR_OUT_OF_MEMORY. */
fm_status fm_tensor_new(fm_tensor *out_tensor, fm_device device, fm_dtype dtype,
                        const int64_t *shape, size_t rank);

/** A tensor viewing all of `buffer` with `shape` (the element counts must
 *  agree). The tensor keeps the buffer alive; writes through either are seen
 *  by both. Returns a new reference.
 *  Errors: FM_ERR_SHAPE_MISMATCH when the counts differ. */
fm_status fm_tensor_from_buffer(fm_tensor *out_tensor, fm_buffer buffer, const int64_t *shape,
                                size_t rank);

/** The tensor's buffer (read and write it with fm_buffer_*). New reference. */
fm_status fm_tensor_buffer(fm_buffer *out_buffer, fm_tensor tensor);

/** Copies the shape into out_dims (room for FM_MAX_RANK) and the rank into
 *  *out_rank. */
fm_status fm_tensor_shape(int64_t *out_dims, size_t *out_rank, fm_tensor tensor);

/* ---------------------------------------------------------------------------
 * fm_graph_* — building graphs
 *
 * Values are identified by fm_value numbers that belong to one graph; a
 * value of another graph is refused with FM_ERR_INVALID_ARGUMENT. Every value
 * has one dtype and a shape inferred when it is created; an op whose inputs
 * do not fit fails then, with FM_ERR_SHAPE_MISMATCH (or DTYPE_MISMATCH) and a
 * message naming the op, its input shapes and the dimension at fault.
 *
 * Thread-safety: a graph is built by one thread at a time.
 * ------------------------------------------------------------------------- */

typedef uintptr_t fm_graph;
typedef uint64_t fm_value;

/** A new, empty graph. Returns a new reference. */
fm_status fm_graph_new(fm_graph *out_graph);

/** An input fed at each run. `shape[0]` may be FM_BATCH. `name` is copied
 *  and must be unique among the graph's placeholders and variables.
 *  Errors: FM_ERR_INVALID_ARGUMENT (NULL or duplicate name, bad shape). */
fm_status fm_graph_placeholder(fm_value *out_value, fm_graph graph, const char *name,
                               fm_dtype dtype, const int64_t *shape, size_t rank);

/** How a variable's first value is made. Start from fm_init_default(). */
typedef FM_ENUM(fm_init_kind) {
    FM_INIT_ZEROS = 0,
    /** Every element `value`. */
    FM_INIT_CONSTANT = 1,
    /** Uniform in [low, high). */
    FM_INIT_UNIFORM = 2,
    /** Normal with `mean` and `std`. */
    FM_INIT_NORMAL = 3,
    /** Glorot: uniform in +-sqrt(6 / (fan_in + fan_out)). */
    FM_INIT_XAVIER_UNIFORM = 4,
    /** Glorot: normal with std sqrt(2 / (fan_in + fan_out)). */
    FM_INIT_XAVIER_NORMAL = 5,
    /** Kaiming for ReLU: uniform in +-sqrt(6 / fan_in). */
    FM_INIT_HE_UNIFORM = 6,
    /** Kaiming for ReLU: normal with std sqrt(2 / fan_in). */
    FM_INIT_HE_NORMAL = 7,
    /** Copies `data` (count = product of the shape, elements of the dtype)
     *  when the variable is created. */
    FM_INIT_DATA = 8,
    FM_INIT_COUNT
} fm_init_kind;

/** Fan-in and fan-out are taken from the shape as PyTorch does: for
 *  [out, in, k...] fan_in = in * prod(k), fan_out = out * prod(k). The same
 *  seed gives the same values on every device and thread count. */
typedef struct fm_init {
    fm_init_kind kind;
    double value, low, high, mean, std;
    uint64_t seed;
    const void *data;
} fm_init;

/** Zeros, with low = -1, high = 1, mean = 0, std = 1, seed 0. */
fm_init fm_init_default(void);

/** A parameter: device-resident, keeps its value between runs, changed
 *  only by FM_OP_ASSIGN (which fm_graph_optimizer uses). `name` as for
 *  placeholders. Variables cannot have FM_BATCH dims. */
fm_status fm_graph_variable(fm_value *out_value, fm_graph graph, const char *name, fm_dtype dtype,
                            const int64_t *shape, size_t rank, const fm_init *init);

/** A constant, copied from `data` (product of the shape elements). */
fm_status fm_graph_constant(fm_value *out_value, fm_graph graph, fm_dtype dtype,
                            const int64_t *shape, size_t rank, const void *data);

/** An f32 scalar constant (shape []). */
fm_status fm_graph_scalar(fm_value *out_value, fm_graph graph, double value);

/** Operations. Inputs are listed as (name: dtype, shape); "x" is f32 unless
 *  stated. Elementwise ops broadcast their inputs as NumPy does. Attributes
 *  come from fm_op_attrs; fields an op does not name are ignored. Values
 *  are stable; new ones only before FM_OP_COUNT. */
typedef FM_ENUM(fm_op) {
    /* Elementwise, one input. */
    FM_OP_NEG = 0,
    FM_OP_ABS = 1,
    FM_OP_EXP = 2,
    FM_OP_LOG = 3,
    FM_OP_SQRT = 4,
    FM_OP_RSQRT = 5,
    /** x ^ `exponent`. */
    FM_OP_POW = 6,
    /** min(max(x, `min`), `max`). */
    FM_OP_CLAMP = 7,
    FM_OP_RELU = 8,
    /** x > 0 ? x : `slope` * x. */
    FM_OP_LEAKY_RELU = 9,
    /** x > 0 ? x : `alpha` * (exp(x) - 1). */
    FM_OP_ELU = 10,
    FM_OP_SIGMOID = 11,
    FM_OP_TANH = 12,
    /** x * sigmoid(x) (swish). */
    FM_OP_SILU = 13,
    /** x * Phi(x); with `approximate`, the tanh form. */
    FM_OP_GELU = 14,
    /** log(1 + exp(x)). */
    FM_OP_SOFTPLUS = 15,
    /* Elementwise, two inputs (a, b). Comparisons give f32 1 or 0 and have no gradient. */
    FM_OP_ADD = 16,
    FM_OP_SUB = 17,
    FM_OP_MUL = 18,
    FM_OP_DIV = 19,
    FM_OP_MAXIMUM = 20,
    FM_OP_MINIMUM = 21,
    FM_OP_EQUAL = 22,
    FM_OP_NOT_EQUAL = 23,
    FM_OP_LESS = 24,
    FM_OP_LESS_EQUAL = 25,
    FM_OP_GREATER = 26,
    FM_OP_GREATER_EQUAL = 27,
    /** (condition, a, b): condition != 0 ? a : b. No gradient to condition. */
    FM_OP_WHERE = 28,
    /* Along an axis. */
    /** Softmax along `axes[0]` (default -1 when num_axes is 0). */
    FM_OP_SOFTMAX = 29,
    FM_OP_LOG_SOFTMAX = 30,
    /* Linear algebra. */
    /** (a [..., m, k], b [..., k, n]) -> [..., m, n]; `transpose_a`/`transpose_b`
     *  transpose the last two dims first; leading dims broadcast. */
    FM_OP_MATMUL = 31,
    /** (x [..., in], weight [out, in], optional bias [out]) -> x weightᵀ + bias. */
    FM_OP_LINEAR = 32,
    /* Images, NCHW. */
    /** (x [n, c, h, w], weight [o, c / groups, kh, kw], optional bias [o]);
     *  `stride`, `padding`, `dilation`, `groups`. */
    FM_OP_CONV2D = 33,
    /** (x [n, c, h, w], weight [c, o / groups, kh, kw], optional bias [o]);
     *  `stride`, `padding`, `output_padding`, `dilation`, `groups`. */
    FM_OP_CONV_TRANSPOSE2D = 34,
    /** `kernel_size`, `stride` (0: the kernel size), `padding`, `dilation`. */
    FM_OP_MAX_POOL2D = 35,
    /** `kernel_size`, `stride` (0: the kernel size), `padding`, `dilation`,
     *  `count_include_pad`. */
    FM_OP_AVG_POOL2D = 36,
    /** [n, c, h, w] -> [n, c] mean over h and w. */
    FM_OP_GLOBAL_AVG_POOL = 37,
    /* Shapes. */
    /** To `shape` (`rank` dims); one dim may be -1 (inferred). */
    FM_OP_RESHAPE = 38,
    /** [d0, d1, ...] -> [d0, d1 * ...]. */
    FM_OP_FLATTEN = 39,
    /** Reorders dims: output dim i is input dim `axes[i]`. */
    FM_OP_PERMUTE = 40,
    /** Swaps dims `axes[0]` and `axes[1]` (default: the last two). */
    FM_OP_TRANSPOSE = 41,
    /** (inputs...) joined along `axes[0]`. */
    FM_OP_CONCAT = 42,
    /** For each i < num_axes: along `axes[i]` keep [starts[i], ends[i]) (negative
     *  counts from the end; ends clamp to the size). */
    FM_OP_SLICE = 43,
    /** Adds `pad_before[d]` and `pad_after[d]` elements of `value` to each dim d. */
    FM_OP_PAD = 44,
    /** To `shape` by NumPy broadcasting. */
    FM_OP_BROADCAST_TO = 45,
    /** Removes the size-1 dims `axes` (all size-1 dims when num_axes is 0). */
    FM_OP_SQUEEZE = 46,
    /** Inserts size-1 dims so they end up at `axes` of the output. */
    FM_OP_UNSQUEEZE = 47,
    /* Reductions over `axes` (all when num_axes is 0), `keep_dims`. */
    FM_OP_SUM = 48,
    FM_OP_MEAN = 49,
    FM_OP_MAX = 50,
    FM_OP_MIN = 51,
    /** With `correction` (0: population, 1: sample). */
    FM_OP_VARIANCE = 52,
    /** i32 index of the first maximum along `axes[0]`. No gradient. */
    FM_OP_ARGMAX = 53,
    /* Normalisation and regularisation. */
    /** (x [n, c, ...], gamma [c], beta [c], running_mean [c], running_var [c]),
     *  the last two variables. `training`: normalise with the batch statistics
     *  and update the running ones with `momentum` (PyTorch's convention,
     *  unbiased variance); otherwise use the running ones. `eps`. */
    FM_OP_BATCH_NORM = 54,
    /** (x, gamma, beta) normalised over the last `normalized_rank` dims
     *  (gamma and beta have those dims). `eps`. */
    FM_OP_LAYER_NORM = 55,
    /** `p` (probability of zeroing), `seed`, `training`: each run draws a new
     *  mask from (seed, run number, element index); scaled by 1 / (1 - p).
     *  Identity when not training. */
    FM_OP_DROPOUT = 56,
    /* Indexing. */
    /** (table [rows, width], indices: i32 [...]) -> [..., width]. */
    FM_OP_EMBEDDING = 57,
    /** (indices: i32 [...]) -> f32 [..., `depth`]. No gradient. */
    FM_OP_ONE_HOT = 58,
    /* Losses: a scalar with `reduction` FM_REDUCTION_MEAN (over the batch,
       or over all elements for the elementwise losses) or FM_REDUCTION_SUM. */
    /** (logits [n, c], labels: i32 [n]); `label_smoothing`. */
    FM_OP_SOFTMAX_CROSS_ENTROPY = 59,
    /** (probabilities [n, c], targets [n, c]): -sum(t log p) per row. */
    FM_OP_CATEGORICAL_CROSS_ENTROPY = 60,
    /** (probabilities, targets), same shape. */
    FM_OP_BINARY_CROSS_ENTROPY = 61,
    /** (logits, targets), same shape; stable for large |logits|. */
    FM_OP_BCE_WITH_LOGITS = 62,
    FM_OP_MSE = 63,
    FM_OP_MAE = 64,
    /** With `delta`. */
    FM_OP_HUBER = 65,
    /* Effects. */
    /** (variable, value): at the end of the run, the variable takes the value
     *  (read before the run by every other op of that run). Gives a scalar
     *  token; fetch it (or a GROUP of it) to make the run do the assignment. */
    FM_OP_ASSIGN = 66,
    /** (values...) -> a scalar token that computes all of them when fetched. */
    FM_OP_GROUP = 67,
    /** Identity whose gradient is zero. */
    FM_OP_STOP_GRADIENT = 68,
    FM_OP_COUNT
} fm_op;

/** A static name for an op ("conv2d"); "unknown" if invalid. */
const char *fm_op_str(fm_op op);

typedef FM_ENUM(fm_reduction) {
    FM_REDUCTION_MEAN = 0,
    FM_REDUCTION_SUM = 1,
    FM_REDUCTION_COUNT
} fm_reduction;

/** Attributes of an op; see each fm_op for the fields it reads. Start from
 *  fm_op_attrs_default(). Negative axes count from the end. */
typedef struct fm_op_attrs {
    int64_t axes[FM_MAX_RANK];
    size_t num_axes;
    int32_t keep_dims;
    int64_t shape[FM_MAX_RANK];
    size_t rank;
    int64_t starts[FM_MAX_RANK];
    int64_t ends[FM_MAX_RANK];
    int64_t pad_before[FM_MAX_RANK];
    int64_t pad_after[FM_MAX_RANK];
    int32_t transpose_a, transpose_b;
    int64_t kernel_size[2], stride[2], padding[2], output_padding[2], dilation[2];
    int64_t groups;
    int32_t count_include_pad;
    int32_t approximate;
    int32_t training;
    int32_t correction;
    int64_t normalized_rank;
    int64_t depth;
    double slope, alpha, exponent, min, max, value, delta, label_smoothing, p, momentum, eps;
    fm_reduction reduction;
    uint64_t seed;
} fm_op_attrs;

/** No axes, keep_dims 0, stride and dilation 1, padding 0, groups 1,
 *  count_include_pad 1, training 1, correction 0, normalized_rank 1,
 *  slope 0.01, alpha 1, exponent 1, min -inf, max +inf, value 0, delta 1,
 *  label_smoothing 0, p 0.5, momentum 0.1, eps 1e-5, reduction MEAN, seed 0. */
fm_op_attrs fm_op_attrs_default(void);

/** Adds `op` applied to `inputs`; *out_value is its result. `attrs` may be
 *  NULL for the defaults.
 *  Errors: FM_ERR_SHAPE_MISMATCH / FM_ERR_DTYPE_MISMATCH naming the op and
 *  shapes; FM_ERR_INVALID_ARGUMENT (wrong input count, bad attribute, value
 *  of another graph). */
fm_status fm_graph_op(fm_value *out_value, fm_graph graph, fm_op op, const fm_value *inputs,
                      size_t num_inputs, const fm_op_attrs *attrs);

/** The dtype and shape of `value`: FM_BATCH where a dim is the batch,
 *  FM_BATCH_DEPENDENT where it otherwise depends on the batch size. */
fm_status fm_graph_value_info(fm_dtype *out_dtype, int64_t *out_dims, size_t *out_rank,
                              fm_graph graph, fm_value value);

/** Number of variables, and the i-th (in creation order) with its name
 *  (valid while the graph lives). */
fm_status fm_graph_variable_count(size_t *out_count, fm_graph graph);
fm_status fm_graph_variable_at(fm_value *out_value, const char **out_name, fm_graph graph,
                               size_t index);

/** Reverse-mode gradients of the scalar `loss` with respect to each of
 *  `wrt` (f32 values), as new values of the graph (zeros where the loss
 *  does not depend on one).
 *  Errors: FM_ERR_SHAPE_MISMATCH if `loss` is not a scalar. */
fm_status fm_graph_gradients(fm_value *out_gradients, fm_graph graph, fm_value loss,
                             const fm_value *wrt, size_t count);

typedef FM_ENUM(fm_optimizer_kind) {
    FM_OPTIMIZER_SGD = 0,
    FM_OPTIMIZER_ADAM = 1,
    FM_OPTIMIZER_ADAMW = 2,
    FM_OPTIMIZER_RMSPROP = 3,
    FM_OPTIMIZER_ADAGRAD = 4,
    FM_OPTIMIZER_ADADELTA = 5,
    FM_OPTIMIZER_NADAM = 6,
    FM_OPTIMIZER_COUNT
} fm_optimizer_kind;

/** Optimizer settings, with PyTorch's meanings and defaults (start from
 *  fm_optimizer_default(kind)). Gradient clipping happens first: by value
 *  (clip_value > 0), then by global norm over all gradients (clip_norm > 0). */
typedef struct fm_optimizer {
    fm_optimizer_kind kind;
    double learning_rate;
    double momentum;     /* SGD, RMSProp */
    double dampening;    /* SGD */
    int32_t nesterov;    /* SGD */
    double beta1, beta2; /* Adam, AdamW, Nadam */
    double eps;
    double weight_decay; /* decoupled for AdamW, L2 for the others */
    double alpha;        /* RMSProp smoothing */
    int32_t centered;    /* RMSProp */
    double rho;          /* AdaDelta */
    double initial_accumulator; /* AdaGrad */
    double momentum_decay;      /* Nadam */
    double clip_value, clip_norm;
} fm_optimizer;

/** PyTorch's defaults for `kind` (SGD: lr 1e-3; Adam/AdamW/Nadam: lr 1e-3
 *  (Nadam 2e-3), betas 0.9/0.999, eps 1e-8, AdamW weight decay 0.01;
 *  RMSProp: lr 0.01, alpha 0.99, eps 1e-8; AdaGrad: lr 0.01, eps 1e-10;
 *  AdaDelta: lr 1, rho 0.9, eps 1e-6; Nadam momentum_decay 4e-3). */
fm_optimizer fm_optimizer_default(fm_optimizer_kind kind);

/** Adds the update of `variables` by `gradients` (pairwise) and returns a
 *  token: fetching it runs one step. Creates the scalar variables
 *  "<prefix>lr" (set it to change the learning rate without recompiling)
 *  and "<prefix>step" (steps taken), and state variables named
 *  "<prefix><variable>.<state>". `prefix` NULL means "optimizer.". */
fm_status fm_graph_optimizer(fm_value *out_step, fm_graph graph, const fm_optimizer *optimizer,
                             const fm_value *variables, const fm_value *gradients, size_t count,
                             const char *prefix);

/* ---------------------------------------------------------------------------
 * fm_exec_* — a graph compiled for a device
 *
 * Thread-safety: an executable may be shared by threads. Its calls are
 * serialised: each holds the executable's lock while it runs, so runs,
 * variable reads and writes never interleave (one waits for the other).
 * A stream passed to fm_exec_run is used as streams are.
 * ------------------------------------------------------------------------- */

typedef uintptr_t fm_exec;

/** Binds `graph` to `device`: allocates and initialises its variables. Plans
 *  are made on first run for each combination of feed shapes and fetches.
 *  The executable keeps the graph alive; values added to the graph later
 *  can be fetched too. Returns a new reference. */
fm_status fm_graph_compile(fm_exec *out_exec, fm_graph graph, fm_device device);

/** One placeholder and the tensor fed to it for a run. */
typedef struct fm_feed {
    fm_value placeholder;
    fm_tensor tensor;
} fm_feed;

/** Runs the graph once: computes `fetches` from `feeds` and performs the
 *  assignments the fetched tokens depend on. If `out_tensors` is not NULL,
 *  out_tensors[i] receives a new reference to a tensor holding fetches[i]
 *  (on the executable's device). With `stream`, the work is queued and the
 *  feeds must stay unchanged until the stream is synchronized.
 *  Errors: FM_ERR_INVALID_ARGUMENT (a needed placeholder not fed, a feed
 *  on another device); FM_ERR_SHAPE_MISMATCH / FM_ERR_DTYPE_MISMATCH (feed
 *  does not fit its placeholder); FM_ERR_OUT_OF_RANGE (an index or label
 *  outside its range, found while running). */
fm_status fm_exec_run(fm_exec exec, const fm_feed *feeds, size_t num_feeds, const fm_value *fetches,
                      size_t num_fetches, fm_tensor *out_tensors, fm_stream stream);

/** Waits for the runs queued so far and returns the data error one of them
 *  found (FM_ERR_OUT_OF_RANGE: an index or label outside its range).
 *
 *  On a GPU, fm_exec_run with stream 0 queues the run on the device's
 *  internal queue and returns once its feeds have been consumed (so they
 *  may be overwritten at once), before the device has finished: reading a
 *  fetched tensor or a variable waits for it. An index out of range found by
 *  the device cannot stop the call that queued it; that run skips its
 *  assignments (variables stay as they were), and so do runs queued after it
 *  until the error has been returned, by this function or by the
 *  executable's next run that finds the bad run finished. The CPU finishes every
 *  run before returning, and fm_exec_run itself returns such errors. */
fm_status fm_exec_synchronize(fm_exec exec);

/** The shape of variable `name`: out_dims (room for FM_MAX_RANK), *out_rank.
 *  Errors: FM_ERR_INVALID_ARGUMENT if there is no such variable. */
fm_status fm_exec_variable_shape(int64_t *out_dims, size_t *out_rank, fm_exec exec, const char *name);

/** Copies variable `name` to host memory (`count` must be its size). */
fm_status fm_exec_read_variable(fm_exec exec, const char *name, void *dst, size_t count);

/** Overwrites variable `name` from host memory (`count` must be its size). */
fm_status fm_exec_write_variable(fm_exec exec, const char *name, const void *src, size_t count);

/** The number of runs so far, which seeds dropout masks; restoring it (with
 *  the variables) makes a resumed run draw the same masks. */
fm_status fm_exec_run_count(uint64_t *out_count, fm_exec exec);
fm_status fm_exec_set_run_count(fm_exec exec, uint64_t count);

/** Bytes of device memory the most recent run's plan needs for its
 *  intermediate values (after buffer reuse), and what they would need
 *  without reuse. */
fm_status fm_exec_planned_memory(uint64_t *out_peak_bytes, uint64_t *out_unshared_bytes,
                                 fm_exec exec);

/* ===========================================================================
 * Level 3: training and inference engines
 *
 * A model is an array of layer specs applied in order to an input of a
 * given shape (NCHW for images, without the batch dim). fm_trainer_new
 * builds one graph holding the training forward pass (dropout on, batch
 * statistics), the loss, its gradients and the optimizer update, plus an
 * evaluation pass over the same parameters; a training step is then one
 * call and one submission, and parameters never leave the device.
 *
 * Thread-safety: trainers and inference engines may be shared by threads.
 * Each call holds the engine's lock, so calls from several threads are
 * serialised, never interleaved: two threads stepping one trainer take
 * turns, and a save sees the state between two steps.
 * ========================================================================= */

/** Layer kinds. Values are stable; new ones only before FM_LAYER_COUNT. */
typedef FM_ENUM(fm_layer_kind) {
    /** [n, in] -> [n, `units`]; weight [units, in], bias [units]. */
    FM_LAYER_DENSE = 0,
    /** `units` output channels, `kernel_size`, `stride`, `padding`, `dilation`, `groups`. */
    FM_LAYER_CONV2D = 1,
    /** Also `output_padding`. */
    FM_LAYER_CONV_TRANSPOSE2D = 2,
    /** `kernel_size`, `stride` (0: the kernel), `padding`. */
    FM_LAYER_MAX_POOL2D = 3,
    FM_LAYER_AVG_POOL2D = 4,
    FM_LAYER_GLOBAL_AVG_POOL = 5,
    FM_LAYER_FLATTEN = 6,
    /** `rate` = probability of zeroing (training only). */
    FM_LAYER_DROPOUT = 7,
    /** Over dim 1 with `momentum` and `eps`; gamma, beta, running statistics. */
    FM_LAYER_BATCH_NORM = 8,
    /** Over all dims but the batch, with `eps`. */
    FM_LAYER_LAYER_NORM = 9,
    FM_LAYER_RELU = 10,
    /** `slope`. */
    FM_LAYER_LEAKY_RELU = 11,
    /** `alpha`. */
    FM_LAYER_ELU = 12,
    FM_LAYER_SIGMOID = 13,
    FM_LAYER_TANH = 14,
    FM_LAYER_SWISH = 15,
    /** `approximate` for the tanh form. */
    FM_LAYER_GELU = 16,
    /** Over dim 1. */
    FM_LAYER_SOFTMAX = 17,
    FM_LAYER_COUNT
} fm_layer_kind;

/** One layer. Start from fm_layer_spec_default(kind). Parameters are named
 *  "<name>.weight", "<name>.bias" (batch norm: ".weight", ".bias",
 *  ".running_mean", ".running_var"); `name` NULL gives "<kind><index>", e.g.
 *  "dense3". Weights start as `init` seeded with `seed` (0: derived from the
 *  trainer's seed and the layer index); biases start at zero. */
typedef struct fm_layer_spec {
    fm_layer_kind kind;
    const char *name;
    int64_t units;
    int64_t kernel_size[2], stride[2], padding[2], dilation[2], output_padding[2];
    int64_t groups;
    int32_t bias;
    double rate, slope, alpha, momentum, eps;
    int32_t approximate;
    fm_init_kind init;
    uint64_t seed;
} fm_layer_spec;

/** Defaults: stride 1 (pools: 0, the kernel size), dilation 1, groups 1,
 *  bias on, rate 0.5, slope 0.01, alpha 1, momentum 0.1, eps 1e-5, init
 *  FM_INIT_HE_UNIFORM, seed 0. */
fm_layer_spec fm_layer_spec_default(fm_layer_kind kind);

/** The loss a trainer minimises and the labels it expects. */
typedef struct fm_loss_config {
    /** FM_OP_SOFTMAX_CROSS_ENTROPY (labels: i32 [n]), FM_OP_BCE_WITH_LOGITS,
     *  FM_OP_MSE, FM_OP_MAE or FM_OP_HUBER (labels: f32 like the output). */
    fm_op loss;
    double label_smoothing;
    double delta;
} fm_loss_config;

typedef uintptr_t fm_trainer;

/** A trainer's options beyond its model, optimizer and loss. Start from
 *  fm_trainer_options_default(). */
typedef struct fm_trainer_options {
    /** Nonzero (the default): the non-finite guard. A step whose loss or
     *  any gradient holds an inf or a NaN changes nothing: weights,
     *  optimizer state, running statistics and "optimizer.step" keep their
     *  values. The device decides, so a step stays one submission with no
     *  synchronisation. Such a step fails fm_trainer_step with out_loss,
     *  or the next fm_trainer_synchronize, with FM_ERR_NUMERICAL naming the
     *  step, and is counted in fm_trainer_stats. Zero: such a step updates
     *  everything with what it computed (the weights become NaN). */
    int32_t nonfinite_guard;
} fm_trainer_options;

/** nonfinite_guard 1. */
fm_trainer_options fm_trainer_options_default(void);

/** Builds and compiles a trainer for `device`: `layers` applied to inputs of
 *  `input_shape` (without the batch dim), minimising `loss` with `optimizer`.
 *  `seed` seeds initialisation and dropout; `options` may be NULL for
 *  fm_trainer_options_default(). Every array and string is copied: the
 *  caller may free `layers` and their names when the call returns. Returns
 *  a new reference.
 *  Errors: FM_ERR_SHAPE_MISMATCH naming the layer that does not fit its
 *  input ("layer 1 'conv2d1': ..."); FM_ERR_INVALID_ARGUMENT for a bad
 *  layer field (naming the layer), an optimizer field that is NaN, infinite
 *  or out of range (naming the field), an unsupported loss, NULL
 *  arguments; FM_ERR_INVALID_HANDLE for `device`. */
fm_status fm_trainer_new(fm_trainer *out_trainer, fm_device device, const fm_layer_spec *layers,
                         size_t num_layers, const int64_t *input_shape, size_t input_rank,
                         const fm_optimizer *optimizer, const fm_loss_config *loss, uint64_t seed,
                         const fm_trainer_options *options);

/** One training step on a batch: forward, backward and update in one
 *  submission. `inputs` is [n, input_shape...] f32; `labels` as the loss
 *  expects. If `out_loss` is not NULL the batch's mean loss is read back
 *  into it (a synchronisation); otherwise nothing comes back.
 *  Errors: FM_ERR_SHAPE_MISMATCH / DTYPE_MISMATCH (wrong inputs or labels,
 *  empty batch); FM_ERR_OUT_OF_RANGE (a label outside [0, classes)); the
 *  parameters are unchanged after any error. */
fm_status fm_trainer_step(fm_trainer trainer, fm_tensor inputs, fm_tensor labels, float *out_loss);

/** Waits for the steps queued so far and returns the data error one of them
 *  found (FM_ERR_OUT_OF_RANGE: a label outside [0, classes)). On a GPU a step
 *  without `out_loss` returns once queued; a bad label found by the device
 *  makes that step leave every parameter unchanged, and is returned here, by
 *  the next fm_trainer_step or by fm_trainer_evaluate. With `out_loss`, or
 *  on the CPU, fm_trainer_step returns it itself. */
fm_status fm_trainer_synchronize(fm_trainer trainer);

/** What a trainer's steps did. */
typedef struct fm_trainer_stats {
    /** fm_trainer_step calls that ran (skipped ones included). */
    uint64_t steps;
    /** Steps the non-finite guard skipped. */
    uint64_t skipped_steps;
    /** The number (1-based, as counted by `steps`) of the last skipped
     *  step; 0 when none was. */
    uint64_t last_skipped_step;
} fm_trainer_stats;

/** The trainer's statistics, after waiting for the steps queued so far. */
fm_status fm_trainer_stats_get(fm_trainer_stats *out_stats, fm_trainer trainer);

/** Evaluation on a batch (dropout off, running statistics): the mean loss
 *  and, for classification, the number of correct argmax predictions. */
fm_status fm_trainer_evaluate(fm_trainer trainer, fm_tensor inputs, fm_tensor labels,
                              float *out_loss, uint64_t *out_correct);

/** The model's outputs (evaluation mode) for `inputs`. Returns a new reference. */
fm_status fm_trainer_predict(fm_tensor *out_outputs, fm_trainer trainer, fm_tensor inputs);

/** Changes the learning rate without recompiling. */
fm_status fm_trainer_set_learning_rate(fm_trainer trainer, double learning_rate);

/** The trainer's executable (parameters, optimizer state, "optimizer.lr",
 *  "optimizer.step"), for fm_exec_read_variable / fm_exec_write_variable and
 *  fm_exec_variable_shape. Returns a new reference. */
fm_status fm_trainer_exec(fm_exec *out_exec, fm_trainer trainer);

/** The names of all state variables, in a stable order: parameters first,
 *  then running statistics, then optimizer state. *out_count receives the
 *  number; names stay valid while the trainer lives. */
fm_status fm_trainer_state_count(size_t *out_count, fm_trainer trainer);
fm_status fm_trainer_state_name(const char **out_name, int32_t *out_is_parameter,
                                fm_trainer trainer, size_t index);

/** Output shape of the model (without the batch dim). */
fm_status fm_trainer_output_shape(int64_t *out_dims, size_t *out_rank, fm_trainer trainer);

/* ---------------------------------------------------------------------------
 * fm_inference_* — deployment: the evaluation pass only
 * ------------------------------------------------------------------------- */

typedef uintptr_t fm_inference;

/** An inference engine for the model `layers` on `device`, with freshly
 *  initialised parameters; load trained ones with fm_inference_exec and
 *  fm_exec_write_variable (names as for trainers). Returns a new reference. */
fm_status fm_inference_new(fm_inference *out_inference, fm_device device,
                           const fm_layer_spec *layers, size_t num_layers,
                           const int64_t *input_shape, size_t input_rank);

/** An inference engine on `device` holding a copy of `trainer`'s current
 *  parameters and running statistics. Returns a new reference. */
fm_status fm_inference_from_trainer(fm_inference *out_inference, fm_trainer trainer,
                                    fm_device device);

/** The model's outputs for `inputs` ([n, input_shape...] f32). New reference.
 *  Thread-safety: an engine may be shared by threads; its calls are
 *  serialised as an executable's are. */
fm_status fm_infer(fm_tensor *out_outputs, fm_inference inference, fm_tensor inputs);

/** The engine's executable, for reading and writing parameters. New reference. */
fm_status fm_inference_exec(fm_exec *out_exec, fm_inference inference);

/* ---------------------------------------------------------------------------
 * Checkpoints — fm_trainer_save / fm_trainer_load and the same for inference
 *
 * A checkpoint is one safetensors file: every state variable as an F32
 * tensor named as in fm_trainer_state_name, and in its __metadata__ the
 * format ("ferrometal.format"), the optimizer, the run counter (dropout
 * masks continue from it), a CRC-32C of the data, and the host's own
 * text ("ferrometal.host"). Saving is crash-safe: the file goes to a
 * temporary of a unique name in the same folder, is fsynced and renamed
 * over `path`, and the folder is fsynced; what a crash leaves at `path` is
 * the old complete file or the new one, and temporaries left by processes
 * that died while saving are removed by the next save. Threads and
 * processes may save to one path at once: each renames a whole file.
 * Loading validates the whole file before it changes anything: the header
 * exactly (length, offsets contiguous and in range, no trailing bytes),
 * each tensor's name, dtype and shape against the model (before any
 * allocation for the data), and the checksum. On any error the engine is
 * unchanged. Errors: FM_ERR_IO naming the path and what is wrong with it;
 * FM_ERR_INVALID_ARGUMENT, FM_ERR_SHAPE_MISMATCH or FM_ERR_DTYPE_MISMATCH
 * naming the tensor that does not fit; FM_ERR_INVALID_HANDLE.
 * ------------------------------------------------------------------------- */

/** Writes every state variable of `trainer` to `path`. `metadata` (NULL for
 *  none) is stored as it is and read back by fm_checkpoint_metadata; the
 *  Rust crate keeps the model spec and training state there. Waits for the
 *  steps queued so far. */
fm_status fm_trainer_save(fm_trainer trainer, const char *path, const char *metadata);

/** Restores every state variable and the run counter from a checkpoint of
 *  the same model and optimizer. A checkpoint of another optimizer is
 *  FM_ERR_INVALID_ARGUMENT naming both (fm_trainer_load_weights takes its
 *  weights); a safetensors file without ferrometal metadata is FM_ERR_IO
 *  ("not a ferrometal checkpoint"). */
fm_status fm_trainer_load(fm_trainer trainer, const char *path);

/** Restores the parameters and running statistics only, from a checkpoint
 *  of the same model with any optimizer (its optimizer state is ignored),
 *  or from a plain safetensors file of F32 tensors named and shaped as the
 *  model's, with no others. Optimizer state and the run counter are kept. */
fm_status fm_trainer_load_weights(fm_trainer trainer, const char *path);

/** Writes the parameters and running statistics of `inference` to `path`
 *  (optimizer "none"), as fm_trainer_save does. */
fm_status fm_inference_save(fm_inference inference, const char *path, const char *metadata);

/** Restores the parameters and running statistics of `inference` from any
 *  file fm_trainer_load_weights accepts. */
fm_status fm_inference_load(fm_inference inference, const char *path);

/** The host metadata of the checkpoint at `path`: up to capacity - 1 bytes
 *  and a NUL into out_text (which may be NULL when capacity is 0), and its
 *  whole length into *out_length, so a caller can ask again with room for
 *  out_length + 1. The whole file is validated (header and checksum), so
 *  the metadata of a corrupt file is never returned. */
fm_status fm_checkpoint_metadata(char *out_text, size_t capacity, size_t *out_length, const char *path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FERROMETAL_H */
