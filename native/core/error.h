// Errors inside the library are exceptions of type fm::Error; the guard in
// guard.h turns them into an fm_status and the thread-local message at the
// ABI boundary, so nothing below the ABI needs to thread statuses through.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "ferrometal.h"

namespace fm {

class Error : public std::runtime_error {
public:
    Error(fm_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    fm_status status() const noexcept { return status_; }

private:
    fm_status status_;
};

// Builds a message from any streamable parts and throws it:
//   fail(FM_ERR_OUT_OF_RANGE, "argument 'count': offset ", off, " + count ", n, ...);
template <class... Parts>
[[noreturn]] void fail(fm_status status, Parts &&...parts) {
    std::ostringstream message;
    (message << ... << std::forward<Parts>(parts));
    throw Error(status, message.str());
}

}  // namespace fm
