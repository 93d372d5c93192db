#include "dtype.h"

#include <cfloat>
#include <cmath>
#include <cstring>

#include "error.h"

namespace fm {

bool dtype_is_valid(fm_dtype dtype) {
    return static_cast<unsigned>(dtype) < static_cast<unsigned>(FM_DTYPE_COUNT);
}

size_t dtype_size(fm_dtype dtype, const char *argument) {
    switch (dtype) {
        case FM_DTYPE_F32: return 4;
        case FM_DTYPE_F16: return 2;
        case FM_DTYPE_BF16: return 2;
        case FM_DTYPE_I32: return 4;
        case FM_DTYPE_I8: return 1;
        case FM_DTYPE_U8: return 1;
        case FM_DTYPE_COUNT: break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "argument '", argument, "': unknown dtype ",
         static_cast<int>(dtype));
}

uint16_t float_to_bfloat16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // keep it a NaN
    uint32_t rounding = 0x7fff + ((bits >> 16) & 1);  // round to nearest even
    return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t float_to_half(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    uint32_t sign = (bits >> 16) & 0x8000;
    uint32_t magnitude = bits & 0x7fffffff;
    if (magnitude > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);  // NaN
    if (magnitude >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // overflow: inf
    if (magnitude < 0x38800000) {
        // Subnormal half (or zero): shift the implicit-one mantissa into place, round to even.
        if (magnitude < 0x33000000) return static_cast<uint16_t>(sign);
        uint32_t exponent = magnitude >> 23;
        uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - exponent;  // the result counts units of 2^-24
        uint32_t result = mantissa >> shift;
        uint32_t remainder = mantissa & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (remainder > halfway || (remainder == halfway && (result & 1))) result++;
        return static_cast<uint16_t>(sign | result);
    }
    uint32_t rebased = magnitude - 0x38000000;  // exponent bias 127 -> 15
    uint32_t result = rebased >> 13;
    uint32_t remainder = rebased & 0x1fff;
    if (remainder > 0x1000 || (remainder == 0x1000 && (result & 1))) result++;
    return static_cast<uint16_t>(sign | result);
}

namespace {

// Rounds to float with round-to-odd: float keeps more than two bits beyond
// f16's and bf16's mantissas, so a second rounding from it is then exact
// (plain rounding to float first could land on a tie and round twice).
float to_float_round_to_odd(double value) {
    if (!(std::fabs(value) <= double(FLT_MAX))) {
        return std::isnan(value) ? NAN : (value > 0 ? INFINITY : -INFINITY);
    }
    float rounded = static_cast<float>(value);
    if (static_cast<double>(rounded) != value) {
        uint32_t bits;
        std::memcpy(&bits, &rounded, 4);
        if (std::fabs(static_cast<double>(rounded)) > std::fabs(value)) bits -= 1;  // truncate
        bits |= 1;  // sticky: "something was cut off"
        std::memcpy(&rounded, &bits, 4);
    }
    return rounded;
}

template <class Int>
Int exact_integer(double value, fm_dtype dtype, double low, double high) {
    if (!(value >= low && value <= high) || std::trunc(value) != value) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'value': ", value, " is not representable as ",
             fm_dtype_str(dtype));
    }
    return static_cast<Int>(value);
}

}  // namespace

size_t encode_scalar(fm_dtype dtype, double value, unsigned char *pattern) {
    switch (dtype) {
        case FM_DTYPE_F32: {
            // Out-of-range doubles become +-inf (a plain cast would be UB).
            float f = std::fabs(value) <= double(FLT_MAX) || std::isnan(value)
                          ? static_cast<float>(value)
                          : (value > 0 ? INFINITY : -INFINITY);
            std::memcpy(pattern, &f, 4);
            return 4;
        }
        case FM_DTYPE_F16: {
            uint16_t h = float_to_half(to_float_round_to_odd(value));
            std::memcpy(pattern, &h, 2);
            return 2;
        }
        case FM_DTYPE_BF16: {
            uint16_t b = float_to_bfloat16(to_float_round_to_odd(value));
            std::memcpy(pattern, &b, 2);
            return 2;
        }
        case FM_DTYPE_I32: {
            int32_t i = exact_integer<int32_t>(value, dtype, -2147483648.0, 2147483647.0);
            std::memcpy(pattern, &i, 4);
            return 4;
        }
        case FM_DTYPE_I8: {
            int8_t i = exact_integer<int8_t>(value, dtype, -128.0, 127.0);
            std::memcpy(pattern, &i, 1);
            return 1;
        }
        case FM_DTYPE_U8: {
            uint8_t i = exact_integer<uint8_t>(value, dtype, 0.0, 255.0);
            std::memcpy(pattern, &i, 1);
            return 1;
        }
        case FM_DTYPE_COUNT: break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "argument 'dtype': unknown dtype ", static_cast<int>(dtype));
}

}  // namespace fm
