// Checks the CPU's fused elementwise interpreter (native/cpu/elementwise.h)
// against a one-element-at-a-time evaluation written here: random programs
// over random shapes, with every kind of load (same shape, scalar,
// per-channel, broadcast runs too short to be uniform), instructions on
// uniform and per-element operands in every mix, stores (also into a
// load's own memory, and of a load itself) and channel sums.
//
// Values must match bit for bit: both sides call the same scalar
// functions (elementwise_math.h) in the same order, so any difference is
// the interpreter's bookkeeping (a wrong broadcast, chunk boundary or
// uniform register). Channel sums are in double on both sides, in
// different orders, and must agree within 1e-6 of the sum of |terms|.
//
// Every output goes into a checksum (`checksum <hex>`), which CTest compares
// between 1 and 3 threads. `test_cpu_fused --bench` instead times cifar's
// BatchNorm passes and prints GB/s.
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "elementwise.h"
#include "elementwise_math.h"
#include "kernel_test_support.h"
#include "thread_pool.h"

namespace {

using namespace kernel_test;
using fm::FusedInstruction;
using fm::Prim;

// The prims a random program draws from, with how many operands each reads.
struct Op {
    Prim prim;
    int operands;
};
const Op kOps[] = {
    {Prim::Neg, 1},       {Prim::Abs, 1},  {Prim::Exp, 1},         {Prim::Sqrt, 1},  {Prim::Rsqrt, 1},
    {Prim::Relu, 1},      {Prim::Step, 1}, {Prim::Tanh, 1},        {Prim::Sigmoid, 1}, {Prim::Clamp, 1},
    {Prim::Add, 2},       {Prim::Sub, 2},  {Prim::Mul, 2},         {Prim::Div, 2},   {Prim::Maximum, 2},
    {Prim::Less, 2},      {Prim::Where, 3}, {Prim::BatchNormalize, 3}, {Prim::DropoutMask, 1},
};

struct Case {
    Shape shape;
    std::vector<Shape> loads;
    std::vector<FusedInstruction> code;
    std::vector<int32_t> stored;        // registers stored
    std::vector<int> store_into_load;   // -1, or the (same-shape) load whose memory a store overwrites
    std::vector<int32_t> summed;        // registers summed per channel (axis 1)
};

int64_t count(const Shape &s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

// Element e of `in` broadcast (numpy rules, aligned at the end) to `out`.
int64_t broadcast_index(const Shape &in, const Shape &out, int64_t e) {
    int64_t index = 0, stride = 1;
    for (size_t k = 0; k < out.size(); ++k) {
        const size_t d = out.size() - 1 - k;
        const int64_t coordinate = e % out[d];
        e /= out[d];
        if (k < in.size()) {
            const size_t i = in.size() - 1 - k;
            if (in[i] != 1) index += coordinate * stride;
            stride *= in[i];
        }
    }
    return index;
}

// A load shape that broadcasts to `shape`: one of the forms the planner
// emits (per-channel, trailing dims, leading dims, scalar) or the shape.
Shape broadcast_form(Rng &rng, const Shape &shape) {
    const size_t rank = shape.size();
    switch (rng.range(0, 6)) {
        case 0: return {};
        case 1: {  // [1, C, 1, ...] or [C, 1, ...] (unsqueezed per-channel)
            if (rank < 2) return {shape[0]};
            Shape s(rank, 1);
            s[1] = shape[1];
            if (rng.chance(50)) s.erase(s.begin());
            return s;
        }
        case 2: {  // the trailing dims (a bias over the last axis, a [1, 1, H, W] map)
            Shape s = shape;
            for (size_t d = 0; d + 1 < rank && d < size_t(rng.range(1, int64_t(rank))); ++d) s[d] = 1;
            return s;
        }
        case 3: {  // [N, 1, ...]: constant over long runs
            Shape s(rank, 1);
            s[0] = shape[0];
            return s;
        }
        default: return shape;
    }
}

Case random_case(Rng &rng) {
    static const Shape kShapes[] = {
        {128, 32, 8, 8}, {3, 5, 40, 40}, {2, 7, 9, 11}, {4, 3, 33, 33}, {128, 10},
        {37}, {1}, {2, 64, 16, 16}, {5, 300}, {3, 2, 1024}, {1, 3, 1, 1}, {6, 4, 5},
    };
    Case c;
    c.shape = kShapes[rng.range(0, int64_t(std::size(kShapes)) - 1)];
    const int loads = int(rng.range(1, 5));
    for (int i = 0; i < loads; ++i) c.loads.push_back(i == 0 ? c.shape : broadcast_form(rng, c.shape));
    const int instructions = int(rng.range(1, 8));
    for (int k = 0; k < instructions; ++k) {
        const Op &op = kOps[rng.range(0, int64_t(std::size(kOps)) - 1)];
        FusedInstruction ins;
        ins.prim = op.prim;
        const int32_t registers = int32_t(loads + k);
        auto operand = [&] { return int32_t(rng.range(0, registers - 1)); };
        ins.a = operand();
        if (op.operands >= 2) ins.b = operand();
        if (op.operands >= 3) ins.c = operand();
        ins.p0 = op.prim == Prim::DropoutMask ? 0.3f : -0.5f;
        ins.p1 = 0.75f;
        ins.seed = 99;
        c.code.push_back(ins);
    }
    const int32_t registers = int32_t(loads + instructions);
    const int stores = int(rng.range(1, 3));
    for (int s = 0; s < stores; ++s) {
        c.stored.push_back(s == 0 ? registers - 1 : int32_t(rng.range(0, registers - 1)));
        c.store_into_load.push_back(-1);
    }
    // Overwrite a same-shape load in place (an optimizer's update), but
    // never one that another store copies out directly.
    if (rng.chance(40)) {
        for (int i = loads - 1; i >= 0; --i) {
            bool copied = false;
            for (int32_t r : c.stored) copied = copied || r == i;
            if (count(c.loads[size_t(i)]) == count(c.shape) && !copied) {
                c.store_into_load[0] = i;
                break;
            }
        }
    }
    if (c.shape.size() >= 2 && rng.chance(70)) {
        for (int k = 0; k < int(rng.range(1, 3)); ++k) c.summed.push_back(int32_t(rng.range(0, registers - 1)));
    }
    return c;
}

std::string describe(const Case &c) {
    std::string s = "shape " + shape_str(c.shape) + " loads";
    for (const Shape &l : c.loads) s += " " + shape_str(l);
    s += " code";
    for (const FusedInstruction &ins : c.code) {
        s += " " + std::to_string(int(ins.prim)) + "(" + std::to_string(ins.a) + "," + std::to_string(ins.b) + "," +
             std::to_string(ins.c) + ")";
    }
    return s;
}

// Register values of element e into r, one instruction at a time.
void evaluate(const Case &c, const std::vector<std::vector<float>> &data, int64_t e, uint64_t run,
              std::vector<float> &r) {
    r.clear();
    for (size_t i = 0; i < c.loads.size(); ++i) r.push_back(data[i][size_t(broadcast_index(c.loads[i], c.shape, e))]);
    for (const FusedInstruction &ins : c.code) {
        const float a = r[size_t(ins.a)], b = ins.b >= 0 ? r[size_t(ins.b)] : 0.0f,
                    cc = ins.c >= 0 ? r[size_t(ins.c)] : 0.0f;
        r.push_back(ins.prim == Prim::DropoutMask
                        ? fm::ew::dropout_mask(fm::ew::dropout_base(ins.seed, run), uint64_t(e), ins.p0)
                        : fm::ew::apply(ins.prim, a, b, cc, ins.p0, ins.p1));
    }
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void check_case(const Case &c, Rng &rng, int index) {
    g_case = "case " + std::to_string(index) + ": " + describe(c);
    const uint64_t run = uint64_t(index);
    const int64_t total = count(c.shape);
    std::vector<std::vector<float>> data;
    for (const Shape &l : c.loads) data.push_back(rng.floats(size_t(count(l)), 0.25f, 2.0f));
    std::vector<std::vector<float>> copies = data;  // loads a store overwrites change
    fm::Fused fused;
    fused.shape = c.shape;
    for (const Shape &l : c.loads) {
        fm::TensorRef ref;
        ref.shape = l;
        fused.loads.push_back(ref);
    }
    fused.code = c.code;
    std::vector<Output<float>> outputs;
    for (size_t s = 0; s < c.stored.size(); ++s) outputs.emplace_back(size_t(total));
    std::vector<float *> stores;
    for (size_t s = 0; s < c.stored.size(); ++s) {
        fused.stores.push_back({c.stored[s], fm::TensorRef{}});
        stores.push_back(c.store_into_load[s] >= 0 ? copies[size_t(c.store_into_load[s])].data() : outputs[s].data());
    }
    std::vector<const float *> loads;
    for (const auto &d : copies) loads.push_back(d.data());
    const int64_t channels = c.shape.size() >= 2 ? c.shape[1] : 1;
    int64_t inner = 1;
    for (size_t d = 2; d < c.shape.size(); ++d) inner *= c.shape[d];
    std::vector<Output<float>> sum_outputs;
    for (size_t k = 0; k < c.summed.size(); ++k) sum_outputs.emplace_back(size_t(channels));
    std::vector<fm::cpu::ChannelSum> sums;
    for (size_t k = 0; k < c.summed.size(); ++k) {
        sums.push_back(fm::cpu::ChannelSum{c.summed[k], channels, inner, sum_outputs[k].data()});
    }
    fm::cpu::run_fused(fused, loads, stores, run, sums, std::vector<bool>(c.stored.size(), false));

    std::vector<double> want_sum(c.summed.size() * size_t(channels)), magnitude(want_sum.size());
    bool values_match = true;
    std::vector<float> r;
    for (int64_t e = 0; e < total; ++e) {
        evaluate(c, data, e, run, r);
        for (size_t s = 0; s < c.stored.size(); ++s) {
            const float got = stores[s][e];
            const float want = r[size_t(c.stored[s])];
            const bool match = same_bits(got, want) || (std::isnan(got) && std::isnan(want));
            if (!match && values_match) {
                std::fprintf(stderr, "  store %zu, element %" PRId64 ": got %.9g, want %.9g\n", s, e, got, want);
            }
            values_match = values_match && match;
        }
        for (size_t k = 0; k < c.summed.size(); ++k) {
            const size_t channel = size_t(e / inner % channels);
            want_sum[k * size_t(channels) + channel] += double(r[size_t(c.summed[k])]);
            magnitude[k * size_t(channels) + channel] += std::fabs(double(r[size_t(c.summed[k])]));
        }
    }
    CHECK(values_match);
    for (size_t k = 0; k < c.summed.size(); ++k) {
        for (int64_t ch = 0; ch < channels; ++ch) {
            const size_t i = k * size_t(channels) + size_t(ch);
            const double got = sum_outputs[k][size_t(ch)], want = want_sum[i];
            // Terms that overflow: the float result must be what the double rounds to.
            const bool finite = std::isfinite(float(want)) && std::isfinite(magnitude[i]);
            CHECK(std::isnan(want)  ? std::isnan(got)
                  : finite          ? std::fabs(got - want) <= 1e-6 * magnitude[i] + 1e-30
                                    : double(float(want)) == got);
        }
        sum_outputs[k].finish();
    }
    for (size_t s = 0; s < c.stored.size(); ++s) {
        if (c.store_into_load[s] >= 0) {
            hash_bytes(stores[s], size_t(total) * sizeof(float));
        } else {
            outputs[s].finish();
        }
    }
}

void run_case(Rng &rng, int index) { check_case(random_case(rng), rng, index); }

// Every mix of uniform (per-channel, scalar) and per-element operands for
// the two ternaries, each operand position in turn: the interpreter has a
// loop of its own for several of them.
void ternary_mixes(Rng &rng) {
    int index = 1000;
    for (Prim prim : {Prim::Where, Prim::BatchNormalize}) {
        for (int mask = 0; mask < 8; ++mask) {
            for (const Shape &uniform : {Shape{1, 5, 1, 1}, Shape{}}) {
                Case c;
                c.shape = {3, 5, 7, 9};
                c.loads = {c.shape, c.shape, c.shape, uniform, uniform, uniform};
                FusedInstruction ins;
                ins.prim = prim;
                // Operand k reads load k (per element) or load 3 + k (uniform).
                ins.a = mask & 1 ? 3 : 0, ins.b = mask & 2 ? 4 : 1, ins.c = mask & 4 ? 5 : 2;
                c.code = {ins};
                c.stored = {6};
                c.store_into_load = {-1};
                c.summed = {6};
                check_case(c, rng, index++);
            }
        }
    }
}

// ---- Benchmark ----------------------------------------------------------

// cifar's BatchNorm + ReLU passes as the CPU lowering runs them
// (FERROMETAL_PRINT_PLANS=1 shows them): the forward normalisation, and
// the backward pass that takes the sums and then the one that writes dx.
int bench() {
    std::printf("fused interpreter, %zu threads\n", fm::cpu::ThreadPool::global().threads());
    const Shape layers[] = {{128, 32, 32, 32}, {128, 64, 16, 16}, {128, 128, 8, 8}};
    auto ins = [](Prim p, int32_t a, int32_t b = -1, int32_t c = -1) {
        FusedInstruction i;
        i.prim = p, i.a = a, i.b = b, i.c = c;
        return i;
    };
    for (const Shape &shape : layers) {
        const int64_t total = count(shape), channels = shape[1], inner = shape[2] * shape[3];
        const Shape per_channel{1, channels, 1, 1};
        Rng rng{5};
        std::vector<std::vector<float>> big(4);
        for (auto &v : big) v = rng.floats(size_t(total));
        std::vector<std::vector<float>> small(6);
        for (auto &v : small) v = rng.floats(size_t(channels), 0.5f, 1.5f);
        const size_t c_count = static_cast<size_t>(channels), t_count = static_cast<size_t>(total);
        std::vector<float> sum_a(c_count), sum_b(c_count), sum_c(c_count), out_a(t_count), out_b(t_count);
        struct Pass {
            const char *name;
            fm::Fused fused;
            std::vector<const float *> loads;
            std::vector<float *> stores;
            std::vector<fm::cpu::ChannelSum> sums;
            int big_reads;
        };
        auto ref = [](const Shape &s) {
            fm::TensorRef r;
            r.shape = s;
            return r;
        };
        std::vector<Pass> passes(3);
        // y = relu(bn(z) * gamma + beta)
        passes[0].name = "forward {batch_normalize mul add relu}";
        passes[0].fused.shape = shape;
        passes[0].fused.loads = {ref(shape), ref(per_channel), ref(per_channel), ref({channels, 1, 1}),
                                 ref({channels, 1, 1})};
        passes[0].fused.code = {ins(Prim::BatchNormalize, 0, 1, 2), ins(Prim::Mul, 5, 3), ins(Prim::Add, 6, 4),
                                ins(Prim::Relu, 7)};
        passes[0].fused.stores = {{8, ref(shape)}};
        passes[0].loads = {big[0].data(), small[0].data(), small[1].data(), small[2].data(), small[3].data()};
        passes[0].stores = {out_a.data()};
        passes[0].big_reads = 1;
        // dy = g * step(y), dyg = dy * gamma; sums of dy, dy * xhat, dyg, dyg * xhat
        passes[1].name = "backward sums {step mul mul bn mul bn mul}";
        passes[1].fused.shape = shape;
        passes[1].fused.loads = {ref(shape), ref(shape), ref({channels, 1, 1}), ref(shape), ref(per_channel),
                                 ref(per_channel)};
        passes[1].fused.code = {ins(Prim::Step, 0),
                                ins(Prim::Mul, 1, 6),
                                ins(Prim::Mul, 7, 2),
                                ins(Prim::BatchNormalize, 3, 4, 5),
                                ins(Prim::Mul, 7, 9),
                                ins(Prim::BatchNormalize, 3, 4, 5),
                                ins(Prim::Mul, 8, 11)};
        passes[1].fused.stores = {{8, ref(shape)}};
        passes[1].loads = {big[0].data(), big[1].data(), small[0].data(), big[2].data(), small[1].data(),
                           small[2].data()};
        passes[1].stores = {out_a.data()};
        passes[1].sums = {{7, channels, inner, sum_a.data()}, {10, channels, inner, sum_b.data()},
                          {12, channels, inner, sum_c.data()}};
        passes[1].big_reads = 3;
        // dx = (bn(z) * m2 ... ) as the core's BatchNormalize gradient
        passes[2].name = "backward dx {bn mul sub sub mul}";
        passes[2].fused.shape = shape;
        passes[2].fused.loads = {ref(shape), ref(per_channel), ref(per_channel), ref(per_channel), ref(shape),
                                 ref(per_channel)};
        passes[2].fused.code = {ins(Prim::BatchNormalize, 0, 1, 2), ins(Prim::Mul, 6, 3), ins(Prim::Sub, 4, 5),
                                ins(Prim::Sub, 8, 7), ins(Prim::Mul, 2, 9)};
        passes[2].fused.stores = {{10, ref(shape)}};
        passes[2].loads = {big[0].data(), small[0].data(), small[1].data(), small[2].data(), big[1].data(),
                           small[3].data()};
        passes[2].stores = {out_b.data()};
        passes[2].sums = {{10, channels, inner, sum_a.data()}};
        passes[2].big_reads = 2;
        for (Pass &p : passes) {
            const std::vector<bool> keep(p.fused.stores.size(), false);
            fm::cpu::run_fused(p.fused, p.loads, p.stores, 0, p.sums, keep);  // warm-up
            double best = 1e30;
            for (int rep = 0; rep < 20; ++rep) {
                const auto start = std::chrono::steady_clock::now();
                fm::cpu::run_fused(p.fused, p.loads, p.stores, 0, p.sums, keep);
                const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
                best = std::min(best, elapsed.count());
            }
            const double bytes = double(total) * sizeof(float) * double(p.big_reads + 1);
            std::printf("%-16s %-44s %6.2f ms %6.1f GB/s (best of 20)\n", shape_str(shape).c_str(), p.name,
                        best * 1e3, bytes / best / 1e9);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench();
    Rng rng{20261123};
    for (int i = 0; i < 400; ++i) run_case(rng, i);
    ternary_mixes(rng);
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    std::printf("checksum %016" PRIx64 "\n", g_checksum);
    return g_failures == 0 ? 0 : 1;
}
