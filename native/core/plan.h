// A plan: one graph specialised to concrete shapes and a set of fetched
// values, as a list of steps over storage that the planner has laid out.
// Backends execute plans; they never see the graph.
#pragma once

#include <cstdio>
#include <memory>
#include <vector>

#include "graph.h"

namespace fm {

// Where a tensor lives during a run.
enum class Storage : uint8_t {
    Arena,     // the plan's scratch allocation, at `offset` bytes
    Variable,  // the executable's variable `index`
    Constant,  // the executable's constant `index`
    Feed,      // the run's feed for placeholder `index`
    Output,    // the run's fetched tensor `index`
    Scalar,    // the plan's scalar `index` (f32, counts known once shapes are)
};

struct TensorRef {
    Storage storage = Storage::Arena;
    uint32_t index = 0;
    size_t offset = 0;
    Shape shape;
    fm_dtype dtype = FM_DTYPE_F32;
};

// One instruction of a fused elementwise kernel. Registers below
// `Fused::loads.size()` hold the loads; instruction k writes register
// loads.size() + k.
struct FusedInstruction {
    Prim prim;
    int32_t a = -1, b = -1, c = -1;
    float p0 = 0, p1 = 0;   // slope, alpha, exponent, clamp bounds, dropout p
    uint64_t seed = 0;      // dropout
};

// The parameters an elementwise node's instruction carries (p0, p1 of
// FusedInstruction) from its attributes.
void instruction_params(const Node &node, float *p0, float *p1);

struct Fused {
    Shape shape;                        // every member has this shape
    std::vector<TensorRef> loads;       // broadcast to `shape`
    std::vector<FusedInstruction> code;
    std::vector<std::pair<int32_t, TensorRef>> stores;  // register -> destination
};

enum class StepKind : uint8_t { Kernel, Fused, Copy };

struct Step {
    StepKind kind = StepKind::Kernel;
    Prim prim = Prim::Count;  // kernels
    fm_op_attrs attrs{};
    std::vector<TensorRef> inputs;
    TensorRef output;
    std::shared_ptr<Fused> fused;
    const char *origin = "";
};

struct Plan {
    std::vector<Step> steps;
    std::vector<float> scalars;
    std::vector<TensorRef> outputs;     // shapes and dtypes of the fetched tensors
    size_t arena_bytes = 0;             // after reuse
    size_t unshared_bytes = 0;          // every intermediate in its own memory
    bool uses_dropout = false;
};

// Specialises `graph` for `feed_shapes` (one per placeholder; empty for
// unfed) and plans `fetches`. Throws naming the op when the real shapes do
// not fit, and FM_ERR_INVALID_ARGUMENT for a needed placeholder not fed.
Plan make_plan(const Graph &graph, const std::vector<Shape> &feed_shapes,
               const std::vector<bool> &fed, const std::vector<uint32_t> &fetches);

// One line per step (kind, primitive or fused members, shapes, storage), for
// FERROMETAL_PRINT_PLANS=1 and for reading what the planner did.
void print_plan(const Plan &plan, std::FILE *out);

}  // namespace fm
