#include "device.h"

#include <map>
#include <new>
#include <utility>

#include "dtype.h"
#include "error.h"

namespace fm {
namespace {

const BackendReg *registration(fm_backend backend) {
    switch (backend) {
        case FM_BACKEND_CPU: return cpu_backend_reg();
        case FM_BACKEND_CUDA:
#ifdef FM_WITH_CUDA
            return cuda_backend_reg();
#else
            return nullptr;
#endif
        case FM_BACKEND_METAL:
#ifdef FM_WITH_METAL
            return metal_backend_reg();
#else
            return nullptr;
#endif
        case FM_BACKEND_COUNT: break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "argument 'backend': unknown backend ", static_cast<int>(backend));
}

const BackendReg &compiled_registration(fm_backend backend) {
    const BackendReg *reg = registration(backend);
    if (reg == nullptr) {
        fail(FM_ERR_NOT_COMPILED, "backend '", fm_backend_str(backend),
             "' is not compiled into this library (build with feature '", fm_backend_str(backend),
             "')");
    }
    return *reg;
}

// Open devices, weakly held: a device closes when its last user goes.
std::mutex open_devices_mutex;
std::map<std::pair<int, size_t>, std::weak_ptr<Device>> &open_devices() {
    static auto *devices = new std::map<std::pair<int, size_t>, std::weak_ptr<Device>>();
    return *devices;
}

}  // namespace

bool Device::is_compiled(fm_backend backend) { return registration(backend) != nullptr; }

size_t Device::count(fm_backend backend) { return compiled_registration(backend).device_count(); }

std::shared_ptr<Device> Device::open(fm_backend backend, size_t index) {
    const BackendReg &reg = compiled_registration(backend);
    std::lock_guard<std::mutex> lock(open_devices_mutex);
    auto key = std::make_pair(static_cast<int>(backend), index);
    if (auto existing = open_devices()[key].lock()) return existing;
    size_t available = reg.device_count();
    if (index >= available) {
        fail(FM_ERR_DEVICE_NOT_FOUND, "argument 'index': ", fm_backend_str(backend), " device ",
             index, " does not exist (this machine has ", available, ")");
    }
    auto device = std::make_shared<Device>(&reg, reg.device_open(index), index);
    open_devices()[key] = device;
    return device;
}

Device::Device(const BackendReg *reg, void *ctx, size_t index)
    : reg_(reg), ctx_(ctx), index_(index) {
    if (reg->iface.memory.pool_alloc == nullptr) {
        pool_ = std::make_unique<CachingPool>(ctx, reg->iface.memory.raw_alloc,
                                              reg->iface.memory.raw_free);
    }
}

Device::~Device() {
    pool_.reset();
    reg_->device_close(ctx_);
}

std::string Device::label() const {
    return std::string(fm_backend_str(backend())) + ":" + std::to_string(index_);
}

fm_device_info Device::info() const {
    fm_device_info info{};
    reg_->iface.get_info(ctx_, &info);
    info.backend = backend();
    info.index = index_;
    info.name[sizeof(info.name) - 1] = '\0';
    return info;
}

void Device::synchronize() {
    if (reg_->iface.stream.device_synchronize) reg_->iface.stream.device_synchronize(ctx_);
}

void *Device::allocate(size_t bytes, const char *what) {
    void *ptr = pool_ ? pool_->allocate(bytes) : reg_->iface.memory.pool_alloc(ctx_, bytes);
    if (ptr == nullptr) {
        fm_pool_stats stats = pool_stats();
        fail(FM_ERR_OUT_OF_MEMORY, what, ": ", label(), " cannot allocate ", bytes,
             " bytes (", stats.bytes_in_use, " bytes in use, ", stats.bytes_cached, " cached)");
    }
    return ptr;
}

void Device::deallocate(void *ptr, size_t bytes, void *stream_ctx) noexcept {
    if (pool_) {
        pool_->release(ptr, bytes);
    } else {
        reg_->iface.memory.pool_free(ctx_, ptr, bytes, stream_ctx);
    }
}

fm_pool_stats Device::pool_stats() {
    if (pool_) return pool_->stats();
    fm_pool_stats stats{};
    reg_->iface.memory.pool_stats(ctx_, &stats);
    return stats;
}

void Device::pool_trim() {
    synchronize();
    if (pool_) {
        pool_->trim();
    } else {
        reg_->iface.memory.pool_trim(ctx_);
    }
}

void Device::pool_reset_peak() {
    if (pool_) {
        pool_->reset_peak();
    } else {
        reg_->iface.memory.pool_reset_peak(ctx_);
    }
}

Stream::Stream(std::shared_ptr<Device> device) : device_(std::move(device)), ctx_(nullptr) {
    if (device_->iface().stream.stream_new) ctx_ = device_->iface().stream.stream_new(device_->ctx());
}

Stream::~Stream() {
    if (device_->iface().stream.stream_free) {
        try {
            device_->iface().stream.stream_free(device_->ctx(), ctx_);
        } catch (...) {
            // A destructor cannot report; the error was the stream's to return
            // from fm_stream_synchronize, which the owner chose not to call.
        }
    }
}

void Stream::synchronize() {
    if (device_->iface().stream.stream_synchronize) {
        device_->iface().stream.stream_synchronize(device_->ctx(), ctx_);
    }
}

Buffer::Buffer(std::shared_ptr<Device> device, fm_dtype dtype, size_t count)
    : device_(std::move(device)),
      dtype_(dtype),
      count_(count),
      element_size_(dtype_size(dtype, "dtype")) {
    if (count > SIZE_MAX / element_size_) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'count': ", count, " elements of ",
             fm_dtype_str(dtype), " overflow the size of a byte count");
    }
    if (count > 0) data_ = device_->allocate(count * element_size_, "argument 'count'");
}

Buffer::~Buffer() {
    if (data_ == nullptr) return;
    std::shared_ptr<Stream> stream = last_stream_.lock();
    device_->deallocate(data_, nbytes(), stream ? stream->ctx() : nullptr);
}

void Buffer::used_on(const std::shared_ptr<Stream> &stream) {
    if (!stream) return;
    std::lock_guard<std::mutex> lock(last_stream_mutex_);
    last_stream_ = stream;
}

namespace {
constexpr size_t kStagingAlignment = 64;  // a cache line, and every element's alignment
}

Staging::Staging(std::shared_ptr<Device> device, size_t bytes) : device_(std::move(device)), bytes_(bytes) {
    const size_t size = bytes == 0 ? 1 : bytes;
    const MemoryIface &memory = device_->iface().memory;
    if (memory.host_alloc) {
        data_ = memory.host_alloc(device_->ctx(), size);
    } else {
        data_ = ::operator new(size, std::align_val_t(kStagingAlignment), std::nothrow);
    }
    if (data_ == nullptr) {
        fail(FM_ERR_OUT_OF_MEMORY, "no host memory for a staging buffer of ", bytes, " bytes for ", device_->label());
    }
}

Staging::~Staging() {
    const MemoryIface &memory = device_->iface().memory;
    if (memory.host_free) {
        memory.host_free(device_->ctx(), data_);
    } else {
        ::operator delete(data_, std::align_val_t(kStagingAlignment));
    }
}

}  // namespace fm
