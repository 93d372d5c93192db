// A caching pool over a backend's raw allocator. Requests are rounded up to
// size classes (four per power of two, so at most 25% waste) and freed
// blocks are kept per class for reuse. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "ferrometal.h"

namespace fm {

class CachingPool {
public:
    using RawAlloc = void *(*)(void *ctx, size_t bytes);
    using RawFree = void (*)(void *ctx, void *ptr, size_t bytes);

    CachingPool(void *ctx, RawAlloc raw_alloc, RawFree raw_free);
    ~CachingPool();
    CachingPool(const CachingPool &) = delete;
    CachingPool &operator=(const CachingPool &) = delete;

    // Returns nullptr when the device is out of memory even after the cache
    // was returned to it. `bytes` > 0.
    void *allocate(size_t bytes);
    void release(void *ptr, size_t bytes);
    fm_pool_stats stats();
    void trim();
    void reset_peak();

    // The size class `bytes` is rounded up to; 0 if that would overflow.
    static size_t size_class(size_t bytes);

private:
    void trim_locked();

    void *ctx_;
    RawAlloc raw_alloc_;
    RawFree raw_free_;
    std::mutex mutex_;
    std::map<size_t, std::vector<void *>> cached_;  // size class -> free blocks
    fm_pool_stats stats_{};
};

}  // namespace fm
