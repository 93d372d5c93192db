#include "engine.h"

#include <cmath>

#include "builder.h"
#include "error.h"
#include "nonfinite_guard.h"

namespace fm {

namespace {

const char *layer_kind_name(fm_layer_kind kind) {
    switch (kind) {
        case FM_LAYER_DENSE: return "dense";
        case FM_LAYER_CONV2D: return "conv2d";
        case FM_LAYER_CONV_TRANSPOSE2D: return "conv_transpose2d";
        case FM_LAYER_MAX_POOL2D: return "max_pool2d";
        case FM_LAYER_AVG_POOL2D: return "avg_pool2d";
        case FM_LAYER_GLOBAL_AVG_POOL: return "global_avg_pool";
        case FM_LAYER_FLATTEN: return "flatten";
        case FM_LAYER_DROPOUT: return "dropout";
        case FM_LAYER_BATCH_NORM: return "batch_norm";
        case FM_LAYER_LAYER_NORM: return "layer_norm";
        case FM_LAYER_RELU: return "relu";
        case FM_LAYER_LEAKY_RELU: return "leaky_relu";
        case FM_LAYER_ELU: return "elu";
        case FM_LAYER_SIGMOID: return "sigmoid";
        case FM_LAYER_TANH: return "tanh";
        case FM_LAYER_SWISH: return "swish";
        case FM_LAYER_GELU: return "gelu";
        case FM_LAYER_SOFTMAX: return "softmax";
        case FM_LAYER_COUNT: break;
    }
    return nullptr;
}

class ModelBuilder {
public:
    ModelBuilder(Graph &graph, const std::vector<fm_layer_spec> &layers, uint64_t seed)
        : g(graph), layers(layers), seed(seed) {}

    std::string layer_name(size_t i) const {
        if (layers[i].name) return layers[i].name;
        return std::string(layer_kind_name(layers[i].kind)) + std::to_string(i);
    }

    // The variable `name`, created on first use (the two passes share them).
    uint32_t variable(const std::string &name, const Shape &shape, fm_init_kind kind, double value, uint64_t init_seed,
                      std::vector<uint32_t> *list) {
        int64_t existing = g.find_named(name);
        if (existing >= 0) return uint32_t(existing);
        VariableInit init;
        init.init = fm_init{};
        init.init.kind = kind;
        init.init.value = value;
        init.init.seed = init_seed;
        init.init.low = -1, init.init.high = 1, init.init.std = 1;
        uint32_t v = g.add_variable(name, FM_DTYPE_F32, shape, init);
        list->push_back(v);
        return v;
    }

    uint32_t forward(uint32_t x, bool training);
    uint32_t layer(size_t i, uint32_t x, bool training);

