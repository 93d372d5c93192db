// FERROMETAL_PROFILE=1: the time of every plan step, summed per kind of
// step and shape over the whole process, printed to stderr at exit, most
// expensive first. A measuring aid for kernel work that backends share;
// it costs nothing when off. The CPU times steps with the host clock, the
// CUDA backend with device events around each step (and then runs without
// a CUDA graph, so launch gaps are not part of the figures).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "plan.h"

namespace fm {

class StepProfile {
public:
    // The process's profile, or null when FERROMETAL_PROFILE is not 1.
    static StepProfile *get();
    // `note` is appended to the label (what else the time covers).
    void add(const Step &step, double seconds, const char *note = nullptr);

private:
    StepProfile();
    void print();
    std::mutex mutex_;
    std::map<std::string, std::pair<double, long>> entries_;  // seconds, count
};

}  // namespace fm
