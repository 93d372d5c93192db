// The fused elementwise interpreter: a planner group (a chain of
// elementwise primitives with one shape) runs as one pass over memory.
// Each task takes a range of output elements in chunks; per chunk the
// inputs are gathered (broadcast) into registers, each instruction is one
// vectorisable loop over the chunk, and the stored registers are written out.
#include "elementwise.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "elementwise_math.h"
#include "thread_pool.h"

namespace fm::cpu {

namespace {

constexpr int64_t kChunk = 1024;

// Element strides of `in` broadcast against `out` (0 along broadcast dims).
std::vector<int64_t> broadcast_strides(const Shape &in, const Shape &out) {
    std::vector<int64_t> strides(out.size(), 0);
    int64_t stride = 1;
    for (size_t k = in.size(); k-- > 0;) {
        size_t o = k + out.size() - in.size();
        strides[o] = in[k] == 1 ? 0 : stride;
        stride *= in[k];
    }
    return strides;
}

struct Load {
    const float *data;
    std::vector<int64_t> strides;
    enum { Contiguous, Scalar, Strided } mode;
};

void gather(const Load &load, const Shape &shape, int64_t begin, int64_t count, float *out) {
    if (load.mode == Load::Contiguous) {
        std::memcpy(out, load.data + begin, size_t(count) * sizeof(float));
        return;
    }
    if (load.mode == Load::Scalar) {
        for (int64_t i = 0; i < count; ++i) out[i] = load.data[0];
        return;
    }
    int rank = int(shape.size());
    int64_t index[FM_MAX_RANK];
    int64_t rest = begin, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
        index[d] = rest % shape[d];
        rest /= shape[d];
        offset += index[d] * load.strides[d];
    }
    for (int64_t i = 0; i < count; ++i) {
        out[i] = load.data[offset];
        for (int d = rank - 1; d >= 0; --d) {
            offset += load.strides[d];
            if (++index[d] < shape[d]) break;
            offset -= load.strides[d] * shape[d];
            index[d] = 0;
        }
    }
}

template <class F>
void unary(float *out, const float *x, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
}

template <class F>
void binary(float *out, const float *a, const float *b, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

void execute(const FusedInstruction &ins, float *out, const float *a, const float *b, const float *c,
             int64_t n, int64_t first_index, uint64_t run_index) {
    const float p0 = ins.p0, p1 = ins.p1;
    switch (ins.prim) {
        case Prim::Neg: return unary(out, a, n, ew::neg);
        case Prim::Abs: return unary(out, a, n, ew::abs);
        case Prim::Exp: return unary(out, a, n, ew::exp);
        case Prim::Log: return unary(out, a, n, ew::log);
        case Prim::Sqrt: return unary(out, a, n, ew::sqrt);
        case Prim::Rsqrt: return unary(out, a, n, ew::rsqrt);
        case Prim::Pow: return unary(out, a, n, [p0](float x) { return ew::pow(x, p0); });
        case Prim::Clamp: return unary(out, a, n, [p0, p1](float x) { return ew::clamp(x, p0, p1); });
        case Prim::Relu: return unary(out, a, n, ew::relu);
        case Prim::LeakyRelu: return unary(out, a, n, [p0](float x) { return ew::leaky_relu(x, p0); });
        case Prim::Elu: return unary(out, a, n, [p0](float x) { return ew::elu(x, p0); });
        case Prim::Sigmoid: return unary(out, a, n, ew::sigmoid);
        case Prim::Tanh: return unary(out, a, n, ew::tanh);
        case Prim::Silu: return unary(out, a, n, ew::silu);
        case Prim::GeluErf: return unary(out, a, n, ew::gelu_erf);
        case Prim::GeluTanh: return unary(out, a, n, ew::gelu_tanh);
        case Prim::GeluErfDerivative: return unary(out, a, n, ew::gelu_erf_derivative);
        case Prim::GeluTanhDerivative: return unary(out, a, n, ew::gelu_tanh_derivative);
        case Prim::Softplus: return unary(out, a, n, ew::softplus);
        case Prim::Step: return unary(out, a, n, ew::step);
        case Prim::Sign: return unary(out, a, n, ew::sign);
        case Prim::Add: return binary(out, a, b, n, ew::add);
        case Prim::Sub: return binary(out, a, b, n, ew::sub);
        case Prim::Mul: return binary(out, a, b, n, ew::mul);
        case Prim::Div: return binary(out, a, b, n, ew::div);
        case Prim::Maximum: return binary(out, a, b, n, ew::maximum);
        case Prim::Minimum: return binary(out, a, b, n, ew::minimum);
        case Prim::Equal: return binary(out, a, b, n, ew::equal);
        case Prim::NotEqual: return binary(out, a, b, n, ew::not_equal);
        case Prim::Less: return binary(out, a, b, n, ew::less);
        case Prim::LessEqual: return binary(out, a, b, n, ew::less_equal);
        case Prim::Greater: return binary(out, a, b, n, ew::greater);
        case Prim::GreaterEqual: return binary(out, a, b, n, ew::greater_equal);
        case Prim::Where:
            for (int64_t i = 0; i < n; ++i) out[i] = ew::where(a[i], b[i], c[i]);
            return;
        case Prim::DropoutMask: {
            uint64_t base = ew::dropout_base(ins.seed, run_index);
            for (int64_t i = 0; i < n; ++i) out[i] = ew::dropout_mask(base, uint64_t(first_index + i), p0);
            return;
        }
        default:
            break;
    }
}

}  // namespace

void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index) {
    int64_t total = element_count(fused.shape);
    std::vector<Load> inputs;
    for (size_t i = 0; i < fused.loads.size(); ++i) {
        const Shape &in = fused.loads[i].shape;
        Load load{loads[i], {}, Load::Strided};
        if (element_count(in) == 1) {
            load.mode = Load::Scalar;
        } else if (element_count(in) == total) {
            load.mode = Load::Contiguous;  // same elements, so the same layout
        } else {
            load.strides = broadcast_strides(in, fused.shape);
        }
        inputs.push_back(std::move(load));
    }
    size_t registers = fused.loads.size() + fused.code.size();
    ThreadPool::global().parallel_for(size_t(total), size_t(kChunk) * 16, [&](size_t begin, size_t end) {
        std::vector<float> file(registers * kChunk);
        auto reg = [&](int32_t r) { return file.data() + size_t(r) * kChunk; };
        for (int64_t at = int64_t(begin); at < int64_t(end); at += kChunk) {
            int64_t n = std::min<int64_t>(kChunk, int64_t(end) - at);
            for (size_t i = 0; i < inputs.size(); ++i) gather(inputs[i], fused.shape, at, n, reg(int32_t(i)));
            for (size_t k = 0; k < fused.code.size(); ++k) {
                const FusedInstruction &ins = fused.code[k];
                execute(ins, reg(int32_t(inputs.size() + k)), ins.a >= 0 ? reg(ins.a) : nullptr,
                        ins.b >= 0 ? reg(ins.b) : nullptr, ins.c >= 0 ? reg(ins.c) : nullptr, n, at, run_index);
            }
            for (size_t s = 0; s < fused.stores.size(); ++s) {
                std::memcpy(stores[s] + at, reg(fused.stores[s].first), size_t(n) * sizeof(float));
            }
        }
    });
}

}  // namespace fm::cpu
