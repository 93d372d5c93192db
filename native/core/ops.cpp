// Public ops (fm_op) lowered to primitives. Composite ops (normalisation,
// losses, linear layers) are written once here in terms of primitives, so
// their gradients come from autodiff and every backend runs them.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "builder.h"
#include "error.h"

namespace fm {

namespace {

struct OpInfo {
    const char *name;
    int min_inputs, max_inputs;
};

OpInfo op_info(fm_op op) {
    switch (op) {
        case FM_OP_NEG: return {"neg", 1, 1};
        case FM_OP_ABS: return {"abs", 1, 1};
        case FM_OP_EXP: return {"exp", 1, 1};
        case FM_OP_LOG: return {"log", 1, 1};
        case FM_OP_SQRT: return {"sqrt", 1, 1};
        case FM_OP_RSQRT: return {"rsqrt", 1, 1};
        case FM_OP_POW: return {"pow", 1, 1};
        case FM_OP_CLAMP: return {"clamp", 1, 1};
        case FM_OP_RELU: return {"relu", 1, 1};
        case FM_OP_LEAKY_RELU: return {"leaky_relu", 1, 1};
        case FM_OP_ELU: return {"elu", 1, 1};
        case FM_OP_SIGMOID: return {"sigmoid", 1, 1};
        case FM_OP_TANH: return {"tanh", 1, 1};
        case FM_OP_SILU: return {"silu", 1, 1};
        case FM_OP_GELU: return {"gelu", 1, 1};
        case FM_OP_SOFTPLUS: return {"softplus", 1, 1};
        case FM_OP_ADD: return {"add", 2, 2};
        case FM_OP_SUB: return {"sub", 2, 2};
        case FM_OP_MUL: return {"mul", 2, 2};
        case FM_OP_DIV: return {"div", 2, 2};
        case FM_OP_MAXIMUM: return {"maximum", 2, 2};
        case FM_OP_MINIMUM: return {"minimum", 2, 2};
        case FM_OP_EQUAL: return {"equal", 2, 2};
        case FM_OP_NOT_EQUAL: return {"not_equal", 2, 2};
        case FM_OP_LESS: return {"less", 2, 2};
        case FM_OP_LESS_EQUAL: return {"less_equal", 2, 2};
        case FM_OP_GREATER: return {"greater", 2, 2};
        case FM_OP_GREATER_EQUAL: return {"greater_equal", 2, 2};
        case FM_OP_WHERE: return {"where", 3, 3};
        case FM_OP_SOFTMAX: return {"softmax", 1, 1};
        case FM_OP_LOG_SOFTMAX: return {"log_softmax", 1, 1};
        case FM_OP_MATMUL: return {"matmul", 2, 2};
        case FM_OP_LINEAR: return {"linear", 2, 3};
        case FM_OP_CONV2D: return {"conv2d", 2, 3};
        case FM_OP_CONV_TRANSPOSE2D: return {"conv_transpose2d", 2, 3};
        case FM_OP_MAX_POOL2D: return {"max_pool2d", 1, 1};
        case FM_OP_AVG_POOL2D: return {"avg_pool2d", 1, 1};
        case FM_OP_GLOBAL_AVG_POOL: return {"global_avg_pool", 1, 1};
        case FM_OP_RESHAPE: return {"reshape", 1, 1};
        case FM_OP_FLATTEN: return {"flatten", 1, 1};
        case FM_OP_PERMUTE: return {"permute", 1, 1};
        case FM_OP_TRANSPOSE: return {"transpose", 1, 1};
        case FM_OP_CONCAT: return {"concat", 1, 64};
        case FM_OP_SLICE: return {"slice", 1, 1};
        case FM_OP_PAD: return {"pad", 1, 1};
        case FM_OP_BROADCAST_TO: return {"broadcast_to", 1, 1};
        case FM_OP_SQUEEZE: return {"squeeze", 1, 1};
        case FM_OP_UNSQUEEZE: return {"unsqueeze", 1, 1};
        case FM_OP_SUM: return {"sum", 1, 1};
        case FM_OP_MEAN: return {"mean", 1, 1};
        case FM_OP_MAX: return {"max", 1, 1};
        case FM_OP_MIN: return {"min", 1, 1};
        case FM_OP_VARIANCE: return {"variance", 1, 1};
        case FM_OP_ARGMAX: return {"argmax", 1, 1};
        case FM_OP_BATCH_NORM: return {"batch_norm", 5, 5};
        case FM_OP_LAYER_NORM: return {"layer_norm", 3, 3};
        case FM_OP_DROPOUT: return {"dropout", 1, 1};
        case FM_OP_EMBEDDING: return {"embedding", 2, 2};
        case FM_OP_ONE_HOT: return {"one_hot", 1, 1};
        case FM_OP_SOFTMAX_CROSS_ENTROPY: return {"softmax_cross_entropy", 2, 2};
        case FM_OP_CATEGORICAL_CROSS_ENTROPY: return {"categorical_cross_entropy", 2, 2};
        case FM_OP_BINARY_CROSS_ENTROPY: return {"binary_cross_entropy", 2, 2};
        case FM_OP_BCE_WITH_LOGITS: return {"bce_with_logits", 2, 2};
        case FM_OP_MSE: return {"mse", 2, 2};
        case FM_OP_MAE: return {"mae", 2, 2};
        case FM_OP_HUBER: return {"huber", 2, 2};
        case FM_OP_ASSIGN: return {"assign", 2, 2};
        case FM_OP_GROUP: return {"group", 1, 1024};
        case FM_OP_STOP_GRADIENT: return {"stop_gradient", 1, 1};
        case FM_OP_COUNT: break;
    }
    return {nullptr, 0, 0};
}

class OpBuilder : public Builder {
public:
    OpBuilder(Graph &graph, const char *name, const std::vector<uint32_t> &in, fm_op_attrs a)
        : Builder(graph, name), in(in), a(a) {}

