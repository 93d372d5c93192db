#include "plan.h"
#include "step_fusion.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include "dtype.h"
#include "elementwise_math.h"
#include "error.h"

namespace fm {

namespace {

constexpr size_t kAlignment = 64;

size_t byte_size(const Shape &shape, fm_dtype dtype) {
    return size_t(element_count(shape)) * dtype_size(dtype, "dtype");
}

// First-fit allocation of arena ranges, coalescing on release.
constexpr size_t kKeptSmallBytes = 4096;

class ArenaAllocator {
public:
    size_t allocate(size_t bytes) {
        bytes = std::max<size_t>((bytes + kAlignment - 1) / kAlignment * kAlignment, kAlignment);
        for (auto it = free_.begin(); it != free_.end(); ++it) {
            if (it->second >= bytes) {
                size_t offset = it->first;
                size_t left = it->second - bytes;
                free_.erase(it);
                if (left) free_[offset + bytes] = left;
                return offset;
            }
        }
        // Grow: a free block at the very end is extended rather than skipped.
        size_t offset = end_;
        if (!free_.empty()) {
            auto last = std::prev(free_.end());
            if (last->first + last->second == end_) {
                offset = last->first;
                free_.erase(last);
            }
        }
        end_ = offset + bytes;
        return offset;
    }
    void release(size_t offset, size_t bytes) {
        bytes = std::max<size_t>((bytes + kAlignment - 1) / kAlignment * kAlignment, kAlignment);
        auto it = free_.emplace(offset, bytes).first;
        auto next = std::next(it);
        if (next != free_.end() && it->first + it->second == next->first) {
            it->second += next->second;
            free_.erase(next);
        }
        if (it != free_.begin()) {
            auto prev = std::prev(it);
            if (prev->first + prev->second == it->first) {
                prev->second += it->second;
                free_.erase(it);
            }
        }
    }
    size_t size() const { return end_; }

private:
    std::map<size_t, size_t> free_;
    size_t end_ = 0;
};

class Planner {
public:
    Planner(const Graph &graph, const std::vector<Shape> &feed_shapes, const std::vector<bool> &fed,
            const std::vector<uint32_t> &fetches)
        : g(graph), feed_shapes(feed_shapes), fed(fed), fetches(fetches) {}

    Plan run();

private:
    void mark_needed();
    void specialise();
    void schedule();
    void fold_constants();
    void form_groups();
    void lay_out();

    const Graph &g;
    const std::vector<Shape> &feed_shapes;
    const std::vector<bool> &fed;
    const std::vector<uint32_t> &fetches;

