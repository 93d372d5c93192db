// libFuzzer target: checkpoint files. Each input is written to a file and
// loaded (fm_trainer_load, fm_trainer_load_weights, fm_checkpoint_metadata). Besides crashes and sanitizer reports, it traps
// when a full load accepts a file and leaves the trainer different from
// the one that wrote the seed (a corrupt checkpoint accepted), and when a
// refused load changed anything.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ferrometal.h"

namespace {

struct Fixture {
    fm_device device = 0;
    fm_trainer reference = 0, victim = 0;
    fm_exec reference_exec = 0, victim_exec = 0;
    fm_inference inference = 0;
    std::vector<std::string> names;
    std::string path;
};

fm_trainer make_trainer(fm_device device, uint64_t seed) {
    fm_layer_spec layers[4];
    layers[0] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[0].units = 4;
    layers[0].name = "fc1";
    layers[1] = fm_layer_spec_default(FM_LAYER_BATCH_NORM);
    layers[2] = fm_layer_spec_default(FM_LAYER_RELU);
    layers[3] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[3].units = 2;
    const int64_t input_shape[] = {3};
    fm_optimizer adam = fm_optimizer_default(FM_OPTIMIZER_ADAM);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    fm_trainer trainer = 0;
    if (fm_trainer_new(&trainer, device, layers, 4, input_shape, 1, &adam, &loss, seed, nullptr) != FM_OK) abort();
    return trainer;
}

std::vector<float> variable(fm_exec exec, const std::string &name) {
    int64_t dims[FM_MAX_RANK];
    size_t rank = 0;
    if (fm_exec_variable_shape(dims, &rank, exec, name.c_str()) != FM_OK) abort();
    size_t count = 1;
    for (size_t i = 0; i < rank; ++i) count *= size_t(dims[i]);
    std::vector<float> values(count);
    if (fm_exec_read_variable(exec, name.c_str(), values.data(), count) != FM_OK) abort();
    return values;
}

bool same_state(const Fixture &f) {
    for (const std::string &name : f.names) {
        std::vector<float> a = variable(f.reference_exec, name), b = variable(f.victim_exec, name);
        if (std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) return false;
    }
    uint64_t a = 0, b = 0;
    fm_exec_run_count(&a, f.reference_exec);
    fm_exec_run_count(&b, f.victim_exec);
    return a == b;
}

Fixture &fixture() {
    static Fixture *f = [] {
        auto *f = new Fixture();
        if (fm_device_open(&f->device, FM_BACKEND_CPU, 0) != FM_OK) abort();
        f->reference = make_trainer(f->device, 1);
        f->victim = make_trainer(f->device, 2);
        fm_trainer_exec(&f->reference_exec, f->reference);
        fm_trainer_exec(&f->victim_exec, f->victim);
        size_t count = 0;
        fm_trainer_state_count(&count, f->reference);
        for (size_t i = 0; i < count; ++i) {
            const char *name = nullptr;
            int32_t parameter = 0;
            fm_trainer_state_name(&name, &parameter, f->reference, i);
            f->names.push_back(name);
        }
        // The victim starts as the reference's copy, so that every accepted
        // file must leave it equal to the reference.
        // FM_FUZZ_SEED=path keeps that checkpoint as the corpus's seed.
        const char *keep = std::getenv("FM_FUZZ_SEED");
        std::string seed = keep ? keep : "/tmp/fm-fuzz-checkpoint-seed-" + std::to_string(getpid());
        if (fm_trainer_save(f->reference, seed.c_str(), "{\"host\": 1}") != FM_OK) abort();
        if (fm_trainer_load(f->victim, seed.c_str()) != FM_OK) abort();
        if (!keep) std::remove(seed.c_str());
        f->path = "/tmp/fm-fuzz-checkpoint-" + std::to_string(getpid());
        return f;
    }();
    return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Fixture &f = fixture();
    FILE *file = std::fopen(f.path.c_str(), "wb");
    if (!file) return 0;
    std::fwrite(data, 1, size, file);
    std::fclose(file);
    fm_status loaded = fm_trainer_load(f.victim, f.path.c_str());
    if (!same_state(f)) {
        std::fprintf(stderr, "fm_trainer_load %s a file and changed the trainer\n",
                     loaded == FM_OK ? "accepted" : "refused");
        __builtin_trap();
    }
    char text[256];
    size_t length = 0;
    fm_checkpoint_metadata(text, sizeof text, &length, f.path.c_str());
    // load_weights accepts plain safetensors files, whose weights need not
    // be the reference's: put the victim back afterwards.
    if (fm_trainer_load_weights(f.victim, f.path.c_str()) == FM_OK) {
        std::string back = f.path + ".back";
        fm_trainer_save(f.reference, back.c_str(), nullptr);
        if (fm_trainer_load(f.victim, back.c_str()) != FM_OK) abort();
        std::remove(back.c_str());
    } else if (!same_state(f)) {
        std::fprintf(stderr, "a refused fm_trainer_load_weights changed the trainer\n");
        __builtin_trap();
    }
    return 0;
}
