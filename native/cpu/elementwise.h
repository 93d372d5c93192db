// Runs a fused elementwise group of a plan on the CPU.
#pragma once

#include <vector>

#include "plan.h"

namespace fm::cpu {

// `loads` and `stores` are the resolved addresses of fused.loads and
// fused.stores; `run_index` seeds dropout masks.
void run_fused(const Fused &fused, const std::vector<const float *> &loads, const std::vector<float *> &stores,
               uint64_t run_index);

}  // namespace fm::cpu