    std::vector<bool> needed;
    std::vector<Shape> shapes;          // concrete, per node
    std::vector<uint32_t> order;        // schedule: non-assigns, then assigns
    std::vector<int32_t> group_of;      // fused group per node, -1 if none
    std::vector<std::vector<uint32_t>> groups;
    std::vector<int32_t> alias_of;      // views: the node whose storage they share
    // One-element values known before running (element counts, elementwise
    // functions of those and of constants): plan scalars, not steps.
    std::vector<bool> folded;
    std::vector<float> folded_value;
    // BroadcastLike nodes read only by fused groups: no step, their groups
    // load the input and broadcast it themselves (one read of the small
    // tensor instead of writing and reading the broadcast one).
    std::vector<bool> broadcast_view;
    Plan plan;
};

void Planner::mark_needed() {
    needed.assign(g.size(), false);
    std::vector<uint32_t> stack(fetches.begin(), fetches.end());
    while (!stack.empty()) {
        uint32_t v = stack.back();
        stack.pop_back();
        if (needed[v]) continue;
        needed[v] = true;
        const Node &node = g.node(v);
        for (size_t i = 0; i < node.inputs.size(); ++i) stack.push_back(node.inputs[i]);
        for (uint32_t effect : node.effects) stack.push_back(effect);
    }
}

void Planner::specialise() {
    shapes.assign(g.size(), Shape{});
    for (uint32_t v = 0; v < g.size(); ++v) {
        if (!needed[v]) continue;
        const Node &node = g.node(v);
        switch (node.prim) {
            case Prim::Placeholder:
                if (!fed[node.slot]) {
                    fail(FM_ERR_INVALID_ARGUMENT, "argument 'feeds': placeholder '", node.name,
                         "' is needed by the fetched values but was not fed");
                }
                shapes[v] = feed_shapes[node.slot];
                break;
            case Prim::Variable:
            case Prim::Constant:
                shapes[v] = node.probe[0];
                break;
            default: {
                std::vector<const Shape *> in;
                std::vector<fm_dtype> dtypes;
                for (uint32_t input : node.inputs) {
                    in.push_back(&shapes[input]);
                    dtypes.push_back(g.node(input).dtype);
                }
                shapes[v] = infer(node.prim, node.attrs, in, dtypes, node.origin).shape;
            }
        }
    }
}

void Planner::schedule() {
    std::vector<uint32_t> assigns;
    for (uint32_t v = 0; v < g.size(); ++v) {
        if (!needed[v]) continue;
        (g.node(v).prim == Prim::Assign ? assigns : order).push_back(v);
    }
    // Assignments take effect at the end, so every op of the run reads the
    // values variables had when it started.
    order.insert(order.end(), assigns.begin(), assigns.end());
}

void Planner::fold_constants() {
    folded.assign(g.size(), false);
    folded_value.assign(g.size(), 0.0f);
    std::vector<bool> known(g.size(), false);
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        if (element_count(shapes[v]) != 1 || node.dtype != FM_DTYPE_F32) continue;
        if (node.prim == Prim::Constant) {
            std::memcpy(&folded_value[v], g.constant_data(node.slot).data(), sizeof(float));
            known[v] = true;  // a source already: known, but not a new scalar
        } else if (node.prim == Prim::ElementCount) {
            uint32_t mask = axes_mask(node.attrs, shapes[node.inputs[0]].size());
            double count = 1;
            for (size_t i = 0; i < shapes[node.inputs[0]].size(); ++i) {
                if (mask >> i & 1) count *= double(shapes[node.inputs[0]][i]);
            }
            folded_value[v] = float(count);
            known[v] = folded[v] = true;
        } else if (prim_is_elementwise(node.prim) && node.prim != Prim::DropoutMask && !node.inputs.empty() &&
                   node.inputs.size() <= 3) {
            float operands[3] = {0, 0, 0};
            bool all = true;
            for (size_t i = 0; all && i < node.inputs.size(); ++i) {
                all = known[node.inputs[i]];
                if (all) operands[i] = folded_value[node.inputs[i]];
            }
            if (!all) continue;
            float p0 = 0, p1 = 0;
            instruction_params(node, &p0, &p1);
            folded_value[v] = ew::apply(node.prim, operands[0], operands[1], operands[2], p0, p1);
            known[v] = folded[v] = true;
        }
    }
    // A fetched value is computed by a step into its output (its inputs may
    // still be folded).
    for (uint32_t f : fetches) {
        if (g.node(f).prim != Prim::ElementCount) folded[f] = false;
    }
}

// Greedy fusion: an elementwise node joins the group of one of its
// elementwise inputs when all members have one shape. A group is sealed as
// soon as a node outside it consumes one of its values, since the group runs
// at its last member's place in the schedule.
void Planner::form_groups() {
    broadcast_view.assign(g.size(), false);
    std::vector<bool> other_consumer(g.size(), false);
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        for (size_t i = 0; i < node.inputs.size(); ++i) {
            if (!prim_is_elementwise(node.prim) || folded[v]) other_consumer[node.inputs[i]] = true;
        }
    }
    for (uint32_t f : fetches) other_consumer[f] = true;
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        broadcast_view[v] = node.prim == Prim::BroadcastLike && !other_consumer[v] && node.effects.empty() &&
                            node.dtype == FM_DTYPE_F32;
    }
    group_of.assign(g.size(), -1);
    std::vector<bool> sealed;
    std::vector<size_t> position(g.size(), 0);  // in the schedule
    for (size_t i = 0; i < order.size(); ++i) position[order[i]] = i;
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        if (folded[v]) continue;  // a plan scalar, computed already
        if (prim_is_elementwise(node.prim)) {
            // Every open group of this shape among the inputs joins one: an
            // open group has only elementwise consumers so far, so merging
            // two cannot order anything before what it depends on.
            int32_t chosen = -1;
            for (uint32_t input : node.inputs) {
                int32_t group = group_of[input];
                if (group < 0 || sealed[group] || shapes[input] != shapes[v] || group == chosen) continue;
                if (chosen < 0) {
                    chosen = group;
                    continue;
                }
                for (uint32_t member : groups[group]) group_of[member] = chosen;
                groups[chosen].insert(groups[chosen].end(), groups[group].begin(), groups[group].end());
                std::sort(groups[chosen].begin(), groups[chosen].end(),
                          [&](uint32_t a, uint32_t b) { return position[a] < position[b]; });
                groups[group].clear();
                sealed[group] = true;
            }
            if (chosen < 0) {
                chosen = int32_t(groups.size());
                groups.emplace_back();
                sealed.push_back(false);
            }
            for (uint32_t input : node.inputs) {
                if (group_of[input] >= 0 && group_of[input] != chosen) sealed[group_of[input]] = true;
            }
            groups[chosen].push_back(v);
            group_of[v] = chosen;
        } else {
            for (size_t i = 0; i < node.inputs.size(); ++i) {
                int32_t group = group_of[node.inputs[i]];
                if (group >= 0) sealed[group] = true;
            }
        }
    }
}

