// Shape and dtype inference of every primitive, on concrete shapes.
#include <algorithm>

#include "error.h"
#include "graph.h"

namespace fm {

namespace {

using Shapes = std::vector<const Shape *>;

void expect_inputs(const Shapes &shapes, size_t count, const char *origin) {
    if (shapes.size() != count) {
        fail(FM_ERR_INVALID_ARGUMENT, origin, ": expects ", count, " inputs, got ", shapes.size());
    }
}

void expect_dtype(fm_dtype dtype, fm_dtype wanted, const char *origin, const char *input) {
    if (dtype != wanted) {
        fail(FM_ERR_DTYPE_MISMATCH, origin, ": input '", input, "' must be ", fm_dtype_str(wanted),
             ", not ", fm_dtype_str(dtype));
    }
}

// The layout kernels (slice, concat, broadcast) move 4-byte elements.
void expect_four_bytes(fm_dtype dtype, const char *origin, const char *input) {
    if (dtype != FM_DTYPE_F32 && dtype != FM_DTYPE_I32) {
        fail(FM_ERR_DTYPE_MISMATCH, origin, ": input '", input, "' must be f32 or i32, not ", fm_dtype_str(dtype));
    }
}

void expect_rank(const Shape &shape, size_t rank, const char *origin, const char *input) {
    if (shape.size() != rank) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": input '", input, "' must have rank ", rank,
             ", its shape is ", to_string(shape));
    }
}

std::string all_shapes(const Shapes &shapes) {
    std::string text;
    for (size_t i = 0; i < shapes.size(); ++i) text += (i ? ", " : "") + to_string(*shapes[i]);
    return text;
}

// True if `small` broadcasts to `big`.
bool broadcasts_to(const Shape &small, const Shape &big) {
    if (small.size() > big.size()) return false;
    size_t offset = big.size() - small.size();
    for (size_t i = 0; i < small.size(); ++i) {
        if (small[i] != 1 && small[i] != big[i + offset]) return false;
    }
    return true;
}

Shape reduced(const Shape &shape, const fm_op_attrs &attrs) {
    uint32_t mask = axes_mask(attrs, shape.size());
    Shape out;
    for (size_t i = 0; i < shape.size(); ++i) {
        if (mask & (1u << i)) {
            if (attrs.keep_dims) out.push_back(1);
        } else {
            out.push_back(shape[i]);
        }
    }
    return out;
}

Shape reshaped(const Shape &from, const fm_op_attrs &attrs, const char *origin) {
    Shape to(attrs.shape, attrs.shape + attrs.rank);
    int64_t known = 1;
    int inferred = -1;
    for (size_t i = 0; i < to.size(); ++i) {
        if (to[i] == -1) {
            if (inferred >= 0) fail(FM_ERR_INVALID_ARGUMENT, origin, ": more than one -1 in the shape");
            inferred = static_cast<int>(i);
        } else if (to[i] < 0) {
            fail(FM_ERR_INVALID_ARGUMENT, origin, ": dim ", i, " of the target shape is ", to[i]);
        } else {
            known *= to[i];
        }
    }
    int64_t count = element_count(from);
    if (inferred >= 0 && known > 0 && count % known == 0) to[inferred] = count / known;
    if (element_count(to) != count || (inferred >= 0 && known == 0)) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": cannot reshape ", to_string(from), " (", count,
             " elements) to ", to_string(Shape(attrs.shape, attrs.shape + attrs.rank)));
    }
    return to;
}

