// Cross-step fusions over a finished plan (see step_fusion.h).
#include "step_fusion.h"

#include <memory>

#include "dtype.h"
#include "kernel_shapes.h"

namespace fm {

namespace {

// How many unrelated steps a channel sum may be looked for past.
constexpr size_t kMaxStepsPassed = 6;

struct ByteRange {
    Storage storage;
    uint32_t index;
    size_t begin, end;
};

ByteRange byte_range(const TensorRef &ref) {
    const size_t bytes = size_t(element_count(ref.shape)) * dtype_size(ref.dtype, "dtype");
    if (ref.storage == Storage::Arena) return {ref.storage, 0, ref.offset, ref.offset + bytes};
    return {ref.storage, ref.index, 0, bytes};
}

bool overlaps(const ByteRange &a, const ByteRange &b) {
    return a.storage == b.storage && a.index == b.index && a.begin < b.end && b.begin < a.end;
}

bool covers(const ByteRange &outer, const ByteRange &inner) {
    return outer.storage == inner.storage && outer.index == inner.index && outer.begin <= inner.begin &&
           inner.end <= outer.end;
}


class StepFuser {
public:
    StepFuser(const Plan &plan, const StepFusionOptions &options)
        : steps(plan.steps), scalars(plan.scalars), options(options), out(unfused_steps(plan)) {}

    StepFusion run() {
        for (size_t i = 0; i < steps.size(); ++i) drop_broadcast(i);
        if (options.conv_bias) {
            for (size_t i = 0; i < steps.size(); ++i) conv_bias(i);
        }
        for (size_t i = 0; i < steps.size(); ++i) fuse_reductions(i);
        if (options.conv_bias && options.conv_variance) {
            for (size_t i = 0; i < steps.size(); ++i) conv_variance(i);
        }
        for (size_t i = 0; i < steps.size(); ++i) merge_fused(i);
        if (options.pull_sums_forward) {
            for (size_t i = 0; i < steps.size(); ++i) pull_sums_forward(i);
        }
        for (size_t i = 0; i < steps.size(); ++i) step_of_relu(i);
        return std::move(out);
    }

private:
    const std::vector<TensorRef> &loads(size_t t) const {
        return out.fused[t] ? out.fused[t]->loads : steps[t].fused->loads;
    }
    // What step t reads and writes as lowered so far (a conv with a bias
    // reads the add's loads and writes the add's destination).
    bool reads(size_t t, const ByteRange &r) const {
        const Step &step = steps[t];
        if (step.kind == StepKind::Fused) {
            for (const TensorRef &ref : loads(t)) if (overlaps(byte_range(ref), r)) return true;
            return false;
        }
        for (const TensorRef &ref : step.inputs) if (overlaps(byte_range(ref), r)) return true;
        if (out.bias_step[t] >= 0) {
            for (const TensorRef &ref : loads(size_t(out.bias_step[t]))) if (overlaps(byte_range(ref), r)) return true;
        }
        return false;
    }
    template <class F>
    void for_each_write(size_t t, F f) const {
        const Step &step = steps[t];
        if (step.kind == StepKind::Fused) {
            for (const auto &store : (out.fused[t] ? *out.fused[t] : *step.fused).stores) f(byte_range(store.second));
            for (const ChannelSumSpec &sum : out.sums[t]) f(byte_range(sum.out));
        } else if (out.bias_step[t] >= 0) {
            f(byte_range(steps[size_t(out.bias_step[t])].fused->stores[0].second));
            if (out.conv_sum_step[t] >= 0) f(byte_range(steps[size_t(out.conv_sum_step[t])].output));
            if (out.conv_variance_step[t] >= 0) f(byte_range(out.sums[size_t(out.conv_variance_step[t])][0].out));
        } else {
            f(byte_range(step.output));
        }
    }
    bool writes_into(size_t t, const ByteRange &r) const {
        bool any = false;
        for_each_write(t, [&](const ByteRange &w) { any = any || overlaps(w, r); });
        return any;
    }
    bool overwrites(size_t t, const ByteRange &r) const {
        bool all = false;
        for_each_write(t, [&](const ByteRange &w) { all = all || covers(w, r); });
        return all;
    }
    // Nothing after step `from` reads `ref` before it is overwritten (bytes
    // that later steps overwrite stop counting one at a time).
    bool dead_after(size_t from, const TensorRef &ref) const {
        if (ref.storage != Storage::Arena) return false;
        std::vector<ByteRange> live{byte_range(ref)};
        for (size_t t = from + 1; t < steps.size() && !live.empty(); ++t) {
            if (out.skip[t]) continue;
            for (const ByteRange &r : live) if (reads(t, r)) return false;
            for_each_write(t, [&](const ByteRange &w) {
                std::vector<ByteRange> rest;
                for (const ByteRange &r : live) {
                    if (!overlaps(w, r)) {
                        rest.push_back(r);
                        continue;
                    }
                    if (r.begin < w.begin) rest.push_back({r.storage, r.index, r.begin, w.begin});
                    if (w.end < r.end) rest.push_back({r.storage, r.index, w.end, r.end});
                }
                live = std::move(rest);
            });
        }
        return true;
    }

