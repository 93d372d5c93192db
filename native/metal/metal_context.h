// Objective-C++ state shared by the Metal backend's .mm files: an open
// device, its streams (command pools), and the plan executables. Only .mm
// files include this header; the lowering (lowering.h) stays plain C++.
//
// Rules for every .mm file of this folder:
// - fm::fail is never called inside an @autoreleasepool block: an exception
//   that leaves one skips draining it (clang's ARC rules), leaking its
//   objects. Work that may fail checks first, then enters the pool.
// - Objective-C objects live in __strong members of C++ structs (ARC retains
//   and releases them as it does an object's), so new/delete suffice.
#pragma once

#if !__has_feature(objc_arc)
#error "the Metal backend must be compiled with -fobjc-arc"
#endif

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>
#import <MetalPerformanceShaders/MetalPerformanceShaders.h>
#import <MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "backend.h"
#include "lowering.h"

namespace fm::metal {

// Command buffers a stream may have committed and not yet completed; a
// further submission waits for the oldest (the bounded ring of the pool).
constexpr size_t kMaxInFlight = 3;

struct MetalDevice;

// A stream: ordered work on the device's one command queue. Completion
// handlers record the first GPU error; the next call on the stream returns it.
struct Stream {
    MetalDevice *device = nullptr;
    std::mutex mutex;
    std::condition_variable idle;
    size_t in_flight = 0;
    id<MTLCommandBuffer> last;  // the last committed buffer
    fm_status error_status = FM_OK;
    std::string error;
};

struct MetalDevice {
    size_t index = 0;
    id<MTLDevice> device;
    id<MTLCommandQueue> queue;
    MPSGraphDevice *graph_device;
    bool unified = false;  // shared storage; private + blits otherwise
    Options options;       // FERROMETAL_METAL_KERNELS, read when the device opens
    Stream internal;       // the work of calls with a null stream
};

inline MetalDevice &device_of(void *device_ctx) { return *static_cast<MetalDevice *>(device_ctx); }
inline Stream &stream_of(MetalDevice &device, void *stream_ctx) {
    return stream_ctx ? *static_cast<Stream *>(stream_ctx) : device.internal;
}
// The core's memory pointers are retained MTLBuffers (metal_raw_alloc).
inline id<MTLBuffer> buffer_of(const void *memory) { return (__bridge id<MTLBuffer>)memory; }

// Throws the stream's recorded GPU error (and clears it), then waits for a
// free slot of the ring. Call before @autoreleasepool.
void acquire_slot(Stream &stream);
// A command buffer on the device's queue, for work of `stream` that
// acquire_slot admitted.
MPSCommandBuffer *new_commands(Stream &stream);
// Adds the completion handler (error capture naming `what`, slot release)
// and commits.
void commit(Stream &stream, MPSCommandBuffer *commands, const std::string &what);
// Waits for the stream's last committed buffer; throws its error if any.
void synchronize(Stream &stream);

// ExecIface members (metal_exec.mm).
void *compile_plan(void *device_ctx, const Plan &plan);
void run_plan(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *stream_ctx);
void release_plan(void *device_ctx, void *exec_ctx);

}  // namespace fm::metal
