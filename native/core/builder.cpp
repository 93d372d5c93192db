#include "builder.h"

#include <cmath>

namespace fm {

fm_op_attrs default_attrs() {
    fm_op_attrs a{};
    a.stride[0] = a.stride[1] = 1;
    a.dilation[0] = a.dilation[1] = 1;
    a.groups = 1;
    a.count_include_pad = 1;
    a.training = 1;
    a.normalized_rank = 1;
    a.slope = 0.01;
    a.alpha = 1.0;
    a.exponent = 1.0;
    a.min = -INFINITY;
    a.max = INFINITY;
    a.delta = 1.0;
    a.p = 0.5;
    a.momentum = 0.1;
    a.eps = 1e-5;
    a.reduction = FM_REDUCTION_MEAN;
    return a;
}

uint32_t Builder::prim(Prim p, std::vector<uint32_t> inputs, const fm_op_attrs &attrs) {
    return g.add(p, std::move(inputs), attrs, origin);
}

uint32_t Builder::pow(uint32_t a, double exponent) {
    fm_op_attrs attrs = default_attrs();
    attrs.exponent = exponent;
    return prim(Prim::Pow, {a}, attrs);
}

namespace {
fm_op_attrs axes_attrs(const std::vector<int> &axes, bool keep) {
    fm_op_attrs attrs = default_attrs();
    attrs.num_axes = axes.size();
    for (size_t i = 0; i < axes.size(); ++i) attrs.axes[i] = axes[i];
    attrs.keep_dims = keep;
    return attrs;
}
}  // namespace

uint32_t Builder::sum(uint32_t x, const std::vector<int> &axes, bool keep) {
    return prim(Prim::ReduceSum, {x}, axes_attrs(axes, keep));
}

uint32_t Builder::count(uint32_t x, const std::vector<int> &axes) {
    return prim(Prim::ElementCount, {x}, axes_attrs(axes, false));
}

uint32_t Builder::mean(uint32_t x, const std::vector<int> &axes, bool keep) {
    return div(sum(x, axes, keep), count(x, axes));
}

uint32_t Builder::reduce_to(uint32_t x, uint32_t like) {
    if (g.same_shape(x, like)) return x;
    return prim(Prim::ReduceToLike, {x, like});
}

uint32_t Builder::broadcast_to(uint32_t x, uint32_t like) {
    if (g.same_shape(x, like)) return x;
    return prim(Prim::BroadcastLike, {x, like});
}

uint32_t Builder::reshape_like(uint32_t x, uint32_t like) {
    if (g.same_shape(x, like)) return x;
    return prim(Prim::Reshape, {x, like});
}

uint32_t Builder::unsqueeze(uint32_t x, const std::vector<int> &axes) {
    if (axes.empty()) return x;
    return prim(Prim::Unsqueeze, {x}, axes_attrs(axes, false));
}

}  // namespace fm