Inferred infer_conv(const fm_op_attrs &a, const Shape &x, const Shape &w, const char *origin) {
    expect_rank(x, 4, origin, "x");
    expect_rank(w, 4, origin, "weight");
    if (a.groups < 1 || x[1] % a.groups != 0 || w[0] % a.groups != 0) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": groups ", a.groups, " must divide the input channels (",
             x[1], ") and output channels (", w[0], ")");
    }
    int64_t channels = 0;
    if (__builtin_mul_overflow(w[1], a.groups, &channels) || channels != x[1]) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": input ", to_string(x), " has ", x[1], " channels but weight ",
             to_string(w), " expects dim 1 (", w[1], ") x groups (", a.groups, ")");
    }
    int64_t oh = window_output(x[2], w[2], a.stride[0], a.padding[0], a.dilation[0]);
    int64_t ow = window_output(x[3], w[3], a.stride[1], a.padding[1], a.dilation[1]);
    if (oh <= 0 || ow <= 0) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": kernel ", to_string({w[2], w[3]}),
             " does not fit the padded input ", to_string(x));
    }
    return {{x[0], w[0], oh, ow}, FM_DTYPE_F32};
}

Inferred infer_pool(const fm_op_attrs &a, const Shape &x, const char *origin) {
    expect_rank(x, 4, origin, "x");
    int64_t oh = window_output(x[2], a.kernel_size[0], a.stride[0], a.padding[0], a.dilation[0]);
    int64_t ow = window_output(x[3], a.kernel_size[1], a.stride[1], a.padding[1], a.dilation[1]);
    if (oh <= 0 || ow <= 0) {
        fail(FM_ERR_SHAPE_MISMATCH, origin, ": window ", to_string({a.kernel_size[0], a.kernel_size[1]}),
             " does not fit the padded input ", to_string(x));
    }
    return {{x[0], x[1], oh, ow}, FM_DTYPE_F32};
}

}  // namespace

uint32_t axes_mask(const fm_op_attrs &attrs, size_t rank) {
    if (attrs.num_axes == 0) return (1u << rank) - 1;
    uint32_t mask = 0;
    for (size_t i = 0; i < attrs.num_axes; ++i) mask |= 1u << attrs.axes[i];
    return mask;
}

void resolve_slice(const Shape &shape, const fm_op_attrs &attrs, int64_t *starts, Shape *result) {
    result->resize(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) {
        int64_t size = shape[i];
        int64_t start = attrs.starts[i] < 0 ? attrs.starts[i] + size : attrs.starts[i];
        int64_t end = attrs.ends[i] < 0 ? attrs.ends[i] + size : attrs.ends[i];
        start = std::clamp<int64_t>(start, 0, size);
        end = std::clamp<int64_t>(end, start, size);
        starts[i] = start;
        (*result)[i] = end - start;
    }
}

int64_t window_output(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
    // In 128 bits: a hostile weight shape times the dilation overflows 64.
    __int128 span = __int128(dilation) * (kernel - 1) + 1, padded = __int128(in) + 2 * __int128(pad);
    if (padded < span || stride <= 0) return 0;
    return int64_t((padded - span) / stride + 1);
}

