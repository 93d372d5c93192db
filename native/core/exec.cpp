#include "exec.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dtype.h"
#include "error.h"

namespace fm {

Shape shape_argument(const int64_t *dims, size_t rank, const char *argument) {
    if (rank > FM_MAX_RANK) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument '", argument, "': rank ", rank, " exceeds FM_MAX_RANK (",
             FM_MAX_RANK, ")");
    }
    if (rank > 0 && dims == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument '", argument, "' is NULL");
    Shape shape(dims, dims + rank);
    check_element_count(shape, std::string("argument '") + argument + "'");
    return shape;
}

Exec::Exec(std::shared_ptr<Graph> graph, std::shared_ptr<Device> device)
    : graph_(std::move(graph)), device_(std::move(device)) {
    if (device_->iface().exec.run == nullptr) {
        fail(FM_ERR_UNSUPPORTED, "argument 'device': ", device_->label(), " cannot run graphs yet");
    }
    std::lock_guard<std::mutex> lock(graph_->mutex());
    for (size_t slot = 0; slot < graph_->variables().size(); ++slot) variable(int32_t(slot));
}

Exec::~Exec() {
    if (device_->iface().exec.release) {
        for (auto &entry : plans_) {
            if (entry.second->ctx) device_->iface().exec.release(device_->ctx(), entry.second->ctx);
        }
    }
}

Buffer &Exec::variable(int32_t slot) {
    if (size_t(slot) >= variables_.size()) variables_.resize(slot + 1);
    if (!variables_[slot]) {
        const Node &node = graph_->node(graph_->variables()[slot]);
        const VariableInit &init = graph_->variable_init(slot);
        size_t count = size_t(element_count(node.probe[0]));
        auto buffer = std::make_shared<Buffer>(device_, node.dtype, count);
        if (init.init.kind == FM_INIT_DATA) {
            if (count) device_->iface().transfer.write(device_->ctx(), buffer->data(), 0, init.data.data(), buffer->nbytes(), nullptr);
        } else if (node.dtype == FM_DTYPE_F32) {
            std::vector<float> values(count);
            initialise_variable(init.init, node.probe[0], values.data());
            if (count) device_->iface().transfer.write(device_->ctx(), buffer->data(), 0, values.data(), buffer->nbytes(), nullptr);
        } else if (count) {
            unsigned char pattern[4];
            size_t bytes = encode_scalar(node.dtype, init.init.kind == FM_INIT_CONSTANT ? init.init.value : 0.0, pattern);
            device_->iface().transfer.fill(device_->ctx(), buffer->data(), 0, count, pattern, bytes, nullptr);
        }
        variables_[slot] = std::move(buffer);
    }
    return *variables_[slot];
}

Buffer &Exec::constant(int32_t slot) {
    if (size_t(slot) >= constants_.size()) constants_.resize(slot + 1);
    if (!constants_[slot]) {
        const std::vector<unsigned char> &data = graph_->constant_data(slot);
        auto buffer = std::make_shared<Buffer>(device_, FM_DTYPE_U8, data.size());
        if (!data.empty()) device_->iface().transfer.write(device_->ctx(), buffer->data(), 0, data.data(), data.size(), nullptr);
        constants_[slot] = std::move(buffer);
    }
    return *constants_[slot];
}

Exec::Compiled &Exec::compiled(const std::vector<Feed> &feeds, const std::vector<uint32_t> &fetches) {
    size_t placeholders = graph_->placeholders().size();
    std::vector<Shape> shapes(placeholders);
    std::vector<bool> fed(placeholders, false);
    for (const Feed &feed : feeds) {
        int32_t slot = graph_->node(feed.placeholder).slot;
        shapes[slot] = feed.tensor->shape;
        fed[slot] = true;
    }
    // The key: every placeholder's shape (or a marker if unfed), then the fetches.
    std::vector<int64_t> key;
    for (size_t i = 0; i < placeholders; ++i) {
        key.push_back(fed[i] ? int64_t(shapes[i].size()) : -1);
        key.insert(key.end(), shapes[i].begin(), shapes[i].end());
    }
    key.push_back(-2);
    key.insert(key.end(), fetches.begin(), fetches.end());
    auto found = plans_.find(key);
    if (found != plans_.end()) {
        found->second->last_used = ++use_clock_;
        return *found->second;
    }

    auto entry = std::make_unique<Compiled>();
    entry->plan = make_plan(*graph_, shapes, fed, fetches);
    if (const char *print = std::getenv("FERROMETAL_PRINT_PLANS"); print && *print && *print != '0') {
        print_plan(entry->plan, stderr);
    }
    if (device_->iface().exec.compile) entry->ctx = device_->iface().exec.compile(device_->ctx(), entry->plan);
    entry->arena = std::make_shared<Buffer>(device_, FM_DTYPE_U8, entry->plan.arena_bytes);
    entry->scalars = std::make_shared<Buffer>(device_, FM_DTYPE_F32, entry->plan.scalars.size());
    if (!entry->plan.scalars.empty()) {
        device_->iface().transfer.write(device_->ctx(), entry->scalars->data(), 0, entry->plan.scalars.data(),
                                        entry->scalars->nbytes(), nullptr);
    }
    entry->last_used = ++use_clock_;
    Compiled &made = *plans_.emplace(std::move(key), std::move(entry)).first->second;
    evict_old_plans(made);
    return made;
}

void Exec::evict_old_plans(const Compiled &keep) {
    while (plans_.size() > kMaxPlans) {
        auto oldest = plans_.end();
        for (auto it = plans_.begin(); it != plans_.end(); ++it) {
            if (it->second.get() == &keep) continue;
            if (oldest == plans_.end() || it->second->last_used < oldest->second->last_used) oldest = it;
        }
        if (oldest == plans_.end()) return;
        if (oldest->second->ctx && device_->iface().exec.release) {
            device_->iface().exec.release(device_->ctx(), oldest->second->ctx);
        }
        if (last_ == oldest->second.get()) last_ = nullptr;
        plans_.erase(oldest);
    }
}

std::vector<std::shared_ptr<Tensor>> Exec::run(const std::vector<Feed> &feeds, const std::vector<uint32_t> &fetches,
                                               const std::shared_ptr<Stream> &stream) {
    std::lock_guard<std::mutex> lock(graph_->mutex());
    // Every symbolic batch dim must agree across the feeds.
    int64_t batch = -1;
    const char *batch_from = nullptr;
    for (const Feed &feed : feeds) {
        const Node &node = graph_->node(feed.placeholder);
        if (node.prim != Prim::Placeholder) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'feeds': value ", graph_->to_value(feed.placeholder),
                 " is not a placeholder");
        }
        if (feed.tensor->buffer->device() != device_) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'feeds': the tensor for '", node.name, "' is on ",
                 feed.tensor->buffer->device()->label(), ", the executable on ", device_->label());
        }
        if (feed.tensor->buffer->dtype() != node.dtype) {
            fail(FM_ERR_DTYPE_MISMATCH, "argument 'feeds': placeholder '", node.name, "' is ",
                 fm_dtype_str(node.dtype), ", fed ", fm_dtype_str(feed.tensor->buffer->dtype()));
        }
        Shape declared = graph_->public_shape(feed.placeholder);
        const Shape &given = feed.tensor->shape;
        bool fits = declared.size() == given.size();
        for (size_t i = 0; fits && i < declared.size(); ++i) fits = declared[i] == FM_BATCH || declared[i] == given[i];
        if (!fits) {
            fail(FM_ERR_SHAPE_MISMATCH, "argument 'feeds': placeholder '", node.name, "' is ", to_string(declared),
                 " (-1: any batch), fed ", to_string(given));
        }
        if (!declared.empty() && declared[0] == FM_BATCH) {
            if (batch >= 0 && given[0] != batch) {
                fail(FM_ERR_SHAPE_MISMATCH, "argument 'feeds': placeholder '", node.name, "' has batch ", given[0],
                     " but '", batch_from, "' has batch ", batch);
            }
            batch = given[0];
            batch_from = node.name.c_str();
        }
    }
    Compiled &entry = compiled(feeds, fetches);
    const Plan &plan = entry.plan;

    Bindings bindings;
    bindings.arena = entry.arena->data();
    bindings.scalars = static_cast<const float *>(entry.scalars->data());
    bindings.run_index = runs_.load();
    bindings.variables.assign(graph_->variables().size(), nullptr);
    bindings.constants.assign(graph_->size(), nullptr);
    bindings.feeds.assign(graph_->placeholders().size(), nullptr);
    auto bind = [&](const TensorRef &ref) {
        if (ref.storage == Storage::Variable) bindings.variables[ref.index] = variable(int32_t(ref.index)).data();
        if (ref.storage == Storage::Constant) bindings.constants[ref.index] = constant(int32_t(ref.index)).data();
    };
    for (const Step &step : plan.steps) {
        for (const TensorRef &ref : step.inputs) bind(ref);
        bind(step.output);
        if (step.fused) {
            for (const TensorRef &ref : step.fused->loads) bind(ref);
            for (const auto &store : step.fused->stores) bind(store.second);
        }
    }
    for (const Feed &feed : feeds) {
        bindings.feeds[graph_->node(feed.placeholder).slot] = feed.tensor->buffer->data();
    }
    // Output buffers are reused once the caller has let go of the last
    // run's tensors (a training loop's loss), so a step allocates nothing;
    // only on the same stream, so that work still queued on another stream
    // (a read of the old tensor) cannot see the new values. (A stream that
    // is gone has finished its work.)
    std::vector<std::shared_ptr<Tensor>> outputs;
    entry.outputs.resize(plan.outputs.size());
    const bool same_stream = entry.outputs_stream.lock() == stream;
    entry.outputs_stream = stream;
    for (size_t i = 0; i < plan.outputs.size(); ++i) {
        const TensorRef &out = plan.outputs[i];
        std::shared_ptr<Buffer> &cached = entry.outputs[i];
        if (!cached || cached.use_count() > 1 || !same_stream) {
            cached = std::make_shared<Buffer>(device_, out.dtype, size_t(element_count(out.shape)));
        }
        bindings.outputs.push_back(cached->data());
        outputs.push_back(std::make_shared<Tensor>(cached, out.shape));
    }
    device_->iface().exec.run(device_->ctx(), entry.ctx, plan, bindings, stream ? stream->ctx() : nullptr);
    if (stream) {
        for (auto &out : outputs) out->buffer->used_on(stream);
    }
    ++runs_;
    last_ = &entry;

    // One tensor per fetch, shared where a value is fetched twice (the
    // planner numbers outputs by first occurrence).
    std::map<uint32_t, size_t> slot_of;
    std::vector<std::shared_ptr<Tensor>> result;
    for (uint32_t f : fetches) {
        auto found = slot_of.emplace(f, slot_of.size()).first;
        result.push_back(outputs[found->second]);
    }
    return result;
}

