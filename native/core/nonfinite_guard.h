// The non-finite guard of a training step: a step whose loss or gradients
// hold an inf or a NaN changes nothing (weights, optimizer state, running
// statistics, the step counter), decided on the device, so the step stays
// one submission with no host synchronisation.
#pragma once

#include <vector>

#include "graph.h"

namespace fm {

// A scalar that is 1 when `loss` and every one of `gradients` are finite
// and 0 otherwise (also when a gradient's sum overflows f32).
uint32_t build_finite_check(Graph &graph, uint32_t loss, const std::vector<uint32_t> &gradients);

// Rewrites every assignment that runs as an effect of a value (a training
// BatchNorm's running statistics) to store the variable's old value while
// `keep` is 0.
void guard_effects(Graph &graph, uint32_t keep);

}  // namespace fm