    size_t rank(uint32_t v) const { return g.node(v).probe[0].size(); }
    const Shape &shape(uint32_t v) const { return g.node(v).probe[0]; }

    [[noreturn]] void bad(fm_status status, const std::string &message) const {
        fail(status, origin, ": ", message);
    }

    // attrs.axes resolved against `r`, sorted and unique; all axes if none.
    std::vector<int> axes(size_t r, bool all_if_none = true) {
        std::vector<int> out;
        if (a.num_axes > FM_MAX_RANK) bad(FM_ERR_INVALID_ARGUMENT, "num_axes exceeds FM_MAX_RANK");
        for (size_t i = 0; i < a.num_axes; ++i) out.push_back(normalize_axis(a.axes[i], r, origin));
        std::sort(out.begin(), out.end());
        if (std::adjacent_find(out.begin(), out.end()) != out.end()) bad(FM_ERR_INVALID_ARGUMENT, "an axis is listed twice");
        if (out.empty() && all_if_none) {
            out.resize(r);
            std::iota(out.begin(), out.end(), 0);
        }
        return out;
    }

    fm_op_attrs with_axes(const std::vector<int> &list) {
        fm_op_attrs attrs = a;
        attrs.num_axes = list.size();
        for (size_t i = 0; i < list.size(); ++i) attrs.axes[i] = list[i];
        return attrs;
    }

    int single_axis(size_t r, int64_t fallback) {
        return normalize_axis(a.num_axes ? a.axes[0] : fallback, r, origin);
    }

    void window_attrs(bool pool) {
        // Bounded so that no window arithmetic on dims up to kMaxElements
        // can overflow.
        constexpr int64_t kMaxWindow = int64_t(1) << 24;
        for (int i = 0; i < 2; ++i) {
            for (int64_t v : {a.kernel_size[i], a.stride[i], a.padding[i], a.dilation[i], a.output_padding[i]}) {
                if (v > kMaxWindow) bad(FM_ERR_INVALID_ARGUMENT, "window sizes must be at most 2^24, got " + std::to_string(v));
            }
        }
        if (a.groups > kMaxWindow) bad(FM_ERR_INVALID_ARGUMENT, "groups must be at most 2^24");
        for (int i = 0; i < 2; ++i) {
            if (pool && a.kernel_size[i] <= 0) bad(FM_ERR_INVALID_ARGUMENT, "kernel_size must be positive");
            if (pool && a.stride[i] == 0) a.stride[i] = a.kernel_size[i];
            if (a.stride[i] <= 0 || a.dilation[i] <= 0 || a.padding[i] < 0) {
                bad(FM_ERR_INVALID_ARGUMENT, "stride and dilation must be positive and padding not negative");
            }
            if (pool && a.padding[i] * 2 > a.kernel_size[i]) {
                bad(FM_ERR_INVALID_ARGUMENT, "padding must be at most half the kernel size");
            }
        }
        if (a.groups <= 0) bad(FM_ERR_INVALID_ARGUMENT, "groups must be positive");
    }

