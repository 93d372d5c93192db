// C entry points for checkpoints of trainers and inference engines.
#include <cstring>

#include "engine.h"
#include "guard.h"

using fm::fail;
using fm::guard;
using fm::Inference;
using fm::require_out;
using fm::Trainer;

namespace {

std::string path_argument(const char *path) {
    if (path == nullptr) fail(FM_ERR_INVALID_ARGUMENT, "argument 'path' is NULL");
    if (*path == '\0') fail(FM_ERR_INVALID_ARGUMENT, "argument 'path' is empty");
    return path;
}

}  // namespace

extern "C" {

fm_status fm_trainer_save(fm_trainer trainer, const char *path, const char *metadata) {
    return guard(__func__, [&] {
        auto t = fm::lookup<Trainer>(trainer, "trainer");
        t->save(path_argument(path), metadata ? metadata : "");
    });
}

fm_status fm_trainer_load(fm_trainer trainer, const char *path) {
    return guard(__func__, [&] {
        fm::lookup<Trainer>(trainer, "trainer")->load(path_argument(path), fm::LoadMode::Everything);
    });
}

fm_status fm_trainer_load_weights(fm_trainer trainer, const char *path) {
    return guard(__func__, [&] {
        fm::lookup<Trainer>(trainer, "trainer")->load(path_argument(path), fm::LoadMode::WeightsOnly);
    });
}

fm_status fm_inference_save(fm_inference inference, const char *path, const char *metadata) {
    return guard(__func__, [&] {
        fm::lookup<Inference>(inference, "inference")->save(path_argument(path), metadata ? metadata : "");
    });
}

fm_status fm_inference_load(fm_inference inference, const char *path) {
    return guard(__func__, [&] { fm::lookup<Inference>(inference, "inference")->load(path_argument(path)); });
}

fm_status fm_checkpoint_metadata(char *out_text, size_t capacity, size_t *out_length, const char *path) {
    return guard(__func__, [&] {
        require_out(out_length, "out_length");
        if (capacity > 0) require_out(out_text, "out_text");
        std::string text = fm::checkpoint_host_metadata(path_argument(path));
        if (capacity > 0) {
            size_t n = std::min(text.size(), capacity - 1);
            std::memcpy(out_text, text.data(), n);
            out_text[n] = '\0';
        }
        *out_length = text.size();
    });
}

}  // extern "C"
