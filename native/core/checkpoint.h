// Checkpoints of trainers and inference engines: every state variable as
// an F32 tensor of one safetensors file, with what the core needs to
// check and resume (format, optimizer, run counter, a CRC-32C of the
// data) and the host's own metadata in its __metadata__. Files are
// validated exactly against the model before anything is allocated or
// written, and saved crash-safely (atomic_file.h).
#pragma once

#include <string>
#include <vector>

#include "exec.h"

namespace fm {

// One state variable of an engine; `weight`: a parameter or running
// statistic (what load_weights takes), not optimizer state.
struct StateVariable {
    std::string name;
    bool weight = true;
};

struct CheckpointInfo {
    std::string optimizer;  // "adam", ...; "none" for inference engines
    uint64_t runs = 0;      // the executable's run counter (dropout masks)
    std::string host_metadata;
};

enum class LoadMode {
    Everything,   // a ferrometal checkpoint of this model and optimizer
    WeightsOnly,  // parameters and statistics: any ferrometal checkpoint of
                  // the model, or a plain safetensors file of its weights
};

void save_checkpoint(Exec &exec, const std::vector<StateVariable> &variables, const CheckpointInfo &info,
                     const std::string &path);

// Loads `variables` from `path` after checking every tensor's presence,
// dtype and shape, the optimizer (LoadMode::Everything), and the
// checksum; on any error nothing was written. Restores the run counter
// (Everything). Returns the file's info.
CheckpointInfo load_checkpoint(Exec &exec, const std::vector<StateVariable> &variables, const std::string &optimizer,
                               LoadMode mode, const std::string &path);

// The host metadata of the ferrometal checkpoint at `path`, after
// validating its header and checksum.
std::string checkpoint_host_metadata(const std::string &path);

// "sgd", "adam", ... for an optimizer kind.
const char *optimizer_kind_name(fm_optimizer_kind kind);

}  // namespace fm