    void drop_broadcast(size_t i) {
        const Step &step = steps[i];
        if (step.kind != StepKind::Kernel || step.prim != Prim::BroadcastLike) return;
        const TensorRef &y = step.output, &x = step.inputs[0];
        if (y.storage != Storage::Arena || y.dtype != FM_DTYPE_F32 || x.shape.size() > y.shape.size()) return;
        const ByteRange ry = byte_range(y), rx = byte_range(x);
        std::vector<std::pair<size_t, size_t>> uses;  // (step, load)
        size_t t = i + 1;
        for (; t < steps.size(); ++t) {
            if (out.skip[t]) continue;
            if (steps[t].kind != StepKind::Fused) {
                if (reads(t, ry)) return;
            } else {
                const auto &ls = loads(t);
                for (size_t l = 0; l < ls.size(); ++l) {
                    if (!overlaps(byte_range(ls[l]), ry)) continue;
                    if (!same_tensor(ls[l], y) || steps[t].fused->shape != y.shape) return;
                    uses.emplace_back(t, l);
                }
            }
            if (overwrites(t, ry)) break;
            if (writes_into(t, ry)) return;  // partly overwritten: too subtle
        }
        if (uses.empty()) return;
        for (size_t u = i + 1; u <= uses.back().first; ++u) {
            if (!out.skip[u] && writes_into(u, rx)) return;  // x must outlive its readers
        }
        out.skip[i] = true;
        for (const auto &use : uses) {
            if (!out.fused[use.first]) out.fused[use.first] = std::make_shared<Fused>(*steps[use.first].fused);
            out.fused[use.first]->loads[use.second] = x;
        }
    }

    void conv_bias(size_t i) {
        const Step &conv = steps[i];
        if (conv.kind != StepKind::Kernel || conv.prim != Prim::Conv2d || i + 1 >= steps.size()) return;
        const Step &add = steps[i + 1];
        if (out.skip[i + 1] || add.kind != StepKind::Fused || add.fused->code.size() != 1 ||
            add.fused->code[0].prim != Prim::Add || loads(i + 1).size() != 2 || add.fused->stores.size() != 1 ||
            add.fused->stores[0].first != 2) {
            return;
        }
        const TensorRef &y = conv.output;
        const auto &ls = loads(i + 1);
        const int32_t a = add.fused->code[0].a, b = add.fused->code[0].b;
        if (a < 0 || b < 0 || a == b) return;
        const size_t from_conv = same_tensor(ls[size_t(a)], y) ? size_t(a) : size_t(b);
        const TensorRef &bias = ls[1 - from_conv];
        if (!same_tensor(ls[from_conv], y) || y.shape.size() != 4 || add.fused->shape != y.shape) return;
        // The bias must broadcast along every axis but the channels.
        if (bias.dtype != FM_DTYPE_F32 || bias.shape.size() > 3 || element_count(bias.shape) != y.shape[1]) return;
        if (bias.shape.size() == 3 && (bias.shape[0] != y.shape[1] || bias.shape[1] != 1 || bias.shape[2] != 1)) return;
        if (bias.shape.size() < 3 && y.shape[1] != 1) return;
        const TensorRef &z = add.fused->stores[0].second;
        if (z.shape != y.shape || z.dtype != FM_DTYPE_F32) return;
        const ByteRange rz = byte_range(z);
        for (const TensorRef &in : conv.inputs) if (overlaps(byte_range(in), rz)) return;
        if (overlaps(byte_range(bias), rz) || !dead_after(i + 1, y)) return;
        out.bias_step[i] = int64_t(i + 1);
        out.skip[i + 1] = true;
        // A channel sum of the result right after it: taken by the conv
        // from each output block while it is in cache.
        for (size_t k = i + 2; k < steps.size(); ++k) {
            if (out.skip[k]) continue;
            const Step &r = steps[k];
            int64_t channels, inner;
            if (r.kind != StepKind::Kernel || (r.prim != Prim::ReduceSum && r.prim != Prim::ReduceToLike) ||
                !same_tensor(r.inputs[0], z) || r.output.dtype != FM_DTYPE_F32 ||
                !channel_reduction(r, &channels, &inner)) {
                break;
            }
            const ByteRange ro = byte_range(r.output);
            bool clash = overlaps(ro, rz) || overlaps(ro, byte_range(bias));
            for (const TensorRef &in : conv.inputs) clash = clash || overlaps(byte_range(in), ro);
            if (!clash) {
                out.conv_sum_step[i] = int64_t(k);
                out.skip[k] = true;
            }
            break;
        }
    }

