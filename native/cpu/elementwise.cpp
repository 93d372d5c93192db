// The fused elementwise interpreter: a planner group (a chain of
// elementwise primitives with one shape) runs as one pass over memory.
// Each task takes a range of output elements in chunks. A register holds
// either a chunk of values or one value for the whole chunk (a uniform
// register: a scalar, a per-channel load, or an instruction on uniform
// operands), so per-channel parameters are never spread over a buffer and
// are computed once per chunk. Chunks end where a per-channel load changes
// value. Each instruction is one vectorisable loop over the chunk.
#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "elementwise_math.h"
#include "kernels.h"
#include "thread_pool.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

// Compiled for AVX-512 and AVX2 too, picked by the loader. The build turns
// contraction into FMA off (-ffp-contract=off), so every clone rounds as
// the baseline does. Not under ThreadSanitizer: the loader runs the clones'
// resolvers before the sanitizer's runtime starts, and they crash there.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define FM_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_VECTOR_CLONES
#endif

namespace fm::cpu {

namespace {

constexpr int64_t kChunk = 1024;
constexpr int64_t kTaskElements = kChunk * 16;
constexpr int64_t kStreamElements = int64_t(1) << 21;  // 8 MiB of floats
// A broadcast load constant over runs at least this long is a uniform
// register (chunks end at its runs); shorter runs are gathered into a
// buffer, where per-chunk overhead would cost more than the copy.
constexpr int64_t kMinUniformRun = 16;

// dst[0, n) = src[0, n) with non-temporal stores where the ISA has them.
// A task's range starts wherever the split puts it, so the elements before
// the first 16-byte boundary are stored plainly.
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
    const float *data = nullptr;
    enum { Contiguous, Scalar, Uniform, Gathered } mode = Contiguous;
    std::vector<int64_t> strides;  // Gathered: broadcast against the shape
    // Uniform: constant over runs of `run` elements; element e reads
    // data[sum over terms of (e / divisor % extent) * stride].
    int64_t run = 0;
    struct Term {
        int64_t divisor, extent, stride;
    };
    std::vector<Term> terms;

};

// Where a uniform load stands in a task's walk: its value holds until
// `boundary`. Crossing a boundary steps the innermost term's index (no
// division), recomputing from scratch only when that index wraps.
struct UniformCursor {
    const Load *load = nullptr;
    int64_t boundary = 0, index = 0;
    const float *value = nullptr;

