// Runs a plan on the CPU: resolves each step's storage to addresses and
// calls the kernel for its primitive.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>
#include <string>

#include "cpu_exec.h"
#include "dtype.h"
#include "elementwise.h"
#include "error.h"
#include "kernels.h"

namespace fm::cpu {

namespace {

class Runner {
public:
    Runner(const Plan &plan, const Bindings &b) : plan(plan), b(b) {}

    char *address(const TensorRef &ref) const {
        switch (ref.storage) {
            case Storage::Arena: return static_cast<char *>(b.arena) + ref.offset;
            case Storage::Variable: return static_cast<char *>(b.variables[ref.index]);
            case Storage::Constant: return const_cast<char *>(static_cast<const char *>(b.constants[ref.index]));
            case Storage::Feed: return const_cast<char *>(static_cast<const char *>(b.feeds[ref.index]));
            case Storage::Output: return static_cast<char *>(b.outputs[ref.index]);
            case Storage::Scalar: return reinterpret_cast<char *>(const_cast<float *>(b.scalars + ref.index));
        }
        return nullptr;
    }
    const float *in(const Step &s, size_t i) const { return reinterpret_cast<const float *>(address(s.inputs[i])); }
    const int32_t *in_i32(const Step &s, size_t i) const { return reinterpret_cast<const int32_t *>(address(s.inputs[i])); }
    float *out(const Step &s) const { return reinterpret_cast<float *>(address(s.output)); }

    void run_step(const Step &step);
    void kernel(const Step &step);