    // After conv i (with its bias and channel sums S of its result z): a
    // fused step D computing mean = S / count, then a fused step F whose
    // only product is the channel sum of (z - mean)^2 (its store dead).
    // The conv takes F's sum over; F is skipped. D still runs (the mean
    // has other readers). Nothing between the conv and F may touch F's
    // sum, which is now written at the conv.
    void conv_variance(size_t i) {
        if (out.bias_step[i] < 0 || out.conv_sum_step[i] < 0) return;
        const TensorRef &z = steps[size_t(out.bias_step[i])].fused->stores[0].second;
        const TensorRef &sums = steps[size_t(out.conv_sum_step[i])].output;
        const double count = double(element_count(z.shape) / z.shape[1]);
        int64_t mean_step = -1;
        for (size_t t = size_t(out.conv_sum_step[i]) + 1; t < steps.size(); ++t) {
            if (out.skip[t]) continue;
            if (mean_step < 0) {
                // D: the next step must be the division.
                if (steps[t].kind != StepKind::Fused) return;
                const Fused &d = fused_at(t);
                if (d.code.size() != 1 || d.code[0].prim != Prim::Div || d.stores.size() != 1 || d.loads.size() != 2 ||
                    d.code[0].a < 0 || d.code[0].b < 0 || d.stores[0].first != 2 || !out.sums[t].empty()) {
                    return;
                }
                const TensorRef &num = d.loads[size_t(d.code[0].a)], &den = d.loads[size_t(d.code[0].b)];
                if (!same_tensor(num, sums) || den.storage != Storage::Scalar || den.index >= scalars.size() ||
                    double(scalars[den.index]) != count) {
                    return;
                }
                mean_step = int64_t(t);
                continue;
            }
            const TensorRef &mean = fused_at(size_t(mean_step)).stores[0].second;
            if (steps[t].kind != StepKind::Fused) return;
            const Fused &f = fused_at(t);
            const bool shape_ok = f.shape == z.shape && f.loads.size() == 2 && f.code.size() == 2 &&
                                  out.sums[t].size() == 1 && !out.skip_store[t].empty();
            if (!shape_ok) return;
            const FusedInstruction &sub = f.code[0], &square = f.code[1];
            const int32_t z_reg = same_tensor(f.loads[0], z) ? 0 : 1;
            if (!same_tensor(f.loads[size_t(z_reg)], z) || !same_tensor(f.loads[size_t(1 - z_reg)], mean) ||
                sub.prim != Prim::Sub || sub.a != z_reg || sub.b != 1 - z_reg || square.prim != Prim::Mul ||
                square.a != 2 || square.b != 2 || out.sums[t][0].reg != 3) {
                return;
            }
            for (bool skipped : out.skip_store[t]) if (!skipped) return;
            const ByteRange variance = byte_range(out.sums[t][0].out);
            for (size_t u = i + 1; u < t; ++u) {
                if (!out.skip[u] && (reads(u, variance) || writes_into(u, variance))) return;
            }
            out.conv_variance_step[i] = int64_t(t);
            out.skip[t] = true;
            return;
        }
    }

