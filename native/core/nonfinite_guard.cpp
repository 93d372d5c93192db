#include "nonfinite_guard.h"

#include "builder.h"

namespace fm {

uint32_t build_finite_check(Graph &graph, uint32_t loss, const std::vector<uint32_t> &gradients) {
    Builder b(graph, "non-finite guard");
    // x * 0 is 0 for a finite x and NaN for an inf or a NaN, and a sum
    // holding an inf or a NaN is not finite: so the probe is 0 exactly when
    // the loss and every gradient's sum are finite. Summing each gradient
    // as it is reads it once and writes nothing (multiplying every element
    // by 0 first would store a copy, 5-10 % of a CPU step); the price is
    // that a gradient whose sum overflows f32 (elements near 1e38 / count)
    // counts as non-finite. A squared norm would overflow much sooner.
    uint32_t probe = b.mul(loss, 0.0);
    for (uint32_t gradient : gradients) probe = b.add(probe, b.mul(b.sum(gradient, {}, false), 0.0));
    return b.prim(Prim::Equal, {probe, b.scalar(0.0)});
}

void guard_effects(Graph &graph, uint32_t keep) {
    Builder b(graph, "non-finite guard");
    const size_t existing = graph.size();  // the new assignments need no guard
    for (uint32_t v = 0; v < existing; ++v) {
        std::vector<uint32_t> effects = graph.node(v).effects;
        if (effects.empty()) continue;
        for (uint32_t &effect : effects) {
            const uint32_t variable = graph.node(effect).inputs[0], value = graph.node(effect).inputs[1];
            effect = b.prim(Prim::Assign, {variable, b.where(keep, value, variable)});
        }
        graph.set_effects(v, std::move(effects));
    }
}

}  // namespace fm
