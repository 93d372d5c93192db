// The one guard around every C entry point (mlx-c style): it runs the body,
// catches everything, and maps it to a status plus a thread-local message
// that names the function. No exception ever crosses the C ABI.
#pragma once

#include <new>
#include <string>

#include "error.h"

namespace fm {

void set_last_error(const char *function, const char *message);

template <class Body>
fm_status guard(const char *function, Body &&body) noexcept {
    try {
        body();
        return FM_OK;
    } catch (const Error &e) {
        set_last_error(function, e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        set_last_error(function, "out of host memory");
        return FM_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        set_last_error(function, (std::string("internal error: ") + e.what()).c_str());
        return FM_ERR_INTERNAL;
    } catch (...) {
        set_last_error(function, "internal error: unknown exception");
        return FM_ERR_INTERNAL;
    }
}

// Throws FM_ERR_INVALID_ARGUMENT naming `name` when an out-pointer is NULL.
template <class T>
T *require_out(T *pointer, const char *name) {
    if (pointer == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument '", name, "' is NULL");
    return pointer;
}

}  // namespace fm