    // The channel sum that `reduce` computes of `x`, if it is one.
    static bool channel_reduction(const Step &reduce, int64_t *channels, int64_t *inner) {
        const Shape &x = reduce.inputs[0].shape;
        if (x.size() < 2 || reduce.inputs[0].dtype != FM_DTYPE_F32) return false;
        uint32_t mask = 0;
        if (reduce.prim == Prim::ReduceSum) {
            mask = axes_mask(reduce.attrs, x.size());
        } else if (reduce.prim == Prim::ReduceToLike) {
            if (reduce.inputs[1].shape.size() > x.size()) return false;
            mask = reduce_to_like_mask(x, reduce.inputs[1].shape);
        } else {
            return false;
        }
        for (size_t d = 0; d < x.size(); ++d) {
            const bool reduced = (mask >> d) & 1;
            if (x[d] != 1 && reduced != (d != 1)) return false;
        }
        if (element_count(reduce.output.shape) != x[1]) return false;
        *channels = x[1];
        *inner = 1;
        for (size_t d = 2; d < x.size(); ++d) *inner *= x[d];
        return true;
    }

    void fuse_reductions(size_t i) {
        if (out.skip[i] || steps[i].kind != StepKind::Fused) return;
        const Fused &f = *steps[i].fused;
        // A tensor that stays in cache costs the separate reduction little;
        // the fused sums are scalar code.
        if (element_count(f.shape) < options.min_sum_elements) return;
        // The reductions may come a few steps later (autodiff interleaves
        // small steps); the steps passed over must leave the summed tensor
        // alone and neither read nor write where the sums go, since the
        // sums are now written before them.
        std::vector<size_t> passed;
        for (size_t k = i + 1; k < steps.size() && passed.size() < kMaxStepsPassed; ++k) {
            if (out.skip[k]) continue;
            const Step &r = steps[k];
            int64_t channels = 0, inner = 0;
            int32_t reg = -1;
            if (r.kind == StepKind::Kernel && (r.prim == Prim::ReduceSum || r.prim == Prim::ReduceToLike) &&
                channel_reduction(r, &channels, &inner) && r.inputs[0].shape == f.shape &&
                r.output.dtype == FM_DTYPE_F32) {
                for (const auto &store : f.stores) if (same_tensor(store.second, r.inputs[0])) reg = store.first;
            }
            const ByteRange ro = byte_range(r.output);
            bool clash = reg < 0 || out.sums[i].size() >= options.max_channel_sums;
            for (const auto &store : f.stores) clash = clash || overlaps(byte_range(store.second), ro);
            for (size_t p : passed) {
                clash = clash || reads(p, ro) || writes_into(p, ro) || (reg >= 0 && writes_into(p, byte_range(r.inputs[0])));
            }
            if (clash) {
                passed.push_back(k);
                continue;
            }
            out.sums[i].push_back(ChannelSumSpec{reg, channels, inner, r.output});
            out.skip[k] = true;
        }
        if (out.sums[i].empty()) return;
        out.skip_store[i].assign(f.stores.size(), false);
        for (size_t s = 0; s < f.stores.size(); ++s) {
            bool reduced = false;
            for (const ChannelSumSpec &sum : out.sums[i]) reduced = reduced || sum.reg == f.stores[s].first;
            out.skip_store[i][s] = reduced && dead_after(i, f.stores[s].second);
        }
    }

    const Fused &fused_at(size_t t) const { return out.fused[t] ? *out.fused[t] : *steps[t].fused; }

