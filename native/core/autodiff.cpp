// Reverse-mode differentiation over primitives. Each rule adds the
// gradient of a node's inputs as more primitives, so the backward pass is
// planned and fused like the forward one.
#include <map>

#include "builder.h"
#include "error.h"

namespace fm {

namespace {

class Differentiator : public Builder {
public:
    Differentiator(Graph &graph) : Builder(graph, "gradients") {}

    // Adds `grad` to what flows into `value`.
    void accumulate(uint32_t value, uint32_t grad) {
        auto found = grads.find(value);
        grads[value] = found == grads.end() ? grad : add(found->second, grad);
    }

    fm_op_attrs attrs_of(uint32_t node) { return g.node(node).attrs; }

    // A forward value a gradient reads. A normalised BatchNorm input is
    // computed again from x (which the backward pass reads anyway) so that
    // the forward pass need not store it: one pass less over the largest
    // activations each way.
    uint32_t recomputed(uint32_t value) {
        const Node &node = g.node(value);
        if (node.prim != Prim::BatchNormalize) return value;
        const std::vector<uint32_t> inputs = node.inputs;
        return prim(Prim::BatchNormalize, inputs);
    }

    // Pushes the gradient `gy` of node `y` to its inputs.
    void backprop(uint32_t y, uint32_t gy);