    const Plan &plan;
    const Bindings &b;
};

ConvShape conv_shape(const fm_op_attrs &a, const Shape &x, const Shape &w, const Shape &y) {
    ConvShape s;
    s.n = x[0], s.c_in = x[1], s.h = x[2], s.w = x[3];
    s.c_out = w[0], s.kh = w[2], s.kw = w[3];
    s.stride_h = a.stride[0], s.stride_w = a.stride[1];
    s.pad_h = a.padding[0], s.pad_w = a.padding[1];
    s.dilation_h = a.dilation[0], s.dilation_w = a.dilation[1];
    s.groups = a.groups;
    s.out_h = y[2], s.out_w = y[3];
    return s;
}

PoolShape pool_shape(const fm_op_attrs &a, const Shape &x, const Shape &y) {
    PoolShape s;
    s.n = x[0], s.c = x[1], s.h = x[2], s.w = x[3];
    s.kh = a.kernel_size[0], s.kw = a.kernel_size[1];
    s.stride_h = a.stride[0], s.stride_w = a.stride[1];
    s.pad_h = a.padding[0], s.pad_w = a.padding[1];
    s.dilation_h = a.dilation[0], s.dilation_w = a.dilation[1];
    s.out_h = y[2], s.out_w = y[3];
    s.count_include_pad = a.count_include_pad != 0;
    return s;
}

// x's shape with leading 1s up to `rank`.
Shape padded(const Shape &shape, size_t rank) {
    Shape out(rank - shape.size(), 1);
    out.insert(out.end(), shape.begin(), shape.end());
    return out;
}

void matmul_step(const fm_op_attrs &a, const Shape &as, const Shape &bs, const Shape &ys, const float *A,
                 const float *B, float *Y) {
    size_t rank = ys.size();
    Shape pa = padded(as, rank), pb = padded(bs, rank);
    MatmulShape m;
    m.m = ys[rank - 2], m.n = ys[rank - 1];
    m.k = a.transpose_a ? as[as.size() - 2] : as[as.size() - 1];
    m.transpose_a = a.transpose_a, m.transpose_b = a.transpose_b;
    int64_t a_size = pa[rank - 2] * pa[rank - 1], b_size = pb[rank - 2] * pb[rank - 1];
    Shape batch(ys.begin(), ys.end() - 2);
    int64_t a_batch = element_count(Shape(pa.begin(), pa.end() - 2));
    int64_t b_batch = element_count(Shape(pb.begin(), pb.end() - 2));
    int64_t batches = element_count(batch);
    m.c_batch_stride = m.m * m.n;
    if ((a_batch == batches || a_batch == 1) && (b_batch == batches || b_batch == 1)) {
        m.batch = batches;
        m.a_batch_stride = a_batch == 1 ? 0 : a_size;
        m.b_batch_stride = b_batch == 1 ? 0 : b_size;
        matmul(m, A, B, Y);
        return;
    }
    // Mixed broadcasting of several batch dims: one product per output matrix.
    m.batch = 1;
    for (int64_t i = 0; i < batches; ++i) {
        int64_t rest = i, a_index = 0, b_index = 0, a_stride = 1, b_stride = 1;
        for (size_t d = batch.size(); d-- > 0;) {
            int64_t at = rest % batch[d];
            rest /= batch[d];
            if (pa[d] != 1) a_index += at * a_stride;
            if (pb[d] != 1) b_index += at * b_stride;
            a_stride *= pa[d];
            b_stride *= pb[d];
        }
        matmul(m, A + a_index * a_size, B + b_index * b_size, Y + i * m.m * m.n);
    }
}

void axis_split(const Shape &shape, int axis, int64_t *outer, int64_t *middle, int64_t *inner) {
    *outer = 1, *inner = 1;
    for (int i = 0; i < axis; ++i) *outer *= shape[i];
    *middle = shape[axis];
    for (size_t i = axis + 1; i < shape.size(); ++i) *inner *= shape[i];
}

void Runner::kernel(const Step &s) {
    const fm_op_attrs &a = s.attrs;
    const Shape &ys = s.output.shape;
    auto shape = [&](size_t i) -> const Shape & { return s.inputs[i].shape; };
    switch (s.prim) {
        case Prim::MatMul: return matmul_step(a, shape(0), shape(1), ys, in(s, 0), in(s, 1), out(s));
        case Prim::Conv2d: return conv2d_forward(conv_shape(a, shape(0), shape(1), ys), in(s, 0), in(s, 1), out(s));
        case Prim::Conv2dBackwardInput:
            return conv2d_backward_input(conv_shape(a, ys, shape(1), shape(0)), in(s, 0), in(s, 1), out(s));
        case Prim::Conv2dBackwardWeight:
            return conv2d_backward_weight(conv_shape(a, shape(0), ys, shape(1)), in(s, 0), in(s, 1), out(s));
        case Prim::MaxPool2d: return max_pool2d_forward(pool_shape(a, shape(0), ys), in(s, 0), out(s));
        case Prim::MaxPool2dBackward:
            return max_pool2d_backward(pool_shape(a, shape(0), shape(1)), in(s, 0), in(s, 1), out(s));
        case Prim::AvgPool2d: return avg_pool2d_forward(pool_shape(a, shape(0), ys), in(s, 0), out(s));
        case Prim::AvgPool2dBackward: return avg_pool2d_backward(pool_shape(a, ys, shape(0)), in(s, 0), out(s));
        case Prim::ReduceSum:
        case Prim::ReduceMax:
        case Prim::ReduceMin: {
            Reduction kind = s.prim == Prim::ReduceSum ? Reduction::Sum
                             : s.prim == Prim::ReduceMax ? Reduction::Max : Reduction::Min;
            return reduce(kind, shape(0).data(), int(shape(0).size()), axes_mask(a, shape(0).size()), in(s, 0), out(s));
        }
        case Prim::ArgMax:
            return argmax(shape(0).data(), int(shape(0).size()), int(a.axes[0]), in(s, 0),
                          reinterpret_cast<int32_t *>(address(s.output)));
        case Prim::ReduceToLike: {
            const Shape &x = shape(0);
            Shape like = padded(shape(1), x.size());
            uint32_t mask = 0;
            for (size_t i = 0; i < x.size(); ++i) if (like[i] == 1 && x[i] != 1) mask |= 1u << i;
            if (mask == 0) {
                std::memcpy(out(s), in(s, 0), size_t(element_count(x)) * sizeof(float));
                return;
            }
            return reduce(Reduction::Sum, x.data(), int(x.size()), mask, in(s, 0), out(s));
        }
        case Prim::BroadcastLike: {
            Shape x = padded(shape(0), ys.size());
            return broadcast_to(x.data(), ys.data(), int(ys.size()), in(s, 0), out(s));
        }
        case Prim::Permute: {
            int64_t perm[FM_MAX_RANK];
            for (size_t i = 0; i < a.num_axes; ++i) perm[i] = a.axes[i];
            return permute(shape(0).data(), int(shape(0).size()), perm, address(s.inputs[0]), address(s.output),
                           dtype_size(s.output.dtype, "dtype"));
        }
        case Prim::Slice: {
            int64_t starts[FM_MAX_RANK];
            Shape result;
            resolve_slice(shape(0), a, starts, &result);
            return slice(shape(0).data(), int(ys.size()), starts, ys.data(), in(s, 0), out(s));
        }
        case Prim::SliceBackward: {
            int64_t starts[FM_MAX_RANK];
            Shape result;
            resolve_slice(ys, a, starts, &result);
            return pad(shape(0).data(), int(ys.size()), starts, ys.data(), 0.0f, in(s, 0), out(s));
        }
        case Prim::Pad:
            return pad(shape(0).data(), int(ys.size()), a.pad_before, ys.data(), float(a.value), in(s, 0), out(s));
        case Prim::Concat: {
            std::vector<const float *> inputs;
            std::vector<const int64_t *> shapes;
            for (size_t i = 0; i < s.inputs.size(); ++i) {
                inputs.push_back(in(s, i));
                shapes.push_back(s.inputs[i].shape.data());
            }
            return concat(inputs.data(), shapes.data(), inputs.size(), int(ys.size()), int(a.axes[0]), out(s));
        }
        case Prim::Softmax:
        case Prim::LogSoftmax: {
            int64_t outer, middle, inner;
            axis_split(ys, int(a.axes[0]), &outer, &middle, &inner);
            if (s.prim == Prim::Softmax) return softmax(outer, middle, inner, in(s, 0), out(s));
            return log_softmax(outer, middle, inner, in(s, 0), out(s));
        }
        case Prim::GatherRows:
            return gather_rows(in(s, 0), shape(0)[0], shape(0)[1], in_i32(s, 1), element_count(shape(1)), out(s));
        case Prim::ScatterAddRows:
            return scatter_add_rows(in(s, 0), ys[1], in_i32(s, 1), element_count(shape(1)), ys[0], out(s));
        case Prim::OneHot: return one_hot(in_i32(s, 0), element_count(shape(0)), a.depth, out(s));
        case Prim::Pick: {
            const Shape &x = shape(0);
            int64_t outer, classes, inner;
            axis_split(x, 1, &outer, &classes, &inner);
            return pick(outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
        }
        case Prim::PickBackward: {
            int64_t outer, classes, inner;
            axis_split(ys, 1, &outer, &classes, &inner);
            return pick_backward(outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
        }
        default:
            break;
    }
    fail(FM_ERR_INTERNAL, s.origin, ": the CPU backend has no kernel for ", prim_name(s.prim));
}

void Runner::run_step(const Step &step) {
    switch (step.kind) {
        case StepKind::Copy:
            std::memmove(address(step.output), address(step.inputs[0]),
                         size_t(element_count(step.output.shape)) * dtype_size(step.output.dtype, "dtype"));
            return;
        case StepKind::Fused: {
            std::vector<const float *> loads;
            std::vector<float *> stores;
            for (const TensorRef &ref : step.fused->loads) loads.push_back(reinterpret_cast<const float *>(address(ref)));
            for (const auto &store : step.fused->stores) stores.push_back(reinterpret_cast<float *>(address(store.second)));
            return run_fused(*step.fused, loads, stores, b.run_index);
        }
        case StepKind::Kernel:
            if (element_count(step.output.shape) == 0) return;
            return kernel(step);
    }
}

// FERROMETAL_PROFILE=1: the wall time of every step, summed per kind of
// step and shape, printed to stderr at exit, most expensive first. A
// measuring aid for kernel work; it costs nothing when off.
class Profile {
public:
    static Profile *get() {
        static Profile *profile = [] {
            const char *env = std::getenv("FERROMETAL_PROFILE");
            return env && env[0] == '1' ? new Profile : nullptr;
        }();
        return profile;
    }
    void add(const Step &step, double seconds) {
        std::string key = step.kind == StepKind::Fused  ? std::string("fused")
                          : step.kind == StepKind::Copy ? std::string("copy")
                                                        : std::string(prim_name(step.prim));
        const Shape &shape = step.kind == StepKind::Fused ? step.fused->shape : step.output.shape;
        key += " [";
        for (size_t i = 0; i < shape.size(); ++i) key += (i ? "," : "") + std::to_string(shape[i]);
        key += "]";
        if (step.kind == StepKind::Fused) {  // its instructions, loads and stores
            key += " {";
            for (size_t i = 0; i < step.fused->code.size(); ++i) {
                key += (i ? " " : "") + std::string(prim_name(step.fused->code[i].prim));
            }
            key += "} " + std::to_string(step.fused->loads.size()) + " loads, " +
                   std::to_string(step.fused->stores.size()) + " stores";
        }
        if (step.kind == StepKind::Kernel && !step.inputs.empty()) {
            key += " <- [";
            const Shape &in = step.inputs[0].shape;
            for (size_t i = 0; i < in.size(); ++i) key += (i ? "," : "") + std::to_string(in[i]);
            key += "]";
        }
        std::lock_guard<std::mutex> lock(mutex_);
        auto &entry = entries_[key];
        entry.first += seconds;
        entry.second += 1;
    }
    ~Profile() = default;

private:
    Profile() { std::atexit([] { get()->print(); }); }
    void print() {
        std::vector<std::pair<double, std::string>> rows;
        double total = 0;
        for (auto &e : entries_) {
            rows.emplace_back(e.second.first, e.first);
            total += e.second.first;
        }
        std::sort(rows.rbegin(), rows.rend());
        std::fprintf(stderr, "FERROMETAL_PROFILE: %.3f s in steps\n", total);
        for (auto &r : rows) {
            std::fprintf(stderr, "%8.3f s %5.1f %% %8ld  %s\n", r.first, 100 * r.first / total,
                         entries_[r.second].second, r.second.c_str());
        }
    }
    std::mutex mutex_;
    std::map<std::string, std::pair<double, long>> entries_;
};

}  // namespace

void run_plan(void *, void *, const Plan &plan, const Bindings &bindings, void *) {
    Runner runner(plan, bindings);
    if (Profile *profile = Profile::get()) {
        for (const Step &step : plan.steps) {
            const auto start = std::chrono::steady_clock::now();
            runner.run_step(step);
            const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
            profile->add(step, elapsed.count());
        }
        return;
    }
    for (const Step &step : plan.steps) runner.run_step(step);
}

}  // namespace fm::cpu
