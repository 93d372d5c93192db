#include "checkpoint.h"

#include <cinttypes>
#include <cstdio>

#include "atomic_file.h"
#include "error.h"
#include "safetensors.h"

namespace fm {

namespace {

constexpr const char *kFormat = "ferrometal-checkpoint-2";
constexpr const char *kFormatKey = "ferrometal.format";
constexpr const char *kOptimizerKey = "ferrometal.optimizer";
constexpr const char *kRunsKey = "ferrometal.runs";
constexpr const char *kChecksumKey = "ferrometal.crc32c";
constexpr const char *kHostKey = "ferrometal.host";

std::string hex32(uint32_t value) {
    char text[16];
    std::snprintf(text, sizeof text, "%08" PRIx32, value);
    return text;
}

// What a header says about being a ferrometal checkpoint: nothing (a plain
// safetensors file), this format, or something this version cannot read.
bool is_ferrometal(const SafetensorsHeader &header, const std::string &path) {
    const std::string *format = header.metadata_value(kFormatKey);
    if (format == nullptr) {
        if (header.metadata_value("ferrometal")) {
            fail(FM_ERR_IO, path, " was written by an older ferrometal (checkpoint format 1), which this version ",
                 "cannot read; its tensors are plain safetensors, so load_weights reads its weights");
        }
        return false;
    }
    if (*format != kFormat) {
        fail(FM_ERR_IO, path, " has checkpoint format '", *format, "'; this version reads '", kFormat, "'");
    }
    return true;
}

// The CRC-32C of a checkpoint: its data, then the values of the metadata
// the core writes besides the checksum itself, so a bit flipped anywhere
// that still parses is caught too.
uint32_t checkpoint_checksum(uint32_t data_crc, const std::string &optimizer, const std::string &runs,
                             const std::string &host) {
    uint32_t crc = data_crc;
    for (const std::string *text : {&optimizer, &runs, &host}) crc = crc32c(text->data(), text->size(), crc);
    return crc;
}

void verify_checksum(const SafetensorsHeader &header, const std::vector<unsigned char> &data, const std::string &path) {
    auto value = [&](const char *key) {
        const std::string *text = header.metadata_value(key);
        return text ? *text : std::string();
    };
    const std::string *checksum = header.metadata_value(kChecksumKey);
    std::string actual = hex32(
        checkpoint_checksum(crc32c(data.data(), data.size()), value(kOptimizerKey), value(kRunsKey), value(kHostKey)));
    if (checksum == nullptr || *checksum != actual) {
        fail(FM_ERR_IO, path, " is corrupt: its CRC-32C is ", actual, ", the checkpoint says ",
             checksum ? *checksum : std::string("nothing"));
    }
}

uint64_t parse_runs(const std::string *text, const std::string &path) {
    uint64_t runs = 0;
    if (text == nullptr || text->empty()) fail(FM_ERR_IO, path, ": the checkpoint has no ", kRunsKey);
    for (char c : *text) {
        if (c < '0' || c > '9' || __builtin_mul_overflow(runs, 10u, &runs) ||
            __builtin_add_overflow(runs, uint64_t(c - '0'), &runs)) {
            fail(FM_ERR_IO, path, ": ", kRunsKey, " '", *text, "' is not a count");
        }
    }
    return runs;
}

}  // namespace

const char *optimizer_kind_name(fm_optimizer_kind kind) {
    switch (kind) {
        case FM_OPTIMIZER_SGD: return "sgd";
        case FM_OPTIMIZER_ADAM: return "adam";
        case FM_OPTIMIZER_ADAMW: return "adamw";
        case FM_OPTIMIZER_RMSPROP: return "rmsprop";
        case FM_OPTIMIZER_ADAGRAD: return "adagrad";
        case FM_OPTIMIZER_ADADELTA: return "adadelta";
        case FM_OPTIMIZER_NADAM: return "nadam";
        case FM_OPTIMIZER_COUNT: break;
    }
    return "unknown";
}

void save_checkpoint(Exec &exec, const std::vector<StateVariable> &variables, const CheckpointInfo &info,
                     const std::string &path) {
    std::vector<std::vector<float>> values(variables.size());
    std::vector<SafetensorsTensor> tensors;
    uint32_t crc = 0;
    for (size_t i = 0; i < variables.size(); ++i) {
        Shape shape = exec.variable_shape(variables[i].name);
        values[i].resize(size_t(element_count(shape)));
        exec.read_variable(variables[i].name, values[i].data(), values[i].size());
        crc = crc32c(values[i].data(), values[i].size() * sizeof(float), crc);
        tensors.push_back({variables[i].name, shape, values[i].data()});
    }
    const std::string runs = std::to_string(info.runs);
    std::vector<std::pair<std::string, std::string>> metadata = {
        {kFormatKey, kFormat},
        {kOptimizerKey, info.optimizer},
        {kRunsKey, runs},
        {kChecksumKey, hex32(checkpoint_checksum(crc, info.optimizer, runs, info.host_metadata))},
        {kHostKey, info.host_metadata},
    };
    write_file_atomically(path, encode_safetensors(tensors, metadata));
}

CheckpointInfo load_checkpoint(Exec &exec, const std::vector<StateVariable> &variables, const std::string &optimizer,
                               LoadMode mode, const std::string &path) {
    const SafetensorsHeader header = read_safetensors_header(path);
    const bool ferrometal = is_ferrometal(header, path);
    CheckpointInfo info;
    if (ferrometal) {
        const std::string *saved = header.metadata_value(kOptimizerKey);
        info.optimizer = saved ? *saved : "";
        if (const std::string *host = header.metadata_value(kHostKey)) info.host_metadata = *host;
        if (mode == LoadMode::Everything) info.runs = parse_runs(header.metadata_value(kRunsKey), path);
    } else if (mode == LoadMode::Everything) {
        fail(FM_ERR_IO, path, " is not a ferrometal checkpoint (no ferrometal metadata); load_weights reads the ",
             "weights of a plain safetensors file whose names and shapes match the model");
    }
    if (mode == LoadMode::Everything && info.optimizer != optimizer) {
        fail(FM_ERR_INVALID_ARGUMENT, path, " was saved with optimizer '", info.optimizer, "', this trainer uses '",
             optimizer, "' (their state differs; load_weights takes only the weights)");
    }
    // Every check before anything is read or written: presence, dtype and
    // shape of each tensor, against the model.
    std::vector<const SafetensorsEntry *> sources;
    std::vector<bool> used(header.tensors.size(), false);
    for (const StateVariable &v : variables) {
        if (mode == LoadMode::WeightsOnly && !v.weight) continue;
        const SafetensorsEntry *entry = header.find(v.name);
        if (entry == nullptr) fail(FM_ERR_INVALID_ARGUMENT, path, ": tensor '", v.name, "' is missing");
        if (entry->dtype != "F32") {
            fail(FM_ERR_DTYPE_MISMATCH, path, ": tensor '", v.name, "' is ", entry->dtype, ", the model needs F32");
        }
        Shape expected = exec.variable_shape(v.name);
        if (entry->shape != expected) {
            fail(FM_ERR_SHAPE_MISMATCH, path, ": tensor '", v.name, "' has shape ", to_string(entry->shape),
                 ", the model needs ", to_string(expected));
        }
        used[size_t(entry - header.tensors.data())] = true;
        sources.push_back(entry);
    }
    for (size_t i = 0; i < header.tensors.size(); ++i) {
        if (used[i]) continue;
        const std::string &name = header.tensors[i].name;
        // Optimizer state of a ferrometal checkpoint is what load_weights
        // leaves behind; anything else is not this model's.
        if (mode == LoadMode::WeightsOnly && ferrometal && name.rfind("optimizer.", 0) == 0) continue;
        fail(FM_ERR_INVALID_ARGUMENT, path, ": tensor '", name, "' is not in this model");
    }
    const std::vector<unsigned char> data = read_safetensors_data(path, header);
    if (ferrometal) verify_checksum(header, data, path);
    // Straight from the file's bytes: transfers copy bytes, so an offset
    // that is not a multiple of 4 (after an odd-sized tensor of a plain
    // file) needs no aligned copy first.
    for (const SafetensorsEntry *entry : sources) {
        exec.write_variable(entry->name, data.data() + entry->begin, size_t((entry->end - entry->begin) / sizeof(float)));
    }
    if (mode == LoadMode::Everything) exec.set_run_count(info.runs);
    return info;
}

std::string checkpoint_host_metadata(const std::string &path) {
    const SafetensorsHeader header = read_safetensors_header(path);
    if (!is_ferrometal(header, path)) {
        fail(FM_ERR_IO, path, " is not a ferrometal checkpoint (no ferrometal metadata)");
    }
    // The data is read once more when loaded; checking it here too means
    // no host ever acts on the metadata of a corrupt file.
    verify_checksum(header, read_safetensors_data(path, header), path);
    const std::string *host = header.metadata_value(kHostKey);
    return host ? *host : std::string();
}

}  // namespace fm
