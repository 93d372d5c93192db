// Pinned host staging for transfers. Pinned memory is what lets a copy run
// asynchronously (pageable memory makes cudaMemcpyAsync synchronous with
// the host) and lets the caller reuse its own memory at once, but pinning is
// slow, so blocks are cached and recycled by the transfers' host callbacks.
#include <vector>

#include "cuda_check.h"
#include "cuda_context.h"

namespace fm {
namespace cuda {

int StagingCache::class_of(size_t bytes) {
    int size_class = 0;
    while ((kMinBlock << size_class) < bytes) ++size_class;
    return size_class;
}

StagingBlock *StagingCache::acquire(size_t bytes) {
    int size_class = class_of(bytes);
    if (size_class >= kClasses) {
        fail(FM_ERR_INTERNAL, "staging request of ", bytes, " bytes exceeds the largest block");
    }
    std::vector<StagingBlock *> surplus;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // A block of the exact class only: a larger one would sit idle in a
        // small transfer while a large transfer pins a new one.
        if (StagingBlock *block = free_[size_class]) {
            free_[size_class] = block->next_free;
            block->next_free = nullptr;
            idle_bytes_ -= block->capacity;
            return block;
        }
        detach_idle(kMaxIdleBytes, &surplus);
    }
    // Outside the lock: freeing or pinning host memory may wait for the
    // device, whose callbacks need the lock to return their blocks.
    destroy(surplus);

    auto block = std::make_unique<StagingBlock>();
    block->capacity = kMinBlock << size_class;
    block->size_class = size_class;
    block->owner = this;
    cudaError_t err = cudaHostAlloc(&block->host, block->capacity, cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) {
        // Idle blocks of other classes are the memory we can give back.
        cudaGetLastError();
        surplus.clear();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            detach_idle(0, &surplus);
        }
        destroy(surplus);
        err = cudaHostAlloc(&block->host, block->capacity, cudaHostAllocPortable);
    }
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        fail(FM_ERR_OUT_OF_MEMORY, "the host cannot pin ", block->capacity,
             " bytes of staging memory for a transfer");
    }
    check(err, "cudaHostAlloc");
    try {
        std::lock_guard<std::mutex> lock(mutex_);
        all_.insert(block.get());
    } catch (...) {
        cudaFreeHost(block->host);
        throw;
    }
    return block.release();
}

void StagingCache::release(StagingBlock *block) noexcept {
    try {
        std::lock_guard<std::mutex> lock(mutex_);
        block->pending_dst = nullptr;
        block->pending_errors = nullptr;
        block->next_free = free_[block->size_class];
        free_[block->size_class] = block;
        idle_bytes_ += block->capacity;
    } catch (...) {
        // The block stays in all_ and is freed with the device.
        if (block->pending_errors) {
            block->pending_errors->record("a pinned staging block could not be recycled");
        }
    }
}

void StagingCache::detach_idle(size_t keep, std::vector<StagingBlock *> *out) {
    // Largest first: fewest blocks freed to get under the limit, and small
    // blocks serve the frequent small transfers.
    for (int size_class = kClasses - 1; size_class >= 0 && idle_bytes_ > keep; --size_class) {
        while (free_[size_class] && idle_bytes_ > keep) {
            StagingBlock *block = free_[size_class];
            out->push_back(block);  // first: if it throws, the block is still linked
            free_[size_class] = block->next_free;
            idle_bytes_ -= block->capacity;
            all_.erase(block);
        }
    }
}

void StagingCache::destroy(const std::vector<StagingBlock *> &blocks) noexcept {
    for (StagingBlock *block : blocks) {
        cudaFreeHost(block->host);
        delete block;
    }
    cudaGetLastError();  // nobody to report a failed free to
}

void StagingCache::free_all() noexcept {
    std::vector<StagingBlock *> blocks;
    try {
        std::lock_guard<std::mutex> lock(mutex_);
        blocks.assign(all_.begin(), all_.end());
        all_.clear();
        for (StagingBlock *&head : free_) head = nullptr;
        idle_bytes_ = 0;
    } catch (...) {
        return;  // leaks the blocks rather than terminating the process
    }
    destroy(blocks);
}

}  // namespace cuda
}  // namespace fm
