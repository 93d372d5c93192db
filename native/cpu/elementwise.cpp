// The fused elementwise interpreter: a planner group (a chain of
// elementwise primitives with one shape) runs as one pass over memory.
// Each task takes a range of output elements in chunks; per chunk the
// inputs are gathered (broadcast) into registers, each instruction is one
// vectorisable loop over the chunk, and the stored registers are written out.
#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "elementwise_math.h"
#include "thread_pool.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fm::cpu {

namespace {

constexpr int64_t kChunk = 1024;
constexpr int64_t kStreamElements = int64_t(1) << 21;  // 8 MiB of floats

// dst[0, n) = src[0, n) with non-temporal stores where the ISA has them.
// A task's range starts wherever the thread pool's split puts it, so the
// elements before the first 16-byte boundary are stored plainly.
void stream_store(float *dst, const float *src, int64_t n) {
#if defined(__SSE2__)
    int64_t i = 0;
    for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 16 != 0; ++i) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
    for (; i < n; ++i) dst[i] = src[i];
#else
    std::memmove(dst, src, size_t(n) * sizeof(float));
#endif
}

void stream_fence() {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

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

// Writes elements [begin, begin + count) of `load` broadcast to `shape`
// into out, a run of the innermost dimension at a time.
void gather(const Load &load, const Shape &shape, int64_t begin, int64_t count, float *out) {
    if (load.mode == Load::Contiguous) {
        std::memcpy(out, load.data + begin, size_t(count) * sizeof(float));
        return;
    }
    if (load.mode == Load::Scalar) {
        std::fill(out, out + count, load.data[0]);
        return;
    }
    const int rank = int(shape.size());
    int64_t index[FM_MAX_RANK];
    int64_t rest = begin, offset = 0;
    for (int d = rank - 1; d >= 0; --d) {
        index[d] = rest % shape[d];
        rest /= shape[d];
        offset += index[d] * load.strides[d];
    }
    const int64_t inner = shape[rank - 1], inner_stride = load.strides[rank - 1];
    for (int64_t i = 0; i < count;) {
        // The rest of the current innermost run: a constant or a strided copy.
        const int64_t run = std::min(inner - index[rank - 1], count - i);
        const float *src = load.data + offset;
        if (inner_stride == 0) {
            std::fill(out + i, out + i + run, src[0]);
        } else {
            for (int64_t j = 0; j < run; ++j) out[i + j] = src[j * inner_stride];
        }
        i += run;
        offset += run * inner_stride;
        index[rank - 1] += run;
        for (int d = rank - 1; d > 0 && index[d] == shape[d]; --d) {
            offset -= load.strides[d] * shape[d];
            index[d] = 0;
            offset += load.strides[d - 1];
            ++index[d - 1];
        }
    }
}

// out = sqrt(x) or 1 / sqrt(x). Vector square roots: std::sqrt keeps a
// scalar errno path that stops the compiler vectorising it; both forms are
// correctly rounded, so the results are the same.
void square_roots(float *out, const float *x, int64_t n, bool reciprocal) {
    int64_t i = 0;
#if defined(__SSE2__)
    const __m128 one = _mm_set1_ps(1.0f);
    for (; i + 4 <= n; i += 4) {
        const __m128 r = _mm_sqrt_ps(_mm_loadu_ps(x + i));
        _mm_storeu_ps(out + i, reciprocal ? _mm_div_ps(one, r) : r);
    }
#endif
    for (; i < n; ++i) out[i] = reciprocal ? 1.0f / std::sqrt(x[i]) : std::sqrt(x[i]);
}

template <class F>
void unary(float *out, const float *x, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
}

template <class F>
void binary(float *out, const float *a, const float *b, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

// Compiled for AVX2 too (without FMA, so every ISA rounds the same way),
// picked by the loader.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void execute(const FusedInstruction &ins, float *out, const float *a, const float *b, const float *c,
             int64_t n, int64_t first_index, uint64_t run_index) {
    const float p0 = ins.p0, p1 = ins.p1;
    switch (ins.prim) {
        case Prim::Neg: return unary(out, a, n, ew::neg);
        case Prim::Abs: return unary(out, a, n, ew::abs);
        case Prim::Exp: return unary(out, a, n, ew::exp);
        case Prim::Log: return unary(out, a, n, ew::log);
        case Prim::Sqrt: return square_roots(out, a, n, false);
        case Prim::Rsqrt: return square_roots(out, a, n, true);
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
        case Prim::BatchNormalize:
            for (int64_t i = 0; i < n; ++i) out[i] = ew::batch_normalize(a[i], b[i], c[i]);
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

// The sum of x[0, n) in double: 16 lanes (element j to lane j % 16), then
// the lanes pairwise (l + 8, + 4, + 2, + 1), then the tail in order. Only
// additions, so every clone (vector widths differ, lanes do not) gives the
// same bits; the 16 independent chains keep the adds pipelined.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
double sum_run(const float *x, int64_t n) {
    double lanes[16] = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int l = 0; l < 16; ++l) lanes[l] += double(x[j + l]);
    }
    for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    double sum = lanes[0];
    for (; j < n; ++j) sum += double(x[j]);
    return sum;
}

void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index) {
    run_fused(fused, loads, stores, run_index, {}, {});
}