void Planner::lay_out() {
    size_t n = g.size();
    // Position of each node's work in the schedule; a group works at its last member.
    std::vector<size_t> position(n, SIZE_MAX);
    for (size_t i = 0; i < order.size(); ++i) position[order[i]] = i;
    std::vector<size_t> runs_at(n, SIZE_MAX);
    for (uint32_t v : order) {
        runs_at[v] = group_of[v] >= 0 ? position[groups[group_of[v]].back()] : position[v];
    }
    alias_of.assign(n, -1);
    for (uint32_t v : order) {
        Prim p = g.node(v).prim;
        if (prim_is_view(p) || p == Prim::StopGradient) alias_of[v] = int32_t(g.node(v).inputs[0]);
    }
    auto root = [&](uint32_t v) {
        while (alias_of[v] >= 0) v = uint32_t(alias_of[v]);
        return v;
    };
    // Materialized values: read by a step outside their group, fetched, or
    // assigned. Their last use decides when their arena range is free.
    std::vector<size_t> last_use(n, 0);
    std::vector<bool> materialized(n, false);
    auto use = [&](uint32_t v, size_t at) {
        uint32_t r = root(v);
        materialized[r] = true;
        last_use[r] = std::max(last_use[r], at);
    };
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        if (alias_of[v] >= 0 || node.prim == Prim::Group || broadcast_view[v]) continue;
        for (size_t i = 0; i < node.inputs.size(); ++i) {
            uint32_t input = node.inputs[i];
            if (input_is_shape_only(node.prim, i)) continue;
            bool same_group = group_of[v] >= 0 && group_of[v] == group_of[input];
            if (broadcast_view[input]) input = g.node(input).inputs[0];
            if (!same_group) use(input, runs_at[v]);
        }
    }
    // Fetched views and sources are copied out after the last step.
    for (uint32_t f : fetches) {
        if (root(f) != f || g.node(f).prim == Prim::Placeholder || g.node(f).prim == Prim::Variable ||
            g.node(f).prim == Prim::Constant) {
            use(f, order.size());
        }
    }
    std::map<uint32_t, uint32_t> output_slot;
    for (uint32_t f : fetches) {
        if (output_slot.count(f)) continue;
        uint32_t slot = uint32_t(plan.outputs.size());
        output_slot[f] = slot;
        TensorRef out;
        out.storage = Storage::Output;
        out.index = slot;
        out.shape = shapes[f];
        out.dtype = g.node(f).dtype;
        plan.outputs.push_back(out);
    }

    auto output_slot_planned = [&](uint32_t v) {
        return std::find(fetches.begin(), fetches.end(), v) != fetches.end();
    };
    // In-place updates: an assigned value made by a fused group is stored
    // straight into its variable when every other reader of the variable's
    // old value runs before the group or inside it (reading the same index
    // it writes). That removes the arena slot and the copy of the update.
    std::vector<int64_t> in_place(n, -1);
    for (uint32_t v : order) {
        const Node &node = g.node(v);
        if (node.prim != Prim::Assign) continue;
        uint32_t variable = node.inputs[0], value = node.inputs[1];
        if (group_of[value] < 0 || in_place[value] >= 0 || output_slot_planned(value)) continue;
        size_t at = runs_at[value];
        bool safe = true;
        for (uint32_t f : fetches) {
            if (root(f) == variable) safe = false;  // copied out after the last step
        }
        for (uint32_t reader : order) {
            const Node &r = g.node(reader);
            if (r.prim == Prim::Assign) {
                // Another assignment copying the old value runs at the end.
                if (reader != v && root(r.inputs[1]) == variable) safe = false;
                continue;
            }
            for (uint32_t input : r.inputs) {
                if (root(input) != variable) continue;
                // A broadcast view is read where its consumer groups run, at
                // other indices than they write: never in place of those.
                if (broadcast_view[reader]) safe = false;
                bool same_group = group_of[reader] >= 0 && group_of[reader] == group_of[value];
                if (!same_group && runs_at[reader] >= at) safe = false;
            }
        }
        if (safe) in_place[value] = variable;
    }

    // Where each root lives.
    std::vector<TensorRef> where(n);
    std::vector<bool> placed(n, false);
    auto ref_of = [&](uint32_t v) {
        TensorRef ref = where[root(v)];
        ref.shape = shapes[v];
        ref.dtype = g.node(v).dtype;
        return ref;
    };
    ArenaAllocator arena;
    std::vector<std::vector<uint32_t>> frees_after(order.size() + 1);
    auto place = [&](uint32_t v, size_t at) {
        if (placed[v]) return;
        placed[v] = true;
        const Node &node = g.node(v);
        TensorRef &ref = where[v];
        ref.shape = shapes[v];
        ref.dtype = node.dtype;
        auto fetched = output_slot.find(v);
        if (node.prim == Prim::Placeholder) {
            ref.storage = Storage::Feed, ref.index = uint32_t(node.slot);
        } else if (node.prim == Prim::Variable) {
            ref.storage = Storage::Variable, ref.index = uint32_t(node.slot);
        } else if (node.prim == Prim::Constant) {
            ref.storage = Storage::Constant, ref.index = uint32_t(node.slot);
        } else if (node.prim == Prim::Group || node.prim == Prim::Assign) {
            // A token has no data of its own; fetched, it reads as 0.
            ref.storage = Storage::Scalar, ref.index = uint32_t(plan.scalars.size());
            plan.scalars.push_back(0.0f);
        } else if (folded[v]) {
            ref.storage = Storage::Scalar, ref.index = uint32_t(plan.scalars.size());
            plan.scalars.push_back(folded_value[v]);
        } else if (fetched != output_slot.end()) {
            ref = plan.outputs[fetched->second];
        } else if (in_place[v] >= 0) {
            ref.storage = Storage::Variable, ref.index = uint32_t(g.node(uint32_t(in_place[v])).slot);
        } else {
            size_t bytes = byte_size(shapes[v], node.dtype);
            ref.storage = Storage::Arena;
            ref.offset = arena.allocate(bytes);
            plan.unshared_bytes += (bytes + kAlignment - 1) / kAlignment * kAlignment;
            // Small values (per-channel statistics, scalars) keep their
            // memory for the whole run: it costs little, and a backend's
            // step fusions may then compute them earlier than planned
            // without clobbering a neighbour that reused the memory.
            if (bytes > kKeptSmallBytes) frees_after[std::max(last_use[v], at)].push_back(v);
        }
    };

    // Assignments copy at the end, one after another; one that reads a
    // variable another overwrites gets a snapshot taken before any of them.
    std::vector<bool> assigned(n, false);
    for (uint32_t v : order) {
        if (g.node(v).prim == Prim::Assign) assigned[g.node(v).inputs[0]] = true;
    }
    std::map<uint32_t, TensorRef> snapshot;
    bool snapshots_taken = false;
    // Fetched values that no step wrote (sources, views) are copied out
    // after the last op and before the first assignment changes a variable.
    bool fetches_copied = false;
    auto copy_out_fetches = [&](size_t at) {
        fetches_copied = true;
        for (auto [value, slot] : output_slot) {
            uint32_t r = root(value);
            place(r, at);
            TensorRef from = ref_of(value);
            if (from.storage == Storage::Output && from.index == slot) continue;
            Step step;
            step.kind = StepKind::Copy;
            step.inputs = {from};
            step.output = plan.outputs[slot];
            step.origin = g.node(value).origin;
            plan.steps.push_back(std::move(step));
        }
    };

    for (size_t i = 0; i < order.size(); ++i) {
        uint32_t v = order[i];
        const Node &node = g.node(v);
        if (alias_of[v] >= 0 || node.prim == Prim::Group || broadcast_view[v]) continue;
        if (node.prim == Prim::Assign && !snapshots_taken) {
            snapshots_taken = true;
            copy_out_fetches(i);
            for (size_t k = i; k < order.size(); ++k) {
                const Node &a = g.node(order[k]);
                uint32_t source = root(a.inputs[1]);
                if (a.prim != Prim::Assign || !assigned[source] || source == a.inputs[0]) continue;
                place(source, i);
                TensorRef from = ref_of(a.inputs[1]);
                TensorRef copy = from;
                copy.storage = Storage::Arena;
                copy.offset = arena.allocate(byte_size(from.shape, from.dtype));
                plan.unshared_bytes += byte_size(from.shape, from.dtype);
                Step step;
                step.kind = StepKind::Copy;
                step.inputs = {from};
                step.output = copy;
                step.origin = a.origin;
                plan.steps.push_back(std::move(step));
                snapshot[order[k]] = copy;
            }
        }
        int32_t group = group_of[v];
        if (group >= 0) {
            if (groups[group].back() != v) continue;  // the group is emitted at its last member
            auto fused = std::make_shared<Fused>();
            fused->shape = shapes[v];
            std::map<uint32_t, int32_t> reg;
            const auto &members = groups[group];
            for (uint32_t m : members) {
                for (uint32_t input : g.node(m).inputs) {
                    if (group_of[input] == group || reg.count(input)) continue;
                    // A broadcast view loads its (smaller) input, broadcast by the group.
                    uint32_t source = broadcast_view[input] ? g.node(input).inputs[0] : input;
                    place(root(source), i);
                    reg[input] = int32_t(fused->loads.size());
                    fused->loads.push_back(ref_of(source));
                }
            }
            int32_t next = int32_t(fused->loads.size());
            for (uint32_t m : members) {
                const Node &member = g.node(m);
                FusedInstruction ins;
                ins.prim = member.prim;
                int32_t *operands[3] = {&ins.a, &ins.b, &ins.c};
                for (size_t k = 0; k < member.inputs.size() && k < 3; ++k) *operands[k] = reg.at(member.inputs[k]);
                instruction_params(member, &ins.p0, &ins.p1);
                if (member.prim == Prim::DropoutMask) {
                    ins.seed = member.attrs.seed, ins.a = -1;
                    plan.uses_dropout = true;
                }
                fused->code.push_back(ins);
                reg[m] = next++;
            }
            for (uint32_t m : members) {
                if (!materialized[m] && !output_slot.count(m)) continue;
                place(m, i);
                fused->stores.emplace_back(reg[m], ref_of(m));
            }
            Step step;
            step.kind = StepKind::Fused;
            step.fused = fused;
            step.origin = g.node(members.front()).origin;
            plan.steps.push_back(std::move(step));
        } else if (node.prim == Prim::Assign) {
            uint32_t value = node.inputs[1];
            place(root(value), i);
            place(root(node.inputs[0]), i);
            auto taken = snapshot.find(v);
            TensorRef from = taken != snapshot.end() ? taken->second : ref_of(value);
            TensorRef to = ref_of(node.inputs[0]);
            if (from.storage == Storage::Variable && from.index == to.index) continue;  // updated in place
            Step step;
            step.kind = StepKind::Copy;
            step.inputs = {from};
            step.output = to;
            step.origin = node.origin;
            plan.steps.push_back(std::move(step));
        } else if (node.prim == Prim::Placeholder || node.prim == Prim::Variable ||
                   node.prim == Prim::Constant || folded[v]) {
            place(v, i);
        } else {
            Step step;
            step.kind = StepKind::Kernel;
            step.prim = node.prim;
            step.attrs = node.attrs;
            step.origin = node.origin;
            for (size_t k = 0; k < node.inputs.size(); ++k) {
                uint32_t input = node.inputs[k];
                if (!input_is_shape_only(node.prim, k)) place(root(input), i);
                TensorRef ref = input_is_shape_only(node.prim, k) ? TensorRef{} : ref_of(input);
                ref.shape = shapes[input];
                ref.dtype = g.node(input).dtype;
                step.inputs.push_back(ref);
            }
            place(v, i);
            step.output = ref_of(v);
            plan.steps.push_back(std::move(step));
        }
        for (uint32_t dead : frees_after[i]) {
            arena.release(where[dead].offset, byte_size(shapes[dead], g.node(dead).dtype));
        }
    }
    if (!fetches_copied) copy_out_fetches(order.size());
    plan.arena_bytes = arena.size();
}

