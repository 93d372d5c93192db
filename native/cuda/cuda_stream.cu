// Streams: non-blocking CUDA streams, each with a slot for the failures of
// its host callbacks, which CUDA itself cannot report.
#include <cstdio>
#include <memory>

#include "cuda_check.h"
#include "cuda_context.h"

namespace fm {
namespace cuda {

void ErrorSlot::record(const char *message) noexcept {
    try {
        std::lock_guard<std::mutex> lock(mutex_);
        if (set_) return;  // the first failure is the cause; later ones follow from it
        std::snprintf(message_, sizeof message_, "%s", message);
        set_ = true;
    } catch (...) {
        // Only a failing mutex gets here; there is nowhere left to report.
    }
}

bool ErrorSlot::take(std::string *out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!set_) return false;
    *out = message_;
    set_ = false;
    return true;
}

cudaStream_t queue_of(Context &ctx, void *stream_ctx) {
    return stream_ctx ? static_cast<Stream *>(stream_ctx)->handle : ctx.internal;
}

ErrorSlot &errors_of(Context &ctx, void *stream_ctx) {
    return stream_ctx ? static_cast<Stream *>(stream_ctx)->errors : ctx.internal_errors;
}

void synchronize_queue(Context &ctx, void *stream_ctx) {
    check(cudaStreamSynchronize(queue_of(ctx, stream_ctx)), "cudaStreamSynchronize");
    std::string message;
    if (errors_of(ctx, stream_ctx).take(&message)) fail(FM_ERR_BACKEND, message);
}

void *stream_new(void *device_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    auto stream = std::make_unique<Stream>();
    stream->ctx = &ctx;
    // Non-blocking: work on the legacy default stream (other libraries')
    // must not serialize with ours.
    check(cudaStreamCreateWithFlags(&stream->handle, cudaStreamNonBlocking),
          "cudaStreamCreateWithFlags");
    try {
        std::lock_guard<std::mutex> lock(ctx.streams_mutex);
        ctx.streams.insert(stream.get());
    } catch (...) {
        cudaStreamDestroy(stream->handle);
        throw;
    }
    return stream.release();
}

void stream_free(void *device_ctx, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    std::unique_ptr<Stream> stream(static_cast<Stream *>(stream_ctx));
    {
        std::lock_guard<std::mutex> lock(ctx.streams_mutex);
        ctx.streams.erase(stream.get());
    }
    // The stream goes away whatever happens: its pending host callbacks
    // point into it, so wait for them before deleting it, and report a
    // failure only once everything is released.
    cudaError_t err = cudaSetDevice(ctx.index);
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream->handle);
    cudaError_t destroyed = cudaStreamDestroy(stream->handle);
    if (err == cudaSuccess) err = destroyed;
    if (err != cudaSuccess) fail_cuda(err, "stream_free");
}

void stream_synchronize(void *device_ctx, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    synchronize_queue(ctx, stream_ctx);
}

void device_synchronize(void *device_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::string message;
    if (ctx.internal_errors.take(&message)) fail(FM_ERR_BACKEND, message);
    {
        std::lock_guard<std::mutex> lock(ctx.streams_mutex);
        for (Stream *stream : ctx.streams) {
            if (stream->errors.take(&message)) break;
        }
    }
    if (!message.empty()) fail(FM_ERR_BACKEND, message);
}

}  // namespace cuda
}  // namespace fm
