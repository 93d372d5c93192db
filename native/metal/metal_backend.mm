// The Metal backend, level 1: devices, memory (pooled by the core) and
// transfers. Memory is MTLBuffers in shared storage, one copy that the CPU
// and the GPU both address, so transfers are memcpy through their contents.
// No GPU work exists yet, hence no streams: every call completes before it
// returns, as on the CPU.
//
// fm::fail is only ever called outside @autoreleasepool blocks: an exception
// that leaves one skips draining it (clang's ARC rules), leaking its objects.
#if !__has_feature(objc_arc)
#error "metal_backend.mm must be compiled with -fobjc-arc"
#endif

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <string.h>  // memset_pattern4 (Darwin libc)

#include <cstdio>
#include <cstring>
#include <memory>

#include "backend.h"
#include "error.h"

namespace fm {
namespace {

// One open device. ARC retains and releases the __strong members of a C++
// struct in Objective-C++ as it does an object's, so new/delete suffice.
struct MetalDevice {
    id<MTLDevice> device;
    // Unused at level 1; created now so that opening fails early, and for
    // the graph work of level 2.
    id<MTLCommandQueue> queue;
};

MetalDevice &context(void *device_ctx) { return *static_cast<MetalDevice *>(device_ctx); }

// The core's memory pointers are retained MTLBuffers (see metal_raw_alloc);
// this is the CPU address of `offset` in one.
char *host_address(const void *memory, size_t offset) {
    void *contents = nullptr;
    // `contents` returns an inner pointer, so ARC autoreleases the buffer to
    // keep it alive; without a pool of our own, every transfer would park the
    // buffer in the caller's pool (or none) and delay its free.
    @autoreleasepool {
        contents = [(__bridge id<MTLBuffer>)memory contents];
    }
    // Only private storage has no CPU address; this turns a later switch to
    // it without blits into an error instead of a crash.
    if (contents == nullptr) fail(FM_ERR_INTERNAL, "metal buffer has no CPU-visible storage");
    return static_cast<char *>(contents) + offset;
}

size_t metal_device_count() {
    @autoreleasepool {
        return MTLCopyAllDevices().count;  // nil (no Metal) counts 0
    }
}

void *metal_device_open(size_t index) {
    auto opened = std::make_unique<MetalDevice>();
    size_t available = 0;
    @autoreleasepool {
        NSArray<id<MTLDevice>> *devices = MTLCopyAllDevices();
        available = devices.count;
        if (index < available) {
            opened->device = devices[index];
            opened->queue = [opened->device newCommandQueue];
        }
    }
    // The core checked the index, but an external GPU may since have gone.
    if (index >= available) {
        fail(FM_ERR_DEVICE_NOT_FOUND, "argument 'index': metal device ", index,
             " does not exist (this machine has ", available, ")");
    }
    if (opened->queue == nil) {
        fail(FM_ERR_BACKEND, "metal device ", index, " could not create a command queue");
    }
    return opened.release();
}

void metal_device_close(void *device_ctx) {
    @autoreleasepool {
        delete static_cast<MetalDevice *>(device_ctx);
    }
}

void metal_get_info(void *device_ctx, fm_device_info *out) {
    @autoreleasepool {
        id<MTLDevice> device = context(device_ctx).device;
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

void *metal_raw_alloc(void *device_ctx, size_t bytes) {
    @autoreleasepool {
        id<MTLDevice> device = context(device_ctx).device;
        // Past this, API validation may assert instead of returning nil.
        if (bytes > device.maxBufferLength) return nullptr;
        // Shared storage is right for unified memory (Apple silicon). On a
        // discrete GPU it lives in system memory across PCIe; private storage
        // with blit transfers is the next step there.
        id<MTLBuffer> buffer = [device newBufferWithLength:bytes
                                                   options:MTLResourceStorageModeShared];
        if (buffer == nil) return nullptr;
        // The +1 reference travels in the opaque pointer until metal_raw_free.
        return (__bridge_retained void *)buffer;
    }
}

void metal_raw_free(void *, void *memory, size_t) {
    @autoreleasepool {
        // Takes back metal_raw_alloc's reference; ARC drops it at the brace.
        id<MTLBuffer> buffer = (__bridge_transfer id<MTLBuffer>)memory;
        (void)buffer;
    }
}

// Level 1 queues no GPU work, so no command can be using a buffer while the
// CPU touches it, and synchronous CPU access to shared storage is correct.
// Once GPU work exists, these must wait for the queue to go idle first, or
// become blit commands on it.

void metal_write(void *, void *dst, size_t dst_offset, const void *src, size_t bytes, void *) {
    std::memcpy(host_address(dst, dst_offset), src, bytes);
}

void metal_read(void *, const void *src, size_t src_offset, void *dst, size_t bytes, void *) {
    std::memcpy(dst, host_address(src, src_offset), bytes);
}

void metal_copy(void *, void *dst, size_t dst_offset, const void *src, size_t src_offset,
                size_t bytes, void *) {
    std::memmove(host_address(dst, dst_offset), host_address(src, src_offset), bytes);
}

void metal_fill(void *, void *dst, size_t dst_offset, size_t count, const void *pattern,
                size_t pattern_bytes, void *) {
    // A 1-, 2- or 4-byte pattern repeated to 4 bytes fills the same bytes.
    unsigned char pattern4[4];
    for (size_t i = 0; i < 4; ++i) {
        pattern4[i] = static_cast<const unsigned char *>(pattern)[i % pattern_bytes];
    }
    memset_pattern4(host_address(dst, dst_offset), pattern4, count * pattern_bytes);
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
    reg.iface.transfer.write = metal_write;
    reg.iface.transfer.read = metal_read;
    reg.iface.transfer.copy = metal_copy;
    reg.iface.transfer.fill = metal_fill;
    return reg;
}

}  // namespace

const BackendReg *metal_backend_reg() {
    static const BackendReg reg = make_metal_reg();
    return &reg;
}

}  // namespace fm
