// Level-3 engines: a layer-spec model turned into one graph (training pass,
// loss, gradients, update; evaluation pass over the same parameters).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "exec.h"

namespace fm {

// A model's layer specs with every string copied: the caller's `name`
// pointers may be freed as soon as the call that passed them returns, so
// nothing in the core may keep them (the header's ownership rule).
class LayerSpecs {
public:
    LayerSpecs() = default;
    LayerSpecs(const fm_layer_spec *layers, size_t count);
    LayerSpecs(const LayerSpecs &other) : LayerSpecs(other.specs_.data(), other.specs_.size()) {}
    LayerSpecs &operator=(const LayerSpecs &other);
    // Moving keeps the names' storage (a vector move never moves its elements).
    LayerSpecs(LayerSpecs &&) = default;
    LayerSpecs &operator=(LayerSpecs &&) = default;

    const std::vector<fm_layer_spec> &specs() const { return specs_; }

private:
    std::vector<std::string> names_;  // names_[i] backs specs_[i].name
    std::vector<fm_layer_spec> specs_;
};

// The layers of a model built into a graph.
struct Model {
    uint32_t input = 0;
    uint32_t train_output = 0, eval_output = 0;
    Shape output_shape;  // without the batch dim
    std::vector<uint32_t> parameters, statistics;
};

// Adds the model to `graph`: the evaluation pass always, the training pass
// too when `training`. Throws naming the layer that does not fit.
Model build_model(Graph &graph, const std::vector<fm_layer_spec> &layers, const Shape &input_shape,
                  uint64_t seed, bool training);

class Trainer : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Trainer;

    Trainer(std::shared_ptr<Device> device, LayerSpecs layers, Shape input_shape,
            const fm_optimizer &optimizer, const fm_loss_config &loss, uint64_t seed,
            const fm_trainer_options &options);

    // Each public member locks the trainer: calls from several threads are
    // serialised, never interleaved (the header's rule for trainers).
    float step(const std::shared_ptr<Tensor> &inputs, const std::shared_ptr<Tensor> &labels, bool read_loss);
    void evaluate(const std::shared_ptr<Tensor> &inputs, const std::shared_ptr<Tensor> &labels, float *loss,
                  uint64_t *correct);
    std::shared_ptr<Tensor> predict(const std::shared_ptr<Tensor> &inputs);
    void set_learning_rate(double learning_rate);
    // Waits for queued steps; throws their data error, or FM_ERR_NUMERICAL
    // for steps the guard skipped since the last report.
    void synchronize();
    fm_trainer_stats stats();
    void save(const std::string &path, const std::string &host_metadata);
    CheckpointInfo load(const std::string &path, LoadMode mode);

    const std::shared_ptr<Exec> &exec() const { return exec_; }
    const std::vector<std::string> &state_names() const { return state_names_; }
    size_t parameter_count() const { return parameter_count_; }
    const Shape &output_shape() const { return model_.output_shape; }
    const LayerSpecs &layers() const { return layers_; }
    const Shape &input_shape() const { return input_shape_; }

private:
    void check_batch(const std::shared_ptr<Tensor> &inputs, const char *function) const;
    fm_trainer_stats read_stats();  // with mutex_ held
    std::vector<StateVariable> state_variables() const;

    LayerSpecs layers_;
    Shape input_shape_;
    fm_optimizer optimizer_;
    std::shared_ptr<Graph> graph_;
    Model model_;
    uint32_t labels_ = 0, loss_ = 0, update_ = 0, eval_loss_ = 0, predictions_ = 0;
    bool classification_ = false;
    std::shared_ptr<Exec> exec_;
    std::vector<std::string> state_names_;
    size_t parameter_count_ = 0;
    uint64_t steps_ = 0;
    // The non-finite guard: its flag (1 when the step was finite), and the
    // skipped steps already reported to the caller.
    bool guarded_ = false;
    uint32_t finite_ = 0;
    uint64_t reported_skips_ = 0;
    std::mutex mutex_;
};

class Inference : public Object {
public:
    static constexpr ObjectKind kind = ObjectKind::Inference;

    Inference(std::shared_ptr<Device> device, const LayerSpecs &layers, const Shape &input_shape);
    std::shared_ptr<Tensor> infer(const std::shared_ptr<Tensor> &inputs);
    const std::shared_ptr<Exec> &exec() const { return exec_; }
    // Parameters and running statistics (load: LoadMode::WeightsOnly).
    void save(const std::string &path, const std::string &host_metadata);
    void load(const std::string &path);

private:
    std::vector<StateVariable> state_variables() const;

    std::shared_ptr<Graph> graph_;
    Model model_;
    std::shared_ptr<Exec> exec_;
    std::mutex mutex_;  // serialises infer, save and load (a load is many writes)
};

}  // namespace fm
