// C entry points for trainers and inference engines (level 3).
#include <cmath>

#include "engine.h"
#include "guard.h"

using fm::fail;
using fm::guard;
using fm::Inference;
using fm::require_out;
using fm::Tensor;
using fm::Trainer;

namespace {

// A copy of the caller's specs, names included (the caller may free them).
fm::LayerSpecs layers_argument(const fm_layer_spec *layers, size_t count) {
    if (count > 0 && layers == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'layers' is NULL");
    return fm::LayerSpecs(layers, count);
}

}  // namespace

extern "C" {

fm_layer_spec fm_layer_spec_default(fm_layer_kind kind) {
    fm_layer_spec s{};
    s.kind = kind;
    bool pool = kind == FM_LAYER_MAX_POOL2D || kind == FM_LAYER_AVG_POOL2D;
    for (int k = 0; k < 2; ++k) {
        s.stride[k] = pool ? 0 : 1;
        s.dilation[k] = 1;
    }
    s.groups = 1;
    s.bias = 1;
    s.rate = 0.5;
    s.slope = 0.01;
    s.alpha = 1.0;
    s.momentum = 0.1;
    s.eps = 1e-5;
    s.init = FM_INIT_HE_UNIFORM;
    return s;
}

fm_trainer_options fm_trainer_options_default(void) {
    fm_trainer_options options{};
    options.nonfinite_guard = 1;
    return options;
}

fm_status fm_trainer_new(fm_trainer *out_trainer, fm_device device, const fm_layer_spec *layers, size_t num_layers,
                         const int64_t *input_shape, size_t input_rank, const fm_optimizer *optimizer,
                         const fm_loss_config *loss, uint64_t seed, const fm_trainer_options *options) {
    return guard(__func__, [&] {
        require_out(out_trainer, "out_trainer");
        if (optimizer == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer' is NULL");
        if (loss == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'loss' is NULL");
        auto owner = fm::lookup<fm::Device>(device, "device");
        auto trainer = std::make_shared<Trainer>(owner, layers_argument(layers, num_layers),
                                                 fm::shape_argument(input_shape, input_rank, "input_shape"),
                                                 *optimizer, *loss, seed,
                                                 options ? *options : fm_trainer_options_default());
        *out_trainer = fm::insert(trainer);
    });
}

fm_status fm_trainer_step(fm_trainer trainer, fm_tensor inputs, fm_tensor labels, float *out_loss) {
    return guard(__func__, [&] {
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        float loss = t->step(fm::lookup<Tensor>(inputs, "inputs"), fm::lookup<Tensor>(labels, "labels"), out_loss != nullptr);
        if (out_loss) *out_loss = loss;
    });
}

fm_status fm_trainer_synchronize(fm_trainer trainer) {
    return guard(__func__, [&] { fm::lookup<Trainer>(trainer, "trainer")->synchronize(); });
}

fm_status fm_trainer_stats_get(fm_trainer_stats *out_stats, fm_trainer trainer) {
    return guard(__func__, [&] {
        require_out(out_stats, "out_stats");
        *out_stats = fm::lookup<Trainer>(trainer, "trainer")->stats();
    });
}

fm_status fm_trainer_evaluate(fm_trainer trainer, fm_tensor inputs, fm_tensor labels, float *out_loss,
                              uint64_t *out_correct) {
    return guard(__func__, [&] {
        require_out(out_loss, "out_loss");
        require_out(out_correct, "out_correct");
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        float loss;
        uint64_t correct;
        t->evaluate(fm::lookup<Tensor>(inputs, "inputs"), fm::lookup<Tensor>(labels, "labels"), &loss, &correct);
        *out_loss = loss;
        *out_correct = correct;
    });
}

fm_status fm_trainer_predict(fm_tensor *out_outputs, fm_trainer trainer, fm_tensor inputs) {
    return guard(__func__, [&] {
        require_out(out_outputs, "out_outputs");
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        *out_outputs = fm::insert(t->predict(fm::lookup<Tensor>(inputs, "inputs")));
    });
}

fm_status fm_trainer_set_learning_rate(fm_trainer trainer, double learning_rate) {
    return guard(__func__, [&] { fm::lookup<Trainer>(trainer, "trainer")->set_learning_rate(learning_rate); });
}

fm_status fm_trainer_exec(fm_exec *out_exec, fm_trainer trainer) {
    return guard(__func__, [&] {
        require_out(out_exec, "out_exec");
        *out_exec = fm::insert(fm::lookup<Trainer>(trainer, "trainer")->exec());
    });
}

fm_status fm_trainer_state_count(size_t *out_count, fm_trainer trainer) {
    return guard(__func__, [&] {
        require_out(out_count, "out_count");
        *out_count = fm::lookup<Trainer>(trainer, "trainer")->state_names().size();
    });
}

fm_status fm_trainer_state_name(const char **out_name, int32_t *out_is_parameter, fm_trainer trainer, size_t index) {
    return guard(__func__, [&] {
        require_out(out_name, "out_name");
        require_out(out_is_parameter, "out_is_parameter");
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        if (index >= t->state_names().size()) {
            fail(FM_ERR_OUT_OF_RANGE, "argument 'index': ", index, " but the trainer has ", t->state_names().size(),
                 " state variables");
        }
        *out_name = t->state_names()[index].c_str();
        *out_is_parameter = index < t->parameter_count();
    });
}

fm_status fm_trainer_output_shape(int64_t *out_dims, size_t *out_rank, fm_trainer trainer) {
    return guard(__func__, [&] {
        require_out(out_dims, "out_dims");
        require_out(out_rank, "out_rank");
        const fm::Shape &shape = fm::lookup<Trainer>(trainer, "trainer")->output_shape();
        std::copy(shape.begin(), shape.end(), out_dims);
        *out_rank = shape.size();
    });
}

fm_status fm_inference_new(fm_inference *out_inference, fm_device device, const fm_layer_spec *layers,
                           size_t num_layers, const int64_t *input_shape, size_t input_rank) {
    return guard(__func__, [&] {
        require_out(out_inference, "out_inference");
        auto owner = fm::lookup<fm::Device>(device, "device");
        *out_inference = fm::insert(std::make_shared<Inference>(
            owner, layers_argument(layers, num_layers), fm::shape_argument(input_shape, input_rank, "input_shape")));
    });
}

fm_status fm_inference_from_trainer(fm_inference *out_inference, fm_trainer trainer, fm_device device) {
    return guard(__func__, [&] {
        require_out(out_inference, "out_inference");
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        auto owner = fm::lookup<fm::Device>(device, "device");
        auto engine = std::make_shared<Inference>(owner, t->layers(), t->input_shape());
        // Parameters and running statistics (not optimizer state) move over.
        for (const std::string &name : t->state_names()) {
            if (name.rfind("optimizer.", 0) == 0) continue;
            fm::Shape shape = t->exec()->variable_shape(name);
            std::vector<float> values(size_t(fm::element_count(shape)));
            t->exec()->read_variable(name, values.data(), values.size());
            engine->exec()->write_variable(name, values.data(), values.size());
        }
        *out_inference = fm::insert(engine);
    });
}

fm_status fm_infer(fm_tensor *out_outputs, fm_inference inference, fm_tensor inputs) {
    return guard(__func__, [&] {
        require_out(out_outputs, "out_outputs");
        auto engine = fm::lookup<Inference>(inference, "inference");
        *out_outputs = fm::insert(engine->infer(fm::lookup<Tensor>(inputs, "inputs")));
    });
}

fm_status fm_inference_exec(fm_exec *out_exec, fm_inference inference) {
    return guard(__func__, [&] {
        require_out(out_exec, "out_exec");
        *out_exec = fm::insert(fm::lookup<Inference>(inference, "inference")->exec());
    });
}

}  // extern "C"
