// C entry points for tensors, graphs and executables (level 2).
#include <cmath>
#include <cstring>

#include "builder.h"
#include "dtype.h"
#include "exec.h"
#include "guard.h"

using fm::Exec;
using fm::fail;
using fm::Graph;
using fm::guard;
using fm::require_out;
using fm::Shape;
using fm::Tensor;

namespace {

std::vector<uint32_t> values_argument(const Graph &graph, const fm_value *values, size_t count, const char *argument) {
    if (count > 0 && values == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument '", argument, "' is NULL");
    std::vector<uint32_t> out;
    for (size_t i = 0; i < count; ++i) out.push_back(graph.from_value(values[i], argument));
    return out;
}

const char *name_argument(const char *name) {
    if (name == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'name' is NULL");
    return name;
}

}  // namespace

extern "C" {

fm_status fm_tensor_new(fm_tensor *out_tensor, fm_device device, fm_dtype dtype, const int64_t *shape, size_t rank) {
    return guard(__func__, [&] {
        require_out(out_tensor, "out_tensor");
        Shape dims = fm::shape_argument(shape, rank, "shape");
        size_t count = 1;
        for (int64_t dim : dims) {
            if (dim < 0) fail(FM_ERR_INVALID_ARGUMENT, "argument 'shape': dim ", dim, " is negative");
            if (dim > 0 && count > SIZE_MAX / size_t(dim)) fail(FM_ERR_INVALID_ARGUMENT, "argument 'shape': the element count overflows");
            count *= size_t(dim);
        }
        auto owner = fm::lookup<fm::Device>(device, "device");
        auto buffer = std::make_shared<fm::Buffer>(owner, dtype, count);
        *out_tensor = fm::insert(std::make_shared<Tensor>(std::move(buffer), std::move(dims)));
    });
}

fm_status fm_tensor_from_buffer(fm_tensor *out_tensor, fm_buffer buffer, const int64_t *shape, size_t rank) {
    return guard(__func__, [&] {
        require_out(out_tensor, "out_tensor");
        auto source = fm::lookup<fm::Buffer>(buffer, "buffer");
        Shape dims = fm::shape_argument(shape, rank, "shape");
        for (int64_t dim : dims) if (dim < 0) fail(FM_ERR_INVALID_ARGUMENT, "argument 'shape': dim ", dim, " is negative");
        if (size_t(fm::element_count(dims)) != source->count()) {
            fail(FM_ERR_SHAPE_MISMATCH, "argument 'shape': ", fm::to_string(dims), " has ", fm::element_count(dims),
                 " elements, the buffer ", source->count());
        }
        *out_tensor = fm::insert(std::make_shared<Tensor>(std::move(source), std::move(dims)));
    });
}

fm_status fm_tensor_buffer(fm_buffer *out_buffer, fm_tensor tensor) {
    return guard(__func__, [&] {
        require_out(out_buffer, "out_buffer");
        *out_buffer = fm::insert(fm::lookup<Tensor>(tensor, "tensor")->buffer);
    });
}

fm_status fm_tensor_shape(int64_t *out_dims, size_t *out_rank, fm_tensor tensor) {
    return guard(__func__, [&] {
        require_out(out_dims, "out_dims");
        require_out(out_rank, "out_rank");
        auto t = fm::lookup<Tensor>(tensor, "tensor");
        std::copy(t->shape.begin(), t->shape.end(), out_dims);
        *out_rank = t->shape.size();
    });
}

fm_status fm_graph_new(fm_graph *out_graph) {
    return guard(__func__, [&] {
        require_out(out_graph, "out_graph");
        *out_graph = fm::insert(std::make_shared<Graph>());
    });
}

fm_status fm_graph_placeholder(fm_value *out_value, fm_graph graph, const char *name, fm_dtype dtype,
                               const int64_t *shape, size_t rank) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        *out_value = g->to_value(g->add_placeholder(name_argument(name), dtype, fm::shape_argument(shape, rank, "shape")));
    });
}

fm_init fm_init_default(void) {
    fm_init init{};
    init.kind = FM_INIT_ZEROS;
    init.low = -1.0;
    init.high = 1.0;
    init.std = 1.0;
    return init;
}

