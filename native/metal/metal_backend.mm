// The Metal backend: devices, memory (MTLBuffers pooled by the core's
// CachingPool), streams as command pools on one MTLCommandQueue per device,
// and transfers as blits ordered with the GPU work. Plans run in
// metal_exec.mm. See metal_context.h for the rules every .mm file follows.
#include "metal_context.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "error.h"

namespace fm::metal {

// --- streams ---------------------------------------------------------------

namespace {

// Throws the stream's recorded GPU error, clearing it. `lock` holds the mutex.
void throw_pending(Stream &stream, std::unique_lock<std::mutex> &lock) {
    if (stream.error_status == FM_OK) return;
    fm_status status = stream.error_status;
    std::string message = stream.error;
    stream.error_status = FM_OK;
    stream.error.clear();
    lock.unlock();
    fail(status, message);
}

}  // namespace

void acquire_slot(Stream &stream) {
    std::unique_lock<std::mutex> lock(stream.mutex);
    throw_pending(stream, lock);
    stream.idle.wait(lock, [&] { return stream.in_flight < kMaxInFlight; });
    ++stream.in_flight;
}

namespace {

// ", in <debug groups of the faulted encoders>", from the error's encoder
// execution status; empty when it has none.
std::string faulted_steps(NSError *error) {
    if (error == nil) return "";
    NSArray<id<MTLCommandBufferEncoderInfo>> *infos = error.userInfo[MTLCommandBufferEncoderInfoErrorKey];
    std::string out;
    for (NSUInteger i = 0; i < infos.count; ++i) {
        id<MTLCommandBufferEncoderInfo> info = infos[i];
        if (info.errorState != MTLCommandEncoderErrorStateFaulted) continue;
        NSArray<NSString *> *groups = info.debugSignposts;
        for (NSUInteger g = 0; g < groups.count; ++g) {
            const char *group = groups[g].UTF8String;
            out += (out.empty() ? ", in the " : "; the ") + std::string(group ? group : "?");
        }
    }
    return out;
}

}  // namespace

MPSCommandBuffer *new_commands(Stream &stream) {
    MPSCommandBuffer *commands = nil;
    @autoreleasepool {
        // Encoder execution status in errors: a failed command buffer then
        // says which encoders faulted, and their debug groups name the steps.
        MTLCommandBufferDescriptor *descriptor = [[MTLCommandBufferDescriptor alloc] init];
        descriptor.errorOptions = MTLCommandBufferErrorOptionEncoderExecutionStatus;
        id<MTLCommandBuffer> buffer = [stream.device->queue commandBufferWithDescriptor:descriptor];
        commands = [MPSCommandBuffer commandBufferWithCommandBuffer:buffer];
    }
    return commands;
}

void commit(Stream &stream, MPSCommandBuffer *commands, const std::string &what) {
    Stream *target = &stream;
    std::string name = what;
    @autoreleasepool {
        commands.label = [NSString stringWithUTF8String:name.c_str()];
        [commands addCompletedHandler:^(id<MTLCommandBuffer> done) {
          std::lock_guard<std::mutex> lock(target->mutex);
          if (done.status == MTLCommandBufferStatusError && target->error_status == FM_OK) {
              NSError *error = done.error;
              bool memory = error != nil && error.code == MTLCommandBufferErrorOutOfMemory;
              target->error_status = memory ? FM_ERR_OUT_OF_MEMORY : FM_ERR_BACKEND;
              const char *reason = error != nil ? error.localizedDescription.UTF8String : nullptr;
              target->error = "metal: the GPU failed " + name + faulted_steps(error) + ": " +
                              (reason ? reason : "unknown error");
          }
          --target->in_flight;
          target->idle.notify_all();
        }];
        [commands commit];
        std::lock_guard<std::mutex> lock(stream.mutex);
        stream.last = commands;
    }
}

void synchronize(Stream &stream) {
    id<MTLCommandBuffer> last = nil;
    {
        std::unique_lock<std::mutex> lock(stream.mutex);
        last = stream.last;
    }
    if (last != nil) {
        @autoreleasepool {
            [last waitUntilCompleted];
        }
    }
    // The completion handlers (which record errors and free slots) run
    // after the buffers complete; wait for the last of them too.
    std::unique_lock<std::mutex> lock(stream.mutex);
    stream.idle.wait(lock, [&] { return stream.in_flight == 0; });
    throw_pending(stream, lock);
}

namespace {

// --- devices -----------------------------------------------------------------

size_t metal_device_count() {
    @autoreleasepool {
        return MTLCopyAllDevices().count;  // nil (no Metal) counts 0
    }
}

void *metal_device_open(size_t index) {
    // Read before any Objective-C work: an unknown entry throws.
    Options options = Options::parse(std::getenv("FERROMETAL_METAL_KERNELS"));
    auto opened = std::make_unique<MetalDevice>();
    opened->index = index;
    opened->options = options;
    opened->internal.device = opened.get();
    size_t available = 0;
    bool mps = false;
    @autoreleasepool {
        NSArray<id<MTLDevice>> *devices = MTLCopyAllDevices();
        available = devices.count;
        if (index < available) {
            opened->device = devices[index];
            mps = MPSSupportsMTLDevice(opened->device);
            opened->queue = [opened->device newCommandQueue];
            opened->graph_device = [MPSGraphDevice deviceWithMTLDevice:opened->device];
            opened->unified = opened->device.hasUnifiedMemory;
        }
    }
    // The core checked the index, but an external GPU may since have gone.
    if (index >= available) {
        fail(FM_ERR_DEVICE_NOT_FOUND, "argument 'index': metal device ", index, " does not exist (this machine has ",
             available, ")");
    }
    if (!mps) {
        fail(FM_ERR_DEVICE_NOT_FOUND, "metal device ", index,
             " is not supported by Metal Performance Shaders, which this backend needs");
    }
    if (opened->queue == nil) fail(FM_ERR_BACKEND, "metal device ", index, " could not create a command queue");
    return opened.release();
}

void metal_device_close(void *device_ctx) {
    MetalDevice *device = &device_of(device_ctx);
    // The core has freed every stream; the internal one may still run.
    try {
        synchronize(device->internal);
    } catch (const Error &) {
        // Nobody is left to report it to.
    }
    @autoreleasepool {
        delete device;
    }
}

void metal_get_info(void *device_ctx, fm_device_info *out) {
    @autoreleasepool {
        id<MTLDevice> device = device_of(device_ctx).device;
        const char *name = device.name.UTF8String;
        std::snprintf(out->name, sizeof out->name, "%s", name ? name : "metal");
        // Metal's budget for this process, not the physical size: on unified
        // memory the GPU shares RAM, and this is the part it may use well.
        uint64_t budget = device.recommendedMaxWorkingSetSize;
        uint64_t used = device.currentAllocatedSize;
        out->total_memory = budget;
        out->free_memory = used < budget ? budget - used : 0;  // the budget can be overrun
    }
}

// --- memory ------------------------------------------------------------------

void *metal_raw_alloc(void *device_ctx, size_t bytes) {
    MetalDevice &d = device_of(device_ctx);
    @autoreleasepool {
        // Past this, API validation may assert instead of returning nil.
        if (bytes > d.device.maxBufferLength) return nullptr;
        // Shared storage on unified memory (Apple silicon): one copy that
        // both sides address. Private (GPU-only) storage on a discrete GPU;
        // transfers are blits either way.
        MTLResourceOptions options = d.unified ? MTLResourceStorageModeShared : MTLResourceStorageModePrivate;
        id<MTLBuffer> buffer = [d.device newBufferWithLength:bytes options:options];
        if (buffer == nil) return nullptr;  // out of memory: the pool trims and retries
        // The +1 reference travels in the opaque pointer until metal_raw_free.
        return (__bridge_retained void *)buffer;
    }
}

void metal_raw_free(void *, void *memory, size_t) {
    @autoreleasepool {
        // Takes back metal_raw_alloc's reference; ARC drops it at the brace.
        // A command buffer still using the buffer holds its own reference.
        id<MTLBuffer> buffer = (__bridge_transfer id<MTLBuffer>)memory;
        (void)buffer;
    }
}

// --- streams -----------------------------------------------------------------

void *metal_stream_new(void *device_ctx) {
    auto stream = std::make_unique<Stream>();
    stream->device = &device_of(device_ctx);
    return stream.release();
}

void metal_stream_free(void *, void *stream_ctx) {
    Stream *stream = static_cast<Stream *>(stream_ctx);
    try {
        synchronize(*stream);
    } catch (const Error &) {
        // The stream goes away; its unread error goes with it.
    }
    @autoreleasepool {
        delete stream;
    }
}

void metal_stream_synchronize(void *device_ctx, void *stream_ctx) {
    synchronize(stream_of(device_of(device_ctx), stream_ctx));
}

// --- transfers: blits on the stream, so they are ordered with its GPU work ---

// Runs `encode` in a blit encoder of a new command buffer of the stream;
// a null stream waits for it.
template <class Encode>
void blit_on(void *device_ctx, void *stream_ctx, const char *what, Encode encode) {
    MetalDevice &d = device_of(device_ctx);
    Stream &stream = stream_of(d, stream_ctx);
    acquire_slot(stream);
    MPSCommandBuffer *commands = new_commands(stream);
    @autoreleasepool {
        id<MTLBlitCommandEncoder> blit = [commands blitCommandEncoder];
        encode(commands, blit);
        [blit endEncoding];
    }
    commit(stream, commands, what);
    if (stream_ctx == nullptr) synchronize(stream);
}

id<MTLBuffer> staging_buffer(MetalDevice &d, const void *bytes, size_t size) {
    id<MTLBuffer> buffer = nil;
    @autoreleasepool {
        buffer = bytes ? [d.device newBufferWithBytes:bytes length:size options:MTLResourceStorageModeShared]
                       : [d.device newBufferWithLength:size options:MTLResourceStorageModeShared];
    }
    if (buffer == nil) fail(FM_ERR_OUT_OF_MEMORY, "metal: no memory for a staging buffer of ", size, " bytes");
    return buffer;
}

void metal_write(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t bytes, void *stream_ctx) {
    // Copied now: the caller may reuse `src` when this returns.
    id<MTLBuffer> staging = staging_buffer(device_of(device_ctx), src, bytes);
    id<MTLBuffer> target = buffer_of(dst);
    blit_on(device_ctx, stream_ctx, "writing a buffer", [&](MPSCommandBuffer *, id<MTLBlitCommandEncoder> blit) {
        [blit copyFromBuffer:staging sourceOffset:0 toBuffer:target destinationOffset:dst_offset size:bytes];
    });
}

void metal_read(void *device_ctx, const void *src, size_t src_offset, void *dst, size_t bytes, void *stream_ctx) {
    id<MTLBuffer> staging = staging_buffer(device_of(device_ctx), nullptr, bytes);
    id<MTLBuffer> source = buffer_of(src);
    blit_on(device_ctx, stream_ctx, "reading a buffer", [&](MPSCommandBuffer *commands, id<MTLBlitCommandEncoder> blit) {
        [blit copyFromBuffer:source sourceOffset:src_offset toBuffer:staging destinationOffset:0 size:bytes];
        // `dst` stays valid until the stream is synchronized (backend.h);
        // handlers run in the order they were added, before the slot is freed.
        id<MTLBuffer> from = staging;
        void *to = dst;
        size_t size = bytes;
        [commands addCompletedHandler:^(id<MTLCommandBuffer> done) {
          if (done.status == MTLCommandBufferStatusCompleted) std::memcpy(to, from.contents, size);
        }];
    });
}

void metal_copy(void *device_ctx, void *dst, size_t dst_offset, const void *src, size_t src_offset, size_t bytes,
                void *stream_ctx) {
    id<MTLBuffer> source = buffer_of(src), target = buffer_of(dst);
    bool overlap = src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes;
    // Overlapping blits within one buffer are undefined; memmove semantics
    // go through a temporary.
    id<MTLBuffer> temporary = overlap ? staging_buffer(device_of(device_ctx), nullptr, bytes) : nil;
    blit_on(device_ctx, stream_ctx, "copying a buffer", [&](MPSCommandBuffer *, id<MTLBlitCommandEncoder> blit) {
        if (overlap) {
            [blit copyFromBuffer:source sourceOffset:src_offset toBuffer:temporary destinationOffset:0 size:bytes];
            [blit copyFromBuffer:temporary sourceOffset:0 toBuffer:target destinationOffset:dst_offset size:bytes];
        } else {
            [blit copyFromBuffer:source sourceOffset:src_offset toBuffer:target destinationOffset:dst_offset size:bytes];
        }
    });
}

void metal_fill(void *device_ctx, void *dst, size_t dst_offset, size_t count, const void *pattern,
                size_t pattern_bytes, void *stream_ctx) {
    const unsigned char *p = static_cast<const unsigned char *>(pattern);
    bool uniform = std::all_of(p, p + pattern_bytes, [&](unsigned char byte) { return byte == p[0]; });
    size_t bytes = count * pattern_bytes;
    id<MTLBuffer> target = buffer_of(dst);
    id<MTLBuffer> staging = nil;
    if (!uniform) {
        std::vector<unsigned char> repeated(bytes);
        for (size_t i = 0; i < bytes; ++i) repeated[i] = p[i % pattern_bytes];
        staging = staging_buffer(device_of(device_ctx), repeated.data(), bytes);
    }
    blit_on(device_ctx, stream_ctx, "filling a buffer", [&](MPSCommandBuffer *, id<MTLBlitCommandEncoder> blit) {
        if (uniform) {
            [blit fillBuffer:target range:NSMakeRange(dst_offset, bytes) value:p[0]];
        } else {
            [blit copyFromBuffer:staging sourceOffset:0 toBuffer:target destinationOffset:dst_offset size:bytes];
        }
    });
}

BackendReg make_metal_reg() {
    BackendReg reg;
    reg.backend = FM_BACKEND_METAL;
    reg.device_count = metal_device_count;
    reg.device_open = metal_device_open;
    reg.device_close = metal_device_close;
    reg.iface.get_info = metal_get_info;
    reg.iface.memory.raw_alloc = metal_raw_alloc;
    reg.iface.memory.raw_free = metal_raw_free;
    reg.iface.stream.stream_new = metal_stream_new;
    reg.iface.stream.stream_free = metal_stream_free;
    reg.iface.stream.stream_synchronize = metal_stream_synchronize;
    reg.iface.transfer.write = metal_write;
    reg.iface.transfer.read = metal_read;
    reg.iface.transfer.copy = metal_copy;
    reg.iface.transfer.fill = metal_fill;
    reg.iface.exec.compile = compile_plan;
    reg.iface.exec.run = run_plan;
    reg.iface.exec.release = release_plan;
    return reg;
}

}  // namespace
}  // namespace fm::metal

namespace fm {

const BackendReg *metal_backend_reg() {
    static const BackendReg reg = metal::make_metal_reg();
    return &reg;
}

}  // namespace fm