Inferred infer(Prim prim, const fm_op_attrs &a, const Shapes &s, const std::vector<fm_dtype> &d,
               const char *origin) {
    if (prim_is_elementwise(prim) && prim != Prim::DropoutMask) {
        const bool ternary = prim == Prim::Where || prim == Prim::BatchNormalize;
        size_t arity = ternary ? 3 : (prim >= Prim::Add ? 2 : 1);
        expect_inputs(s, arity, origin);
        Shape out = *s[0];
        for (size_t i = 1; i < arity; ++i) out = broadcast_shapes(out, *s[i], origin);
        for (size_t i = prim == Prim::Where ? 1 : 0; i < arity; ++i) {
            expect_dtype(d[i], FM_DTYPE_F32, origin, i == 0 ? "a" : (i == 1 ? "b" : "c"));
        }
        if (prim == Prim::BatchNormalize && s[0]->size() >= 2 && element_count(*s[0]) == (*s[0])[1]) {
            // One value per channel: its variance is 0 and the unbiased
            // running variance divides by 0 (PyTorch refuses this too).
            fail(FM_ERR_SHAPE_MISMATCH, origin, ": training needs more than one value per channel, got ",
                 to_string(*s[0]), " (a batch of one without spatial dims; use eval mode or a larger batch)");
        }
        return {out, FM_DTYPE_F32};
    }
    switch (prim) {
        case Prim::DropoutMask:
        case Prim::StopGradient:
            expect_inputs(s, 1, origin);
            return {*s[0], d[0]};
        case Prim::MatMul: {
            expect_inputs(s, 2, origin);
            const Shape &x = *s[0], &y = *s[1];
            if (x.size() < 2 || y.size() < 2) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": inputs need rank >= 2, got ", all_shapes(s));
            }
            int64_t m = a.transpose_a ? x[x.size() - 1] : x[x.size() - 2];
            int64_t k = a.transpose_a ? x[x.size() - 2] : x[x.size() - 1];
            int64_t k2 = a.transpose_b ? y[y.size() - 1] : y[y.size() - 2];
            int64_t n = a.transpose_b ? y[y.size() - 2] : y[y.size() - 1];
            if (k != k2) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": inner dims differ: ", to_string(x),
                     a.transpose_a ? "ᵀ" : "", " x ", to_string(y), a.transpose_b ? "ᵀ" : "",
                     " (", k, " vs ", k2, ")");
            }
            Shape batch = broadcast_shapes(Shape(x.begin(), x.end() - 2), Shape(y.begin(), y.end() - 2), origin);
            batch.push_back(m);
            batch.push_back(n);
            for (size_t i = 0; i < 2; ++i) expect_dtype(d[i], FM_DTYPE_F32, origin, i ? "b" : "a");
            return {batch, FM_DTYPE_F32};
        }
        case Prim::Conv2d:
            expect_inputs(s, 2, origin);
            return infer_conv(a, *s[0], *s[1], origin);
        case Prim::Conv2dBackwardInput: {
            expect_inputs(s, 2, origin);
            const Shape &dy = *s[0], &w = *s[1];
            expect_rank(dy, 4, origin, "x");
            expect_rank(w, 4, origin, "weight");
            if (dy[1] != w[0]) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": input ", to_string(dy), " has ", dy[1],
                     " channels but weight ", to_string(w), " expects ", w[0], " (dim 0)");
            }
            int64_t channels = 0;
            if (a.groups < 1 || __builtin_mul_overflow(w[1], a.groups, &channels)) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": weight ", to_string(w), " x groups ", a.groups, " is out of range");
            }
            Shape x{dy[0], channels, a.shape[0], a.shape[1]};
            if (infer_conv(a, x, w, origin).shape != dy) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": ", to_string(dy), " is not the convolution output of ",
                     to_string(x));
            }
            return {x, FM_DTYPE_F32};
        }
        case Prim::Conv2dBackwardWeight: {
            expect_inputs(s, 2, origin);
            const Shape &x = *s[0], &dy = *s[1];
            expect_rank(x, 4, origin, "x");
            Shape w{dy[1], x[1] / a.groups, a.shape[0], a.shape[1]};
            if (infer_conv(a, x, w, origin).shape != dy) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": gradient ", to_string(dy), " does not match ",
                     to_string(x), " convolved with ", to_string(w));
            }
            return {w, FM_DTYPE_F32};
        }
        case Prim::MaxPool2d:
        case Prim::AvgPool2d:
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            return infer_pool(a, *s[0], origin);
        case Prim::MaxPool2dBackward:
            expect_inputs(s, 2, origin);
            infer_pool(a, *s[0], origin);
            return {*s[0], FM_DTYPE_F32};
        case Prim::AvgPool2dBackward: {
            expect_inputs(s, 1, origin);
            Shape x{(*s[0])[0], (*s[0])[1], a.shape[0], a.shape[1]};
            if (infer_pool(a, x, origin).shape != *s[0]) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": gradient ", to_string(*s[0]), " does not match ",
                     to_string(x));
            }
            return {x, FM_DTYPE_F32};
        }
        case Prim::ReduceSum:
        case Prim::ReduceMax:
        case Prim::ReduceMin:
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            return {reduced(*s[0], a), FM_DTYPE_F32};
        case Prim::ArgMax:
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            return {reduced(*s[0], a), FM_DTYPE_I32};
        case Prim::ReduceToLike:
            expect_inputs(s, 2, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            if (!broadcasts_to(*s[1], *s[0])) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": ", to_string(*s[1]), " does not broadcast to ",
                     to_string(*s[0]));
            }
            return {*s[1], d[0]};
        case Prim::BroadcastLike: {
            Shape target = s.size() == 2 ? *s[1] : Shape(a.shape, a.shape + a.rank);
            if (s.empty() || s.size() > 2 || !broadcasts_to(*s[0], target)) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": ", s.empty() ? "nothing" : to_string(*s[0]),
                     " does not broadcast to ", to_string(target));
            }
            expect_four_bytes(d[0], origin, "x");
            return {target, d[0]};
        }
        case Prim::ElementCount:
            expect_inputs(s, 1, origin);
            return {{}, FM_DTYPE_F32};
        case Prim::Flatten: {
            expect_inputs(s, 1, origin);
            if (s[0]->empty()) fail(FM_ERR_SHAPE_MISMATCH, origin, ": cannot flatten a scalar");
            Shape out{(*s[0])[0], 1};
            for (size_t i = 1; i < s[0]->size(); ++i) out[1] *= (*s[0])[i];
            return {out, d[0]};
        }
        case Prim::Squeeze: {
            expect_inputs(s, 1, origin);
            Shape out;
            uint32_t mask = 0;
            for (size_t i = 0; i < a.num_axes; ++i) mask |= 1u << a.axes[i];
            for (size_t i = 0; i < s[0]->size(); ++i) {
                int64_t dim = (*s[0])[i];
                bool listed = a.num_axes == 0 ? dim == 1 : (mask >> i) & 1;
                if (listed && dim != 1) {
                    fail(FM_ERR_SHAPE_MISMATCH, origin, ": dim ", i, " of ", to_string(*s[0]),
                         " is ", dim, ", not 1");
                }
                if (!listed) out.push_back(dim);
            }
            return {out, d[0]};
        }
        case Prim::Unsqueeze: {
            expect_inputs(s, 1, origin);
            size_t rank = s[0]->size() + a.num_axes;
            uint32_t mask = 0;
            for (size_t i = 0; i < a.num_axes; ++i) {
                // Resolved axes of the result, each once (the builders make
                // them so; checked because the loop below relies on it).
                if (a.axes[i] < 0 || size_t(a.axes[i]) >= rank || (mask >> a.axes[i] & 1)) {
                    fail(FM_ERR_INVALID_ARGUMENT, origin, ": unsqueeze axis ", a.axes[i], " is out of range for rank ",
                         rank, " or listed twice");
                }
                mask |= 1u << a.axes[i];
            }
            Shape out;
            size_t next = 0;
            for (size_t i = 0; i < rank; ++i) out.push_back((mask >> i) & 1 ? 1 : (*s[0])[next++]);
            return {out, d[0]};
        }
        case Prim::SliceBackward:
            expect_inputs(s, 2, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "dy");
            return {*s[1], d[0]};
        case Prim::Reshape:
            if (s.size() == 2) {
                if (element_count(*s[0]) != element_count(*s[1])) {
                    fail(FM_ERR_SHAPE_MISMATCH, origin, ": cannot reshape ", to_string(*s[0]), " to ",
                         to_string(*s[1]));
                }
                return {*s[1], d[0]};
            }
            expect_inputs(s, 1, origin);
            return {reshaped(*s[0], a, origin), d[0]};
        case Prim::Permute: {
            expect_inputs(s, 1, origin);
            Shape out;
            for (size_t i = 0; i < a.num_axes; ++i) out.push_back((*s[0])[a.axes[i]]);
            return {out, d[0]};
        }
        case Prim::Slice: {
            expect_inputs(s, 1, origin);
            int64_t starts[FM_MAX_RANK];
            Shape out;
            resolve_slice(*s[0], a, starts, &out);
            expect_four_bytes(d[0], origin, "x");
            return {out, d[0]};
        }
        case Prim::Pad: {
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            Shape out = *s[0];
            for (size_t i = 0; i < out.size(); ++i) out[i] += a.pad_before[i] + a.pad_after[i];
            return {out, d[0]};
        }
        case Prim::Concat: {
            if (s.empty()) fail(FM_ERR_INVALID_ARGUMENT, origin, ": needs at least one input");
            expect_four_bytes(d[0], origin, "inputs");
            int axis = static_cast<int>(a.axes[0]);
            Shape out = *s[0];
            for (size_t i = 1; i < s.size(); ++i) {
                const Shape &other = *s[i];
                bool fits = other.size() == out.size() && d[i] == d[0];
                for (size_t k = 0; fits && k < out.size(); ++k) fits = int(k) == axis || other[k] == out[k];
                if (!fits) {
                    fail(FM_ERR_SHAPE_MISMATCH, origin, ": inputs ", all_shapes(s),
                         " differ outside the concatenation axis ", axis);
                }
                out[axis] += other[axis];
            }
            return {out, d[0]};
        }
        case Prim::Softmax:
        case Prim::LogSoftmax:
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_F32, origin, "x");
            return {*s[0], FM_DTYPE_F32};
        case Prim::GatherRows: {
            expect_inputs(s, 2, origin);
            expect_rank(*s[0], 2, origin, "table");
            expect_dtype(d[1], FM_DTYPE_I32, origin, "indices");
            Shape out = *s[1];
            out.push_back((*s[0])[1]);
            return {out, d[0]};
        }
        case Prim::ScatterAddRows:
            expect_inputs(s, 2, origin);
            return {{a.shape[0], a.shape[1]}, FM_DTYPE_F32};
        case Prim::OneHot: {
            expect_inputs(s, 1, origin);
            expect_dtype(d[0], FM_DTYPE_I32, origin, "indices");
            if (a.depth <= 0) fail(FM_ERR_INVALID_ARGUMENT, origin, ": depth must be positive, got ", a.depth);
            Shape out = *s[0];
            out.push_back(a.depth);
            return {out, FM_DTYPE_F32};
        }
        case Prim::Pick: {
            expect_inputs(s, 2, origin);
            expect_dtype(d[1], FM_DTYPE_I32, origin, "labels");
            Shape without = *s[0];
            if (without.size() < 2) fail(FM_ERR_SHAPE_MISMATCH, origin, ": logits need rank >= 2, got ", to_string(without));
            without.erase(without.begin() + 1);
            if (without != *s[1]) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": labels ", to_string(*s[1]), " do not fit logits ",
                     to_string(*s[0]), " (expected labels of shape ", to_string(without), ")");
            }
            return {*s[1], FM_DTYPE_F32};
        }
        case Prim::PickBackward: {
            expect_inputs(s, 2, origin);
            Shape x = *s[1];
            x.insert(x.begin() + 1, a.depth);
            return {x, FM_DTYPE_F32};
        }
        case Prim::Assign:
            expect_inputs(s, 2, origin);
            if (*s[0] != *s[1] || d[0] != d[1]) {
                fail(FM_ERR_SHAPE_MISMATCH, origin, ": variable ", to_string(*s[0]), " ", fm_dtype_str(d[0]),
                     " cannot take a value ", to_string(*s[1]), " ", fm_dtype_str(d[1]));
            }
            return {{}, FM_DTYPE_F32};
        case Prim::Group:
            return {{}, FM_DTYPE_F32};
        default:
            break;
    }
    fail(FM_ERR_INTERNAL, origin, ": no shape inference for primitive ", prim_name(prim));
}

}  // namespace fm