fm_status fm_graph_variable(fm_value *out_value, fm_graph graph, const char *name, fm_dtype dtype,
                            const int64_t *shape, size_t rank, const fm_init *init) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        auto g = fm::lookup<Graph>(graph, "graph");
        Shape dims = fm::shape_argument(shape, rank, "shape");
        fm::VariableInit how;
        how.init = init ? *init : fm_init_default();
        if (how.init.kind == FM_INIT_DATA) {
            // The dims are checked before they size the copy (add_variable
            // checks them again, with the rest).
            for (size_t i = 0; i < dims.size(); ++i) {
                if (dims[i] < 0) fail(FM_ERR_INVALID_ARGUMENT, "argument 'shape': dim ", i, " of a variable is ", dims[i]);
            }
            size_t bytes = size_t(fm::element_count(dims)) * fm::dtype_size(dtype, "dtype");
            if (bytes && how.init.data == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'init': data is NULL");
            const auto *data = static_cast<const unsigned char *>(how.init.data);
            how.data.assign(data, data + bytes);
            how.init.data = nullptr;
        }
        std::lock_guard<std::mutex> lock(g->mutex());
        *out_value = g->to_value(g->add_variable(name_argument(name), dtype, dims, std::move(how)));
    });
}

fm_status fm_graph_constant(fm_value *out_value, fm_graph graph, fm_dtype dtype, const int64_t *shape, size_t rank,
                            const void *data) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        *out_value = g->to_value(g->add_constant(dtype, fm::shape_argument(shape, rank, "shape"), data));
    });
}

fm_status fm_graph_scalar(fm_value *out_value, fm_graph graph, double value) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        *out_value = g->to_value(g->add_scalar(value));
    });
}

const char *fm_op_str(fm_op op) { return fm::op_name(op); }

fm_op_attrs fm_op_attrs_default(void) { return fm::default_attrs(); }

fm_status fm_graph_op(fm_value *out_value, fm_graph graph, fm_op op, const fm_value *inputs, size_t num_inputs,
                      const fm_op_attrs *attrs) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        std::vector<uint32_t> in = values_argument(*g, inputs, num_inputs, "inputs");
        *out_value = g->to_value(fm::build_op(*g, op, in, attrs ? *attrs : fm::default_attrs()));
    });
}

fm_status fm_graph_value_info(fm_dtype *out_dtype, int64_t *out_dims, size_t *out_rank, fm_graph graph,
                              fm_value value) {
    return guard(__func__, [&] {
        require_out(out_dtype, "out_dtype");
        require_out(out_dims, "out_dims");
        require_out(out_rank, "out_rank");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        uint32_t v = g->from_value(value, "value");
        Shape shape = g->public_shape(v);
        *out_dtype = g->node(v).dtype;
        std::copy(shape.begin(), shape.end(), out_dims);
        *out_rank = shape.size();
    });
}

fm_status fm_graph_variable_count(size_t *out_count, fm_graph graph) {
    return guard(__func__, [&] {
        require_out(out_count, "out_count");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        *out_count = g->variables().size();
    });
}

fm_status fm_graph_variable_at(fm_value *out_value, const char **out_name, fm_graph graph, size_t index) {
    return guard(__func__, [&] {
        require_out(out_value, "out_value");
        require_out(out_name, "out_name");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        if (index >= g->variables().size()) {
            fail(FM_ERR_OUT_OF_RANGE, "argument 'index': ", index, " but the graph has ", g->variables().size(),
                 " variables");
        }
        uint32_t v = g->variables()[index];
        *out_value = g->to_value(v);
        *out_name = g->node(v).name.c_str();
    });
}

fm_status fm_graph_gradients(fm_value *out_gradients, fm_graph graph, fm_value loss, const fm_value *wrt,
                             size_t count) {
    return guard(__func__, [&] {
        if (count) require_out(out_gradients, "out_gradients");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        uint32_t l = g->from_value(loss, "loss");
        std::vector<uint32_t> targets = values_argument(*g, wrt, count, "wrt");
        std::vector<uint32_t> grads = fm::build_gradients(*g, l, targets);
        for (size_t i = 0; i < count; ++i) out_gradients[i] = g->to_value(grads[i]);
    });
}

fm_optimizer fm_optimizer_default(fm_optimizer_kind kind) {
    fm_optimizer o{};
    o.kind = kind;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.alpha = 0.99;
    o.rho = 0.9;
    o.momentum_decay = 4e-3;
    switch (kind) {
        case FM_OPTIMIZER_SGD: o.learning_rate = 1e-3; break;
        case FM_OPTIMIZER_ADAM: o.learning_rate = 1e-3; break;
        case FM_OPTIMIZER_ADAMW: o.learning_rate = 1e-3, o.weight_decay = 0.01; break;
        case FM_OPTIMIZER_RMSPROP: o.learning_rate = 0.01; break;
        case FM_OPTIMIZER_ADAGRAD: o.learning_rate = 0.01, o.eps = 1e-10; break;
        case FM_OPTIMIZER_ADADELTA: o.learning_rate = 1.0, o.eps = 1e-6; break;
        case FM_OPTIMIZER_NADAM: o.learning_rate = 2e-3; break;
        default: break;
    }
    return o;
}