    // `bias` [c] added along dim 1 of x (rank r).
    uint32_t add_channel_bias(uint32_t x, uint32_t bias) {
        if (rank(bias) != 1 || shape(bias)[0] != shape(x)[1]) {
            bad(FM_ERR_SHAPE_MISMATCH, "bias " + to_string(shape(bias)) + " does not match the " +
                                           std::to_string(shape(x)[1]) + " output channels");
        }
        return add(x, unsqueeze(bias, after_axes(rank(x))));
    }
    static std::vector<int> after_axes(size_t r) {
        std::vector<int> out;
        for (size_t i = 2; i < r; ++i) out.push_back(int(i) - 1);
        return out;
    }

    void same_shapes(uint32_t x, uint32_t y, const char *what) {
        if (!g.same_shape(x, y)) {
            bad(FM_ERR_SHAPE_MISMATCH, std::string(what) + " " + to_string(g.public_shape(x)) + " and " +
                                           to_string(g.public_shape(y)) + " must have the same shape");
        }
    }

    uint32_t reduce_loss(uint32_t per_element, uint32_t counted_over) {
        if (a.reduction == FM_REDUCTION_SUM) return sum(per_element, {}, false);
        if (a.reduction != FM_REDUCTION_MEAN) bad(FM_ERR_INVALID_ARGUMENT, "unknown reduction");
        return div(sum(per_element, {}, false), count(counted_over, {}));
    }

    uint32_t build(fm_op op);