    Graph &g;
    const std::vector<fm_layer_spec> &layers;
    uint64_t seed;
    Model model;
};

fm_op_attrs window(const fm_layer_spec &s) {
    fm_op_attrs a = default_attrs();
    for (int k = 0; k < 2; ++k) {
        a.kernel_size[k] = s.kernel_size[k];
        a.stride[k] = s.stride[k];
        a.padding[k] = s.padding[k];
        a.dilation[k] = s.dilation[k] ? s.dilation[k] : 1;
        a.output_padding[k] = s.output_padding[k];
    }
    a.groups = s.groups ? s.groups : 1;
    return a;
}

uint32_t ModelBuilder::layer(size_t i, uint32_t x, bool training) {
    const fm_layer_spec &s = layers[i];
    std::string name = layer_name(i);
    const Shape &in = g.node(x).probe[0];
    if (static_cast<unsigned>(s.init) >= FM_INIT_COUNT) fail(FM_ERR_INVALID_ARGUMENT, "init: unknown kind ", int(s.init));
    if (s.init == FM_INIT_DATA) {
        fail(FM_ERR_INVALID_ARGUMENT, "init: FM_INIT_DATA needs data, which a layer spec cannot carry (initialise with "
                                      "another kind, then write the weights, or load a checkpoint)");
    }
    uint64_t layer_seed = s.seed ? s.seed : seed * 1000003ull + i + 1;
    auto weight = [&](const Shape &shape) {
        return variable(name + ".weight", shape, s.init, 0.0, layer_seed, &model.parameters);
    };
    auto bias = [&](int64_t size) {
        return variable(name + ".bias", {size}, FM_INIT_ZEROS, 0.0, 0, &model.parameters);
    };
    auto op = [&](fm_op o, std::vector<uint32_t> inputs, const fm_op_attrs &a) { return build_op(g, o, inputs, a); };
    fm_op_attrs a = default_attrs();
    switch (s.kind) {
        case FM_LAYER_DENSE: {
            if (s.units <= 0) fail(FM_ERR_INVALID_ARGUMENT, "units must be positive");
            if (in.size() != 2) {
                fail(FM_ERR_SHAPE_MISMATCH, "dense expects [batch, features], got ", to_string(g.public_shape(x)),
                     " (add a flatten layer first)");
            }
            std::vector<uint32_t> inputs{x, weight({s.units, in[1]})};
            if (s.bias) inputs.push_back(bias(s.units));
            return op(FM_OP_LINEAR, inputs, a);
        }
        case FM_LAYER_CONV2D:
        case FM_LAYER_CONV_TRANSPOSE2D: {
            if (s.units <= 0) fail(FM_ERR_INVALID_ARGUMENT, "units (output channels) must be positive");
            if (in.size() != 4) fail(FM_ERR_SHAPE_MISMATCH, "expects [batch, channels, height, width], got ", to_string(g.public_shape(x)));
            a = window(s);
            for (int k = 0; k < 2; ++k) if (a.stride[k] == 0) a.stride[k] = 1;
            bool transposed = s.kind == FM_LAYER_CONV_TRANSPOSE2D;
            if (in[1] % a.groups != 0 || s.units % a.groups != 0) {
                fail(FM_ERR_SHAPE_MISMATCH, "groups ", a.groups, " must divide input channels ", in[1], " and units ", s.units);
            }
            Shape w = transposed ? Shape{in[1], s.units / a.groups, s.kernel_size[0], s.kernel_size[1]}
                                 : Shape{s.units, in[1] / a.groups, s.kernel_size[0], s.kernel_size[1]};
            if (s.kernel_size[0] <= 0 || s.kernel_size[1] <= 0) fail(FM_ERR_INVALID_ARGUMENT, "kernel_size must be positive");
            std::vector<uint32_t> inputs{x, weight(w)};
            if (s.bias) inputs.push_back(bias(s.units));
            return op(transposed ? FM_OP_CONV_TRANSPOSE2D : FM_OP_CONV2D, inputs, a);
        }
        case FM_LAYER_MAX_POOL2D:
        case FM_LAYER_AVG_POOL2D:
            return op(s.kind == FM_LAYER_MAX_POOL2D ? FM_OP_MAX_POOL2D : FM_OP_AVG_POOL2D, {x}, window(s));
        case FM_LAYER_GLOBAL_AVG_POOL: return op(FM_OP_GLOBAL_AVG_POOL, {x}, a);
        case FM_LAYER_FLATTEN: return op(FM_OP_FLATTEN, {x}, a);
        case FM_LAYER_DROPOUT:
            a.p = s.rate;
            a.seed = layer_seed;
            a.training = training;
            return op(FM_OP_DROPOUT, {x}, a);
        case FM_LAYER_BATCH_NORM: {
            if (in.size() < 2) fail(FM_ERR_SHAPE_MISMATCH, "expects [batch, channels, ...], got ", to_string(g.public_shape(x)));
            Shape c{in[1]};
            uint32_t gamma = variable(name + ".weight", c, FM_INIT_CONSTANT, 1.0, 0, &model.parameters);
            uint32_t beta = variable(name + ".bias", c, FM_INIT_ZEROS, 0.0, 0, &model.parameters);
            uint32_t mean = variable(name + ".running_mean", c, FM_INIT_ZEROS, 0.0, 0, &model.statistics);
            uint32_t var = variable(name + ".running_var", c, FM_INIT_CONSTANT, 1.0, 0, &model.statistics);
            a.momentum = s.momentum;
            a.eps = s.eps;
            a.training = training;
            return op(FM_OP_BATCH_NORM, {x, gamma, beta, mean, var}, a);
        }
        case FM_LAYER_LAYER_NORM: {
            Shape rest(in.begin() + 1, in.end());
            if (rest.empty()) fail(FM_ERR_SHAPE_MISMATCH, "needs at least one dim besides the batch");
            uint32_t gamma = variable(name + ".weight", rest, FM_INIT_CONSTANT, 1.0, 0, &model.parameters);
            uint32_t beta = variable(name + ".bias", rest, FM_INIT_ZEROS, 0.0, 0, &model.parameters);
            a.normalized_rank = int64_t(rest.size());
            a.eps = s.eps;
            return op(FM_OP_LAYER_NORM, {x, gamma, beta}, a);
        }
        case FM_LAYER_RELU: return op(FM_OP_RELU, {x}, a);
        case FM_LAYER_LEAKY_RELU: a.slope = s.slope; return op(FM_OP_LEAKY_RELU, {x}, a);
        case FM_LAYER_ELU: a.alpha = s.alpha; return op(FM_OP_ELU, {x}, a);
        case FM_LAYER_SIGMOID: return op(FM_OP_SIGMOID, {x}, a);
        case FM_LAYER_TANH: return op(FM_OP_TANH, {x}, a);
        case FM_LAYER_SWISH: return op(FM_OP_SILU, {x}, a);
        case FM_LAYER_GELU: a.approximate = s.approximate; return op(FM_OP_GELU, {x}, a);
        case FM_LAYER_SOFTMAX: a.axes[0] = 1, a.num_axes = 1; return op(FM_OP_SOFTMAX, {x}, a);
        case FM_LAYER_COUNT: break;
    }
    fail(FM_ERR_INVALID_ARGUMENT, "unknown layer kind ", int(s.kind));
}

uint32_t ModelBuilder::forward(uint32_t x, bool training) {
    for (size_t i = 0; i < layers.size(); ++i) {
        if (layer_kind_name(layers[i].kind) == nullptr) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'layers': layer ", i, " has unknown kind ", int(layers[i].kind));
        }
        try {
            x = layer(i, x, training);
        } catch (const Error &e) {
            throw Error(e.status(), "layer " + std::to_string(i) + " '" + layer_name(i) + "': " + e.what());
        }
    }
    return x;
}

}  // namespace