    // A fused step whose stores only a later fused step of the same shape
    // reads (directly, as loads of the same tensors) joins that step: one
    // pass instead of two, its values handed over in registers. The steps
    // in between must not touch what it reads or writes.
    void merge_fused(size_t i) {
        if (out.skip[i] || steps[i].kind != StepKind::Fused) return;
        const Fused &f1 = fused_at(i);
        std::vector<ByteRange> reads1, writes1, sums1;
        for (const TensorRef &ref : f1.loads) reads1.push_back(byte_range(ref));
        for (const auto &store : f1.stores) writes1.push_back(byte_range(store.second));
        for (const ChannelSumSpec &sum : out.sums[i]) sums1.push_back(byte_range(sum.out));
        auto any = [](const std::vector<ByteRange> &ranges, auto &&pred) {
            for (const ByteRange &r : ranges) if (pred(r)) return true;
            return false;
        };
        for (size_t j = i + 1; j < steps.size(); ++j) {
            if (out.skip[j]) continue;
            const bool reads_f1 = any(writes1, [&](const ByteRange &r) { return reads(j, r); }) ||
                                  any(sums1, [&](const ByteRange &r) { return reads(j, r); });
            if (!reads_f1) {
                const auto written = [&](const ByteRange &r) { return writes_into(j, r); };
                if (any(reads1, written) || any(writes1, written) || any(sums1, written)) return;
                continue;
            }
            if (steps[j].kind != StepKind::Fused || fused_at(j).shape != f1.shape) return;
            if (out.sums[i].size() + out.sums[j].size() > options.max_channel_sums) return;
            const Fused &f2 = fused_at(j);
            for (const TensorRef &load : f2.loads) {
                const ByteRange r = byte_range(load);
                if (any(sums1, [&](const ByteRange &o) { return overlaps(o, r); })) return;
                for (const auto &store : f1.stores) {
                    if (overlaps(byte_range(store.second), r) && !same_tensor(store.second, load)) return;
                }
            }
            // In one pass, every chunk's reads come before its stores, but
            // the chunks follow one another: a store of the second step may
            // only land on memory the first step uses element for element
            // (the planner reuses the memory of values dead after the first).
            for (const auto &store : f2.stores) {
                const ByteRange r = byte_range(store.second);
                if (any(sums1, [&](const ByteRange &o) { return overlaps(o, r); })) return;
                for (const TensorRef &ref : f1.loads) {
                    if (overlaps(byte_range(ref), r) && !same_tensor(ref, store.second)) return;
                }
                for (const auto &other : f1.stores) {
                    if (overlaps(byte_range(other.second), r) && !same_tensor(other.second, store.second)) return;
                }
            }
            return merge(i, j);
        }
    }

    // A fused step that stores both y and relu(y): where later fused steps
    // use y only through step(y) (the ReLU's derivative), they may load
    // relu(y) instead (step(relu(y)) == step(y) for every y, NaN and -0
    // included); y's store is then skipped if nothing else reads it.
    void step_of_relu(size_t i) {
        if (out.skip[i] || steps[i].kind != StepKind::Fused) return;
        const Fused &f = fused_at(i);
        const int32_t loads1 = int32_t(f.loads.size());
        for (size_t k = 0; k < f.code.size(); ++k) {
            if (f.code[k].prim != Prim::Relu) continue;
            const int32_t y_reg = f.code[k].a, r_reg = loads1 + int32_t(k);
            int y_store = -1, r_store = -1;
            for (size_t st = 0; st < f.stores.size(); ++st) {
                if (f.stores[st].first == y_reg) y_store = int(st);
                if (f.stores[st].first == r_reg) r_store = int(st);
            }
            if (y_store < 0 || r_store < 0) continue;
            const TensorRef y = f.stores[size_t(y_store)].second, r = f.stores[size_t(r_store)].second;
            if (y.storage != Storage::Arena || y.shape != f.shape || r.shape != f.shape) continue;
            const ByteRange ry = byte_range(y), rr = byte_range(r);
            std::vector<std::pair<size_t, size_t>> uses;  // (step, load)
            bool ok = true, r_clobbered = false;
            for (size_t t = i + 1; t < steps.size() && ok; ++t) {
                if (out.skip[t]) continue;
                if (reads(t, ry)) {
                    if (r_clobbered || steps[t].kind != StepKind::Fused || fused_at(t).shape != f.shape) {
                        ok = false;
                        break;
                    }
                    const Fused &g = fused_at(t);
                    for (size_t l = 0; l < g.loads.size() && ok; ++l) {
                        if (!overlaps(byte_range(g.loads[l]), ry)) continue;
                        if (!same_tensor(g.loads[l], y)) ok = false;
                        for (const FusedInstruction &ins : g.code) {
                            const bool uses_it = ins.a == int32_t(l) || ins.b == int32_t(l) || ins.c == int32_t(l);
                            if (uses_it && ins.prim != Prim::Step) ok = false;
                        }
                        for (const auto &store : g.stores) if (store.first == int32_t(l)) ok = false;
                        for (const ChannelSumSpec &sum : out.sums[t]) if (sum.reg == int32_t(l)) ok = false;
                        uses.emplace_back(t, l);
                    }
                    // relu(y) must still be there: this step may overwrite
                    // it only element for element.
                    for (const auto &store : g.stores) {
                        if (overlaps(byte_range(store.second), rr) && !same_tensor(store.second, r)) ok = false;
                    }
                }
                if (!ok) break;
                r_clobbered = r_clobbered || writes_into(t, rr);
                if (overwrites(t, ry)) break;
                if (writes_into(t, ry)) ok = false;
            }
            if (!ok || uses.empty()) continue;
            for (const auto &use : uses) {
                if (!out.fused[use.first]) out.fused[use.first] = std::make_shared<Fused>(*steps[use.first].fused);
                out.fused[use.first]->loads[use.second] = r;
            }
            if (out.skip_store[i].empty()) out.skip_store[i].assign(f.stores.size(), false);
            out.skip_store[i][size_t(y_store)] = dead_after(i, y);
        }
    }

