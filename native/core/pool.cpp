#include "pool.h"

#include <algorithm>

namespace fm {

namespace {
constexpr size_t kMinimumClass = 256;
}

size_t CachingPool::size_class(size_t bytes) {
    if (bytes <= kMinimumClass) return kMinimumClass;
    size_t power = kMinimumClass;
    while (power <= bytes / 2) power *= 2;  // now power <= bytes < 2 * power
    // Four classes between `power` and `2 * power`.
    size_t step = power / 4;
    if (bytes > SIZE_MAX - step) return 0;
    return (bytes + step - 1) / step * step;
}

CachingPool::CachingPool(void *ctx, RawAlloc raw_alloc, RawFree raw_free)
    : ctx_(ctx), raw_alloc_(raw_alloc), raw_free_(raw_free) {}

CachingPool::~CachingPool() {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_locked();
}

void *CachingPool::allocate(size_t bytes) {
    size_t block = size_class(bytes);
    if (block == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    void *ptr = nullptr;
    auto cached = cached_.find(block);
    if (cached != cached_.end() && !cached->second.empty()) {
        ptr = cached->second.back();
        cached->second.pop_back();
        stats_.bytes_cached -= block;
    } else {
        ptr = raw_alloc_(ctx_, block);
        if (ptr == nullptr && stats_.bytes_cached > 0) {
            trim_locked();  // give the cache back and try once more
            ptr = raw_alloc_(ctx_, block);
        }
        if (ptr == nullptr) return nullptr;
        stats_.system_allocations++;
    }
    stats_.allocations++;
    stats_.bytes_in_use += block;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    return ptr;
}

void CachingPool::release(void *ptr, size_t bytes) {
    size_t block = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    cached_[block].push_back(ptr);
    stats_.bytes_in_use -= block;
    stats_.bytes_cached += block;
}

fm_pool_stats CachingPool::stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

void CachingPool::trim() {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_locked();
}

void CachingPool::trim_locked() {
    for (auto &[block, blocks] : cached_) {
        for (void *ptr : blocks) raw_free_(ctx_, ptr, block);
    }
    cached_.clear();
    stats_.bytes_cached = 0;
}

void CachingPool::reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

}  // namespace fm
