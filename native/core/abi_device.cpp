// C entry points for devices, their memory pools, and streams.
#include "device.h"
#include "guard.h"

using fm::Device;
using fm::guard;
using fm::require_out;
using fm::Stream;

extern "C" {

fm_status fm_device_count(size_t *out_count, fm_backend backend) {
    return guard(__func__, [&] {
        require_out(out_count, "out_count");
        *out_count = Device::count(backend);
    });
}

fm_status fm_device_open(fm_device *out_device, fm_backend backend, size_t index) {
    return guard(__func__, [&] {
        require_out(out_device, "out_device");
        *out_device = fm::insert(Device::open(backend, index));
    });
}

fm_status fm_device_open_best(fm_device *out_device) {
    return guard(__func__, [&] {
        require_out(out_device, "out_device");
        for (fm_backend backend : {FM_BACKEND_CUDA, FM_BACKEND_METAL}) {
            if (Device::is_compiled(backend) && Device::count(backend) > 0) {
                *out_device = fm::insert(Device::open(backend, 0));
                return;
            }
        }
        *out_device = fm::insert(Device::open(FM_BACKEND_CPU, 0));
    });
}

fm_status fm_device_info_get(fm_device_info *out_info, fm_device device) {
    return guard(__func__, [&] {
        require_out(out_info, "out_info");
        *out_info = fm::lookup<Device>(device, "device")->info();
    });
}

fm_status fm_device_synchronize(fm_device device) {
    return guard(__func__, [&] { fm::lookup<Device>(device, "device")->synchronize(); });
}

fm_status fm_device_pool_stats(fm_pool_stats *out_stats, fm_device device) {
    return guard(__func__, [&] {
        require_out(out_stats, "out_stats");
        *out_stats = fm::lookup<Device>(device, "device")->pool_stats();
    });
}

fm_status fm_device_pool_trim(fm_device device) {
    return guard(__func__, [&] { fm::lookup<Device>(device, "device")->pool_trim(); });
}

fm_status fm_device_pool_reset_peak(fm_device device) {
    return guard(__func__, [&] { fm::lookup<Device>(device, "device")->pool_reset_peak(); });
}

fm_status fm_stream_new(fm_stream *out_stream, fm_device device) {
    return guard(__func__, [&] {
        require_out(out_stream, "out_stream");
        auto owner = fm::lookup<Device>(device, "device");
        *out_stream = fm::insert(std::make_shared<Stream>(owner));
    });
}

fm_status fm_stream_synchronize(fm_stream stream) {
    return guard(__func__, [&] { fm::lookup<Stream>(stream, "stream")->synchronize(); });
}

}  // extern "C"