    // A later fused step of the same shape that only takes channel sums
    // (its stores all dead) and reads nothing the steps in between change
    // runs inside step i's pass instead, reading i's values in registers:
    // a BatchNorm's backward sums of dy * xhat, which wait on small steps
    // that read i's own sums.
    void pull_sums_forward(size_t i) {
        if (out.skip[i] || steps[i].kind != StepKind::Fused || out.sums[i].empty()) return;
        const Shape shape = fused_at(i).shape;
        std::vector<size_t> passed;
        for (size_t j = i + 1; j < steps.size() && passed.size() < kMaxStepsPassed; ++j) {
            if (out.skip[j]) continue;
            if (steps[j].kind != StepKind::Fused || fused_at(j).shape != shape || out.sums[j].empty() ||
                out.sums[i].size() + out.sums[j].size() > options.max_channel_sums) {
                passed.push_back(j);
                continue;
            }
            const Fused &f2 = fused_at(j);
            bool movable = true;
            for (size_t s = 0; s < f2.stores.size(); ++s) {
                movable = movable && !out.skip_store[j].empty() && out.skip_store[j][s];
            }
            for (size_t p : passed) {
                for (const TensorRef &load : f2.loads) movable = movable && !writes_into(p, byte_range(load));
                for (const ChannelSumSpec &sum : out.sums[j]) {
                    movable = movable && !reads(p, byte_range(sum.out)) && !writes_into(p, byte_range(sum.out));
                }
            }
            // Its loads that step i overwrites must be i's stores of the same tensor.
            const Fused &f1 = fused_at(i);
            for (const TensorRef &load : f2.loads) {
                for (const auto &store : f1.stores) {
                    if (overlaps(byte_range(store.second), byte_range(load)) && !same_tensor(store.second, load)) {
                        movable = false;
                    }
                }
            }
            if (!movable) {
                passed.push_back(j);
                continue;
            }
            const size_t first_stores = f1.stores.size();
            const std::vector<bool> kept = out.skip_store[i];
            merge(i, j);
            // The merged step runs where i was; j's stores were all dead.
            auto merged = std::make_shared<Fused>(*out.fused[j]);
            merged->stores.resize(first_stores);
            out.fused[i] = merged;
            out.sums[i] = std::move(out.sums[j]);
            out.skip[i] = false;
            out.skip[j] = true;
            out.fused[j] = nullptr;
            out.sums[j].clear();
            out.skip_store[j].clear();
            out.skip_store[i] = kept.empty() ? std::vector<bool>(first_stores, false) : kept;
            return pull_sums_forward(i);
        }
    }

