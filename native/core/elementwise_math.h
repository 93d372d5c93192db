// The elementwise primitives as scalar functions, shared by every backend's
// fused interpreter (the CPU's loops and the CUDA kernel call the same
// definitions), so the backends differ only in the math library's last-ulp
// rounding, never in formulas or NaN handling. The CUDA backend also
// compiles this header at run time (NVRTC, cuda_jit.cu), where the fused
// kernels call apply() with constant primitives; there it has no includes
// but prim.h, and the compiler defines __CUDACC_RTC__.
#pragma once

#ifndef __CUDACC_RTC__
#include <cmath>
#include <cstdint>

#include "kernel_shapes.h"  // FM_HOST_DEVICE
#endif
#include "prim.h"

namespace fm::ew {

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kTanhScale = 0.79788456080286536f;  // sqrt(2 / pi)
constexpr float kTanhCubic = 0.044715f;

FM_HOST_DEVICE inline float neg(float x) { return -x; }
FM_HOST_DEVICE inline float abs(float x) { return fabsf(x); }
FM_HOST_DEVICE inline float exp(float x) { return expf(x); }
FM_HOST_DEVICE inline float log(float x) { return logf(x); }
FM_HOST_DEVICE inline float sqrt(float x) { return sqrtf(x); }
FM_HOST_DEVICE inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
FM_HOST_DEVICE inline float pow(float x, float e) { return powf(x, e); }
FM_HOST_DEVICE inline float clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
// NaN stays NaN (max(x, 0) would drop it).
FM_HOST_DEVICE inline float relu(float x) { return x > 0 ? x : (x == x ? 0.0f : x); }
FM_HOST_DEVICE inline float leaky_relu(float x, float slope) { return x > 0 ? x : slope * x; }
FM_HOST_DEVICE inline float elu(float x, float alpha) { return x > 0 ? x : alpha * expm1f(x); }
// Never exponentiates a large positive number.
FM_HOST_DEVICE inline float sigmoid(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}
FM_HOST_DEVICE inline float tanh(float x) { return tanhf(x); }
FM_HOST_DEVICE inline float silu(float x) { return x * sigmoid(x); }
FM_HOST_DEVICE inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * kSqrtHalf)); }
FM_HOST_DEVICE inline float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(kTanhScale * (x + kTanhCubic * x * x * x)));
}
FM_HOST_DEVICE inline float gelu_erf_derivative(float x) {
    return 0.5f * (1.0f + erff(x * kSqrtHalf)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
}
FM_HOST_DEVICE inline float gelu_tanh_derivative(float x) {
    float t = tanhf(kTanhScale * (x + kTanhCubic * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kTanhScale * (1.0f + 3.0f * kTanhCubic * x * x);
}
FM_HOST_DEVICE inline float softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
FM_HOST_DEVICE inline float step(float x) { return x > 0 ? 1.0f : 0.0f; }
FM_HOST_DEVICE inline float sign(float x) { return float((x > 0) - (x < 0)); }

FM_HOST_DEVICE inline float add(float x, float y) { return x + y; }
FM_HOST_DEVICE inline float sub(float x, float y) { return x - y; }
FM_HOST_DEVICE inline float mul(float x, float y) { return x * y; }
FM_HOST_DEVICE inline float div(float x, float y) { return x / y; }
// A NaN operand wins, as in PyTorch.
FM_HOST_DEVICE inline float maximum(float x, float y) { return (x > y || x != x) ? x : y; }
FM_HOST_DEVICE inline float minimum(float x, float y) { return (x < y || x != x) ? x : y; }
FM_HOST_DEVICE inline float equal(float x, float y) { return float(x == y); }
FM_HOST_DEVICE inline float not_equal(float x, float y) { return float(x != y); }
FM_HOST_DEVICE inline float less(float x, float y) { return float(x < y); }
FM_HOST_DEVICE inline float less_equal(float x, float y) { return float(x <= y); }
FM_HOST_DEVICE inline float greater(float x, float y) { return float(x > y); }
FM_HOST_DEVICE inline float greater_equal(float x, float y) { return float(x >= y); }
FM_HOST_DEVICE inline float where(float c, float x, float y) { return c != 0.0f ? x : y; }
FM_HOST_DEVICE inline float batch_normalize(float x, float mean, float inv_std) { return (x - mean) * inv_std; }

// Dropout: element `index` of a mask is kept with probability 1 - p,
// decided by a hash of (seed, run, index), so masks are the same for any
// thread count and on every backend.
FM_HOST_DEVICE inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
FM_HOST_DEVICE inline uint64_t dropout_base(uint64_t seed, uint64_t run_index) {
    return mix(seed ^ mix(run_index + 0x632be59bd9b4e019ull));
}
// The mask value: 1 / (1 - p) where kept, 0 where dropped.
FM_HOST_DEVICE inline float dropout_mask(uint64_t base, uint64_t index, float p) {
    double u = double(mix(base ^ index) >> 11) * 0x1.0p-53;
    return u >= double(p) ? 1.0f / (1.0f - p) : 0.0f;
}

// One elementwise primitive on scalars (operands a, b, c; parameters p0,
// p1 as FusedInstruction carries them). DropoutMask is not a function of
// its operands and is handled by the callers.
FM_HOST_DEVICE inline float apply(Prim prim, float a, float b, float c, float p0, float p1) {
    switch (prim) {
        case Prim::Neg: return neg(a);
        case Prim::Abs: return abs(a);
        case Prim::Exp: return exp(a);
        case Prim::Log: return log(a);
        case Prim::Sqrt: return sqrt(a);
        case Prim::Rsqrt: return rsqrt(a);
        case Prim::Pow: return pow(a, p0);
        case Prim::Clamp: return clamp(a, p0, p1);
        case Prim::Relu: return relu(a);
        case Prim::LeakyRelu: return leaky_relu(a, p0);
        case Prim::Elu: return elu(a, p0);
        case Prim::Sigmoid: return sigmoid(a);
        case Prim::Tanh: return tanh(a);
        case Prim::Silu: return silu(a);
        case Prim::GeluErf: return gelu_erf(a);
        case Prim::GeluTanh: return gelu_tanh(a);
        case Prim::GeluErfDerivative: return gelu_erf_derivative(a);
        case Prim::GeluTanhDerivative: return gelu_tanh_derivative(a);
        case Prim::Softplus: return softplus(a);
        case Prim::Step: return step(a);
        case Prim::Sign: return sign(a);
        case Prim::Add: return add(a, b);
        case Prim::Sub: return sub(a, b);
        case Prim::Mul: return mul(a, b);
        case Prim::Div: return div(a, b);
        case Prim::Maximum: return maximum(a, b);
        case Prim::Minimum: return minimum(a, b);
        case Prim::Equal: return equal(a, b);
        case Prim::NotEqual: return not_equal(a, b);
        case Prim::Less: return less(a, b);
        case Prim::LessEqual: return less_equal(a, b);
        case Prim::Greater: return greater(a, b);
        case Prim::GreaterEqual: return greater_equal(a, b);
        case Prim::Where: return where(a, b, c);
        case Prim::BatchNormalize: return batch_normalize(a, b, c);
        default: return 0.0f;
    }
}

}  // namespace fm::ew