    void seek(const Load &l, int64_t e) {
        load = &l;
        int64_t offset = 0;
        for (const Load::Term &t : l.terms) offset += e / t.divisor % t.extent * t.stride;
        value = l.data + offset;
        index = e / l.terms[0].divisor % l.terms[0].extent;
        boundary = (e / l.run + 1) * l.run;
    }
    void advance(int64_t e) {
        if (e < boundary) return;
        const Load::Term &t = load->terms[0];
        if (e == boundary && index + 1 < t.extent) {
            ++index;
            value += t.stride;
            boundary += load->run;
        } else {
            seek(*load, e);
        }
    }
};

Load plan_load(const float *data, const Shape &in, const Shape &shape, int64_t total) {
    Load load;
    load.data = data;
    if (element_count(in) == 1) {
        load.mode = Load::Scalar;
        return load;
    }
    if (element_count(in) == total) return load;  // same elements, so the same layout
    load.strides = broadcast_strides(in, shape);
    int64_t run = 1;
    size_t d = shape.size();
    for (; d > 0 && load.strides[d - 1] == 0; --d) run *= shape[d - 1];
    if (run < kMinUniformRun) {
        load.mode = Load::Gathered;
        return load;
    }
    load.mode = Load::Uniform;
    load.run = run;
    int64_t divisor = run;
    for (; d > 0; --d) {
        if (load.strides[d - 1] != 0) load.terms.push_back({divisor, shape[d - 1], load.strides[d - 1]});
        divisor *= shape[d - 1];
    }
    return load;
}

// Writes elements [begin, begin + count) of `load` broadcast to `shape`
// into out, a run of the innermost dimension at a time.
void gather(const Load &load, const Shape &shape, int64_t begin, int64_t count, float *out) {
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

// How a chunk splits into runs over which every uniform register holds
// one value: the first run ends at `first`, the next ones are `run` long.
struct Segments {
    int64_t first, run, count;
};

// Walks a chunk's segments: for (SegmentWalk w(seg, n); w.more(); w.next()).
// (A loop, not a callback: the instruction loops must see their function
// directly to inline it.)
struct SegmentWalk {
    SegmentWalk(const Segments &seg, int64_t n) : run(seg.run), n(n), hi(std::min(seg.first, n)) {}
    bool more() const { return lo < n; }
    void next() {
        ++k;
        lo = hi;
        hi = std::min(hi + run, n);
    }
    const int64_t run, n;
    int64_t k = 0, lo = 0, hi;
};

// A register as an instruction reads it: a value per element, or (uniform)
// a value per segment of the chunk.
struct Operand {
    const float *p;
    bool uniform;
};

// dst[0, n) = the uniform register `values` spread over its segments.
void spread(float *dst, const float *values, const Segments &seg, int64_t n) {
    for (SegmentWalk w(seg, n); w.more(); w.next()) std::fill(dst + w.lo, dst + w.hi, values[w.k]);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) int64_t square_roots_avx512(float *out, const float *x, int64_t n,
                                                              bool reciprocal) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 r = _mm512_maskz_sqrt_ps(0xFFFF, _mm512_loadu_ps(x + i));  // (GCC 12 warns on the unmasked form)
        _mm512_storeu_ps(out + i, reciprocal ? _mm512_div_ps(one, r) : r);
    }
    return i;
}
#endif

// out = sqrt(x) or 1 / sqrt(x). Vector square roots: std::sqrt keeps a
// scalar errno path that stops the compiler vectorising it; every form is
// correctly rounded, so the results are the same.
void square_roots(float *out, const float *x, int64_t n, bool reciprocal) {
    int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx512_kernels()) i = square_roots_avx512(out, x, n, reciprocal);
#endif
#if defined(__SSE2__)
    const __m128 one = _mm_set1_ps(1.0f);
    for (; i + 4 <= n; i += 4) {
        const __m128 r = _mm_sqrt_ps(_mm_loadu_ps(x + i));
        _mm_storeu_ps(out + i, reciprocal ? _mm_div_ps(one, r) : r);
    }
#endif
    for (; i < n; ++i) out[i] = reciprocal ? 1.0f / std::sqrt(x[i]) : std::sqrt(x[i]);
}

// A unary instruction's operand is uniform exactly when its result is
// (n is then the number of segments), so one loop serves both.
template <class F>
inline void unary(float *__restrict out, Operand a, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) out[i] = f(a.p[i]);
}

template <class F>
inline void binary(float *__restrict out, Operand a, Operand b, int64_t n, const Segments &seg, F f) {
    if (a.uniform == b.uniform) {  // both per element, or both uniform (n segments)
        for (int64_t i = 0; i < n; ++i) out[i] = f(a.p[i], b.p[i]);
    } else if (a.uniform) {
        for (SegmentWalk w(seg, n); w.more(); w.next()) {
            const float s = a.p[w.k];
            for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(s, b.p[i]);
        }
    } else {
        for (SegmentWalk w(seg, n); w.more(); w.next()) {
            const float s = b.p[w.k];
            for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(a.p[i], s);
        }
    }
}