    std::map<uint32_t, uint32_t> grads;
    std::vector<bool> relevant;
};

void Differentiator::backprop(uint32_t y, uint32_t gy) {
    const Node node = g.node(y);  // copy: adding nodes may move the storage
    const std::vector<uint32_t> &in = node.inputs;
    auto to = [&](size_t i, uint32_t grad) {
        if (relevant[in[i]]) accumulate(in[i], reduce_to(grad, in[i]));
    };
    uint32_t x = in.empty() ? 0 : in[0];
    fm_op_attrs a = node.attrs;
    switch (node.prim) {
        case Prim::Neg: return to(0, neg(gy));
        case Prim::Abs: return to(0, mul(gy, unary(Prim::Sign, x)));
        case Prim::Exp: return to(0, mul(gy, y));
        case Prim::Log: return to(0, div(gy, x));
        case Prim::Sqrt: return to(0, div(gy, mul(y, 2.0)));
        case Prim::Rsqrt: return to(0, mul(gy, mul(pow(y, 3.0), -0.5)));
        case Prim::Pow: return to(0, mul(gy, mul(pow(x, a.exponent - 1.0), a.exponent)));
        case Prim::Clamp: {
            uint32_t inside = prim(Prim::Mul, {prim(Prim::GreaterEqual, {x, scalar(a.min)}),
                                               prim(Prim::LessEqual, {x, scalar(a.max)})});
            return to(0, mul(gy, inside));
        }
        case Prim::Relu: return to(0, mul(gy, unary(Prim::Step, x)));
        case Prim::LeakyRelu:
            return to(0, where(unary(Prim::Step, x), gy, mul(gy, a.slope)));
        case Prim::Elu:
            return to(0, where(unary(Prim::Step, x), gy, mul(gy, add(y, a.alpha))));
        case Prim::Sigmoid: return to(0, mul(gy, mul(y, sub(scalar(1.0), y))));
        case Prim::Tanh: return to(0, mul(gy, sub(scalar(1.0), mul(y, y))));
        case Prim::Silu: {
            uint32_t s = unary(Prim::Sigmoid, x);
            return to(0, mul(gy, mul(s, add(mul(x, sub(scalar(1.0), s)), 1.0))));
        }
        case Prim::GeluErf: return to(0, mul(gy, unary(Prim::GeluErfDerivative, x)));
        case Prim::GeluTanh: return to(0, mul(gy, unary(Prim::GeluTanhDerivative, x)));
        case Prim::Softplus: return to(0, mul(gy, unary(Prim::Sigmoid, x)));
        case Prim::Add: to(0, gy); return to(1, gy);
        case Prim::Sub: to(0, gy); return to(1, neg(gy));
        case Prim::Mul: to(0, mul(gy, recomputed(in[1]))); return to(1, mul(gy, recomputed(x)));
        case Prim::Div: to(0, div(gy, in[1])); return to(1, neg(div(mul(gy, y), in[1])));
        case Prim::Maximum:
        case Prim::Minimum: {
            uint32_t first = prim(node.prim == Prim::Maximum ? Prim::GreaterEqual : Prim::LessEqual, {x, in[1]});
            to(0, mul(gy, first));
            return to(1, mul(gy, sub(scalar(1.0), first)));
        }
        case Prim::Where: {
            uint32_t zero = scalar(0.0);
            to(1, where(x, gy, zero));
            return to(2, where(x, zero, gy));
        }
        case Prim::BatchNormalize: {
            // dx = inv_std * (gy - mean(gy) - xhat * mean(gy * xhat)), the
            // means over every axis but 1; xhat is recomputed from x, which
            // the backward pass reads anyway, rather than kept from the
            // forward one.
            const size_t rank = g.node(x).probe[0].size();
            std::vector<int> axes{0};
            for (size_t i = 2; i < rank; ++i) axes.push_back(int(i));
            // Each use gets its own xhat: the two fall into different passes
            // (the sums come between), and recomputing beats storing.
            uint32_t mean = in[1], inv_std = in[2];
            auto xhat = [&] { return prim(Prim::BatchNormalize, {x, mean, inv_std}); };
            uint32_t n = count(x, axes);
            uint32_t mean_gy = div(sum(gy, axes, true), n);
            uint32_t mean_gy_xhat = div(sum(mul(gy, xhat()), axes, true), n);
            return to(0, mul(inv_std, sub(sub(gy, mean_gy), mul(xhat(), mean_gy_xhat))));
        }
        case Prim::MatMul: {
            uint32_t A = x, B = in[1];
            fm_op_attrs ga = default_attrs(), gb = default_attrs();
            uint32_t da, db;
            if (!a.transpose_a && !a.transpose_b) {
                gb.transpose_b = 1;
                da = prim(Prim::MatMul, {gy, B}, gb);
                ga.transpose_a = 1;
                db = prim(Prim::MatMul, {A, gy}, ga);
            } else if (a.transpose_a && !a.transpose_b) {
                gb.transpose_b = 1;
                da = prim(Prim::MatMul, {B, gy}, gb);
                db = prim(Prim::MatMul, {A, gy});
            } else if (!a.transpose_a && a.transpose_b) {
                da = prim(Prim::MatMul, {gy, B});
                ga.transpose_a = 1;
                db = prim(Prim::MatMul, {gy, A}, ga);
            } else {
                ga.transpose_a = ga.transpose_b = 1;
                da = prim(Prim::MatMul, {B, gy}, ga);
                db = prim(Prim::MatMul, {gy, A}, ga);
            }
            to(0, da);
            return to(1, db);
        }
        case Prim::Conv2d: {
            const Shape &xs = g.node(x).probe[0], &ws = g.node(in[1]).probe[0];
            fm_op_attrs input = a, weight = a;
            input.shape[0] = xs[2], input.shape[1] = xs[3];
            weight.shape[0] = ws[2], weight.shape[1] = ws[3];
            if (relevant[x]) to(0, prim(Prim::Conv2dBackwardInput, {gy, in[1]}, input));
            if (relevant[in[1]]) to(1, prim(Prim::Conv2dBackwardWeight, {x, gy}, weight));
            return;
        }
        case Prim::Conv2dBackwardInput: {
            const Shape &ws = g.node(in[1]).probe[0];
            fm_op_attrs weight = a;
            weight.shape[0] = ws[2], weight.shape[1] = ws[3];
            if (relevant[x]) to(0, prim(Prim::Conv2d, {gy, in[1]}, a));
            if (relevant[in[1]]) to(1, prim(Prim::Conv2dBackwardWeight, {gy, x}, weight));
            return;
        }
        case Prim::MaxPool2d: return to(0, prim(Prim::MaxPool2dBackward, {x, gy}, a));
        case Prim::AvgPool2d: {
            const Shape &xs = g.node(x).probe[0];
            a.shape[0] = xs[2], a.shape[1] = xs[3];
            return to(0, prim(Prim::AvgPool2dBackward, {gy}, a));
        }
        case Prim::ReduceSum: {
            uint32_t kept = gy;
            if (!a.keep_dims) {
                std::vector<int> axes;
                uint32_t mask = axes_mask(a, g.node(x).probe[0].size());
                for (int i = 0; i < FM_MAX_RANK; ++i) if (mask >> i & 1) axes.push_back(i);
                kept = unsqueeze(gy, axes);
            }
            return to(0, broadcast_to(kept, x));
        }
        case Prim::ReduceMax:
        case Prim::ReduceMin: {
            uint32_t kept_y = y, kept_g = gy;
            if (!a.keep_dims) {
                std::vector<int> axes;
                uint32_t mask = axes_mask(a, g.node(x).probe[0].size());
                for (int i = 0; i < FM_MAX_RANK; ++i) if (mask >> i & 1) axes.push_back(i);
                kept_y = unsqueeze(y, axes);
                kept_g = unsqueeze(gy, axes);
            }
            // Ties share the gradient equally, as in PyTorch's amax/amin.
            uint32_t hits = prim(Prim::Equal, {x, kept_y});
            fm_op_attrs keep = a;
            keep.keep_dims = 1;
            uint32_t count = prim(Prim::ReduceSum, {hits}, keep);
            return to(0, mul(div(hits, count), kept_g));
        }
        case Prim::ReduceToLike: return to(0, broadcast_to(gy, x));
        case Prim::BroadcastLike: return to(0, gy);  // `to` sums it back down
        case Prim::Reshape:
        case Prim::Flatten:
        case Prim::Squeeze:
        case Prim::Unsqueeze: return to(0, reshape_like(gy, x));
        case Prim::Permute: {
            fm_op_attrs inverse = a;
            for (size_t i = 0; i < a.num_axes; ++i) inverse.axes[a.axes[i]] = int64_t(i);
            return to(0, prim(Prim::Permute, {gy}, inverse));
        }
        case Prim::Slice: return to(0, prim(Prim::SliceBackward, {gy, x}, a));
        case Prim::SliceBackward: return to(0, prim(Prim::Slice, {gy}, a));
        case Prim::Pad: {
            fm_op_attrs cut = a;
            for (size_t i = 0; i < g.node(x).probe[0].size(); ++i) {
                cut.starts[i] = a.pad_before[i];
                cut.ends[i] = a.pad_after[i] ? -a.pad_after[i] : INT64_MAX;
            }
            return to(0, prim(Prim::Slice, {gy}, cut));
        }
        case Prim::Concat: {
            int axis = int(a.axes[0]);
            int64_t offset = 0;
            for (size_t i = 0; i < in.size(); ++i) {
                int64_t size = g.node(in[i]).probe[0][axis];
                if (size != g.node(in[i]).probe[1][axis]) {
                    fail(FM_ERR_UNSUPPORTED, "gradients: concat along the batch dimension is not differentiable");
                }
                fm_op_attrs cut = default_attrs();
                for (size_t d = 0; d < g.node(y).probe[0].size(); ++d) cut.starts[d] = 0, cut.ends[d] = INT64_MAX;
                cut.starts[axis] = offset;
                cut.ends[axis] = offset + size;
                offset += size;
                if (relevant[in[i]]) to(i, prim(Prim::Slice, {gy}, cut));
            }
            return;
        }
        case Prim::Softmax: {
            std::vector<int> axis{int(a.axes[0])};
            return to(0, mul(y, sub(gy, sum(mul(gy, y), axis, true))));
        }
        case Prim::LogSoftmax: {
            std::vector<int> axis{int(a.axes[0])};
            return to(0, sub(gy, mul(unary(Prim::Exp, y), sum(gy, axis, true))));
        }
        case Prim::GatherRows: {
            const Shape &table = g.node(x).probe[0];
            a.shape[0] = table[0], a.shape[1] = table[1];
            return to(0, prim(Prim::ScatterAddRows, {gy, in[1]}, a));
        }
        case Prim::ScatterAddRows: return to(0, prim(Prim::GatherRows, {gy, in[1]}));
        case Prim::Pick: {
            a.depth = g.node(x).probe[0][1];
            return to(0, prim(Prim::PickBackward, {gy, in[1]}, a));
        }
        case Prim::PickBackward: return to(0, prim(Prim::Pick, {gy, in[1]}));
        // No gradient flows through these.
        case Prim::Step: case Prim::Sign: case Prim::Equal: case Prim::NotEqual: case Prim::Less:
        case Prim::LessEqual: case Prim::Greater: case Prim::GreaterEqual: case Prim::DropoutMask:
        case Prim::ArgMax: case Prim::ElementCount: case Prim::OneHot: case Prim::StopGradient:
        case Prim::Assign: case Prim::Group: case Prim::Placeholder: case Prim::Variable:
        case Prim::Constant:
            return;
        default:
            break;
    }
    fail(FM_ERR_UNSUPPORTED, "gradients: ", prim_name(node.prim), " (from ", node.origin,
         ") has no gradient");
}

// Primitives that pass no gradient at all, for pruning.
bool blocks_gradient(Prim prim) {
    switch (prim) {
        case Prim::Step: case Prim::Sign: case Prim::Equal: case Prim::NotEqual: case Prim::Less:
        case Prim::LessEqual: case Prim::Greater: case Prim::GreaterEqual: case Prim::DropoutMask:
        case Prim::ArgMax: case Prim::ElementCount: case Prim::OneHot: case Prim::StopGradient:
        case Prim::Assign: case Prim::Group:
            return true;
        default:
            return false;
    }
}

}  // namespace

std::vector<uint32_t> build_gradients(Graph &graph, uint32_t loss, const std::vector<uint32_t> &wrt) {
    const Node &loss_node = graph.node(loss);
    if (element_count(loss_node.probe[0]) != 1 || graph.has_batch(loss)) {
        fail(FM_ERR_SHAPE_MISMATCH, "argument 'loss' must be a scalar, its shape is ",
             to_string(graph.public_shape(loss)));
    }
    if (loss_node.dtype != FM_DTYPE_F32) fail(FM_ERR_DTYPE_MISMATCH, "argument 'loss' must be f32");
    for (uint32_t w : wrt) {
        if (graph.node(w).dtype != FM_DTYPE_F32) {
            fail(FM_ERR_DTYPE_MISMATCH, "argument 'wrt': gradients exist only for f32 values");
        }
    }
    Differentiator d(graph);
    // Relevant: on a path from some wrt value to the loss.
    size_t end = loss + 1;
    std::vector<bool> from_wrt(end, false);
    for (uint32_t w : wrt) if (w < end) from_wrt[w] = true;
    for (uint32_t i = 0; i < end; ++i) {
        const Node &node = graph.node(i);
        if (from_wrt[i] || blocks_gradient(node.prim)) continue;
        for (uint32_t input : node.inputs) {
            if (from_wrt[input] && !input_is_shape_only(node.prim, 0)) from_wrt[i] = true;
        }
    }
    std::vector<bool> to_loss(end, false);
    to_loss[loss] = true;
    for (uint32_t i = loss + 1; i-- > 0;) {
        if (!to_loss[i]) continue;
        for (uint32_t input : graph.node(i).inputs) to_loss[input] = true;
    }
    d.relevant.assign(end, false);
    for (uint32_t i = 0; i < end; ++i) d.relevant[i] = from_wrt[i] && to_loss[i];

    if (d.relevant[loss]) d.grads[loss] = d.broadcast_to(d.scalar(1.0), loss);
    for (uint32_t i = loss + 1; i-- > 0;) {
        auto grad = d.grads.find(i);
        if (grad == d.grads.end() || !d.relevant[i]) continue;
        if (graph.node(i).prim == Prim::Placeholder || graph.node(i).prim == Prim::Variable ||
            graph.node(i).prim == Prim::Constant) {
            continue;
        }
        d.backprop(i, grad->second);
    }
    std::vector<uint32_t> result;
    for (uint32_t w : wrt) {
        auto grad = d.grads.find(w);
        result.push_back(grad != d.grads.end() ? grad->second : d.zeros_like(w));
    }
    return result;
}

}  // namespace fm