    void merge(size_t i, size_t j) {
        const Fused &f1 = fused_at(i), &f2 = fused_at(j);
        auto merged = std::make_shared<Fused>();
        merged->shape = f1.shape;
        merged->loads = f1.loads;
        // f2's loads: an f1 register (by its old number, tagged negative) or a new load.
        std::vector<int32_t> f2_load(f2.loads.size());
        for (size_t l = 0; l < f2.loads.size(); ++l) {
            int32_t from_f1 = -1;
            for (const auto &store : f1.stores) if (same_tensor(store.second, f2.loads[l])) from_f1 = store.first;
            int32_t same_load = -1;
            for (size_t m = 0; m < merged->loads.size(); ++m) {
                if (same_tensor(merged->loads[m], f2.loads[l])) same_load = int32_t(m);
            }
            if (from_f1 >= 0) {
                f2_load[l] = -1 - from_f1;
            } else if (same_load >= 0) {  // read by both: loaded once
                f2_load[l] = same_load;
            } else {
                f2_load[l] = int32_t(merged->loads.size());
                merged->loads.push_back(f2.loads[l]);
            }
        }
        const int32_t loads = int32_t(merged->loads.size()), l1 = int32_t(f1.loads.size());
        const int32_t l2 = int32_t(f2.loads.size()), n1 = int32_t(f1.code.size());
        auto remap1 = [&](int32_t r) { return r < 0 ? r : r < l1 ? r : loads + (r - l1); };
        auto remap2 = [&](int32_t r) {
            if (r < 0) return r;
            if (r >= l2) return loads + n1 + (r - l2);
            return f2_load[size_t(r)] >= 0 ? f2_load[size_t(r)] : remap1(-1 - f2_load[size_t(r)]);
        };
        for (FusedInstruction ins : f1.code) {
            ins.a = remap1(ins.a), ins.b = remap1(ins.b), ins.c = remap1(ins.c);
            merged->code.push_back(ins);
        }
        for (FusedInstruction ins : f2.code) {
            ins.a = remap2(ins.a), ins.b = remap2(ins.b), ins.c = remap2(ins.c);
            merged->code.push_back(ins);
        }
        for (const auto &store : f1.stores) merged->stores.emplace_back(remap1(store.first), store.second);
        for (const auto &store : f2.stores) merged->stores.emplace_back(remap2(store.first), store.second);
        std::vector<ChannelSumSpec> sums;
        for (ChannelSumSpec sum : out.sums[i]) {
            sum.reg = remap1(sum.reg);
            sums.push_back(sum);
        }
        for (ChannelSumSpec sum : out.sums[j]) {
            sum.reg = remap2(sum.reg);
            sums.push_back(sum);
        }
        out.skip[i] = true;
        out.fused[i] = nullptr;
        out.sums[i].clear();
        out.skip_store[i].clear();
        out.fused[j] = merged;
        out.sums[j] = std::move(sums);
        out.skip_store[j].assign(merged->stores.size(), false);
        for (size_t s = 0; s < merged->stores.size(); ++s) out.skip_store[j][s] = dead_after(j, merged->stores[s].second);
    }

    const std::vector<Step> &steps;
    const std::vector<float> &scalars;
    const StepFusionOptions options;
    StepFusion out;
};

}  // namespace

bool same_tensor(const TensorRef &a, const TensorRef &b) {
    return a.storage == b.storage && a.shape == b.shape && a.dtype == b.dtype &&
           (a.storage == Storage::Arena ? a.offset == b.offset : a.index == b.index);
}

StepFusion unfused_steps(const Plan &plan) {
    StepFusion none;
    const size_t n = plan.steps.size();
    none.skip.assign(n, false);
    none.fused.assign(n, nullptr);
    none.sums.assign(n, {});
    none.skip_store.assign(n, {});
    none.bias_step.assign(n, -1);
    none.conv_sum_step.assign(n, -1);
    none.conv_variance_step.assign(n, -1);
    return none;
}

StepFusion fuse_steps(const Plan &plan, const StepFusionOptions &options) { return StepFuser(plan, options).run(); }

}  // namespace fm