LayerSpecs::LayerSpecs(const fm_layer_spec *layers, size_t count) : specs_(layers, layers + count) {
    names_.reserve(count);  // no reallocation below: the pointers stay valid
    for (fm_layer_spec &spec : specs_) {
        names_.emplace_back(spec.name ? spec.name : "");
        spec.name = spec.name ? names_.back().c_str() : nullptr;
    }
}

LayerSpecs &LayerSpecs::operator=(const LayerSpecs &other) {
    if (this != &other) *this = LayerSpecs(other);
    return *this;
}

Model build_model(Graph &graph, const std::vector<fm_layer_spec> &layers, const Shape &input_shape, uint64_t seed,
                  bool training) {
    if (layers.empty()) fail(FM_ERR_INVALID_ARGUMENT, "argument 'layers': the model has no layers");
    Shape shape{FM_BATCH};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    for (int64_t dim : input_shape) {
        if (dim <= 0) fail(FM_ERR_INVALID_ARGUMENT, "argument 'input_shape': ", to_string(input_shape), " has a dim < 1");
    }
    ModelBuilder builder(graph, layers, seed);
    builder.model.input = graph.add_placeholder("inputs", FM_DTYPE_F32, shape);
    if (training) builder.model.train_output = builder.forward(builder.model.input, true);
    builder.model.eval_output = builder.forward(builder.model.input, false);
    Shape out = graph.public_shape(builder.model.eval_output);
    builder.model.output_shape.assign(out.begin() + 1, out.end());
    return builder.model;
}

