// The graph IR. Every node computes one value from earlier nodes (creation
// order is a topological order). Public ops (fm_op) are built from a
// smaller set of primitives (Prim), so autodiff, the planner and every
// backend only deal with primitives.
//
// Shapes: a placeholder may have a symbolic batch dim. Each node carries its
// shape for two probe batch sizes; a dim that differs between them is the
// batch ("-1" to users). Inference thus only ever sees concrete shapes, and
// the same functions specialise a plan for the real batch size.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ferrometal.h"
#include "handles.h"
#include "prim.h"
#include "shape.h"

namespace fm {

const char *prim_name(Prim prim);
bool prim_is_elementwise(Prim prim);
bool prim_is_view(Prim prim);  // Reshape, Flatten, Squeeze, Unsqueeze
// Whether input `i` of `prim` is read only for its shape (its data need not exist).
bool input_is_shape_only(Prim prim, size_t i);

struct Node {
    Prim prim = Prim::Constant;
    std::vector<uint32_t> inputs;
    fm_op_attrs attrs{};
    fm_dtype dtype = FM_DTYPE_F32;
    Shape probe[2];         // shape at the two probe batch sizes
    const char *origin = "";  // the public op that made it, for messages
    std::string name;       // placeholders and variables
    int32_t slot = -1;      // index among placeholders / variables / constants
    // Assignments that must run whenever this value is computed (the
    // running statistics of a training batch norm).
    std::vector<uint32_t> effects;
};

// What a variable starts as.
struct VariableInit {
    fm_init init{};
    std::vector<unsigned char> data;  // FM_INIT_DATA, copied
};

class Graph : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Graph;
    // Distinctive sizes, so that a message printed while inferring can show
    // the batch as -1 (see ProbeDisplay in shape.h) without mistaking a
    // real dim for it.
    static constexpr int64_t kProbeBatch[2] = {10007, 10009};

    Graph();

    uint32_t serial() const { return serial_; }
    fm_value to_value(uint32_t index) const { return (uint64_t(serial_) << 32) | (index + 1); }
    // Throws FM_ERR_INVALID_ARGUMENT naming `argument` for a value that is
    // not of this graph.
    uint32_t from_value(fm_value value, const char *argument) const;

    const Node &node(uint32_t index) const { return nodes_[index]; }
    size_t size() const { return nodes_.size(); }

    uint32_t add_placeholder(const std::string &name, fm_dtype dtype, const Shape &shape);
    uint32_t add_variable(const std::string &name, fm_dtype dtype, const Shape &shape,
                          VariableInit init);
    uint32_t add_constant(fm_dtype dtype, const Shape &shape, const void *data);
    uint32_t add_scalar(double value);
    // Infers the result for both probes; throws naming `origin`.
    uint32_t add(Prim prim, std::vector<uint32_t> inputs, const fm_op_attrs &attrs,
                 const char *origin);

    void add_effect(uint32_t value, uint32_t assignment) { nodes_[value].effects.push_back(assignment); }
    // Replaces the effects of `value` (the replaced assignments stay in the
    // graph, unreachable, so no index changes).
    void set_effects(uint32_t value, std::vector<uint32_t> assignments) { nodes_[value].effects = std::move(assignments); }

    // The public shape: FM_BATCH where the dim is the batch, and
    // FM_BATCH_DEPENDENT where it varies with the batch otherwise.
    Shape public_shape(uint32_t index) const;
    bool has_batch(uint32_t index) const { return nodes_[index].probe[0] != nodes_[index].probe[1]; }
    bool same_shape(uint32_t a, uint32_t b) const {
        return nodes_[a].probe[0] == nodes_[b].probe[0] && nodes_[a].probe[1] == nodes_[b].probe[1];
    }

    const std::vector<uint32_t> &placeholders() const { return placeholders_; }
    const std::vector<uint32_t> &variables() const { return variables_; }
    const VariableInit &variable_init(int32_t slot) const { return inits_[slot]; }
    const std::vector<unsigned char> &constant_data(int32_t slot) const { return constants_[slot]; }
    // Index of the variable or placeholder called `name`, or -1.
    int64_t find_named(const std::string &name) const;

    // Graphs are built by one thread at a time (header contract); this lock
    // protects readers that executables run on other threads.
    std::mutex &mutex() { return mutex_; }

private:
    uint32_t push(Node node);
    void claim_name(const std::string &name);

    uint32_t serial_;
    std::vector<Node> nodes_;
    std::vector<uint32_t> placeholders_, variables_;
    std::vector<VariableInit> inits_;
    std::vector<std::vector<unsigned char>> constants_;
    std::unordered_map<std::string, uint32_t> names_;
    std::mutex mutex_;
};

// Shape and dtype inference for one primitive on concrete input shapes.
// Throws FM_ERR_SHAPE_MISMATCH / DTYPE_MISMATCH naming `origin`.
struct Inferred {
    Shape shape;
    fm_dtype dtype;
};
Inferred infer(Prim prim, const fm_op_attrs &attrs, const std::vector<const Shape *> &shapes,
               const std::vector<fm_dtype> &dtypes, const char *origin);

// Output size of a convolution / pooling window along one dim.
int64_t window_output(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);

// Slice bounds of `attrs` resolved against `shape`: starts and result dims.
void resolve_slice(const Shape &shape, const fm_op_attrs &attrs, int64_t *starts, Shape *result);

// Bit i set for each reduced axis (all axes when num_axes is 0).
uint32_t axes_mask(const fm_op_attrs &attrs, size_t rank);

const char *op_name(fm_op op);
// Adds the public `op` to `graph` as primitives; returns the result value.
uint32_t build_op(Graph &graph, fm_op op, const std::vector<uint32_t> &inputs, fm_op_attrs attrs);
// Reverse-mode gradients of scalar `loss` for each of `wrt`.
std::vector<uint32_t> build_gradients(Graph &graph, uint32_t loss, const std::vector<uint32_t> &wrt);
// Throws FM_ERR_INVALID_ARGUMENT naming the field of `optimizer` that is
// unknown, infinite, NaN or out of its range.
void check_optimizer(const fm_optimizer &optimizer);
// Optimizer update subgraph; returns its Group token. With `keep` >= 0 (a
// scalar value), every variable it updates, the step counter included,
// keeps its old value while `keep` is 0.
uint32_t build_optimizer(Graph &graph, const fm_optimizer &optimizer,
                         const std::vector<uint32_t> &variables,
                         const std::vector<uint32_t> &gradients, const std::string &prefix,
                         int64_t keep = -1);

}  // namespace fm
