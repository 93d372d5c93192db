#include "graph.h"

#include <atomic>
#include <cstring>

#include "dtype.h"
#include "error.h"

namespace fm {

namespace {
std::atomic<uint32_t> next_serial{1};

void check_shape(const Shape &shape, const char *what, bool batch_allowed) {
    if (shape.size() > FM_MAX_RANK) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'rank': ", shape.size(), " exceeds FM_MAX_RANK (",
             FM_MAX_RANK, ") for ", what);
    }
    check_element_count(shape, std::string("argument 'shape' of ") + what);
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == FM_BATCH && i == 0 && batch_allowed) continue;
        if (shape[i] < 0) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'shape': dim ", i, " of ", what, " is ",
                 shape[i], batch_allowed ? " (only dim 0 may be FM_BATCH)" : "");
        }
    }
}
}  // namespace

Graph::Graph() : serial_(next_serial++) {}

uint32_t Graph::from_value(fm_value value, const char *argument) const {
    uint32_t serial = static_cast<uint32_t>(value >> 32);
    uint64_t index = value & 0xffffffffu;
    if (serial != serial_ || index == 0 || index > nodes_.size()) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument '", argument, "': value ", value,
             serial != serial_ ? " belongs to another graph" : " does not exist in this graph");
    }
    return static_cast<uint32_t>(index - 1);
}

uint32_t Graph::push(Node node) {
    nodes_.push_back(std::move(node));
    return static_cast<uint32_t>(nodes_.size() - 1);
}

void Graph::claim_name(const std::string &name) {
    if (name.empty()) fail(FM_ERR_INVALID_ARGUMENT, "argument 'name' is empty");
    if (names_.count(name)) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'name': '", name, "' is already used in this graph");
    }
    names_[name] = static_cast<uint32_t>(nodes_.size());
}

int64_t Graph::find_named(const std::string &name) const {
    auto found = names_.find(name);
    return found == names_.end() ? -1 : int64_t(found->second);
}

uint32_t Graph::add_placeholder(const std::string &name, fm_dtype dtype, const Shape &shape) {
    dtype_size(dtype, "dtype");
    check_shape(shape, "a placeholder", true);
    claim_name(name);
    Node node;
    node.prim = Prim::Placeholder;
    node.dtype = dtype;
    node.name = name;
    node.origin = "placeholder";
    for (int p = 0; p < 2; ++p) {
        node.probe[p] = shape;
        if (!shape.empty() && shape[0] == FM_BATCH) node.probe[p][0] = kProbeBatch[p];
    }
    node.slot = static_cast<int32_t>(placeholders_.size());
    placeholders_.push_back(static_cast<uint32_t>(nodes_.size()));
    return push(std::move(node));
}

uint32_t Graph::add_variable(const std::string &name, fm_dtype dtype, const Shape &shape,
                             VariableInit init) {
    dtype_size(dtype, "dtype");
    check_shape(shape, "a variable", false);
    if (static_cast<unsigned>(init.init.kind) >= FM_INIT_COUNT) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'init': unknown kind ", int(init.init.kind));
    }
    if (init.init.kind != FM_INIT_ZEROS && init.init.kind != FM_INIT_CONSTANT &&
        init.init.kind != FM_INIT_DATA && dtype != FM_DTYPE_F32) {
        fail(FM_ERR_DTYPE_MISMATCH, "argument 'init': random initialisers need f32, not ",
             fm_dtype_str(dtype));
    }
    if (init.init.kind == FM_INIT_DATA && init.data.size() != size_t(element_count(shape)) * dtype_size(dtype, "dtype")) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'init': FM_INIT_DATA for '", name, "' holds ", init.data.size(),
             " bytes, its shape ", to_string(shape), " needs ", size_t(element_count(shape)) * dtype_size(dtype, "dtype"));
    }
    claim_name(name);
    Node node;
    node.prim = Prim::Variable;
    node.dtype = dtype;
    node.name = name;
    node.origin = "variable";
    node.probe[0] = node.probe[1] = shape;
    node.slot = static_cast<int32_t>(variables_.size());
    variables_.push_back(static_cast<uint32_t>(nodes_.size()));
    inits_.push_back(std::move(init));
    return push(std::move(node));
}

uint32_t Graph::add_constant(fm_dtype dtype, const Shape &shape, const void *data) {
    size_t element = dtype_size(dtype, "dtype");
    check_shape(shape, "a constant", false);
    size_t bytes = size_t(element_count(shape)) * element;
    if (data == nullptr && bytes > 0) fail(FM_ERR_INVALID_ARGUMENT, "argument 'data' is NULL");
    Node node;
    node.prim = Prim::Constant;
    node.dtype = dtype;
    node.origin = "constant";
    node.probe[0] = node.probe[1] = shape;
    node.slot = static_cast<int32_t>(constants_.size());
    const auto *bytes_in = static_cast<const unsigned char *>(data);
    constants_.emplace_back(bytes_in, bytes_in + bytes);
    return push(std::move(node));
}

uint32_t Graph::add_scalar(double value) {
    float f = static_cast<float>(value);
    return add_constant(FM_DTYPE_F32, {}, &f);
}

uint32_t Graph::add(Prim prim, std::vector<uint32_t> inputs, const fm_op_attrs &attrs,
                    const char *origin) {
    Node node;
    node.prim = prim;
    node.attrs = attrs;
    node.origin = origin;
    std::vector<fm_dtype> dtypes;
    for (uint32_t input : inputs) dtypes.push_back(nodes_[input].dtype);
    for (int p = 0; p < 2; ++p) {
        ProbeDisplay display(kProbeBatch[p]);
        std::vector<const Shape *> shapes;
        for (uint32_t input : inputs) shapes.push_back(&nodes_[input].probe[p]);
        Inferred result = infer(prim, attrs, shapes, dtypes, origin);
        // Checked here once for every op: the C ABI's out_dims have room for
        // FM_MAX_RANK dims, and byte counts must not overflow.
        if (result.shape.size() > FM_MAX_RANK) {
            fail(FM_ERR_INVALID_ARGUMENT, origin, ": the result would have rank ", result.shape.size(),
                 ", more than FM_MAX_RANK (", FM_MAX_RANK, ")");
        }
        check_element_count(result.shape, origin);
        node.probe[p] = std::move(result.shape);
        node.dtype = result.dtype;
    }
    node.inputs = std::move(inputs);
    return push(std::move(node));
}

Shape Graph::public_shape(uint32_t index) const {
    const Node &node = nodes_[index];
    Shape shape = node.probe[0];
    for (size_t i = 0; i < shape.size(); ++i) {
        if (node.probe[0][i] == node.probe[1][i]) continue;
        bool is_batch = node.probe[0][i] == kProbeBatch[0] && node.probe[1][i] == kProbeBatch[1];
        shape[i] = is_batch ? FM_BATCH : FM_BATCH_DEPENDENT;
    }
    return shape;
}

}  // namespace fm
