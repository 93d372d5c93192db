#include "kernel_shapes.h"

#include "plan.h"

namespace fm {

namespace {

ConvShape make_conv(const fm_op_attrs &a, const Shape &x, const Shape &w, const Shape &y) {
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

PoolShape make_pool(const fm_op_attrs &a, const Shape &x, const Shape &y) {
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

}  // namespace

Shape padded(const Shape &shape, size_t rank) {
    Shape out(rank - shape.size(), 1);
    out.insert(out.end(), shape.begin(), shape.end());
    return out;
}

uint32_t reduce_to_like_mask(const Shape &x, const Shape &like_shape) {
    Shape like = padded(like_shape, x.size());
    uint32_t mask = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        if (like[i] == 1 && x[i] != 1) mask |= 1u << i;
    }
    return mask;
}

MatmulPlan matmul_plan(const Step &step) {
    const fm_op_attrs &a = step.attrs;
    const Shape &as = step.inputs[0].shape, &bs = step.inputs[1].shape, &ys = step.output.shape;
    size_t rank = ys.size();
    Shape pa = padded(as, rank), pb = padded(bs, rank);
    MatmulPlan plan;
    MatmulShape &m = plan.shape;
    m.m = ys[rank - 2], m.n = ys[rank - 1];
    m.k = a.transpose_a ? as[as.size() - 2] : as[as.size() - 1];
    m.transpose_a = a.transpose_a, m.transpose_b = a.transpose_b;
    int64_t a_size = pa[rank - 2] * pa[rank - 1], b_size = pb[rank - 2] * pb[rank - 1];
    int64_t a_batch = element_count(Shape(pa.begin(), pa.end() - 2));
    int64_t b_batch = element_count(Shape(pb.begin(), pb.end() - 2));
    plan.outputs = element_count(Shape(ys.begin(), ys.end() - 2));
    m.c_batch_stride = m.m * m.n;
    if ((a_batch == plan.outputs || a_batch == 1) && (b_batch == plan.outputs || b_batch == 1)) {
        m.batch = plan.outputs;
        m.a_batch_stride = a_batch == 1 ? 0 : a_size;
        m.b_batch_stride = b_batch == 1 ? 0 : b_size;
    } else {
        plan.mixed = true;
        m.batch = 1;
    }
    return plan;
}

void matrix_offsets(const Step &step, int64_t index, int64_t *a_offset, int64_t *b_offset) {
    const Shape &ys = step.output.shape;
    size_t rank = ys.size();
    Shape pa = padded(step.inputs[0].shape, rank), pb = padded(step.inputs[1].shape, rank);
    int64_t rest = index, a_index = 0, b_index = 0, a_stride = 1, b_stride = 1;
    for (size_t d = rank - 2; d-- > 0;) {
        int64_t at = rest % ys[d];
        rest /= ys[d];
        if (pa[d] != 1) a_index += at * a_stride;
        if (pb[d] != 1) b_index += at * b_stride;
        a_stride *= pa[d];
        b_stride *= pb[d];
    }
    *a_offset = a_index * pa[rank - 2] * pa[rank - 1];
    *b_offset = b_index * pb[rank - 2] * pb[rank - 1];
}

ConvShape conv_shape(const Step &step) {
    const fm_op_attrs &a = step.attrs;
    const Shape &ys = step.output.shape;
    switch (step.prim) {
        case Prim::Conv2dBackwardInput: return make_conv(a, ys, step.inputs[1].shape, step.inputs[0].shape);
        case Prim::Conv2dBackwardWeight: return make_conv(a, step.inputs[0].shape, ys, step.inputs[1].shape);
        default: return make_conv(a, step.inputs[0].shape, step.inputs[1].shape, ys);
    }
}

PoolShape pool_shape(const Step &step) {
    const fm_op_attrs &a = step.attrs;
    switch (step.prim) {
        case Prim::MaxPool2dBackward: return make_pool(a, step.inputs[0].shape, step.inputs[1].shape);
        case Prim::AvgPool2dBackward: return make_pool(a, step.output.shape, step.inputs[0].shape);
        default: return make_pool(a, step.inputs[0].shape, step.output.shape);
    }
}

void axis_split(const int64_t *shape, size_t rank, int axis, int64_t *outer, int64_t *middle, int64_t *inner) {
    *outer = 1, *inner = 1;
    for (int i = 0; i < axis; ++i) *outer *= shape[i];
    *middle = shape[axis];
    for (size_t i = size_t(axis) + 1; i < rank; ++i) *inner *= shape[i];
}

}  // namespace fm
