// Runs a plan on the CPU: resolves each step's storage to addresses and
// calls the kernel for its primitive.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>

#include "cpu_exec.h"
#include "dtype.h"
#include "elementwise.h"
#include "error.h"
#include "kernels.h"
#include "step_fusion.h"
#include "step_profile.h"

namespace fm::cpu {

namespace {

// FERROMETAL_CPU_FUSION=0 turns the cross-step fusions off (for
// measurements and tests).
bool lowering_enabled() {
    static const bool enabled = [] {
        const char *env = std::getenv("FERROMETAL_CPU_FUSION");
        return !(env && env[0] == '0');
    }();
    return enabled;
}

class Runner {
public:
    Runner(const Plan &plan, const Bindings &b, const StepFusion &lowered) : plan(plan), b(b), lowered(lowered) {}

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

    void run_step(size_t index);
    void kernel(const Step &step);

    const Plan &plan;
    const Bindings &b;
    const StepFusion &lowered;
};

void matmul_step(const Step &s, const float *A, const float *B, float *Y) {
    MatmulPlan plan = matmul_plan(s);
    if (!plan.mixed) return matmul(plan.shape, A, B, Y);
    // Mixed broadcasting of several batch dims: one product per output matrix.
    for (int64_t i = 0; i < plan.outputs; ++i) {
        int64_t a_offset, b_offset;
        matrix_offsets(s, i, &a_offset, &b_offset);
        matmul(plan.shape, A + a_offset, B + b_offset, Y + i * plan.shape.m * plan.shape.n);
    }
}

void Runner::kernel(const Step &s) {
    const fm_op_attrs &a = s.attrs;
    const Shape &ys = s.output.shape;
    auto shape = [&](size_t i) -> const Shape & { return s.inputs[i].shape; };
    switch (s.prim) {
        case Prim::MatMul: return matmul_step(s, in(s, 0), in(s, 1), out(s));
        case Prim::Conv2d: return conv2d_forward(conv_shape(s), in(s, 0), in(s, 1), out(s));
        case Prim::Conv2dBackwardInput:
            return conv2d_backward_input(conv_shape(s), in(s, 0), in(s, 1), out(s));
        case Prim::Conv2dBackwardWeight:
            return conv2d_backward_weight(conv_shape(s), in(s, 0), in(s, 1), out(s));
        case Prim::MaxPool2d: return max_pool2d_forward(pool_shape(s), in(s, 0), out(s));
        case Prim::MaxPool2dBackward:
            return max_pool2d_backward(pool_shape(s), in(s, 0), in(s, 1), out(s));
        case Prim::AvgPool2d: return avg_pool2d_forward(pool_shape(s), in(s, 0), out(s));
        case Prim::AvgPool2dBackward: return avg_pool2d_backward(pool_shape(s), in(s, 0), out(s));
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
            const uint32_t mask = reduce_to_like_mask(x, shape(1));
            if (mask == 0) {
                const size_t bytes = size_t(element_count(x)) * sizeof(float);
                if (bytes) std::memcpy(out(s), in(s, 0), bytes);
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
            axis_split(ys.data(), ys.size(), int(a.axes[0]), &outer, &middle, &inner);
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
            axis_split(x.data(), x.size(), 1, &outer, &classes, &inner);
            return pick(outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
        }
        case Prim::PickBackward: {
            int64_t outer, classes, inner;
            axis_split(ys.data(), ys.size(), 1, &outer, &classes, &inner);
            return pick_backward(outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
        }
        default:
            break;
    }
    fail(FM_ERR_INTERNAL, s.origin, ": the CPU backend has no kernel for ", prim_name(s.prim));
}

void Runner::run_step(size_t index) {
    const Step &step = plan.steps[index];
    switch (step.kind) {
        case StepKind::Copy: {
            const size_t bytes = size_t(element_count(step.output.shape)) * dtype_size(step.output.dtype, "dtype");
            if (bytes) std::memmove(address(step.output), address(step.inputs[0]), bytes);
            return;
        }
        case StepKind::Fused: {
            const Fused &fused = lowered.fused[index] ? *lowered.fused[index] : *step.fused;
            std::vector<const float *> loads;
            std::vector<float *> stores;
            for (const TensorRef &ref : fused.loads) loads.push_back(reinterpret_cast<const float *>(address(ref)));
            for (const auto &store : fused.stores) stores.push_back(reinterpret_cast<float *>(address(store.second)));
            if (lowered.sums[index].empty() && lowered.skip_store[index].empty()) {
                return run_fused(fused, loads, stores, b.run_index);
            }
            std::vector<ChannelSum> sums;
            for (const ChannelSumSpec &spec : lowered.sums[index]) {
                sums.push_back(ChannelSum{spec.reg, spec.channels, spec.inner,
                                          reinterpret_cast<float *>(address(spec.out))});
            }
            return run_fused(fused, loads, stores, b.run_index, sums, lowered.skip_store[index]);
        }
        case StepKind::Kernel:
            if (element_count(step.output.shape) == 0) return;
            if (lowered.bias_step[index] >= 0) {  // conv + bias into the add's destination
                const Step &add = plan.steps[size_t(lowered.bias_step[index])];
                const auto &ls = lowered.fused[size_t(lowered.bias_step[index])]
                                     ? lowered.fused[size_t(lowered.bias_step[index])]->loads
                                     : add.fused->loads;
                const size_t bias = same_tensor(ls[0], step.output) ? 1 : 0;
                const TensorRef &z = add.fused->stores[0].second;
                float *sums = lowered.conv_sum_step[index] >= 0
                                  ? out(plan.steps[size_t(lowered.conv_sum_step[index])])
                                  : nullptr;
                const int64_t variance_step = lowered.conv_variance_step[index];
                float *variance_sums =
                    variance_step >= 0
                        ? reinterpret_cast<float *>(address(lowered.sums[size_t(variance_step)][0].out))
                        : nullptr;
                return conv2d_forward_bias(conv_shape(step),
                                           in(step, 0), in(step, 1), reinterpret_cast<const float *>(address(ls[bias])),
                                           reinterpret_cast<float *>(address(z)), sums, variance_sums);
            }
            return kernel(step);
    }
}

}  // namespace

static StepFusion lower(const Plan &plan) {
    StepFusionOptions options;
    options.conv_variance = true;
    return lowering_enabled() ? fuse_steps(plan, options) : unfused_steps(plan);
}

void *compile_plan(void *, const Plan &plan) {
    auto *fusion = new StepFusion(lower(plan));
    print_fused_plan_if_asked(plan, *fusion);
    return fusion;
}

void release_plan(void *, void *exec_ctx) { delete static_cast<StepFusion *>(exec_ctx); }

void run_plan(void *, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *) {
    StepFusion fallback;  // a plan not compiled here: lowered on the spot
    if (!exec_ctx) fallback = lower(plan);
    const StepFusion &lowered = exec_ctx ? *static_cast<const StepFusion *>(exec_ctx) : fallback;
    Runner runner(plan, bindings, lowered);
    StepProfile *profile = StepProfile::get();
    for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (lowered.skip[i]) continue;
        if (!profile) {
            runner.run_step(i);
            continue;
        }
        const auto start = std::chrono::steady_clock::now();
        runner.run_step(i);
        const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
        const bool merged = !lowered.sums[i].empty() || lowered.bias_step[i] >= 0;
        profile->add(plan.steps[i], elapsed.count(), merged ? "+ the next step" : nullptr);
    }
}

}  // namespace fm::cpu
