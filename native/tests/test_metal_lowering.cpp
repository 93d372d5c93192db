// The Metal backend's lowering (native/metal/lowering.h) on any platform:
// graphs are built and planned by the core as for every backend, lowered
// into a RecordingBuilder, and the recorded calls are checked:
// - every public op, forward and backward, and every optimizer lowers on
//   both paths (MPSGraph only, and MPS kernels for conv and matmul);
// - together they reach every primitive a plan can hold, and every fused
//   instruction, so no op is left to fail during a step;
// - every recorded call has the shape its inputs imply (an independent
//   shape checker below, not the lowering's own arithmetic);
// - the three reference models of DESIGN.md lower to one segment (one
//   encode per training step) on the MPSGraph path, to the expected kernel
//   counts on the hybrid path, and to the call sequences committed in
//   native/tests/metal_lowering/*.txt (FM_UPDATE_GOLDEN=1 rewrites them);
// - what cannot be lowered fails with FM_ERR_UNSUPPORTED naming the op.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "builder.h"
#include "engine.h"
#include "error.h"
#include "graph.h"
#include "plan.h"
#include "../metal/lowering.h"
#include "../metal/recording_builder.h"

using namespace fm;
using metal::DType;
using metal::Op;
using metal::RecordingBuilder;

#ifndef FM_METAL_GOLDEN_DIR
#define FM_METAL_GOLDEN_DIR "metal_lowering"
#endif

namespace {

int failures = 0;

#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            ++failures;                                                            \
            std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
        }                                                                          \
    } while (0)

metal::Options graph_path() { return metal::Options{}; }
metal::Options kernel_path() { return metal::Options::parse("all"); }

// Feeds every placeholder with its declared shape, the batch dim as `batch`.
Plan plan_for(const Graph &g, const std::vector<uint32_t> &fetches, int64_t batch) {
    std::vector<Shape> shapes;
    std::vector<bool> fed;
    for (uint32_t p : g.placeholders()) {
        Shape s = g.public_shape(p);
        for (int64_t &d : s) if (d == FM_BATCH) d = batch;
        shapes.push_back(s);
        fed.push_back(true);
    }
    return make_plan(g, shapes, fed, fetches);
}

std::string dims(const Shape &s) { return RecordingBuilder::dims(s); }

Shape broadcast(const Shape &a, const Shape &b) {
    Shape out(std::max(a.size(), b.size()), 1);
    for (size_t i = 0; i < out.size(); ++i) {
        int64_t x = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
        int64_t y = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
        if (x != y && x != 1 && y != 1) return {-1};
        out[i] = std::max(x, y);
    }
    return out;
}