void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index, const std::vector<ChannelSum> &sums, const std::vector<bool> &skip_store) {
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
    // Registers: a contiguous load is read in place, unless a store copies
    // it out directly (its destination may be another load's memory); any
    // other input and every instruction's result lives in this task's chunk
    // of scratch. All of a chunk's reads happen before its stores, so a
    // store may overwrite the elements of the chunk it was computed from.
    const size_t registers = fused.loads.size() + fused.code.size();
    // Outputs far larger than the caches are written around them (no read
    // for ownership): the next step would find them evicted anyway.
    bool stream = total >= kStreamElements;
    for (size_t s = 0; s < stores.size(); ++s) stream = stream && reinterpret_cast<uintptr_t>(stores[s]) % 64 == 0;
    std::vector<bool> in_place(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) in_place[i] = inputs[i].mode == Load::Contiguous;
    for (const auto &store : fused.stores) {
        if (store.first >= 0 && size_t(store.first) < inputs.size()) in_place[size_t(store.first)] = false;
    }
    // Per-channel partial sums of each task, found again by the task's
    // first element (parallel_for's split, recomputed here).
    const size_t grain = size_t(kChunk) * 16;
    const size_t tasks = (size_t(total) + grain - 1) / grain;
    const size_t per_task = tasks ? (size_t(total) + tasks - 1) / tasks : 1;
    std::vector<std::vector<double>> partial(sums.size());
    for (size_t k = 0; k < sums.size(); ++k) partial[k].assign(tasks * size_t(sums[k].channels), 0.0);
    ThreadPool::global().parallel_for(size_t(total), grain, [&](size_t begin, size_t end) {
        thread_local std::vector<float> file;
        if (file.size() < registers * kChunk) file.resize(registers * kChunk);
        std::vector<const float *> reg(registers);
        auto scratch = [&](size_t r) { return file.data() + r * kChunk; };
        for (size_t r = 0; r < registers; ++r) reg[r] = scratch(r);
        for (size_t i = 0; i < inputs.size(); ++i) {  // constant over the chunks
            if (inputs[i].mode == Load::Scalar) gather(inputs[i], fused.shape, 0, kChunk, scratch(i));
        }
        for (int64_t at = int64_t(begin); at < int64_t(end); at += kChunk) {
            int64_t n = std::min<int64_t>(kChunk, int64_t(end) - at);
            for (size_t i = 0; i < inputs.size(); ++i) {
                if (in_place[i]) {
                    reg[i] = inputs[i].data + at;
                } else if (inputs[i].mode != Load::Scalar) {
                    gather(inputs[i], fused.shape, at, n, scratch(i));
                }
            }
            for (size_t k = 0; k < fused.code.size(); ++k) {
                const FusedInstruction &ins = fused.code[k];
                execute(ins, scratch(inputs.size() + k), ins.a >= 0 ? reg[size_t(ins.a)] : nullptr,
                        ins.b >= 0 ? reg[size_t(ins.b)] : nullptr, ins.c >= 0 ? reg[size_t(ins.c)] : nullptr, n,
                        at, run_index);
            }
            for (size_t k = 0; k < sums.size(); ++k) {
                const ChannelSum &sum = sums[k];
                double *acc = partial[k].data() + begin / per_task * size_t(sum.channels);
                const float *v = reg[size_t(sum.reg)];
                if (sum.inner == 1) {  // the columns of a matrix: one channel per element
                    int64_t c = at % sum.channels;
                    for (int64_t i = 0; i < n; ++i) {
                        acc[c] += v[i];
                        if (++c == sum.channels) c = 0;
                    }
                    continue;
                }
                for (int64_t i = 0; i < n;) {  // runs of one channel
                    const int64_t e = at + i;
                    const int64_t run = std::min(n - i, sum.inner - e % sum.inner);
                    acc[e / sum.inner % sum.channels] += sum_run(v + i, run);
                    i += run;
                }
            }
            for (size_t s = 0; s < fused.stores.size(); ++s) {
                if (!skip_store.empty() && skip_store[s]) continue;
                const float *value = reg[size_t(fused.stores[s].first)];
                if (stream) {
                    stream_store(stores[s] + at, value, n);
                } else {
                    std::memmove(stores[s] + at, value, size_t(n) * sizeof(float));
                }
            }
        }
        if (stream) stream_fence();
    });
    for (size_t k = 0; k < sums.size(); ++k) {
        for (int64_t c = 0; c < sums[k].channels; ++c) {
            double sum = 0;
            for (size_t t = 0; t < tasks; ++t) sum += partial[k][t * size_t(sums[k].channels) + size_t(c)];
            sums[k].out[c] = float(sum);
        }
    }
}

}  // namespace fm::cpu
