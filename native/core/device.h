// Devices, streams and buffers: the level-1 objects behind the handles.
// Each wraps a backend context and routes through the backend interface,
// adding what every backend would otherwise repeat.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "backend.h"
#include "handles.h"
#include "pool.h"

namespace fm {

class Device : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Device;

    // The one open Device for (backend, index); opened on first use and
    // closed when nothing refers to it any more.
    static std::shared_ptr<Device> open(fm_backend backend, size_t index);
    static size_t count(fm_backend backend);  // throws FM_ERR_NOT_COMPILED
    static bool is_compiled(fm_backend backend);

    Device(const BackendReg *reg, void *ctx, size_t index);
    ~Device() override;

    fm_backend backend() const { return reg_->backend; }
    size_t index() const { return index_; }
    std::string label() const;  // "cuda:0"
    const DeviceIface &iface() const { return reg_->iface; }
    void *ctx() const { return ctx_; }

    fm_device_info info() const;
    void synchronize();

    // Never returns nullptr: throws FM_ERR_OUT_OF_MEMORY naming `what`.
    void *allocate(size_t bytes, const char *what);
    void deallocate(void *ptr, size_t bytes, void *stream_ctx) noexcept;
    fm_pool_stats pool_stats();
    void pool_trim();
    void pool_reset_peak();

private:
    const BackendReg *reg_;
    void *ctx_;
    size_t index_;
    std::unique_ptr<CachingPool> pool_;  // null when the backend pools itself
};

class Stream : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Stream;

    explicit Stream(std::shared_ptr<Device> device);
    ~Stream() override;

    const std::shared_ptr<Device> &device() const { return device_; }
    void *ctx() const { return ctx_; }
    void synchronize();

private:
    std::shared_ptr<Device> device_;
    void *ctx_;
};

class Buffer : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Buffer;

    // Throws FM_ERR_INVALID_ARGUMENT on an unknown dtype or a byte size that
    // overflows, FM_ERR_OUT_OF_MEMORY when the device is full.
    Buffer(std::shared_ptr<Device> device, fm_dtype dtype, size_t count);
    ~Buffer() override;

    const std::shared_ptr<Device> &device() const { return device_; }
    fm_dtype dtype() const { return dtype_; }
    size_t count() const { return count_; }
    size_t element_size() const { return element_size_; }
    size_t nbytes() const { return count_ * element_size_; }
    void *data() const { return data_; }

    // Remembers the stream so that freeing the memory follows its order.
    void used_on(const std::shared_ptr<Stream> &stream);

private:
    std::shared_ptr<Device> device_;
    fm_dtype dtype_;
    size_t count_;
    size_t element_size_;
    void *data_ = nullptr;
    std::mutex last_stream_mutex_;
    std::weak_ptr<Stream> last_stream_;
};

// Host memory the device copies from directly: pinned on CUDA, so a batch
// collated into it reaches the device in one DMA, without a staging copy.
class Staging : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Staging;
    // Throws FM_ERR_OUT_OF_MEMORY when the host cannot provide (or pin) it.
    Staging(std::shared_ptr<Device> device, size_t bytes);
    ~Staging() override;
    Staging(const Staging &) = delete;
    Staging &operator=(const Staging &) = delete;

    const std::shared_ptr<Device> &device() const { return device_; }
    void *data() const { return data_; }
    size_t nbytes() const { return bytes_; }

private:
    std::shared_ptr<Device> device_;
    void *data_ = nullptr;
    size_t bytes_ = 0;
};

}  // namespace fm