// Recomputes each recorded call's result shape and dtype from its inputs
// and attributes, independently of the lowering, and checks the
// recording's bookkeeping: inputs defined before use and in the same
// segment, outputs covering their memory.
void check_shapes(const RecordingBuilder &r, const std::string &what) {
    std::map<metal::Tensor, std::pair<Shape, DType>> known;
    std::map<metal::Tensor, size_t> segment_of;
    metal::Tensor next = 0;
    size_t segment = 0;
    for (const RecordingBuilder::Entry &e : r.entries) {
        using E = RecordingBuilder::Entry;
        if (e.kind == E::Segment) segment = e.segment;
        if (e.kind == E::Input) {
            size_t bytes = size_t(element_count(e.shape)) * (e.dtype == DType::U64 ? 8 : 4);
            CHECK(bytes == e.location.bytes, "%s: input of %zu bytes bound to %zu", what.c_str(), bytes,
                  e.location.bytes);
            segment_of[next] = segment;
            known[next++] = {e.shape, e.dtype};
        }
        if (e.kind != E::Op) continue;
        const metal::Call &c = e.call;
        std::vector<Shape> in;
        std::vector<DType> types;
        for (metal::Tensor t : c.inputs) {
            CHECK(known.count(t), "%s: %s uses %%%d before it exists", what.c_str(), metal::op_name(c.op), t);
            CHECK(segment_of[t] == segment, "%s: %s uses %%%d of another segment", what.c_str(),
                  metal::op_name(c.op), t);
            in.push_back(known[t].first);
            types.push_back(known[t].second);
        }
        Shape expect = c.shape;
        DType dtype = c.dtype;
        auto window_out = [&](const Shape &x, int64_t channels) {
            const metal::Window &w = c.window;
            return Shape{x[0], channels, window_output(x[2], w.kernel_h, w.stride_h, w.pad_top, w.dilation_h),
                         window_output(x[3], w.kernel_w, w.stride_w, w.pad_left, w.dilation_w)};
        };
        switch (c.op) {
            case Op::Constant: case Op::Coordinate: break;  // the shape is the attribute
            case Op::Cast: case Op::Neg: case Op::Abs: case Op::Exp: case Op::Log: case Op::Sqrt: case Op::Rsqrt:
            case Op::Sigmoid: case Op::Tanh: case Op::Erf: case Op::Relu: case Op::Identity:
                expect = in[0];
                if (c.op != Op::Cast) dtype = types[0];
                break;
            case Op::Add: case Op::Sub: case Op::Mul: case Op::Div: case Op::Pow: case Op::MaxNaN: case Op::MinNaN:
            case Op::BitXor: case Op::ShiftRight:
                expect = broadcast(in[0], in[1]);
                CHECK(types[0] == types[1], "%s: %s mixes %s and %s", what.c_str(), metal::op_name(c.op),
                      metal::dtype_name(types[0]), metal::dtype_name(types[1]));
                dtype = types[0];
                break;
            case Op::Equal: case Op::NotEqual: case Op::Less: case Op::LessEqual: case Op::Greater:
            case Op::GreaterEqual:
                expect = broadcast(in[0], in[1]);
                dtype = DType::Bool;
                break;
            case Op::Select:
                expect = broadcast(broadcast(in[0], in[1]), in[2]);
                CHECK(types[0] == DType::Bool, "%s: select on a %s condition", what.c_str(), metal::dtype_name(types[0]));
                dtype = types[1];
                break;
            case Op::Clamp: expect = in[0], dtype = types[0]; break;
            case Op::Reshape:
                CHECK(element_count(in[0]) == element_count(c.shape), "%s: reshape %s to %s", what.c_str(),
                      dims(in[0]).c_str(), dims(c.shape).c_str());
                dtype = types[0];
                break;
            case Op::Transpose:
                expect.clear();
                for (int64_t p : c.ints) expect.push_back(in[0][size_t(p)]);
                dtype = types[0];
                break;
            case Op::Broadcast:
                CHECK(broadcast(in[0], c.shape) == c.shape, "%s: broadcast %s to %s", what.c_str(),
                      dims(in[0]).c_str(), dims(c.shape).c_str());
                dtype = types[0];
                break;
            case Op::Slice:
                expect.clear();
                for (size_t i = 0; i < c.ints.size(); ++i) {
                    CHECK(c.ints[i] >= 0 && c.ints2[i] <= in[0][i], "%s: slice out of bounds", what.c_str());
                    expect.push_back(c.ints2[i] - c.ints[i]);
                }
                dtype = types[0];
                break;
            case Op::Pad:
                expect = in[0];
                for (size_t i = 0; i < expect.size(); ++i) expect[i] += c.ints[i] + c.ints2[i];
                dtype = types[0];
                break;
            case Op::Concat:
                expect = in[0];
                for (size_t i = 1; i < in.size(); ++i) expect[size_t(c.axis)] += in[i][size_t(c.axis)];
                dtype = types[0];
                break;
            case Op::ReduceSum: case Op::ReduceMax: case Op::ReduceMin:
                expect = in[0];
                for (int64_t axis : c.ints) expect[size_t(axis)] = 1;
                break;
            case Op::ArgMax:
                expect = in[0];
                expect[size_t(c.axis)] = 1;
                dtype = DType::I32;
                break;
            case Op::Softmax: expect = in[0]; break;
            case Op::MatMul: {
                Shape a = in[0], b = in[1];
                CHECK(a.back() == b[b.size() - 2], "%s: matmul %s x %s", what.c_str(), dims(a).c_str(), dims(b).c_str());
                Shape batch = broadcast(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
                expect = batch;
                expect.push_back(a[a.size() - 2]);
                expect.push_back(b.back());
                break;
            }
            case Op::Conv2d:
                CHECK(in[0][1] == in[1][1] * c.window.groups, "%s: conv2d channels %s / %s", what.c_str(),
                      dims(in[0]).c_str(), dims(in[1]).c_str());
                CHECK(in[1][2] == c.window.kernel_h && in[1][3] == c.window.kernel_w, "%s: kernel size", what.c_str());
                expect = window_out(in[0], in[1][0]);
                break;
            case Op::Conv2dDataGradient:
                CHECK(window_out(c.shape, in[1][0]) == in[0], "%s: data gradient %s of input %s", what.c_str(),
                      dims(in[0]).c_str(), dims(c.shape).c_str());
                break;
            case Op::Conv2dWeightsGradient:
                CHECK(window_out(in[1], c.shape[0]) == in[0], "%s: weights gradient dy %s x %s", what.c_str(),
                      dims(in[0]).c_str(), dims(in[1]).c_str());
                CHECK(c.shape[1] * c.window.groups == in[1][1], "%s: weights gradient channels", what.c_str());
                break;
            case Op::MaxPool2d: case Op::AvgPool2d: expect = window_out(in[0], in[0][1]); break;
            case Op::MaxPool2dGradient: case Op::AvgPool2dGradient:
                CHECK(window_out(in[1], in[1][1]) == in[0], "%s: pool gradient %s of %s", what.c_str(),
                      dims(in[0]).c_str(), dims(in[1]).c_str());
                expect = in[1];
                break;
            case Op::Gather:
                CHECK(types[1] == DType::I32, "%s: gather indices are %s", what.c_str(), metal::dtype_name(types[1]));
                expect = in[1];
                expect.push_back(in[0][1]);
                break;
            case Op::ScatterAdd:
                CHECK(in[0].size() == 2 && in[1].size() == 1 && in[0][0] == in[1][0] && in[0][1] == c.shape[1],
                      "%s: scatter_add %s by %s into %s", what.c_str(), dims(in[0]).c_str(), dims(in[1]).c_str(),
                      dims(c.shape).c_str());
                break;
            case Op::OneHot:
                CHECK(types[0] == DType::I32, "%s: one_hot of %s", what.c_str(), metal::dtype_name(types[0]));
                expect = in[0];
                expect.insert(expect.begin() + c.axis, c.ints[0]);
                break;
            case Op::Count: break;
        }
        CHECK(expect == c.shape, "%s: %s gives %s, its inputs imply %s", what.c_str(), metal::op_name(c.op),
              dims(c.shape).c_str(), dims(expect).c_str());
        CHECK(dtype == c.dtype, "%s: %s gives %s, expected %s", what.c_str(), metal::op_name(c.op),
              metal::dtype_name(c.dtype), metal::dtype_name(dtype));
        segment_of[next] = segment;
        known[next++] = {c.shape, c.dtype};
    }
}

// Memory the plan must have written by the end of a run (variables and
// fetched outputs) is the target of a segment output or of a blit.
void check_results_written(const Plan &plan, const RecordingBuilder &r, const std::string &what) {
    std::vector<metal::Location> written;
    for (const auto &e : r.entries) {
        using E = RecordingBuilder::Entry;
        if (e.kind == E::Output || e.kind == E::Blit) written.push_back(e.location);
        if (e.kind == E::Matmul) written.push_back(e.matmul.c);
    }
    auto covered = [&](metal::Space space, uint32_t index) {
        for (const auto &l : written) if (l.space == space && l.index == index) return true;
        return false;
    };
    for (const Step &s : plan.steps) {
        std::vector<TensorRef> outs;
        if (s.kind == StepKind::Fused) {
            for (const auto &st : s.fused->stores) outs.push_back(st.second);
        } else {
            outs.push_back(s.output);
        }
        for (const TensorRef &ref : outs) {
            if (ref.storage == Storage::Variable) {
                CHECK(covered(metal::Space::Variable, ref.index), "%s: variable %u is never written", what.c_str(),
                      ref.index);
            }
            if (ref.storage == Storage::Output) {
                CHECK(covered(metal::Space::Output, ref.index), "%s: output %u is never written", what.c_str(), ref.index);
            }
        }
    }
}

void note_prims(const Plan &plan, std::set<Prim> *seen) {
    for (const Step &s : plan.steps) {
        if (s.kind == StepKind::Kernel) seen->insert(s.prim);
        if (s.kind == StepKind::Fused) for (const auto &ins : s.fused->code) seen->insert(ins.prim);
    }
}

struct Lowerings {
    RecordingBuilder graph, kernels;
    metal::Lowered graph_result, kernel_result;
};

Lowerings lower_both(const Plan &plan, const std::string &what) {
    Lowerings l;
    try {
        l.graph_result = metal::lower(plan, graph_path(), l.graph);
        l.kernel_result = metal::lower(plan, kernel_path(), l.kernels);
    } catch (const Error &e) {
        CHECK(false, "%s: lowering threw %s: %s", what.c_str(), fm_status_str(e.status()), e.what());
        return l;
    }
    check_shapes(l.graph, what + " (mpsgraph)");
    check_shapes(l.kernels, what + " (hybrid)");
    check_results_written(plan, l.graph, what + " (mpsgraph)");
    check_results_written(plan, l.kernels, what + " (hybrid)");
    CHECK(l.graph_result.kernels == 0, "%s: the MPSGraph path used %zu kernels", what.c_str(), l.graph_result.kernels);
    CHECK(l.graph_result.segments <= 1, "%s: the MPSGraph path made %zu segments", what.c_str(),
          l.graph_result.segments);
    return l;
}

// --- every public op, forward and backward --------------------------------

struct OpCase {
    const char *name;
    fm_op op;
    std::vector<Shape> inputs;          // f32 variables, unless listed in `int_inputs`
    std::vector<size_t> int_inputs;     // i32 placeholders (indices, labels)
    std::function<void(fm_op_attrs &)> attrs;
    bool differentiable = true;
};

std::vector<OpCase> op_cases() {
    auto none = [](fm_op_attrs &) {};
    std::vector<OpCase> cases;
    const fm_op unary[] = {FM_OP_NEG, FM_OP_ABS, FM_OP_EXP, FM_OP_LOG, FM_OP_SQRT, FM_OP_RSQRT, FM_OP_RELU,
                           FM_OP_SIGMOID, FM_OP_TANH, FM_OP_SILU, FM_OP_SOFTPLUS};
    for (fm_op op : unary) cases.push_back({fm_op_str(op), op, {{2, 3}}, {}, none});
    cases.push_back({"pow", FM_OP_POW, {{2, 3}}, {}, [](fm_op_attrs &a) { a.exponent = 3; }});
    cases.push_back({"clamp", FM_OP_CLAMP, {{2, 3}}, {}, [](fm_op_attrs &a) { a.min = -1, a.max = 1; }});
    cases.push_back({"leaky_relu", FM_OP_LEAKY_RELU, {{2, 3}}, {}, [](fm_op_attrs &a) { a.slope = 0.1; }});
    cases.push_back({"elu", FM_OP_ELU, {{2, 3}}, {}, [](fm_op_attrs &a) { a.alpha = 1; }});
    cases.push_back({"gelu_erf", FM_OP_GELU, {{2, 3}}, {}, none});
    cases.push_back({"gelu_tanh", FM_OP_GELU, {{2, 3}}, {}, [](fm_op_attrs &a) { a.approximate = 1; }});
    const fm_op binary[] = {FM_OP_ADD, FM_OP_SUB, FM_OP_MUL, FM_OP_DIV, FM_OP_MAXIMUM, FM_OP_MINIMUM};
    for (fm_op op : binary) cases.push_back({fm_op_str(op), op, {{2, 3}, {3}}, {}, none});
    const fm_op compare[] = {FM_OP_EQUAL, FM_OP_NOT_EQUAL, FM_OP_LESS, FM_OP_LESS_EQUAL, FM_OP_GREATER,
                             FM_OP_GREATER_EQUAL};
    for (fm_op op : compare) cases.push_back({fm_op_str(op), op, {{2, 3}, {2, 3}}, {}, none, false});
    cases.push_back({"where", FM_OP_WHERE, {{2, 3}, {2, 3}, {2, 3}}, {}, none});
    cases.push_back({"softmax", FM_OP_SOFTMAX, {{2, 5}}, {}, none});
    cases.push_back({"log_softmax", FM_OP_LOG_SOFTMAX, {{2, 5}}, {}, none});
    cases.push_back({"matmul", FM_OP_MATMUL, {{4, 3}, {3, 5}}, {}, none});
    cases.push_back({"matmul_batched_t", FM_OP_MATMUL, {{2, 3, 4}, {2, 5, 4}}, {},
                     [](fm_op_attrs &a) { a.transpose_b = 1; }});
    cases.push_back({"matmul_broadcast", FM_OP_MATMUL, {{2, 3, 4}, {4, 5}}, {}, none});
    cases.push_back({"matmul_ta", FM_OP_MATMUL, {{3, 4}, {3, 5}}, {}, [](fm_op_attrs &a) { a.transpose_a = 1; }});
    cases.push_back({"linear", FM_OP_LINEAR, {{4, 6}, {5, 6}, {5}}, {}, none});
    auto conv = [](fm_op_attrs &a) {
        a.stride[0] = a.stride[1] = 2;
        a.padding[0] = a.padding[1] = 1;
    };
    cases.push_back({"conv2d", FM_OP_CONV2D, {{2, 3, 8, 8}, {4, 3, 3, 3}, {4}}, {}, conv});
    cases.push_back({"conv2d_groups_dilation", FM_OP_CONV2D, {{2, 4, 9, 9}, {6, 2, 3, 3}}, {}, [](fm_op_attrs &a) {
                         a.groups = 2, a.dilation[0] = a.dilation[1] = 2;
                     }});
    cases.push_back({"conv_transpose2d", FM_OP_CONV_TRANSPOSE2D, {{2, 4, 4, 4}, {4, 3, 3, 3}}, {},
                     [](fm_op_attrs &a) {
                         a.stride[0] = a.stride[1] = 2, a.padding[0] = a.padding[1] = 1;
                         a.output_padding[0] = a.output_padding[1] = 1;
                     }});
    auto pool = [](fm_op_attrs &a) { a.kernel_size[0] = a.kernel_size[1] = 2; };
    cases.push_back({"max_pool2d", FM_OP_MAX_POOL2D, {{2, 3, 8, 8}}, {}, pool});
    cases.push_back({"avg_pool2d", FM_OP_AVG_POOL2D, {{2, 3, 8, 8}}, {}, [](fm_op_attrs &a) {
                         a.kernel_size[0] = a.kernel_size[1] = 3, a.stride[0] = a.stride[1] = 2;
                         a.padding[0] = a.padding[1] = 1, a.count_include_pad = 1;
                     }});
    cases.push_back({"global_avg_pool", FM_OP_GLOBAL_AVG_POOL, {{2, 3, 4, 4}}, {}, none});
    cases.push_back({"reshape", FM_OP_RESHAPE, {{2, 6}}, {}, [](fm_op_attrs &a) {
                         a.rank = 3, a.shape[0] = 3, a.shape[1] = 2, a.shape[2] = -1;
                     }});
    cases.push_back({"flatten", FM_OP_FLATTEN, {{2, 3, 4}}, {}, none});
    cases.push_back({"permute", FM_OP_PERMUTE, {{2, 3, 4}}, {}, [](fm_op_attrs &a) {
                         a.num_axes = 3, a.axes[0] = 2, a.axes[1] = 0, a.axes[2] = 1;
                     }});
    cases.push_back({"transpose", FM_OP_TRANSPOSE, {{2, 3}}, {}, none});
    cases.push_back({"concat", FM_OP_CONCAT, {{2, 3}, {2, 4}}, {}, [](fm_op_attrs &a) { a.num_axes = 1, a.axes[0] = 1; }});
    cases.push_back({"slice", FM_OP_SLICE, {{4, 6}}, {}, [](fm_op_attrs &a) {
                         a.num_axes = 1, a.axes[0] = 1, a.starts[0] = 1, a.ends[0] = -1;
                     }});
    cases.push_back({"pad", FM_OP_PAD, {{2, 3}}, {}, [](fm_op_attrs &a) {
                         a.pad_before[1] = 1, a.pad_after[0] = 2, a.value = 0.5;
                     }});
    cases.push_back({"broadcast_to", FM_OP_BROADCAST_TO, {{3}}, {}, [](fm_op_attrs &a) {
                         a.rank = 2, a.shape[0] = 2, a.shape[1] = 3;
                     }});
    cases.push_back({"squeeze", FM_OP_SQUEEZE, {{2, 1, 3}}, {}, none});
    cases.push_back({"unsqueeze", FM_OP_UNSQUEEZE, {{2, 3}}, {}, [](fm_op_attrs &a) { a.num_axes = 1, a.axes[0] = 1; }});
    const fm_op reductions[] = {FM_OP_SUM, FM_OP_MEAN, FM_OP_MAX, FM_OP_MIN, FM_OP_VARIANCE};
    for (fm_op op : reductions) {
        cases.push_back({fm_op_str(op), op, {{2, 3, 4}}, {}, [](fm_op_attrs &a) { a.num_axes = 1, a.axes[0] = 1; }});
    }
    cases.push_back({"sum_all_keep", FM_OP_SUM, {{2, 3}}, {}, [](fm_op_attrs &a) { a.keep_dims = 1; }});
    cases.push_back({"argmax", FM_OP_ARGMAX, {{2, 5}}, {}, [](fm_op_attrs &a) { a.num_axes = 1, a.axes[0] = 1; },
                     false});
    cases.push_back({"batch_norm_train", FM_OP_BATCH_NORM, {{4, 3, 2, 2}, {3}, {3}, {3}, {3}}, {},
                     [](fm_op_attrs &a) { a.training = 1, a.momentum = 0.1, a.eps = 1e-5; }});
    cases.push_back({"batch_norm_eval", FM_OP_BATCH_NORM, {{4, 3, 2, 2}, {3}, {3}, {3}, {3}}, {},
                     [](fm_op_attrs &a) { a.eps = 1e-5; }});
    cases.push_back({"layer_norm", FM_OP_LAYER_NORM, {{4, 6}, {6}, {6}}, {},
                     [](fm_op_attrs &a) { a.normalized_rank = 1, a.eps = 1e-5; }});
    cases.push_back({"dropout", FM_OP_DROPOUT, {{4, 6}}, {}, [](fm_op_attrs &a) {
                         a.p = 0.25, a.seed = 7, a.training = 1;
                     }});
    cases.push_back({"embedding", FM_OP_EMBEDDING, {{10, 4}, {2, 3}}, {1}, none});
    cases.push_back({"one_hot", FM_OP_ONE_HOT, {{5}}, {0}, [](fm_op_attrs &a) { a.depth = 4; }, false});
    cases.push_back({"softmax_cross_entropy", FM_OP_SOFTMAX_CROSS_ENTROPY, {{4, 5}, {4}}, {1},
                     [](fm_op_attrs &a) { a.label_smoothing = 0.1; }});
    cases.push_back({"categorical_cross_entropy", FM_OP_CATEGORICAL_CROSS_ENTROPY, {{4, 5}, {4, 5}}, {}, none});
    const fm_op losses[] = {FM_OP_BINARY_CROSS_ENTROPY, FM_OP_BCE_WITH_LOGITS, FM_OP_MSE, FM_OP_MAE, FM_OP_HUBER};
    for (fm_op op : losses) {
        cases.push_back({fm_op_str(op), op, {{4, 5}, {4, 5}}, {}, [](fm_op_attrs &a) { a.delta = 1; }});
    }
    cases.push_back({"stop_gradient", FM_OP_STOP_GRADIENT, {{2, 3}}, {}, none});
    return cases;
}

void test_every_op(std::set<Prim> *seen, std::set<fm_op> *ops_seen) {
    for (const OpCase &c : op_cases()) {
        auto g = std::make_shared<Graph>();
        std::vector<uint32_t> inputs, wrt;
        for (size_t i = 0; i < c.inputs.size(); ++i) {
            bool is_int = std::find(c.int_inputs.begin(), c.int_inputs.end(), i) != c.int_inputs.end();
            if (is_int) {
                inputs.push_back(g->add_placeholder("index" + std::to_string(i), FM_DTYPE_I32, c.inputs[i]));
            } else {
                inputs.push_back(g->add_variable("v" + std::to_string(i), FM_DTYPE_F32, c.inputs[i], VariableInit{}));
                // Batch-norm running statistics are state, not parameters.
                if (!(c.op == FM_OP_BATCH_NORM && i >= 3)) wrt.push_back(inputs.back());
            }
        }
        fm_op_attrs attrs = default_attrs();
        c.attrs(attrs);
        std::string what = std::string("op ") + c.name;
        try {
            uint32_t out = build_op(*g, c.op, inputs, attrs);
            ops_seen->insert(c.op);
            std::vector<uint32_t> fetches{out};
            if (c.differentiable) {
                fm_op_attrs all = default_attrs();
                uint32_t loss = g->node(out).probe[0].empty() ? out : build_op(*g, FM_OP_SUM, {out}, all);
                for (uint32_t grad : build_gradients(*g, loss, wrt)) fetches.push_back(grad);
            }
            Plan plan = plan_for(*g, fetches, 1);
            note_prims(plan, seen);
            lower_both(plan, what);
        } catch (const Error &e) {
            CHECK(false, "%s: building threw %s: %s", what.c_str(), fm_status_str(e.status()), e.what());
        }
    }
    // Assign and group as the planner emits them: copies at the end.
    auto g = std::make_shared<Graph>();
    uint32_t v = g->add_variable("v", FM_DTYPE_F32, {2, 3}, VariableInit{});
    uint32_t w = g->add_variable("w", FM_DTYPE_F32, {2, 3}, VariableInit{});
    fm_op_attrs a = default_attrs();
    uint32_t swap1 = build_op(*g, FM_OP_ASSIGN, {v, w}, a);
    uint32_t swap2 = build_op(*g, FM_OP_ASSIGN, {w, v}, a);
    uint32_t group = build_op(*g, FM_OP_GROUP, {swap1, swap2}, a);
    ops_seen->insert(FM_OP_ASSIGN), ops_seen->insert(FM_OP_GROUP);
    Plan plan = plan_for(*g, {group}, 1);
    Lowerings l = lower_both(plan, "assign (swap)");
    // The swap reads both variables and writes both: each write lands on
    // memory the executable reads, so it is staged and blitted.
    CHECK(l.graph_result.blits == 2, "swap: %zu blits\n%s", l.graph_result.blits, l.graph.text().c_str());
}

// --- optimizers -------------------------------------------------------------

void test_optimizers(std::set<Prim> *seen) {
    for (int kind = 0; kind < FM_OPTIMIZER_COUNT; ++kind) {
        for (int variant = 0; variant < 2; ++variant) {
            auto g = std::make_shared<Graph>();
            uint32_t w = g->add_variable("w", FM_DTYPE_F32, {3, 4}, VariableInit{});
            uint32_t b = g->add_variable("b", FM_DTYPE_F32, {4}, VariableInit{});
            uint32_t x = g->add_placeholder("x", FM_DTYPE_F32, {FM_BATCH, 3});
            fm_op_attrs a = default_attrs();
            uint32_t y = build_op(*g, FM_OP_ADD, {build_op(*g, FM_OP_MATMUL, {x, w}, a), b}, a);
            uint32_t loss = build_op(*g, FM_OP_MEAN, {build_op(*g, FM_OP_MUL, {y, y}, a)}, a);
            std::vector<uint32_t> grads = build_gradients(*g, loss, {w, b});
            fm_optimizer o = fm_optimizer_default(fm_optimizer_kind(kind));
            if (variant == 1) {  // the options each kind has
                o.momentum = 0.9, o.nesterov = kind == FM_OPTIMIZER_SGD, o.weight_decay = 0.01;
                o.centered = 1, o.clip_value = 1, o.clip_norm = 5;
            }
            uint32_t update = build_optimizer(*g, o, {w, b}, grads, "optimizer.");
            std::string what = std::string("optimizer ") + std::to_string(kind) + (variant ? " with options" : "");
            Plan plan = plan_for(*g, {loss, update}, 8);
            note_prims(plan, seen);
            Lowerings l = lower_both(plan, what);
            CHECK(l.graph_result.segments == 1, "%s: %zu segments", what.c_str(), l.graph_result.segments);
        }
    }
}

// --- every primitive is reached ---------------------------------------------

void test_coverage(const std::set<Prim> &seen) {
    // Never a step of their own: sources and views live in storage, assign
    // and group become copies or nothing, element counts become scalars.
    const std::set<Prim> not_steps = {Prim::Placeholder, Prim::Variable, Prim::Constant, Prim::Reshape,
                                      Prim::Flatten, Prim::Squeeze, Prim::Unsqueeze, Prim::Assign,
                                      Prim::Group, Prim::StopGradient, Prim::ElementCount};
    for (size_t p = 0; p < size_t(Prim::Count); ++p) {
        Prim prim = Prim(p);
        if (not_steps.count(prim)) {
            CHECK(!seen.count(prim), "%s appeared as a step", prim_name(prim));
            continue;
        }
        CHECK(seen.count(prim), "no test reached primitive %s", prim_name(prim));
    }
}

// --- call sequences of single ops, checked line by line ---------------------

// The recording without its "# step" comment lines.
std::string lowered_text(const Plan &plan, const metal::Options &options) {
    RecordingBuilder r;
    metal::lower(plan, options, r);
    std::string text;
    for (const std::string &line : r.lines) {
        if (line.rfind("# ", 0) != 0) text += line + "\n";
    }
    return text;
}

void expect_text(const std::string &what, const std::string &got, const std::string &expected) {
    CHECK(got == expected, "%s: recorded\n%s\nexpected\n%s", what.c_str(), got.c_str(), expected.c_str());
}

void test_sequences() {
    fm_op_attrs a = default_attrs();
    {
        auto g = std::make_shared<Graph>();
        uint32_t x = g->add_placeholder("x", FM_DTYPE_F32, {FM_BATCH, 3, 8, 8});
        uint32_t w = g->add_variable("w", FM_DTYPE_F32, {4, 3, 3, 3}, VariableInit{});
        fm_op_attrs c = a;
        c.stride[0] = c.stride[1] = 2, c.padding[0] = c.padding[1] = 1;
        uint32_t y = build_op(*g, FM_OP_CONV2D, {x, w}, c);
        Plan plan = plan_for(*g, {y}, 2);
        expect_text("conv2d on MPSGraph", lowered_text(plan, graph_path()),
                    "segment 0\n"
                    "  %0 = input feed#0:1536 [2,3,8,8] f32\n"
                    "  %1 = input variable#0:432 [4,3,3,3] f32\n"
                    "  %2 = conv2d(%0, %1) [2,4,4,4] f32 k=3x3 s=2x2 d=1x1 pad=1,1,1,1 groups=1 NCHW/OIHW\n"
                    "  output %2 -> output#0:512\n"
                    "end\n");
        // The MPS CNN path: 3 channels travel as one RGBA slice (padded to
        // 4), weights as OHWI; back to NCHW after the kernel.
        expect_text("conv2d on MPSCNNConvolution", lowered_text(plan, kernel_path()),
                    "segment 0\n"
                    "  %0 = input feed#0:1536 [2,3,8,8] f32\n"
                    "  %1 = pad(%0) [2,4,8,8] f32 before=0,0,0,0 after=0,1,0,0 value=0\n"
                    "  %2 = reshape(%1) [2,1,4,8,8] f32\n"
                    "  %3 = transpose(%2) [2,1,8,8,4] f32 perm=0,1,3,4,2\n"
                    "  %4 = input variable#0:432 [4,3,3,3] f32\n"
                    "  %5 = transpose(%4) [4,3,3,3] f32 perm=0,2,3,1\n"
                    "  output %3 -> scratch:2048\n"
                    "  output %5 -> scratch+2048:432\n"
                    "end\n"
                    "kernel mpscnn_convolution source=scratch:2048 weights(OHWI)=scratch+2048:432 -> "
                    "scratch+2560:512 n=2 c_in=3 8x8 c_out=4 4x4 slices=1x4/1x4 offset=0,0 k=3x3 s=2x2 d=1x1 "
                    "pad=1,1,1,1 groups=1 NCHW/OIHW\n"
                    "segment 1\n"
                    "  %6 = input scratch+2560:512 [2,1,4,4,4] f32\n"
                    "  %7 = transpose(%6) [2,1,4,4,4] f32 perm=0,1,4,2,3\n"
                    "  %8 = reshape(%7) [2,4,4,4] f32\n"
                    "  output %8 -> output#0:512\n"
                    "end\n");
    }
    {
        auto g = std::make_shared<Graph>();
        uint32_t x = g->add_placeholder("x", FM_DTYPE_F32, {FM_BATCH, 6});
        uint32_t w = g->add_variable("w", FM_DTYPE_F32, {6, 5}, VariableInit{});
        uint32_t y = build_op(*g, FM_OP_RELU, {build_op(*g, FM_OP_MATMUL, {x, w}, a)}, a);
        Plan plan = plan_for(*g, {y}, 4);
        expect_text("matmul + relu on MPSGraph", lowered_text(plan, graph_path()),
                    "segment 0\n"
                    "  %0 = input feed#0:96 [4,6] f32\n"
                    "  %1 = input variable#0:120 [6,5] f32\n"
                    "  %2 = matmul(%0, %1) [4,5] f32\n"
                    "  %3 = relu(%2) [4,5] f32\n"
                    "  output %3 -> output#0:80\n"
                    "end\n");
        // The product goes through memory (the plan's arena) to the next segment.
        expect_text("matmul + relu on MPSMatrixMultiplication", lowered_text(plan, kernel_path()),
                    "kernel mps_matrix_multiplication feed#0:96 x variable#0:120 -> arena:80 batch=1 m=4 n=5 k=6\n"
                    "segment 0\n"
                    "  %0 = input arena:80 [4,5] f32\n"
                    "  %1 = relu(%0) [4,5] f32\n"
                    "  output %1 -> output#0:80\n"
                    "end\n");
    }
    {
        // SGD on one variable: the planner updates it in place, so the
        // result is staged in scratch and blitted over the variable after
        // the executable has read it.
        auto g = std::make_shared<Graph>();
        uint32_t w = g->add_variable("w", FM_DTYPE_F32, {3}, VariableInit{});
        uint32_t loss = build_op(*g, FM_OP_SUM, {build_op(*g, FM_OP_MUL, {w, w}, a)}, a);
        std::vector<uint32_t> grads = build_gradients(*g, loss, {w});
        uint32_t update = build_optimizer(*g, fm_optimizer_default(FM_OPTIMIZER_SGD), {w}, grads, "opt.");
        Plan plan = plan_for(*g, {update}, 1);
        std::string text = lowered_text(plan, graph_path());
        CHECK(text.find("blit scratch") != std::string::npos && text.find("-> variable#0:12") != std::string::npos,
              "sgd in place:\n%s", text.c_str());
    }
    {
        // A fetched variable is copied through the graph: an executable
        // result may not be one of its feeds, so an identity stands between.
        auto g = std::make_shared<Graph>();
        uint32_t v = g->add_variable("v", FM_DTYPE_F32, {2, 3}, VariableInit{});
        Plan plan = plan_for(*g, {v, v}, 1);
        expect_text("fetched variable", lowered_text(plan, graph_path()),
                    "segment 0\n"
                    "  %0 = input variable#0:24 [2,3] f32\n"
                    "  %1 = identity(%0) [2,3] f32\n"
                    "  output %1 -> output#0:24\n"
                    "end\n");
    }
    {
        // Dropout: the CPU's hash, in U64 ops on the run index.
        auto g = std::make_shared<Graph>();
        uint32_t x = g->add_placeholder("x", FM_DTYPE_F32, {4});
        fm_op_attrs d = a;
        d.p = 0.5, d.seed = 3, d.training = 1;
        uint32_t y = build_op(*g, FM_OP_DROPOUT, {x}, d);
        Plan plan = plan_for(*g, {y}, 1);
        std::string text = lowered_text(plan, graph_path());
        CHECK(text.find("input run_index:8 [] u64") != std::string::npos &&
                  text.find("bits=0x632be59bd9b4e019") != std::string::npos &&
                  text.find("bits=0xbf58476d1ce4e5b9") != std::string::npos &&
                  text.find("bits=0x10000000000000") != std::string::npos &&  // 0.5 * 2^53
                  text.find("coordinate() [4] i32 axis=0") != std::string::npos,
              "dropout:\n%s", text.c_str());
    }
}

// --- the reference models ---------------------------------------------------

fm_layer_spec layer(fm_layer_kind kind, int64_t units = 0, int64_t kernel = 0, int64_t stride = 1, int64_t pad = 0) {
    fm_layer_spec s = fm_layer_spec_default(kind);
    s.units = units;
    if (kernel) s.kernel_size[0] = s.kernel_size[1] = kernel;
    if (kind == FM_LAYER_CONV2D) s.stride[0] = s.stride[1] = stride, s.padding[0] = s.padding[1] = pad;
    return s;
}

struct Reference {
    const char *name;
    std::vector<fm_layer_spec> layers;
    Shape input;
    fm_optimizer optimizer;
    int64_t batch;
    size_t convs, conv_data_grads, denses, pools, batch_norms;
};

std::vector<Reference> references() {
    std::vector<Reference> refs;
    fm_optimizer adam = fm_optimizer_default(FM_OPTIMIZER_ADAM);
    adam.learning_rate = 1e-3;
    fm_optimizer sgd = fm_optimizer_default(FM_OPTIMIZER_SGD);
    sgd.learning_rate = 0.01, sgd.momentum = 0.9;
    refs.push_back({"cnn64",
                    {layer(FM_LAYER_CONV2D, 8, 3, 2, 1), layer(FM_LAYER_RELU), layer(FM_LAYER_CONV2D, 16, 3, 2, 1),
                     layer(FM_LAYER_RELU), layer(FM_LAYER_CONV2D, 32, 3, 2, 1), layer(FM_LAYER_RELU),
                     layer(FM_LAYER_FLATTEN), layer(FM_LAYER_DENSE, 64), layer(FM_LAYER_RELU),
                     layer(FM_LAYER_DENSE, 2)},
                    {3, 64, 64}, adam, 32, 3, 2, 2, 0, 0});
    refs.push_back({"mlp",
                    {layer(FM_LAYER_DENSE, 256), layer(FM_LAYER_RELU), layer(FM_LAYER_DENSE, 128),
                     layer(FM_LAYER_RELU), layer(FM_LAYER_DENSE, 10)},
                    {784}, sgd, 128, 0, 0, 3, 0, 0});
    std::vector<fm_layer_spec> cifar;
    auto block = [&](int64_t units) {
        cifar.push_back(layer(FM_LAYER_CONV2D, units, 3, 1, 1));
        cifar.push_back(layer(FM_LAYER_BATCH_NORM));
        cifar.push_back(layer(FM_LAYER_RELU));
    };
    auto pool = [&] { cifar.push_back(layer(FM_LAYER_MAX_POOL2D, 0, 2)); };
    block(32), block(32), pool(), block(64), block(64), pool(), block(128), pool();
    cifar.push_back(layer(FM_LAYER_FLATTEN));
    cifar.push_back(layer(FM_LAYER_DENSE, 10));
    refs.push_back({"cifar", cifar, {3, 32, 32}, adam, 128, 5, 4, 1, 3, 5});
    return refs;
}

size_t count_ops(const RecordingBuilder &r, Op op) {
    size_t n = 0;
    for (const auto &e : r.entries) n += e.kind == RecordingBuilder::Entry::Op && e.call.op == op;
    return n;
}

void compare_golden(const std::string &name, const std::string &text) {
    std::string path = std::string(FM_METAL_GOLDEN_DIR) + "/" + name + ".txt";
    const char *update = std::getenv("FM_UPDATE_GOLDEN");
    if (update && std::string(update) == "1") {
        std::ofstream(path) << text;
        std::printf("wrote %s\n", path.c_str());
        return;
    }
    std::ifstream in(path);
    std::stringstream expected;
    expected << in.rdbuf();
    if (expected.str() == text) return;
    // The first differing line, for the message.
    std::istringstream got_lines(text), want_lines(expected.str());
    std::string got, want;
    size_t line = 0;
    while (true) {
        ++line;
        bool more_got = bool(std::getline(got_lines, got)), more_want = bool(std::getline(want_lines, want));
        if (!more_got && !more_want) break;
        if (got != want || more_got != more_want) break;
    }
    CHECK(false, "%s differs from the recording at line %zu:\n  recorded: %s\n  expected: %s\n"
                 "(FM_UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
          path.c_str(), line, got.c_str(), want.c_str());
}

void test_references(std::set<Prim> *seen) {
    for (const Reference &ref : references()) {
        auto g = std::make_shared<Graph>();
        Model m = build_model(*g, ref.layers, ref.input, 1, true);
        uint32_t labels = g->add_placeholder("labels", FM_DTYPE_I32, {FM_BATCH});
        uint32_t loss = build_op(*g, FM_OP_SOFTMAX_CROSS_ENTROPY, {m.train_output, labels}, default_attrs());
        std::vector<uint32_t> grads = build_gradients(*g, loss, m.parameters);
        uint32_t update = build_optimizer(*g, ref.optimizer, m.parameters, grads, "optimizer.");
        // The reference batch, and a short last batch: each shape signature
        // gets its own plan and its own lowering, none is refused.
        for (int64_t batch : {ref.batch, int64_t(7)}) {
            std::string what = std::string(ref.name) + " batch " + std::to_string(batch);
            Plan plan = plan_for(*g, {loss, update}, batch);
            note_prims(plan, seen);
            Lowerings l = lower_both(plan, what);
            // One MPSGraph executable, one encode per training step.
            CHECK(l.graph_result.segments == 1, "%s: %zu segments", what.c_str(), l.graph_result.segments);
            CHECK(count_ops(l.graph, Op::Conv2d) == ref.convs, "%s: %zu conv2d", what.c_str(),
                  count_ops(l.graph, Op::Conv2d));
            CHECK(count_ops(l.graph, Op::Conv2dWeightsGradient) == ref.convs, "%s: weight gradients", what.c_str());
            CHECK(count_ops(l.graph, Op::Conv2dDataGradient) == ref.conv_data_grads, "%s: %zu data gradients",
                  what.c_str(), count_ops(l.graph, Op::Conv2dDataGradient));
            CHECK(count_ops(l.graph, Op::MaxPool2d) == ref.pools && count_ops(l.graph, Op::MaxPool2dGradient) == ref.pools,
                  "%s: pools", what.c_str());
            // Dense layers: forward, and the gradients of weights and inputs
            // (none for the input of the first layer when it is the feed).
            size_t first_input_grad = ref.convs == 0 ? 1 : 0;
            size_t matmuls = ref.denses * 3 - first_input_grad;
            CHECK(count_ops(l.graph, Op::MatMul) == matmuls, "%s: %zu matmuls, expected %zu", what.c_str(),
                  count_ops(l.graph, Op::MatMul), matmuls);
            // The hybrid path: every conv and matmul became a kernel.
            size_t conv_kernels = ref.convs * 2 + ref.conv_data_grads;
            CHECK(l.kernel_result.kernels == conv_kernels + matmuls, "%s: %zu kernels, expected %zu", what.c_str(),
                  l.kernel_result.kernels, conv_kernels + matmuls);
            CHECK(count_ops(l.kernels, Op::Conv2d) == 0 && count_ops(l.kernels, Op::MatMul) == 0,
                  "%s: the hybrid path kept graph convs or matmuls", what.c_str());
            // Every parameter and every piece of optimizer state is written.
            std::set<uint32_t> variables;
            for (const auto &e : l.graph.entries) {
                if ((e.kind == RecordingBuilder::Entry::Output || e.kind == RecordingBuilder::Entry::Blit) &&
                    e.location.space == metal::Space::Variable) {
                    variables.insert(e.location.index);
                }
            }
            size_t state = 0;
            for (uint32_t v : g->variables()) state += g->node(v).name != "optimizer.lr";
            CHECK(variables.size() == state, "%s: %zu of %zu variables written", what.c_str(), variables.size(), state);
            // Conv inputs in NCHW, weights in OIHW, shapes as DESIGN.md gives them.
            if (batch == ref.batch && std::string(ref.name) == "cnn64") {
                std::vector<Shape> outs;
                for (const auto &e : l.graph.entries) {
                    if (e.kind == RecordingBuilder::Entry::Op && e.call.op == Op::Conv2d) outs.push_back(e.call.shape);
                }
                CHECK((outs == std::vector<Shape>{{32, 8, 32, 32}, {32, 16, 16, 16}, {32, 32, 8, 8}}),
                      "cnn64 conv shapes");
            }
            if (batch == ref.batch) {
                compare_golden(ref.name, l.graph.text());
                compare_golden(std::string(ref.name) + "_hybrid", l.kernels.text());
            }
        }
    }
}

// --- refusals -----------------------------------------------------------------

void expect_unsupported(const Plan &plan, const char *name, const std::string &what) {
    RecordingBuilder r;
    try {
        metal::lower(plan, graph_path(), r);
        CHECK(false, "%s: lowered", what.c_str());
    } catch (const Error &e) {
        CHECK(e.status() == FM_ERR_UNSUPPORTED, "%s: %s", what.c_str(), fm_status_str(e.status()));
        CHECK(std::string(e.what()).find(name) != std::string::npos, "%s: the message '%s' does not name %s",
              what.c_str(), e.what(), name);
    }
}

void test_refusals() {
    TensorRef x;
    x.storage = Storage::Feed, x.shape = {2, 3};
    {
        Plan plan;
        Step s;
        s.kind = StepKind::Kernel, s.prim = Prim::Assign, s.inputs = {x, x}, s.output = x, s.origin = "assign";
        s.output.storage = Storage::Output;
        plan.steps.push_back(s);
        expect_unsupported(plan, "assign", "an assign kernel step");
    }
    {
        Plan plan;
        Step s;
        s.kind = StepKind::Kernel, s.prim = Prim::MatMul, s.origin = "matmul";
        TensorRef h = x;
        h.dtype = FM_DTYPE_F16;
        s.inputs = {h, h};
        s.output = h;
        s.output.storage = Storage::Output;
        plan.steps.push_back(s);
        expect_unsupported(plan, "f16", "an f16 matmul");
    }
    {
        Plan plan;
        Step s;
        s.kind = StepKind::Kernel, s.prim = Prim::Pad, s.origin = "pad", s.inputs = {x};
        s.attrs = default_attrs();
        s.attrs.pad_before[0] = -1;
        s.output = x;
        s.output.shape = {1, 3};
        s.output.storage = Storage::Output;
        plan.steps.push_back(s);
        expect_unsupported(plan, "pad", "a cropping pad");
    }
    try {
        metal::Options::parse("conv,bogus");
        CHECK(false, "parse accepted 'bogus'");
    } catch (const Error &e) {
        CHECK(e.status() == FM_ERR_INVALID_ARGUMENT && std::string(e.what()).find("bogus") != std::string::npos,
              "parse: %s", e.what());
    }
    metal::Options o = metal::Options::parse("matmul");
    CHECK(o.matmul == metal::Path::Kernel && o.conv == metal::Path::Graph, "parse matmul");
    o = metal::Options::parse(nullptr);
    CHECK(o.matmul == metal::Path::Graph && o.conv == metal::Path::Graph, "parse default");
}

}  // namespace

int main() {
    std::set<Prim> seen;
    std::set<fm_op> ops_seen;
    test_every_op(&seen, &ops_seen);
    test_optimizers(&seen);
    test_references(&seen);
    test_sequences();
    test_refusals();
    test_coverage(seen);
    for (int op = 0; op < FM_OP_COUNT; ++op) {
        CHECK(ops_seen.count(fm_op(op)), "no test case for public op %s", fm_op_str(fm_op(op)));
    }
    std::printf("metal lowering: %zu primitives reached, %zu public ops, %d failures\n", seen.size(), ops_seen.size(),
                failures);
    return failures == 0 ? 0 : 1;
}
