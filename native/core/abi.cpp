// C entry points shared by every object kind: versions, errors, dtypes,
// backends, and reference counting. Each body runs inside fm::guard.
#include <string>

#include "device.h"
#include "dtype.h"
#include "guard.h"
#include "handles.h"

namespace fm {
namespace {
thread_local std::string last_error;
}

void set_last_error(const char *function, const char *message) {
    last_error = std::string(function) + ": " + message;
}

}  // namespace fm

using fm::guard;
using fm::require_out;

extern "C" {

const char *fm_version(void) {
#define FM_STRINGIFY2(x) #x
#define FM_STRINGIFY(x) FM_STRINGIFY2(x)
    return FM_STRINGIFY(FM_VERSION_MAJOR) "." FM_STRINGIFY(FM_VERSION_MINOR) "." FM_STRINGIFY(
        FM_VERSION_PATCH);
}

uint32_t fm_abi_version(void) { return FM_ABI_VERSION; }

const char *fm_status_str(fm_status status) {
    switch (status) {
        case FM_OK: return "FM_OK";
        case FM_ERR_INVALID_HANDLE: return "FM_ERR_INVALID_HANDLE";
        case FM_ERR_INVALID_ARGUMENT: return "FM_ERR_INVALID_ARGUMENT";
        case FM_ERR_OUT_OF_RANGE: return "FM_ERR_OUT_OF_RANGE";
        case FM_ERR_DTYPE_MISMATCH: return "FM_ERR_DTYPE_MISMATCH";
        case FM_ERR_SHAPE_MISMATCH: return "FM_ERR_SHAPE_MISMATCH";
        case FM_ERR_OUT_OF_MEMORY: return "FM_ERR_OUT_OF_MEMORY";
        case FM_ERR_DEVICE_NOT_FOUND: return "FM_ERR_DEVICE_NOT_FOUND";
        case FM_ERR_NOT_COMPILED: return "FM_ERR_NOT_COMPILED";
        case FM_ERR_UNSUPPORTED: return "FM_ERR_UNSUPPORTED";
        case FM_ERR_BACKEND: return "FM_ERR_BACKEND";
        case FM_ERR_IO: return "FM_ERR_IO";
        case FM_ERR_NUMERICAL: return "FM_ERR_NUMERICAL";
        case FM_ERR_INTERNAL: return "FM_ERR_INTERNAL";
        case FM_STATUS_COUNT: break;
    }
    return "FM_STATUS_UNKNOWN";
}

const char *fm_last_error(void) { return fm::last_error.c_str(); }

const char *fm_dtype_str(fm_dtype dtype) {
    switch (dtype) {
        case FM_DTYPE_F32: return "f32";
        case FM_DTYPE_F16: return "f16";
        case FM_DTYPE_BF16: return "bf16";
        case FM_DTYPE_I32: return "i32";
        case FM_DTYPE_I8: return "i8";
        case FM_DTYPE_U8: return "u8";
        case FM_DTYPE_COUNT: break;
    }
    return "unknown";
}

fm_status fm_dtype_size(size_t *out_bytes, fm_dtype dtype) {
    return guard(__func__, [&] {
        size_t bytes = fm::dtype_size(dtype, "dtype");
        *require_out(out_bytes, "out_bytes") = bytes;
    });
}

const char *fm_backend_str(fm_backend backend) {
    switch (backend) {
        case FM_BACKEND_CPU: return "cpu";
        case FM_BACKEND_CUDA: return "cuda";
        case FM_BACKEND_METAL: return "metal";
        case FM_BACKEND_COUNT: break;
    }
    return "unknown";
}

fm_status fm_backend_is_compiled(int *out_compiled, fm_backend backend) {
    return guard(__func__, [&] {
        int compiled = fm::Device::is_compiled(backend) ? 1 : 0;
        *require_out(out_compiled, "out_compiled") = compiled;
    });
}

fm_status fm_retain(uintptr_t handle) {
    return guard(__func__, [&] { fm::handle_retain(handle); });
}

fm_status fm_release(uintptr_t handle) {
    return guard(__func__, [&] { fm::handle_release(handle); });
}

}  // extern "C"
