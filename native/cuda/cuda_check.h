// Turning CUDA runtime errors into fm::Error. Calls whose failure the caller
// should hear about go through check(); the places that must not throw
// (frees, closing, host callbacks) test the result themselves and record or
// drop it.
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "error.h"

namespace fm {
namespace cuda {

// "cudaMemcpyAsync: an illegal memory access was encountered
// (cudaErrorIllegalAddress)". Only the function name before '(' is kept
// from `call`, since argument spellings mean nothing to a C ABI user.
inline std::string cuda_error_text(cudaError_t error, const char *call) {
    std::string text(call, std::strcspn(call, "( "));
    text += ": ";
    text += cudaGetErrorString(error);
    text += " (";
    text += cudaGetErrorName(error);
    text += ")";
    return text;
}

// The runtime also keeps the error as the thread's "last error"; clearing it
// here keeps a later, unrelated check (a kernel launch reads it) from
// reporting it again. Sticky errors (a faulted context) cannot be cleared
// and keep being reported, which is what they mean.
[[noreturn]] inline void fail_cuda(cudaError_t error, const char *call) {
    (void)cudaGetLastError();
    fail(error == cudaErrorMemoryAllocation ? FM_ERR_OUT_OF_MEMORY : FM_ERR_BACKEND,
         cuda_error_text(error, call));
}

inline void check(cudaError_t error, const char *call) {
    if (error != cudaSuccess) fail_cuda(error, call);
}

}  // namespace cuda
}  // namespace fm