namespace {
constexpr const char *kSkippedSteps = "trainer.skipped_steps";
constexpr const char *kLastSkippedStep = "trainer.last_skipped_step";
}  // namespace

Trainer::Trainer(std::shared_ptr<Device> device, LayerSpecs layers, Shape input_shape,
                 const fm_optimizer &optimizer, const fm_loss_config &loss, uint64_t seed,
                 const fm_trainer_options &options)
    : layers_(std::move(layers)), input_shape_(std::move(input_shape)), optimizer_(optimizer),
      graph_(std::make_shared<Graph>()), guarded_(options.nonfinite_guard != 0) {
    Graph &g = *graph_;
    model_ = build_model(g, layers_.specs(), input_shape_, seed, true);
    classification_ = loss.loss == FM_OP_SOFTMAX_CROSS_ENTROPY;
    Shape label_shape{FM_BATCH};
    if (!classification_) label_shape.insert(label_shape.end(), model_.output_shape.begin(), model_.output_shape.end());
    switch (loss.loss) {
        case FM_OP_SOFTMAX_CROSS_ENTROPY: case FM_OP_BCE_WITH_LOGITS: case FM_OP_MSE: case FM_OP_MAE: case FM_OP_HUBER: break;
        default: fail(FM_ERR_INVALID_ARGUMENT, "argument 'loss': ", fm_op_str(loss.loss), " is not a supported loss");
    }
    if (classification_ && model_.output_shape.size() != 1) {
        fail(FM_ERR_SHAPE_MISMATCH, "argument 'loss': softmax cross-entropy needs outputs [batch, classes], the model gives ",
             to_string(g.public_shape(model_.eval_output)));
    }
    labels_ = g.add_placeholder("labels", classification_ ? FM_DTYPE_I32 : FM_DTYPE_F32, label_shape);
    fm_op_attrs a = default_attrs();
    a.label_smoothing = loss.label_smoothing;
    a.delta = loss.delta > 0 ? loss.delta : 1.0;
    loss_ = build_op(g, loss.loss, {model_.train_output, labels_}, a);
    eval_loss_ = build_op(g, loss.loss, {model_.eval_output, labels_}, a);
    if (classification_) {
        fm_op_attrs axis = default_attrs();
        axis.axes[0] = 1, axis.num_axes = 1;
        predictions_ = build_op(g, FM_OP_ARGMAX, {model_.eval_output}, axis);
    }
    std::vector<uint32_t> grads = build_gradients(g, loss_, model_.parameters);
    if (guarded_) {
        finite_ = build_finite_check(g, loss_, grads);
        guard_effects(g, finite_);
    }
    update_ = build_optimizer(g, optimizer, model_.parameters, grads, "optimizer.", guarded_ ? int64_t(finite_) : -1);
    if (guarded_) {
        // The counters of skipped steps, and the number of the last one:
        // good steps before this one ("optimizer.step", which the guard
        // holds still) plus skipped ones, plus one.
        Builder b(g, "non-finite guard");
        uint32_t skipped = g.add_variable(kSkippedSteps, FM_DTYPE_F32, {}, VariableInit{});
        uint32_t last = g.add_variable(kLastSkippedStep, FM_DTYPE_F32, {}, VariableInit{});
        uint32_t number = b.add(b.add(uint32_t(g.find_named("optimizer.step")), skipped), 1.0);
        uint32_t count = b.prim(Prim::Assign, {skipped, b.add(skipped, b.sub(b.scalar(1.0), finite_))});
        uint32_t mark = b.prim(Prim::Assign, {last, b.where(finite_, last, number)});
        update_ = b.prim(Prim::Group, {update_, count, mark});
    }
    for (uint32_t v : model_.parameters) state_names_.push_back(g.node(v).name);
    parameter_count_ = state_names_.size();
    for (uint32_t v : model_.statistics) state_names_.push_back(g.node(v).name);
    for (uint32_t v : g.variables()) {
        const std::string &name = g.node(v).name;
        if (name.rfind("optimizer.", 0) == 0) state_names_.push_back(name);
    }
    exec_ = std::make_shared<Exec>(graph_, std::move(device));
}