// The caller holds the graph's lock across its transfer too: a run on
// another thread may be updating the same variable.
Buffer &Exec::named_variable(const std::string &name, size_t count, const char *argument) {
    int64_t index = graph_->find_named(name);
    if (index < 0 || graph_->node(uint32_t(index)).prim != Prim::Variable) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'name': no variable called '", name, "'");
    }
    Buffer &buffer = variable(graph_->node(uint32_t(index)).slot);
    if (count != buffer.count()) {
        fail(FM_ERR_SHAPE_MISMATCH, "argument '", argument, "': variable '", name, "' has ", buffer.count(),
             " elements, not ", count);
    }
    return buffer;
}

Shape Exec::variable_shape(const std::string &name) {
    std::lock_guard<std::mutex> lock(graph_->mutex());
    int64_t index = graph_->find_named(name);
    if (index < 0 || graph_->node(uint32_t(index)).prim != Prim::Variable) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'name': no variable called '", name, "'");
    }
    return graph_->node(uint32_t(index)).probe[0];
}

void Exec::read_variable(const std::string &name, void *dst, size_t count) {
    std::lock_guard<std::mutex> lock(graph_->mutex());
    Buffer &buffer = named_variable(name, count, "count");
    if (count == 0) return;
    if (dst == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'dst' is NULL");
    device_->iface().transfer.read(device_->ctx(), buffer.data(), 0, dst, buffer.nbytes(), nullptr);
}

void Exec::write_variable(const std::string &name, const void *src, size_t count) {
    std::lock_guard<std::mutex> lock(graph_->mutex());
    Buffer &buffer = named_variable(name, count, "count");
    if (count == 0) return;
    if (src == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'src' is NULL");
    // In queue order where the backend can: a learning rate set between
    // steps need not wait for the step in flight.
    const TransferIface &transfer = device_->iface().transfer;
    if (transfer.write_queued) return transfer.write_queued(device_->ctx(), buffer.data(), 0, src, buffer.nbytes());
    transfer.write(device_->ctx(), buffer.data(), 0, src, buffer.nbytes(), nullptr);
}

void Exec::check_errors() {
    std::lock_guard<std::mutex> lock(graph_->mutex());
    if (!device_->iface().exec.check) return;
    for (auto &entry : plans_) {
        if (entry.second->ctx) device_->iface().exec.check(device_->ctx(), entry.second->ctx);
    }
}

void Exec::planned_memory(uint64_t *peak, uint64_t *unshared) const {
    *peak = last_ ? last_->plan.arena_bytes : 0;
    *unshared = last_ ? last_->plan.unshared_bytes : 0;
}

}  // namespace fm