// Ternary instructions: x with two uniform parameters (BatchNormalize's
// usual form) and one uniform operand among per-element ones (a Where on a
// flag, or with a constant branch) have their own loops; the other mixes
// spread their uniform operands over `scratch` (3 chunks) first.
template <class F>
inline void ternary(float *__restrict out, Operand a, Operand b, Operand c, int64_t n, const Segments &seg, F f,
                    float *scratch) {
    const int uniforms = int(a.uniform) + int(b.uniform) + int(c.uniform);
    if (!a.uniform && b.uniform && c.uniform) {
        for (SegmentWalk w(seg, n); w.more(); w.next()) {
            const float sb = b.p[w.k], sc = c.p[w.k];
            for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(a.p[i], sb, sc);
        }
        return;
    }
    if (uniforms == 1) {
        for (SegmentWalk w(seg, n); w.more(); w.next()) {
            if (a.uniform) {
                const float s = a.p[w.k];
                for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(s, b.p[i], c.p[i]);
            } else if (b.uniform) {
                const float s = b.p[w.k];
                for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(a.p[i], s, c.p[i]);
            } else {
                const float s = c.p[w.k];
                for (int64_t i = w.lo; i < w.hi; ++i) out[i] = f(a.p[i], b.p[i], s);
            }
        }
        return;
    }
    const float *v[3] = {a.p, b.p, c.p};
    if (!(a.uniform && b.uniform && c.uniform)) {
        const bool u[3] = {a.uniform, b.uniform, c.uniform};
        for (int k = 0; k < 3; ++k) {
            if (!u[k]) continue;
            spread(scratch + k * kChunk, v[k], seg, n);
            v[k] = scratch + k * kChunk;
        }
    }
    for (int64_t i = 0; i < n; ++i) out[i] = f(v[0][i], v[1][i], v[2][i]);
}

// n: the chunk's elements, or its segments for a uniform result.
FM_VECTOR_CLONES
void execute(const FusedInstruction &ins, float *out, Operand a, Operand b, Operand c, int64_t n,
             const Segments &seg, int64_t first_index, uint64_t run_index, float *scratch) {
    const float p0 = ins.p0, p1 = ins.p1;
    switch (ins.prim) {
        case Prim::Neg: return unary(out, a, n, ew::neg);
        case Prim::Abs: return unary(out, a, n, ew::abs);
        case Prim::Exp: return unary(out, a, n, ew::exp);
        case Prim::Log: return unary(out, a, n, ew::log);
        case Prim::Sqrt: return square_roots(out, a.p, n, false);
        case Prim::Rsqrt: return square_roots(out, a.p, n, true);
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
        case Prim::Add: return binary(out, a, b, n, seg, ew::add);
        case Prim::Sub: return binary(out, a, b, n, seg, ew::sub);
        case Prim::Mul: return binary(out, a, b, n, seg, ew::mul);
        case Prim::Div: return binary(out, a, b, n, seg, ew::div);
        case Prim::Maximum: return binary(out, a, b, n, seg, ew::maximum);
        case Prim::Minimum: return binary(out, a, b, n, seg, ew::minimum);
        case Prim::Equal: return binary(out, a, b, n, seg, ew::equal);
        case Prim::NotEqual: return binary(out, a, b, n, seg, ew::not_equal);
        case Prim::Less: return binary(out, a, b, n, seg, ew::less);
        case Prim::LessEqual: return binary(out, a, b, n, seg, ew::less_equal);
        case Prim::Greater: return binary(out, a, b, n, seg, ew::greater);
        case Prim::GreaterEqual: return binary(out, a, b, n, seg, ew::greater_equal);
        case Prim::Where: return ternary(out, a, b, c, n, seg, ew::where, scratch);
        case Prim::BatchNormalize: return ternary(out, a, b, c, n, seg, ew::batch_normalize, scratch);
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
FM_VECTOR_CLONES
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

namespace {

// add_and_sum_run for one combination of outputs, lanes as sum_run's.
template <bool kSum, bool kSquares>
inline void add_and_lane_sums(float *x, int64_t n, float bias, bool add_bias, double *sum, double *squares) {
    double lanes[16] = {}, square_lanes[16] = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        for (int l = 0; l < 16; ++l) {
            const float v = add_bias ? x[j + l] + bias : x[j + l];
            x[j + l] = v;
            if (kSum) lanes[l] += double(v);
            if (kSquares) square_lanes[l] += double(v) * double(v);
        }
    }
    for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) {
            lanes[l] += lanes[l + width];
            square_lanes[l] += square_lanes[l + width];
        }
    }
    double total = lanes[0], total_squares = square_lanes[0];
    for (; j < n; ++j) {
        const float v = add_bias ? x[j] + bias : x[j];
        x[j] = v;
        total += double(v);
        total_squares += double(v) * double(v);
    }
    if (kSum) *sum = total;
    if (kSquares) *squares = total_squares;
}

}  // namespace

