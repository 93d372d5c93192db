// Variable initialisers. Values are generated on the host from the seed
// alone (splitmix64 + Box-Muller), so every device and thread count gets
// the same parameters.
#include <cmath>

#include "error.h"
#include "exec.h"

namespace fm {

namespace {

class SplitMix {
public:
    explicit SplitMix(uint64_t seed) : state_(seed) {}
    uint64_t next() {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }
    double normal() {
        double u = 1.0 - uniform();  // (0, 1]: log stays finite
        double v = uniform();
        return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
    }

private:
    uint64_t state_;
};

// PyTorch's fans: [out, in, k...] -> fan_in = in * k..., fan_out = out * k...
void fans(const Shape &shape, double *fan_in, double *fan_out) {
    if (shape.size() < 2) {
        *fan_in = *fan_out = shape.empty() ? 1.0 : double(shape[0]);
        return;
    }
    double receptive = 1;
    for (size_t i = 2; i < shape.size(); ++i) receptive *= double(shape[i]);
    *fan_in = double(shape[1]) * receptive;
    *fan_out = double(shape[0]) * receptive;
}

}  // namespace

void initialise_variable(const fm_init &init, const Shape &shape, float *out) {
    size_t count = size_t(element_count(shape));
    SplitMix rng(init.seed);
    double fan_in, fan_out;
    fans(shape, &fan_in, &fan_out);
    auto uniform = [&](double low, double high) {
        for (size_t i = 0; i < count; ++i) out[i] = float(low + (high - low) * rng.uniform());
    };
    auto normal = [&](double mean, double std) {
        for (size_t i = 0; i < count; ++i) out[i] = float(mean + std * rng.normal());
    };
    switch (init.kind) {
        case FM_INIT_ZEROS: for (size_t i = 0; i < count; ++i) out[i] = 0.0f; return;
        case FM_INIT_CONSTANT: for (size_t i = 0; i < count; ++i) out[i] = float(init.value); return;
        case FM_INIT_UNIFORM: return uniform(init.low, init.high);
        case FM_INIT_NORMAL: return normal(init.mean, init.std);
        case FM_INIT_XAVIER_UNIFORM: {
            double bound = std::sqrt(6.0 / (fan_in + fan_out));
            return uniform(-bound, bound);
        }
        case FM_INIT_XAVIER_NORMAL: return normal(0.0, std::sqrt(2.0 / (fan_in + fan_out)));
        case FM_INIT_HE_UNIFORM: {
            double bound = std::sqrt(6.0 / fan_in);
            return uniform(-bound, bound);
        }
        case FM_INIT_HE_NORMAL: return normal(0.0, std::sqrt(2.0 / fan_in));
        default: break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "argument 'init': unknown kind ", int(init.kind));
}

}  // namespace fm
