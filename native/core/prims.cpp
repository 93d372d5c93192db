#include "graph.h"

namespace fm {

const char *prim_name(Prim prim) {
    static const char *const names[] = {
        "placeholder", "variable", "constant",
        "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "clamp", "relu", "leaky_relu", "elu",
        "sigmoid", "tanh", "silu", "gelu_erf", "gelu_tanh", "softplus", "step", "sign",
        "gelu_erf_derivative", "gelu_tanh_derivative",
        "add", "sub", "mul", "div", "maximum", "minimum", "equal", "not_equal", "less",
        "less_equal", "greater", "greater_equal",
        "where", "batch_normalize", "dropout_mask",
        "matmul", "conv2d", "conv2d_backward_input", "conv2d_backward_weight", "max_pool2d",
        "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "reduce_sum", "reduce_max",
        "reduce_min", "argmax", "element_count", "reduce_to_like", "broadcast_like", "reshape",
        "flatten", "squeeze", "unsqueeze", "permute", "slice", "slice_backward", "pad", "concat",
        "softmax", "log_softmax", "gather_rows", "scatter_add_rows", "one_hot", "pick",
        "pick_backward", "assign", "group", "stop_gradient",
    };
    static_assert(sizeof(names) / sizeof(names[0]) == size_t(Prim::Count), "a name per primitive");
    return names[size_t(prim)];
}

bool prim_is_elementwise(Prim prim) { return prim >= Prim::Neg && prim <= Prim::DropoutMask; }

bool prim_is_view(Prim prim) {
    return prim == Prim::Reshape || prim == Prim::Flatten || prim == Prim::Squeeze ||
           prim == Prim::Unsqueeze;
}

bool input_is_shape_only(Prim prim, size_t i) {
    switch (prim) {
        case Prim::ElementCount: return true;
        case Prim::ReduceToLike:
        case Prim::BroadcastLike:
        case Prim::Reshape:
        case Prim::SliceBackward: return i == 1;
        default: return false;
    }
}

}  // namespace fm