    const std::vector<uint32_t> &in;
    fm_op_attrs a;
};

Prim unary_prim(fm_op op, const fm_op_attrs &a) {
    switch (op) {
        case FM_OP_NEG: return Prim::Neg;
        case FM_OP_ABS: return Prim::Abs;
        case FM_OP_EXP: return Prim::Exp;
        case FM_OP_LOG: return Prim::Log;
        case FM_OP_SQRT: return Prim::Sqrt;
        case FM_OP_RSQRT: return Prim::Rsqrt;
        case FM_OP_POW: return Prim::Pow;
        case FM_OP_CLAMP: return Prim::Clamp;
        case FM_OP_RELU: return Prim::Relu;
        case FM_OP_LEAKY_RELU: return Prim::LeakyRelu;
        case FM_OP_ELU: return Prim::Elu;
        case FM_OP_SIGMOID: return Prim::Sigmoid;
        case FM_OP_TANH: return Prim::Tanh;
        case FM_OP_SILU: return Prim::Silu;
        case FM_OP_GELU: return a.approximate ? Prim::GeluTanh : Prim::GeluErf;
        case FM_OP_SOFTPLUS: return Prim::Softplus;
        case FM_OP_ADD: return Prim::Add;
        case FM_OP_SUB: return Prim::Sub;
        case FM_OP_MUL: return Prim::Mul;
        case FM_OP_DIV: return Prim::Div;
        case FM_OP_MAXIMUM: return Prim::Maximum;
        case FM_OP_MINIMUM: return Prim::Minimum;
        case FM_OP_EQUAL: return Prim::Equal;
        case FM_OP_NOT_EQUAL: return Prim::NotEqual;
        case FM_OP_LESS: return Prim::Less;
        case FM_OP_LESS_EQUAL: return Prim::LessEqual;
        case FM_OP_GREATER: return Prim::Greater;
        case FM_OP_GREATER_EQUAL: return Prim::GreaterEqual;
        case FM_OP_WHERE: return Prim::Where;
        default: return Prim::Count;
    }
}

uint32_t OpBuilder::build(fm_op op) {
    Prim elementwise = unary_prim(op, a);
    if (elementwise != Prim::Count) {
        if (op == FM_OP_CLAMP && a.min > a.max) bad(FM_ERR_INVALID_ARGUMENT, "min is greater than max");
        return prim(elementwise, in, a);
    }
    uint32_t x = in[0];
    switch (op) {
        case FM_OP_SOFTMAX:
        case FM_OP_LOG_SOFTMAX:
            return prim(op == FM_OP_SOFTMAX ? Prim::Softmax : Prim::LogSoftmax, {x},
                        with_axes({single_axis(rank(x), -1)}));
        case FM_OP_MATMUL:
            return prim(Prim::MatMul, in, a);
        case FM_OP_LINEAR: {
            uint32_t w = in[1];
            if (rank(w) != 2) bad(FM_ERR_SHAPE_MISMATCH, "weight must be [out, in], got " + to_string(shape(w)));
            fm_op_attrs t = default_attrs();
            t.transpose_b = 1;
            uint32_t y = prim(Prim::MatMul, {x, w}, t);
            if (in.size() == 3) {
                if (shape(in[2]) != Shape{shape(w)[0]}) {
                    bad(FM_ERR_SHAPE_MISMATCH, "bias " + to_string(shape(in[2])) + " must be [" +
                                                   std::to_string(shape(w)[0]) + "]");
                }
                y = add(y, in[2]);
            }
            return y;
        }
        case FM_OP_CONV2D: {
            window_attrs(false);
            uint32_t y = prim(Prim::Conv2d, {x, in[1]}, a);
            return in.size() == 3 ? add_channel_bias(y, in[2]) : y;
        }
        case FM_OP_CONV_TRANSPOSE2D: {
            window_attrs(false);
            const Shape &xs = shape(x), &ws = shape(in[1]);
            if (xs.size() != 4 || ws.size() != 4) bad(FM_ERR_SHAPE_MISMATCH, "x and weight must have rank 4");
            for (int i = 0; i < 2; ++i) {
                if (a.output_padding[i] < 0 || a.output_padding[i] >= std::max(a.stride[i], a.dilation[i])) {
                    bad(FM_ERR_INVALID_ARGUMENT, "output_padding must be smaller than stride or dilation");
                }
                __int128 size = (__int128(xs[2 + i]) - 1) * a.stride[i] - 2 * a.padding[i] +
                                __int128(a.dilation[i]) * (ws[2 + i] - 1) + a.output_padding[i] + 1;
                if (size < 1 || size > kMaxElements) {
                    bad(FM_ERR_SHAPE_MISMATCH, "the output size along dim " + std::to_string(2 + i) + " is out of range");
                }
                a.shape[i] = int64_t(size);
            }
            uint32_t y = prim(Prim::Conv2dBackwardInput, {x, in[1]}, a);
            return in.size() == 3 ? add_channel_bias(y, in[2]) : y;
        }
        case FM_OP_MAX_POOL2D:
        case FM_OP_AVG_POOL2D:
            window_attrs(true);
            return prim(op == FM_OP_MAX_POOL2D ? Prim::MaxPool2d : Prim::AvgPool2d, {x}, a);
        case FM_OP_GLOBAL_AVG_POOL:
            if (rank(x) != 4) bad(FM_ERR_SHAPE_MISMATCH, "x must be [n, c, h, w], got " + to_string(shape(x)));
            return mean(x, {2, 3}, false);
        case FM_OP_RESHAPE:
            if (a.rank > FM_MAX_RANK) bad(FM_ERR_INVALID_ARGUMENT, "rank exceeds FM_MAX_RANK");
            return prim(Prim::Reshape, {x}, a);
        case FM_OP_FLATTEN:
            return prim(Prim::Flatten, {x}, a);
        case FM_OP_PERMUTE: {
            if (a.num_axes != rank(x)) bad(FM_ERR_INVALID_ARGUMENT, "permute needs one axis per dim of " + to_string(shape(x)));
            std::vector<int> perm;
            for (size_t i = 0; i < a.num_axes; ++i) perm.push_back(normalize_axis(a.axes[i], rank(x), origin));
            std::vector<int> sorted = perm;
            std::sort(sorted.begin(), sorted.end());
            for (size_t i = 0; i < sorted.size(); ++i) {
                if (sorted[i] != int(i)) bad(FM_ERR_INVALID_ARGUMENT, "axes are not a permutation");
            }
            return prim(Prim::Permute, {x}, with_axes(perm));
        }
        case FM_OP_TRANSPOSE: {
            size_t r = rank(x);
            if (r < 2) bad(FM_ERR_SHAPE_MISMATCH, "needs rank >= 2, got " + to_string(shape(x)));
            int i = a.num_axes >= 1 ? normalize_axis(a.axes[0], r, origin) : int(r) - 2;
            int j = a.num_axes >= 2 ? normalize_axis(a.axes[1], r, origin) : int(r) - 1;
            std::vector<int> perm(r);
            std::iota(perm.begin(), perm.end(), 0);
            std::swap(perm[i], perm[j]);
            return prim(Prim::Permute, {x}, with_axes(perm));
        }
        case FM_OP_CONCAT: {
            fm_op_attrs attrs = with_axes({single_axis(rank(x), 0)});
            return prim(Prim::Concat, in, attrs);
        }
        case FM_OP_SLICE: {
            size_t r = rank(x);
            fm_op_attrs attrs = a;
            for (size_t i = 0; i < r; ++i) {
                attrs.starts[i] = 0;
                attrs.ends[i] = INT64_MAX;
            }
            std::vector<int> listed;
            for (size_t i = 0; i < a.num_axes; ++i) {
                int axis = normalize_axis(a.axes[i], r, origin);
                attrs.starts[axis] = a.starts[i];
                attrs.ends[axis] = a.ends[i];
            }
            attrs.num_axes = 0;
            return prim(Prim::Slice, {x}, attrs);
        }
        case FM_OP_PAD:
            for (size_t i = 0; i < rank(x); ++i) {
                if (a.pad_before[i] < 0 || a.pad_after[i] < 0) bad(FM_ERR_INVALID_ARGUMENT, "padding must not be negative");
            }
            return prim(Prim::Pad, {x}, a);
        case FM_OP_BROADCAST_TO:
            if (a.rank > FM_MAX_RANK) bad(FM_ERR_INVALID_ARGUMENT, "rank exceeds FM_MAX_RANK");
            return prim(Prim::BroadcastLike, {x}, a);
        case FM_OP_SQUEEZE:
            return prim(Prim::Squeeze, {x}, with_axes(axes(rank(x), false)));
        case FM_OP_UNSQUEEZE: {
            size_t out_rank = rank(x) + a.num_axes;
            std::vector<int> list = axes(out_rank, false);
            return prim(Prim::Unsqueeze, {x}, with_axes(list));
        }
        case FM_OP_SUM:
        case FM_OP_MAX:
        case FM_OP_MIN: {
            Prim p = op == FM_OP_SUM ? Prim::ReduceSum : (op == FM_OP_MAX ? Prim::ReduceMax : Prim::ReduceMin);
            fm_op_attrs attrs = with_axes(axes(rank(x)));
            attrs.keep_dims = a.keep_dims;
            return prim(p, {x}, attrs);
        }
        case FM_OP_MEAN:
            return mean(x, axes(rank(x)), a.keep_dims);
        case FM_OP_VARIANCE: {
            std::vector<int> list = axes(rank(x));
            uint32_t centered = sub(x, mean(x, list, true));
            uint32_t squares = sum(mul(centered, centered), list, a.keep_dims);
            return div(squares, add(count(x, list), -double(a.correction)));
        }
        case FM_OP_ARGMAX: {
            fm_op_attrs attrs = with_axes({single_axis(rank(x), -1)});
            attrs.keep_dims = a.keep_dims;
            return prim(Prim::ArgMax, {x}, attrs);
        }
        case FM_OP_BATCH_NORM: {
            uint32_t gamma = in[1], beta = in[2], running_mean = in[3], running_var = in[4];
            if (rank(x) < 2) bad(FM_ERR_SHAPE_MISMATCH, "x must be [n, c, ...], got " + to_string(shape(x)));
            Shape channels{shape(x)[1]};
            for (uint32_t p : {gamma, beta, running_mean, running_var}) {
                if (shape(p) != channels) {
                    bad(FM_ERR_SHAPE_MISMATCH, "gamma, beta and the running statistics must be " +
                                                   to_string(channels) + ", got " + to_string(shape(p)));
                }
            }
            for (uint32_t p : {running_mean, running_var}) {
                if (g.node(p).prim != Prim::Variable) bad(FM_ERR_INVALID_ARGUMENT, "the running statistics must be variables");
            }
            std::vector<int> reduce_axes{0};
            for (size_t i = 2; i < rank(x); ++i) reduce_axes.push_back(int(i));
            std::vector<int> spread = after_axes(rank(x));
            auto per_channel = [&](uint32_t v) { return unsqueeze(v, spread); };
            if (!a.training) {
                uint32_t scale = mul(prim(Prim::Rsqrt, {add(running_var, a.eps)}), gamma);
                return add(mul(sub(x, per_channel(running_mean)), per_channel(scale)), per_channel(beta));
            }
            uint32_t batch_mean = mean(x, reduce_axes, true);
            uint32_t centered = sub(x, batch_mean);
            uint32_t n = count(x, reduce_axes);
            uint32_t batch_var = div(sum(mul(centered, centered), reduce_axes, true), n);
            uint32_t inv_std = prim(Prim::Rsqrt, {add(batch_var, a.eps)});
            // The statistics' share of the gradient is BatchNormalize's (see
            // graph.h), so none flows through them.
            uint32_t normalized = prim(Prim::BatchNormalize, {x, prim(Prim::StopGradient, {batch_mean}),
                                                              prim(Prim::StopGradient, {inv_std})});
            uint32_t y = add(mul(normalized, per_channel(gamma)), per_channel(beta));
            // Running statistics: PyTorch's convention, unbiased variance.
            uint32_t m = prim(Prim::StopGradient, {reshape_like(batch_mean, running_mean)});
            uint32_t unbiased = mul(batch_var, div(n, add(n, -1.0)));
            uint32_t v = prim(Prim::StopGradient, {reshape_like(unbiased, running_var)});
            uint32_t keep = scalar(1.0 - a.momentum), take = scalar(a.momentum);
            g.add_effect(y, prim(Prim::Assign, {running_mean, add(mul(running_mean, keep), mul(m, take))}));
            g.add_effect(y, prim(Prim::Assign, {running_var, add(mul(running_var, keep), mul(v, take))}));
            return y;
        }
        case FM_OP_LAYER_NORM: {
            int64_t k = a.normalized_rank;
            if (k < 1 || size_t(k) > rank(x)) bad(FM_ERR_INVALID_ARGUMENT, "normalized_rank must be in [1, rank of x]");
            Shape tail(shape(x).end() - k, shape(x).end());
            for (uint32_t p : {in[1], in[2]}) {
                if (shape(p) != tail) bad(FM_ERR_SHAPE_MISMATCH, "gamma and beta must be " + to_string(tail) + ", got " + to_string(shape(p)));
            }
            std::vector<int> list;
            for (size_t i = rank(x) - k; i < rank(x); ++i) list.push_back(int(i));
            uint32_t centered = sub(x, mean(x, list, true));
            uint32_t var = mean(mul(centered, centered), list, true);
            uint32_t normalized = mul(centered, prim(Prim::Rsqrt, {add(var, a.eps)}));
            return add(mul(normalized, in[1]), in[2]);
        }
        case FM_OP_DROPOUT:
            if (!(a.p >= 0.0 && a.p <= 1.0)) bad(FM_ERR_INVALID_ARGUMENT, "p must be in [0, 1]");
            if (!a.training || a.p == 0.0) return x;
            if (a.p == 1.0) return mul(x, 0.0);
            return mul(x, prim(Prim::DropoutMask, {x}, a));
        case FM_OP_EMBEDDING:
            return prim(Prim::GatherRows, in, a);
        case FM_OP_ONE_HOT:
            return prim(Prim::OneHot, {x}, a);
        case FM_OP_SOFTMAX_CROSS_ENTROPY: {
            uint32_t labels = in[1];
            if (!(a.label_smoothing >= 0.0 && a.label_smoothing <= 1.0)) bad(FM_ERR_INVALID_ARGUMENT, "label_smoothing must be in [0, 1]");
            if (rank(x) < 2) bad(FM_ERR_SHAPE_MISMATCH, "logits must be [n, classes, ...], got " + to_string(shape(x)));
            fm_op_attrs axis1 = with_axes({1});
            uint32_t log_probs = prim(Prim::LogSoftmax, {x}, axis1);
            uint32_t loss = neg(prim(Prim::Pick, {log_probs, labels}));
            if (a.label_smoothing > 0.0) {
                uint32_t smooth = neg(div(sum(log_probs, {1}, false), scalar(double(shape(x)[1]))));
                loss = add(mul(loss, 1.0 - a.label_smoothing), mul(smooth, a.label_smoothing));
            }
            return reduce_loss(loss, labels);
        }
        case FM_OP_CATEGORICAL_CROSS_ENTROPY: {
            same_shapes(x, in[1], "probabilities and targets");
            // Probabilities are clamped to 1e-7 first, as Keras does, so a
            // zero probability gives a large finite loss instead of inf.
            fm_op_attrs clamp = default_attrs();
            clamp.min = 1e-7;
            clamp.max = 1.0;
            uint32_t log_p = unary(Prim::Log, prim(Prim::Clamp, {x}, clamp));
            uint32_t per_row = neg(sum(mul(in[1], log_p), {1}, false));
            return reduce_loss(per_row, per_row);
        }
        case FM_OP_BINARY_CROSS_ENTROPY: {
            same_shapes(x, in[1], "probabilities and targets");
            // PyTorch clamps each log term at -100.
            fm_op_attrs floor = default_attrs();
            floor.min = -100.0;
            uint32_t log_p = prim(Prim::Clamp, {unary(Prim::Log, x)}, floor);
            uint32_t log_q = prim(Prim::Clamp, {unary(Prim::Log, sub(scalar(1.0), x))}, floor);
            uint32_t t = in[1];
            uint32_t per = neg(add(mul(t, log_p), mul(sub(scalar(1.0), t), log_q)));
            return reduce_loss(per, per);
        }
        case FM_OP_BCE_WITH_LOGITS: {
            same_shapes(x, in[1], "logits and targets");
            // max(x, 0) - x t + log(1 + exp(-|x|)): no overflow for any x.
            uint32_t per = add(sub(unary(Prim::Relu, x), mul(x, in[1])),
                               unary(Prim::Softplus, neg(unary(Prim::Abs, x))));
            return reduce_loss(per, per);
        }
        case FM_OP_MSE:
        case FM_OP_MAE:
        case FM_OP_HUBER: {
            same_shapes(x, in[1], "predictions and targets");
            uint32_t diff = sub(x, in[1]);
            uint32_t per;
            if (op == FM_OP_MSE) {
                per = mul(diff, diff);
            } else if (op == FM_OP_MAE) {
                per = unary(Prim::Abs, diff);
            } else {
                if (!(a.delta > 0)) bad(FM_ERR_INVALID_ARGUMENT, "delta must be positive");
                uint32_t d = unary(Prim::Abs, diff);
                uint32_t quadratic = mul(mul(diff, diff), 0.5);
                uint32_t linear = mul(add(d, -0.5 * a.delta), a.delta);
                per = where(prim(Prim::Less, {d, scalar(a.delta)}), quadratic, linear);
            }
            return reduce_loss(per, per);
        }
        case FM_OP_ASSIGN:
            if (g.node(x).prim != Prim::Variable) bad(FM_ERR_INVALID_ARGUMENT, "the first input must be a variable");
            return prim(Prim::Assign, in, a);
        case FM_OP_GROUP:
            return prim(Prim::Group, in, a);
        case FM_OP_STOP_GRADIENT:
            return prim(Prim::StopGradient, {x}, a);
        default:
            break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "argument 'op': unknown op ", int(op));
}

}  // namespace

const char *op_name(fm_op op) {
    const char *name = op_info(op).name;
    return name ? name : "unknown";
}

uint32_t build_op(Graph &graph, fm_op op, const std::vector<uint32_t> &inputs, fm_op_attrs attrs) {
    OpInfo info = op_info(op);
    if (info.name == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'op': unknown op ", int(op));
    if (int(inputs.size()) < info.min_inputs || int(inputs.size()) > info.max_inputs) {
        fail(FM_ERR_INVALID_ARGUMENT, info.name, ": expects ", info.min_inputs,
             info.min_inputs == info.max_inputs ? "" : " or more", " inputs, got ", inputs.size());
    }
    if (static_cast<unsigned>(attrs.reduction) >= FM_REDUCTION_COUNT) {
        fail(FM_ERR_INVALID_ARGUMENT, info.name, ": unknown reduction ", int(attrs.reduction));
    }
    // The attribute arrays hold FM_MAX_RANK entries: every op reads at most
    // num_axes of axes/starts/ends and rank of shape.
    if (attrs.num_axes > FM_MAX_RANK) {
        fail(FM_ERR_INVALID_ARGUMENT, info.name, ": num_axes ", attrs.num_axes, " exceeds FM_MAX_RANK (", FM_MAX_RANK, ")");
    }
    if (attrs.rank > FM_MAX_RANK) {
        fail(FM_ERR_INVALID_ARGUMENT, info.name, ": rank ", attrs.rank, " exceeds FM_MAX_RANK (", FM_MAX_RANK, ")");
    }
    OpBuilder builder(graph, info.name, inputs, attrs);
    return builder.build(op);
}

}  // namespace fm
