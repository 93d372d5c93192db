#include "step_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace fm {

namespace {

void append_shape(std::string *key, const Shape &shape) {
    *key += "[";
    for (size_t i = 0; i < shape.size(); ++i) *key += (i ? "," : "") + std::to_string(shape[i]);
    *key += "]";
}

}  // namespace

StepProfile *StepProfile::get() {
    // Never freed: it prints from an atexit handler.
    static StepProfile *profile = [] {
        const char *env = std::getenv("FERROMETAL_PROFILE");
        return env && env[0] == '1' ? new StepProfile : nullptr;
    }();
    return profile;
}

StepProfile::StepProfile() {
    std::atexit([] { get()->print(); });
}

void StepProfile::add(const Step &step, double seconds, const char *note) {
    std::string key = step.kind == StepKind::Fused  ? std::string("fused ")
                      : step.kind == StepKind::Copy ? std::string("copy ")
                                                    : std::string(prim_name(step.prim)) + " ";
    append_shape(&key, step.kind == StepKind::Fused ? step.fused->shape : step.output.shape);
    if (step.kind == StepKind::Fused) {  // its instructions, loads and stores
        key += " {";
        for (size_t i = 0; i < step.fused->code.size(); ++i) {
            key += (i ? " " : "") + std::string(prim_name(step.fused->code[i].prim));
        }
        key += "} " + std::to_string(step.fused->loads.size()) + " loads, " +
               std::to_string(step.fused->stores.size()) + " stores";
    }
    if (step.kind == StepKind::Kernel && !step.inputs.empty()) {
        key += " <- ";
        append_shape(&key, step.inputs[0].shape);
    }
    if (note) key += std::string(" (") + note + ")";
    std::lock_guard<std::mutex> lock(mutex_);
    auto &entry = entries_[key];
    entry.first += seconds;
    entry.second += 1;
}

void StepProfile::print() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (auto &e : entries_) {
        rows.emplace_back(e.second.first, e.first);
        total += e.second.first;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "FERROMETAL_PROFILE: %.3f s in steps\n", total);
    for (auto &r : rows) {
        std::fprintf(stderr, "%8.3f s %5.1f %% %8ld  %s\n", r.first, 100 * r.first / total, entries_[r.second].second,
                     r.second.c_str());
    }
}

}  // namespace fm