void Trainer::check_batch(const std::shared_ptr<Tensor> &inputs, const char *function) const {
    if (inputs->shape.empty() || inputs->shape[0] == 0) {
        fail(FM_ERR_SHAPE_MISMATCH, "argument 'inputs' of ", function, ": the batch is empty (shape ",
             to_string(inputs->shape), ")");
    }
}

float Trainer::step(const std::shared_ptr<Tensor> &inputs, const std::shared_ptr<Tensor> &labels, bool read_loss) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_batch(inputs, "step");
    // The same fetches with or without reading the loss: one plan (and one
    // arena) serves both kinds of step.
    std::vector<uint32_t> fetches{loss_, update_};
    if (guarded_) fetches.push_back(finite_);
    auto out = exec_->run({{model_.input, inputs}, {labels_, labels}}, fetches, nullptr);
    ++steps_;
    if (!read_loss) return 0.0f;
    const Device &device = *exec_->device();
    float loss = 0, finite = 1;
    device.iface().transfer.read(device.ctx(), out[0]->buffer->data(), 0, &loss, sizeof loss, nullptr);
    if (guarded_) device.iface().transfer.read(device.ctx(), out[2]->buffer->data(), 0, &finite, sizeof finite, nullptr);
    exec_->check_errors();
    if (guarded_ && finite == 0.0f) {
        // This step is reported here; earlier unreported ones are counted
        // in the message and are reported no more.
        fm_trainer_stats s = read_stats();
        uint64_t earlier = s.skipped_steps - reported_skips_ - 1;
        reported_skips_ = s.skipped_steps;
        fail(FM_ERR_NUMERICAL, "step ", steps_, " was skipped: ",
             std::isfinite(loss) ? "a gradient holds an inf or a NaN" : "its loss is not finite", " (loss ", loss,
             "); the weights, optimizer state and running statistics are unchanged (", s.skipped_steps,
             " skipped steps so far", earlier ? ", " + std::to_string(earlier) + " of them not reported before" : "",
             "). Lower the learning rate, or check the inputs for NaN/Inf");
    }
    if (!std::isfinite(loss)) {
        fail(FM_ERR_NUMERICAL, "the loss of step ", steps_, " is ", loss,
             " (lower the learning rate, or check the inputs for NaN/Inf)");
    }
    return loss;
}

fm_trainer_stats Trainer::read_stats() {
    fm_trainer_stats s{};
    s.steps = steps_;
    if (guarded_) {
        float skipped = 0, last = 0;
        exec_->read_variable(kSkippedSteps, &skipped, 1);
        exec_->read_variable(kLastSkippedStep, &last, 1);
        s.skipped_steps = uint64_t(skipped);
        s.last_skipped_step = uint64_t(last);
    }
    return s;
}

fm_trainer_stats Trainer::stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    exec_->check_errors();
    return read_stats();
}

std::vector<StateVariable> Trainer::state_variables() const {
    std::vector<StateVariable> variables;
    for (size_t i = 0; i < state_names_.size(); ++i) {
        variables.push_back({state_names_[i], state_names_[i].rfind("optimizer.", 0) != 0});
    }
    return variables;
}

void Trainer::save(const std::string &path, const std::string &host_metadata) {
    std::lock_guard<std::mutex> lock(mutex_);
    exec_->check_errors();
    CheckpointInfo info;
    info.optimizer = optimizer_kind_name(optimizer_.kind);
    info.runs = exec_->run_count();
    info.host_metadata = host_metadata;
    save_checkpoint(*exec_, state_variables(), info, path);
}

CheckpointInfo Trainer::load(const std::string &path, LoadMode mode) {
    std::lock_guard<std::mutex> lock(mutex_);
    exec_->check_errors();
    return load_checkpoint(*exec_, state_variables(), optimizer_kind_name(optimizer_.kind), mode, path);
}

