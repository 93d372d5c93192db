// The CUDA backend: registration, devices, and the context that the memory,
// stream, transfer and execution files share.
#include <cstdio>
#include <memory>

#include "cuda_check.h"
#include "cuda_context.h"

namespace fm {
namespace cuda {

void activate(const Context &ctx) { check(cudaSetDevice(ctx.index), "cudaSetDevice"); }

namespace {

size_t device_count() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        // No driver, no device, or a driver too old or broken to use: all
        // mean "no usable CUDA device" (the contract is 0, not an error, so
        // that fm_device_open_best falls back). The failure is sticky in
        // cudaGetLastError; clear it so the next CUDA call does not inherit it.
        cudaGetLastError();
        return 0;
    }
    return count > 0 ? size_t(count) : 0;
}

// Releases whatever part of a context exists; never throws, since it runs
// from Device's destructor and from a failed open.
void destroy_context(Context *ctx) noexcept {
    if (cudaSetDevice(ctx->index) == cudaSuccess) {
        // Pending frees and staging callbacks must finish before their
        // stream, pool and blocks go away.
        cudaDeviceSynchronize();
    }
    ctx->staging.free_all();
    release_exec(*ctx);
    if (ctx->internal) cudaStreamDestroy(ctx->internal);
    if (ctx->allocation) cudaStreamDestroy(ctx->allocation);
    // Buffers are all freed by now; the driver defers the pool's release
    // until outstanding frees complete anyway.
    if (ctx->pool) cudaMemPoolDestroy(ctx->pool);
    cudaGetLastError();  // close cannot report; do not leak its errors to later calls
    delete ctx;
}

void *device_open(size_t index) {
    std::unique_ptr<Context, void (*)(Context *)> ctx(new Context(), destroy_context);
    ctx->index = int(index);
    activate(*ctx);
    int pools_supported = 0;
    check(cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, ctx->index),
          "cudaDeviceGetAttribute");
    if (!pools_supported) {
        fail(FM_ERR_UNSUPPORTED, "cuda:", index,
             " does not support stream-ordered memory pools (needs a driver with "
             "cudaMallocAsync support)");
    }
    // Non-blocking: the legacy default stream must not serialize with it.
    check(cudaStreamCreateWithFlags(&ctx->internal, cudaStreamNonBlocking),
          "cudaStreamCreateWithFlags");
    check(cudaStreamCreateWithFlags(&ctx->allocation, cudaStreamNonBlocking),
          "cudaStreamCreateWithFlags");
    ctx->pool = create_pool(ctx->index);
    return ctx.release();
}

void device_close(void *device_ctx) { destroy_context(static_cast<Context *>(device_ctx)); }

void get_info(void *device_ctx, fm_device_info *out) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, ctx.index), "cudaGetDeviceProperties");
    // Truncation is acceptable: CUDA's names are far shorter than either field.
    std::snprintf(out->name, sizeof out->name, "%.*s", int(sizeof out->name) - 1, prop.name);
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    out->total_memory = total_bytes;
    out->free_memory = free_bytes;
}

BackendReg make_cuda_reg() {
    BackendReg reg;
    reg.backend = FM_BACKEND_CUDA;
    reg.device_count = device_count;
    reg.device_open = device_open;
    reg.device_close = device_close;
    reg.iface.get_info = get_info;
    reg.iface.memory.pool_alloc = pool_alloc;
    reg.iface.memory.pool_free = pool_free;
    reg.iface.memory.pool_stats = pool_stats;
    reg.iface.memory.pool_trim = pool_trim;
    reg.iface.memory.pool_reset_peak = pool_reset_peak;
    reg.iface.stream.stream_new = stream_new;
    reg.iface.stream.stream_free = stream_free;
    reg.iface.stream.stream_synchronize = stream_synchronize;
    reg.iface.stream.device_synchronize = device_synchronize;
    reg.iface.transfer.write = transfer_write;
    reg.iface.transfer.read = transfer_read;
    reg.iface.transfer.copy = transfer_copy;
    reg.iface.transfer.fill = transfer_fill;
    reg.iface.transfer.write_queued = transfer_write_queued;
    reg.iface.transfer.write_from_host = transfer_write_from_host;
    reg.iface.memory.host_alloc = host_alloc;
    reg.iface.memory.host_free = host_free;
    reg.iface.exec.compile = exec_compile;
    reg.iface.exec.run = exec_run;
    reg.iface.exec.release = exec_release;
    reg.iface.exec.check = exec_check;
    return reg;
}

}  // namespace
}  // namespace cuda

const BackendReg *cuda_backend_reg() {
    static const BackendReg reg = cuda::make_cuda_reg();
    return &reg;
}

}  // namespace fm
