// Cross-step fusions over a finished plan. The planner emits one step per
// primitive (or fused elementwise group); a backend that can run bigger
// steps asks, when it compiles a plan, which neighbouring steps may be
// combined. Each fusion saves whole passes over large activations:
// - a ReduceSum / ReduceToLike over every axis but axis 1 of a tensor that
//   the fused step just before it stores: the sums are taken during that
//   step's pass (and the store is skipped when nothing else reads it);
// - a BroadcastLike whose result only fused steps load: they load its small
//   input instead, broadcasting it themselves;
// - a Conv2d whose output only the next step reads, to add a per-channel
//   bias: the convolution adds it (and may take the channel sums of the
//   result) while the output block is in cache; and where a later step
//   sums (z - mean)^2 per channel with mean = those sums / their count (a
//   BatchNorm's variance), the convolution takes that sum too, as
//   sum z^2 - (sum z)^2 / count in double (the same quantity, rounded
//   differently), saving a pass over z (option conv_variance);
// - a fused step whose stores only a later fused step of the same shape
//   reads joins that step;
// - a fused step storing y and relu(y), where later steps read y only
//   through step(y): they read relu(y), and y's store is skipped.
// A value counts as read until a later step overwrites all of it; only
// arena values (never observed after the run) are ever left unwritten.
#pragma once

#include <cstdio>
#include <memory>
#include <vector>

#include "plan.h"

namespace fm {

// The per-channel sums of one register of a fused step ([n, channels,
// inner] elements summed over n and inner), written to `out`.
struct ChannelSumSpec {
    int32_t reg;
    int64_t channels, inner;
    TensorRef out;
};

// What a backend runs instead of the plan's steps as they are. Every
// vector has one entry per plan step.
struct StepFusion {
    std::vector<bool> skip;                           // per step: fused into another one
    std::vector<std::shared_ptr<Fused>> fused;        // per step: loads rewritten, or null
    std::vector<std::vector<ChannelSumSpec>> sums;           // per fused step
    std::vector<std::vector<bool>> skip_store;        // per fused step
    std::vector<int64_t> bias_step;                   // per conv step: the step whose bias it adds, or -1
    std::vector<int64_t> conv_sum_step;               // per conv step: the channel sum it takes over, or -1
    // Per conv step with a conv_sum_step: the fused step whose channel sum
    // of (z - mean)^2 it takes over (into that step's sums[0].out), or -1.
    std::vector<int64_t> conv_variance_step;
};

struct StepFusionOptions {
    // The backend's Conv2d can add a per-channel bias and take the channel
    // sums of its result (the conv_bias fusion).
    bool conv_bias = true;
    // Fused steps smaller than this take no channel sums in their pass: a
    // tensor that stays in cache costs the separate reduction little.
    int64_t min_sum_elements = int64_t(1) << 18;
    // Sum-only groups run inside an earlier pass over the same tensors (a
    // BatchNorm's backward in one pass instead of two). It saves a read
    // where passes are bound by memory bandwidth; on the 2-core CPU, where
    // the interpreter's arithmetic also counts, it measured even.
    bool pull_sums_forward = true;
    // The most channel sums one fused step may take.
    size_t max_channel_sums = size_t(1) << 20;
    // The conv_bias fusion may also take a BatchNorm's variance sums (the
    // backend's Conv2d can sum squares in its epilogue).
    bool conv_variance = false;
};

StepFusion fuse_steps(const Plan &plan, const StepFusionOptions &options);
// The plan as it is: nothing skipped or rewritten.
StepFusion unfused_steps(const Plan &plan);

// print_plan (plan.h) with the fusions marked: skipped steps and stores,
// rewritten groups, channel sums, conv epilogues.
void print_fused_plan(const Plan &plan, const StepFusion &fusion, std::FILE *out);
// To stderr under FERROMETAL_PRINT_PLANS=1, after the planner's own print.
void print_fused_plan_if_asked(const Plan &plan, const StepFusion &fusion);

// Same storage, place, shape and dtype.
bool same_tensor(const TensorRef &a, const TensorRef &b);

}  // namespace fm