void Trainer::synchronize() {
    std::lock_guard<std::mutex> lock(mutex_);
    exec_->check_errors();
    if (!guarded_) return;
    fm_trainer_stats s = read_stats();
    if (s.skipped_steps == reported_skips_) return;
    uint64_t fresh = s.skipped_steps - reported_skips_;
    reported_skips_ = s.skipped_steps;
    fail(FM_ERR_NUMERICAL, fresh, " step", fresh == 1 ? " was" : "s were",
         " skipped since the last report: the loss or a gradient held an inf or a NaN, so nothing was updated "
         "(the last at step ", s.last_skipped_step, "; ", s.skipped_steps, " skipped in all)");
}

void Trainer::evaluate(const std::shared_ptr<Tensor> &inputs, const std::shared_ptr<Tensor> &labels, float *loss,
                       uint64_t *correct) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_batch(inputs, "evaluate");
    std::vector<uint32_t> fetches{eval_loss_};
    if (classification_) fetches.push_back(predictions_);
    auto out = exec_->run({{model_.input, inputs}, {labels_, labels}}, fetches, nullptr);
    const Device &device = *exec_->device();
    device.iface().transfer.read(device.ctx(), out[0]->buffer->data(), 0, loss, sizeof *loss, nullptr);
    exec_->check_errors();
    *correct = 0;
    if (classification_) {
        size_t n = out[1]->buffer->count();
        std::vector<int32_t> predicted(n), truth(n);
        device.iface().transfer.read(device.ctx(), out[1]->buffer->data(), 0, predicted.data(), n * 4, nullptr);
        device.iface().transfer.read(device.ctx(), labels->buffer->data(), 0, truth.data(), n * 4, nullptr);
        for (size_t i = 0; i < n; ++i) *correct += predicted[i] == truth[i];
    }
}

std::shared_ptr<Tensor> Trainer::predict(const std::shared_ptr<Tensor> &inputs) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_batch(inputs, "predict");
    return exec_->run({{model_.input, inputs}}, {model_.eval_output}, nullptr)[0];
}

void Trainer::set_learning_rate(double learning_rate) {
    if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate)) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'learning_rate': ", learning_rate, " must be finite and >= 0");
    }
    float lr = float(learning_rate);
    std::lock_guard<std::mutex> lock(mutex_);
    exec_->write_variable("optimizer.lr", &lr, 1);
}

Inference::Inference(std::shared_ptr<Device> device, const LayerSpecs &layers, const Shape &input_shape)
    : graph_(std::make_shared<Graph>()) {
    model_ = build_model(*graph_, layers.specs(), input_shape, 0, false);
    exec_ = std::make_shared<Exec>(graph_, std::move(device));
}

std::vector<StateVariable> Inference::state_variables() const {
    std::vector<StateVariable> variables;
    for (uint32_t v : model_.parameters) variables.push_back({graph_->node(v).name, true});
    for (uint32_t v : model_.statistics) variables.push_back({graph_->node(v).name, true});
    return variables;
}

void Inference::save(const std::string &path, const std::string &host_metadata) {
    std::lock_guard<std::mutex> lock(mutex_);
    CheckpointInfo info;
    info.optimizer = "none";
    info.host_metadata = host_metadata;
    save_checkpoint(*exec_, state_variables(), info, path);
}

void Inference::load(const std::string &path) {
    std::lock_guard<std::mutex> lock(mutex_);
    load_checkpoint(*exec_, state_variables(), "none", LoadMode::WeightsOnly, path);
}

std::shared_ptr<Tensor> Inference::infer(const std::shared_ptr<Tensor> &inputs) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (inputs->shape.empty() || inputs->shape[0] == 0) {
        fail(FM_ERR_SHAPE_MISMATCH, "argument 'inputs': the batch is empty (shape ", to_string(inputs->shape), ")");
    }
    return exec_->run({{model_.input, inputs}}, {model_.eval_output}, nullptr)[0];
}

}  // namespace fm