FM_VECTOR_CLONES
void add_and_sum_run(float *x, int64_t n, float bias, bool add_bias, double *sum, double *squares) {
    if (sum && squares) return add_and_lane_sums<true, true>(x, n, bias, add_bias, sum, squares);
    if (sum) return add_and_lane_sums<true, false>(x, n, bias, add_bias, sum, squares);
    if (squares) return add_and_lane_sums<false, true>(x, n, bias, add_bias, sum, squares);
    return add_and_lane_sums<false, false>(x, n, bias, add_bias, sum, squares);
}

// (GCC would turn the inner loop back into a memmove call per row.)
FM_VECTOR_CLONES __attribute__((optimize("no-tree-loop-distribute-patterns")))
void copy_rows(float *__restrict dst, int64_t dst_stride, const float *__restrict src, int64_t src_stride, int64_t rows,
               int64_t n) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < n; ++i) dst[r * dst_stride + i] = src[r * src_stride + i];
    }
}

FM_VECTOR_CLONES
void add_rows(float *__restrict dst, int64_t dst_stride, const float *__restrict src, int64_t src_stride, int64_t rows,
              int64_t n) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < n; ++i) dst[r * dst_stride + i] += src[r * src_stride + i];
    }
}

void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index) {
    run_fused(fused, loads, stores, run_index, {}, {});
}