Plan Planner::run() {
    mark_needed();
    specialise();
    schedule();
    fold_constants();
    form_groups();
    lay_out();
    return std::move(plan);
}

}  // namespace

Plan make_plan(const Graph &graph, const std::vector<Shape> &feed_shapes, const std::vector<bool> &fed,
               const std::vector<uint32_t> &fetches) {
    return Planner(graph, feed_shapes, fed, fetches).run();
}

namespace {

std::string describe(const TensorRef &ref) {
    static const char *const kStorage[] = {"arena", "var", "const", "feed", "out", "scalar"};
    std::string text = std::string(kStorage[int(ref.storage)]) + std::to_string(ref.index);
    if (ref.storage == Storage::Arena) text = "arena@" + std::to_string(ref.offset);
    return text + to_string(ref.shape);
}

}  // namespace

void instruction_params(const Node &node, float *p0, float *p1) {
    const fm_op_attrs &a = node.attrs;
    *p0 = 0, *p1 = 0;
    switch (node.prim) {
        case Prim::LeakyRelu: *p0 = float(a.slope); break;
        case Prim::Elu: *p0 = float(a.alpha); break;
        case Prim::Pow: *p0 = float(a.exponent); break;
        case Prim::Clamp: *p0 = float(a.min), *p1 = float(a.max); break;
        case Prim::DropoutMask: *p0 = float(a.p); break;
        default: break;
    }
}

