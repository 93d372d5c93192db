// Element types: sizes, names, and the encoding of a fill value.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ferrometal.h"

namespace fm {

// Throws FM_ERR_INVALID_ARGUMENT naming `argument` for an unknown dtype.
size_t dtype_size(fm_dtype dtype, const char *argument);
bool dtype_is_valid(fm_dtype dtype);

// Encodes `value` as one element of `dtype` into `pattern` (4 bytes of room)
// and returns the element size. Throws FM_ERR_INVALID_ARGUMENT when an
// integer dtype cannot represent `value` exactly.
size_t encode_scalar(fm_dtype dtype, double value, unsigned char *pattern);

uint16_t float_to_half(float value);
uint16_t float_to_bfloat16(float value);

}  // namespace fm