fm_status fm_graph_optimizer(fm_value *out_step, fm_graph graph, const fm_optimizer *optimizer,
                             const fm_value *variables, const fm_value *gradients, size_t count, const char *prefix) {
    return guard(__func__, [&] {
        require_out(out_step, "out_step");
        if (optimizer == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer' is NULL");
        auto g = fm::lookup<Graph>(graph, "graph");
        std::lock_guard<std::mutex> lock(g->mutex());
        std::vector<uint32_t> vars = values_argument(*g, variables, count, "variables");
        std::vector<uint32_t> grads = values_argument(*g, gradients, count, "gradients");
        *out_step = g->to_value(fm::build_optimizer(*g, *optimizer, vars, grads, prefix ? prefix : "optimizer."));
    });
}

fm_status fm_graph_compile(fm_exec *out_exec, fm_graph graph, fm_device device) {
    return guard(__func__, [&] {
        require_out(out_exec, "out_exec");
        auto g = fm::lookup<Graph>(graph, "graph");
        auto d = fm::lookup<fm::Device>(device, "device");
        *out_exec = fm::insert(std::make_shared<Exec>(g, d));
    });
}

fm_status fm_exec_run(fm_exec exec, const fm_feed *feeds, size_t num_feeds, const fm_value *fetches,
                      size_t num_fetches, fm_tensor *out_tensors, fm_stream stream) {
    return guard(__func__, [&] {
        auto e = fm::lookup<Exec>(exec, "exec");
        if (num_feeds && feeds == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'feeds' is NULL");
        if (num_fetches && fetches == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'fetches' is NULL");
        std::shared_ptr<fm::Stream> queue;
        if (stream != 0) {
            queue = fm::lookup<fm::Stream>(stream, "stream");
            if (queue->device() != e->device()) fail(FM_ERR_INVALID_ARGUMENT, "argument 'stream' belongs to another device");
        }
        const Graph &graph = *e->graph();
        std::vector<Exec::Feed> in;
        for (size_t i = 0; i < num_feeds; ++i) {
            uint32_t placeholder = graph.from_value(feeds[i].placeholder, "feeds");
            for (const Exec::Feed &earlier : in) {
                if (earlier.placeholder == placeholder) fail(FM_ERR_INVALID_ARGUMENT, "argument 'feeds': a placeholder is fed twice");
            }
            in.push_back({placeholder, fm::lookup<Tensor>(feeds[i].tensor, "feeds")});
        }
        std::vector<uint32_t> wanted = values_argument(graph, fetches, num_fetches, "fetches");
        auto results = e->run(in, wanted, queue);
        if (out_tensors) {
            std::vector<fm_tensor> handles;
            try {
                for (auto &result : results) handles.push_back(fm::insert(result));
            } catch (...) {
                for (fm_tensor handle : handles) fm::handle_release(handle);
                throw;
            }
            std::copy(handles.begin(), handles.end(), out_tensors);
        }
    });
}

fm_status fm_exec_variable_shape(int64_t *out_dims, size_t *out_rank, fm_exec exec, const char *name) {
    return guard(__func__, [&] {
        require_out(out_dims, "out_dims");
        require_out(out_rank, "out_rank");
        Shape shape = fm::lookup<Exec>(exec, "exec")->variable_shape(name_argument(name));
        std::copy(shape.begin(), shape.end(), out_dims);
        *out_rank = shape.size();
    });
}

fm_status fm_exec_read_variable(fm_exec exec, const char *name, void *dst, size_t count) {
    return guard(__func__, [&] { fm::lookup<Exec>(exec, "exec")->read_variable(name_argument(name), dst, count); });
}

fm_status fm_exec_write_variable(fm_exec exec, const char *name, const void *src, size_t count) {
    return guard(__func__, [&] { fm::lookup<Exec>(exec, "exec")->write_variable(name_argument(name), src, count); });
}

fm_status fm_exec_synchronize(fm_exec exec) {
    return guard(__func__, [&] { fm::lookup<Exec>(exec, "exec")->check_errors(); });
}

fm_status fm_exec_run_count(uint64_t *out_count, fm_exec exec) {
    return guard(__func__, [&] { *require_out(out_count, "out_count") = fm::lookup<Exec>(exec, "exec")->run_count(); });
}

fm_status fm_exec_set_run_count(fm_exec exec, uint64_t count) {
    return guard(__func__, [&] { fm::lookup<Exec>(exec, "exec")->set_run_count(count); });
}

fm_status fm_exec_planned_memory(uint64_t *out_peak_bytes, uint64_t *out_unshared_bytes, fm_exec exec) {
    return guard(__func__, [&] {
        require_out(out_peak_bytes, "out_peak_bytes");
        require_out(out_unshared_bytes, "out_unshared_bytes");
        fm::lookup<Exec>(exec, "exec")->planned_memory(out_peak_bytes, out_unshared_bytes);
    });
}

}  // extern "C"