namespace {

void print_steps(const Plan &plan, const StepFusion *fusion, std::FILE *out) {
    std::fprintf(out, "plan: %zu steps, arena %zu bytes (%zu unshared)%s\n", plan.steps.size(), plan.arena_bytes,
                 plan.unshared_bytes, fusion ? ", after the backend's step fusions" : "");
    for (size_t i = 0; i < plan.steps.size(); ++i) {
        const Step &step = plan.steps[i];
        if (fusion && fusion->skip[i]) {
            std::fprintf(out, "%4zu %-12s (fused into another step)\n", i, step.origin);
            continue;
        }
        std::string text;
        if (step.kind == StepKind::Fused) {
            const Fused &fused = fusion && fusion->fused[i] ? *fusion->fused[i] : *step.fused;
            text = "fused " + to_string(fused.shape) + " [";
            for (size_t k = 0; k < fused.code.size(); ++k) {
                text += (k ? " " : "") + std::string(prim_name(fused.code[k].prim));
            }
            text += "] loads";
            for (const TensorRef &ref : fused.loads) text += " " + describe(ref);
            text += " stores";
            for (size_t k = 0; k < fused.stores.size(); ++k) {
                const bool skipped = fusion && !fusion->skip_store[i].empty() && fusion->skip_store[i][k];
                text += " " + describe(fused.stores[k].second) + (skipped ? "(skipped)" : "");
            }
            if (fusion) {
                for (const ChannelSumSpec &sum : fusion->sums[i]) text += " channel-sums " + describe(sum.out);
            }
        } else {
            text = std::string(step.kind == StepKind::Copy ? "copy" : prim_name(step.prim));
            for (const TensorRef &ref : step.inputs) text += " " + describe(ref);
            text += " -> " + describe(step.output);
            if (fusion && fusion->bias_step[i] >= 0) text += " + bias of step " + std::to_string(fusion->bias_step[i]);
            if (fusion && fusion->conv_sum_step[i] >= 0) {
                text += " + channel sums of step " + std::to_string(fusion->conv_sum_step[i]);
            }
            if (fusion && fusion->conv_variance_step[i] >= 0) {
                text += " + variance sums of step " + std::to_string(fusion->conv_variance_step[i]);
            }
        }
        std::fprintf(out, "%4zu %-12s %s\n", i, step.origin, text.c_str());
    }
}

}  // namespace

void print_plan(const Plan &plan, std::FILE *out) { print_steps(plan, nullptr, out); }

void print_fused_plan(const Plan &plan, const StepFusion &fusion, std::FILE *out) {
    print_steps(plan, &fusion, out);
}

void print_fused_plan_if_asked(const Plan &plan, const StepFusion &fusion) {
    const char *print = std::getenv("FERROMETAL_PRINT_PLANS");
    if (print && *print && *print != '0') print_fused_plan(plan, fusion, stderr);
}

}  // namespace fm