void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index, const std::vector<ChannelSum> &sums, const std::vector<bool> &skip_store) {
    const int64_t total = element_count(fused.shape);
    if (total == 0) return;
    std::vector<Load> inputs;
    for (size_t i = 0; i < fused.loads.size(); ++i) {
        inputs.push_back(plan_load(loads[i], fused.loads[i].shape, fused.shape, total));
    }
    const size_t registers = inputs.size() + fused.code.size();
    std::vector<bool> uniform(registers, false);
    for (size_t i = 0; i < inputs.size(); ++i) {
        uniform[i] = inputs[i].mode == Load::Scalar || inputs[i].mode == Load::Uniform;
    }
    for (size_t k = 0; k < fused.code.size(); ++k) {
        const FusedInstruction &ins = fused.code[k];
        bool all = ins.prim != Prim::DropoutMask;  // a function of the index
        for (int32_t r : {ins.a, ins.b, ins.c}) all = all && (r < 0 || uniform[size_t(r)]);
        uniform[inputs.size() + k] = all;
    }
    // A contiguous load is read in place, unless a store copies it out
    // directly (its destination may be another load's memory). All of a
    // chunk's reads happen before its stores, so a store may overwrite the
    // elements of the chunk it was computed from.
    std::vector<bool> in_place(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) in_place[i] = inputs[i].mode == Load::Contiguous;
    for (const auto &store : fused.stores) {
        if (store.first >= 0 && size_t(store.first) < inputs.size()) in_place[size_t(store.first)] = false;
    }
    // Outputs far larger than the caches are written around them (no read
    // for ownership): the next step would find them evicted anyway.
    bool stream = total >= kStreamElements;
    for (size_t s = 0; s < stores.size(); ++s) stream = stream && reinterpret_cast<uintptr_t>(stores[s]) % 64 == 0;
    // Tasks of a fixed size (never a function of the thread count); each
    // keeps its own partial channel sums, added in task order at the end.
    const int64_t tasks = (total + kTaskElements - 1) / kTaskElements;
    const int64_t per_task = (total + tasks - 1) / tasks;
    std::vector<std::vector<double>> partial(sums.size());
    for (size_t k = 0; k < sums.size(); ++k) partial[k].assign(size_t(tasks * sums[k].channels), 0.0);
    // Uniform loads change value every `run` elements (or a multiple of it):
    // the chunk's segments.
    int64_t run = total;
    for (const Load &load : inputs) {
        if (load.mode == Load::Uniform) run = std::min(run, load.run);
    }
    ThreadPool::global().run(size_t(tasks), [&](size_t task) {
        const int64_t begin = int64_t(task) * per_task, end = std::min(total, begin + per_task);
        thread_local std::vector<float> file;
        const size_t file_size = (registers + 3) * size_t(kChunk);  // + the ternaries' and sums' scratch
        if (file.size() < file_size) file.resize(file_size);
        auto scratch = [&](size_t r) { return file.data() + r * size_t(kChunk); };
        float *spare = scratch(registers);
        std::vector<Operand> reg(registers);
        for (size_t r = 0; r < registers; ++r) reg[r] = Operand{scratch(r), uniform[r]};
        std::vector<UniformCursor> cursors(inputs.size());
        for (size_t i = 0; i < inputs.size(); ++i) {
            if (inputs[i].mode == Load::Scalar) std::fill(scratch(i), scratch(i) + kChunk, inputs[i].data[0]);
            if (inputs[i].mode == Load::Uniform) cursors[i].seek(inputs[i], begin);
        }
        for (int64_t at = begin; at < end;) {
            const int64_t n = std::min(kChunk, end - at);
            Segments seg{run - at % run, run, 1};
            if (n > seg.first) seg.count += (n - seg.first + run - 1) / run;
            for (size_t i = 0; i < inputs.size(); ++i) {
                const Load &load = inputs[i];
                if (in_place[i]) {
                    reg[i].p = load.data + at;
                } else if (load.mode == Load::Uniform) {
                    float *values = scratch(i);
                    for (SegmentWalk w(seg, n); w.more(); w.next()) {
                        cursors[i].advance(at + w.lo);
                        values[w.k] = *cursors[i].value;
                    }
                } else if (load.mode == Load::Gathered) {
                    gather(load, fused.shape, at, n, scratch(i));
                } else if (load.mode == Load::Contiguous) {
                    std::memcpy(scratch(i), load.data + at, size_t(n) * sizeof(float));
                }
            }
            for (size_t k = 0; k < fused.code.size(); ++k) {
                const FusedInstruction &ins = fused.code[k];
                const size_t r = inputs.size() + k;
                const Operand none{nullptr, true};
                execute(ins, scratch(r), ins.a >= 0 ? reg[size_t(ins.a)] : none,
                        ins.b >= 0 ? reg[size_t(ins.b)] : none, ins.c >= 0 ? reg[size_t(ins.c)] : none,
                        uniform[r] ? seg.count : n, seg, at, run_index, spare);
            }
            for (size_t k = 0; k < sums.size(); ++k) {
                const ChannelSum &sum = sums[k];
                double *acc = partial[k].data() + task * size_t(sum.channels);
                const float *v = reg[size_t(sum.reg)].p;
                if (uniform[size_t(sum.reg)]) {
                    spread(spare, v, seg, n);
                    v = spare;
                }
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
                    const int64_t length = std::min(n - i, sum.inner - e % sum.inner);
                    acc[e / sum.inner % sum.channels] += sum_run(v + i, length);
                    i += length;
                }
            }
            for (size_t s = 0; s < fused.stores.size(); ++s) {
                if (!skip_store.empty() && skip_store[s]) continue;
                const size_t r = size_t(fused.stores[s].first);
                float *dst = stores[s] + at;
                if (uniform[r]) {
                    spread(dst, reg[r].p, seg, n);
                } else if (stream) {
                    stream_store(dst, reg[r].p, n);
                } else {
                    std::memmove(dst, reg[r].p, size_t(n) * sizeof(float));
                }
            }
            at += n;
        }
        if (stream) stream_fence();
    });
    for (size_t k = 0; k < sums.size(); ++k) {
        for (int64_t c = 0; c < sums[k].channels; ++c) {
            double sum = 0;
            for (int64_t t = 0; t < tasks; ++t) sum += partial[k][size_t(t * sums[k].channels + c)];
            sums[k].out[c] = float(sum);
        }
    }
}

}  // namespace fm::cpu
