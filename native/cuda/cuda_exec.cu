// Running plans on a CUDA device (ExecIface).
//
// A compiled plan owns fixed device memory for its feeds and fetched
// outputs, so that every address its kernels touch is the same from run to
// run. The first run captures the whole plan (forward, backward, optimizer)
// into one CUDA graph; later runs copy the feeds in, replay the graph, and
// copy the outputs out: one submission per step and no host
// synchronisation. With a null stream the work goes on the device's
// internal stream, where every later synchronous transfer (reading a
// loss) waits for it. FERROMETAL_CUDA_GRAPHS=0 queues the kernels one by
// one instead, for debugging.
//
// Before that, the cross-step fusions of step_fusion.h run on the plan (a
// channel sum taken in the pass that computes its operand, stores nothing
// reads skipped, neighbouring groups merged); FERROMETAL_CUDA_FUSION=0
// turns them off.
// Each fused group is then compiled to a kernel of its own (cuda_jit.cu);
// with FERROMETAL_CUDA_JIT=0 the interpreter (cuda_elementwise.cu) runs
// them instead, independent neighbours batched into one launch.
//
// FERROMETAL_PROFILE=1 (step_profile.h) queues every run after a plan's
// first without the graph, with device events around each step.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include "cuda_check.h"
#include "cuda_context.h"
#include "cuda_kernels.h"
#include "dtype.h"
#include "error.h"
#include "step_fusion.h"
#include "step_profile.h"

namespace fm {
namespace cuda {

// What the plans of one device share: the cuBLAS handle (each plan brings
// its own workspace, so that plans replaying at once never share one) and
// cuDNN, where the build has it. Runs of a device are serialised by
// `mutex` while they queue work.
struct DeviceExec {
    std::mutex mutex;
    cublasHandle_t blas = nullptr;
    DnnLibrary *dnn = nullptr;  // null: convolutions through im2col
    JitCache *jit = nullptr;    // null: every fused group in the interpreter
    int sm_count = 1;
};

namespace {

// cuBLAS's workspace (its recommendation for Hopper is 32 MiB; our GEMMs
// are small). A plan has kBlasLanes of them, handed to its GEMM steps in
// turn, so that GEMMs on independent branches of the graph can overlap.
constexpr size_t kBlasWorkspaceBytes = size_t(8) << 20;
constexpr int kBlasLanes = 3;

void check_blas(cublasStatus_t status, const char *call) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        fail(status == CUBLAS_STATUS_ALLOC_FAILED ? FM_ERR_OUT_OF_MEMORY : FM_ERR_BACKEND, call, ": ",
             cublasGetStatusName(status));
    }
}

bool env_flag(const char *name, bool fallback) {
    const char *value = std::getenv(name);
    if (value == nullptr || *value == '\0') return fallback;
    return std::strcmp(value, "0") != 0;
}

DeviceExec &device_exec(Context &ctx) {
    std::lock_guard<std::mutex> lock(ctx.exec_mutex);
    if (ctx.exec) return *ctx.exec;
    auto exec = std::make_unique<DeviceExec>();
    check(cudaDeviceGetAttribute(&exec->sm_count, cudaDevAttrMultiProcessorCount, ctx.index),
          "cudaDeviceGetAttribute");
    check_blas(cublasCreate(&exec->blas), "cublasCreate");
    // FP32 by default (TF32 would change results in the fourth digit).
    const bool tf32 = env_flag("FERROMETAL_TF32", false);
    cublasStatus_t status = cublasSetMathMode(exec->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (status != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(exec->blas);
        check_blas(status, "cublasSetMathMode");
    }
    try {
        exec->dnn = dnn_open(tf32);
        exec->jit = jit_open(ctx.index);
    } catch (...) {
        dnn_close(exec->dnn);
        cublasDestroy(exec->blas);
        throw;
    }
    ctx.exec = exec.release();
    return *ctx.exec;
}

bool kernel_supported(Prim prim) {
    switch (prim) {
        case Prim::MatMul: case Prim::Conv2d: case Prim::Conv2dBackwardInput: case Prim::Conv2dBackwardWeight:
        case Prim::MaxPool2d: case Prim::MaxPool2dBackward: case Prim::AvgPool2d: case Prim::AvgPool2dBackward:
        case Prim::ReduceSum: case Prim::ReduceMax: case Prim::ReduceMin: case Prim::ArgMax:
        case Prim::ReduceToLike: case Prim::BroadcastLike: case Prim::Permute: case Prim::Slice:
        case Prim::SliceBackward: case Prim::Pad: case Prim::Concat: case Prim::Softmax: case Prim::LogSoftmax:
        case Prim::GatherRows: case Prim::ScatterAddRows: case Prim::OneHot: case Prim::Pick:
        case Prim::PickBackward:
            return true;
        default:
            return false;
    }
}

bool checks_indices(Prim prim) {
    return prim == Prim::GatherRows || prim == Prim::ScatterAddRows || prim == Prim::OneHot || prim == Prim::Pick;
}

size_t byte_size(const TensorRef &ref) { return size_t(element_count(ref.shape)) * dtype_size(ref.dtype, "dtype"); }

std::vector<int64_t> dense_strides(const Shape &shape) {
    std::vector<int64_t> strides(shape.size());
    int64_t stride = 1;
    for (size_t d = shape.size(); d-- > 0;) {
        strides[d] = stride;
        stride *= shape[d];
    }
    return strides;
}

__global__ void set_u64_kernel(uint64_t *dst, uint64_t value) { *dst = value; }

// Feed and output memory for one run in flight. A plan has two, used in
// turn, so that a run can take in its feeds while the previous one still
// computes; each set has its own programs and graph (they bake in its
// addresses).
struct SlotSet {
    std::vector<void *> feeds, outputs;
    uint64_t *run_index = nullptr;  // device, when the plan draws dropout masks
    std::vector<const void *> bound;  // addresses the programs and graph were built for
    void *programs = nullptr;
    size_t programs_capacity = 0;
    cudaGraphExec_t graph = nullptr;
    cudaEvent_t free = nullptr;  // recorded after the last run that used the set
    bool used = false;
};

// The fixed device memory of a compiled plan.
struct PlanState {
    size_t workspace_bytes = 0;
    void *workspace = nullptr;
    void *blas_workspaces[kBlasLanes] = {};
    // Per step: the bytes of `workspace` it uses, and its cuBLAS workspace (-1: none).
    std::vector<size_t> workspace_need;
    std::vector<int> blas_lane;
    std::vector<size_t> feed_bytes, output_bytes;
    SlotSet sets[2];
    int next_set = 0;
    std::vector<void *> allocations;  // every pool allocation, to free
    DataError *errors = nullptr;      // device
    DataError *errors_host = nullptr; // pinned
    cudaEvent_t errors_copied = nullptr;
    bool errors_pending = false;      // a copy was queued since the last report
    bool checks = false, dropout = false;

    // Fused steps run in batches of independent neighbours; `batch_of`
    // names each fused step's batch, launched at its first step.
    struct Batch {
        size_t first_step = 0;
        size_t table_offset = 0;  // of its FusedLaunch table in a set's image
        int count = 0;
        int64_t blocks = 0;
        size_t max_program_bytes = 0;
        bool int32_index = true;
        // A group that takes channel sums runs alone, with its program at
        // `program_offset` of the image.
        bool sums = false;
        size_t program_offset = 0;
        bool guarded = false;
    };
    std::vector<Batch> batches;
    std::vector<int> batch_of;

    // Every variable and constant the plan reads or writes, once each.
    std::vector<TensorRef> bound_refs;

    // The steps as the cross-step fusions left them: skipped ones, and per
    // fused step the program to run (stores nothing reads dropped) and the
    // registers it sums per channel.
    StepFusion fusion;
    std::vector<std::shared_ptr<const Fused>> programs;
    std::vector<std::vector<int32_t>> sum_regs;

    // Per fused step compiled to its own kernel, that kernel (else none).
    std::vector<JitKernel> jit;

    // Per convolution step that cuDNN runs, its descriptors and algorithm.
    std::vector<std::shared_ptr<const DnnConv>> dnn_convs;
    DnnLibrary *dnn = nullptr;

    bool use_graph = true;
    bool branches = true;  // see use_branches
    uint64_t runs = 0;  // the first is never profiled (module loading, cuBLAS's first calls)
    cudaStream_t capture = nullptr;   // private: nothing else can be captured by accident
    cudaStream_t feeder = nullptr;    // copies feeds into a slot set
    cudaEvent_t done = nullptr;
    cudaEvent_t ordered = nullptr;  // marks a point of another stream to wait for
    cudaStream_t last_stream = nullptr;
};

// The geometry of fused step i's channel sums (their destinations are
// filled in where the run's addresses are known).
ChannelSums sums_geometry(const PlanState &st, size_t i) {
    const std::vector<ChannelSumSpec> &specs = st.fusion.sums[i];
    ChannelSums sums;
    sums.channels = specs[0].channels;
    sums.inner = specs[0].inner;
    sums.elements = element_count(st.programs[i]->shape);
    sums.count = int(specs.size());
    return sums;
}

void *allocate(Context &ctx, PlanState &st, size_t bytes) {
    void *ptr = pool_alloc(&ctx, bytes < 16 ? 16 : bytes);
    if (ptr == nullptr) fail(FM_ERR_OUT_OF_MEMORY, "cuda:", ctx.index, ": no memory for a plan's ", bytes, " bytes");
    st.allocations.push_back(ptr);
    return ptr;
}

void release_state(Context &ctx, PlanState *st) noexcept {
    if (cudaSetDevice(ctx.index) != cudaSuccess) return;
    // Queued runs may still use the memory: wait for them.
    if (st->done) cudaEventSynchronize(st->done);
    for (SlotSet &set : st->sets) {
        if (set.graph) cudaGraphExecDestroy(set.graph);
        if (set.free) cudaEventDestroy(set.free);
    }
    if (st->capture) cudaStreamDestroy(st->capture);
    if (st->feeder) cudaStreamDestroy(st->feeder);
    if (st->done) cudaEventDestroy(st->done);
    if (st->ordered) cudaEventDestroy(st->ordered);
    if (st->errors_copied) cudaEventDestroy(st->errors_copied);
    if (st->errors_host) cudaFreeHost(st->errors_host);
    for (void *ptr : st->allocations) {
        try {
            pool_free(&ctx, ptr, 0, nullptr);
        } catch (...) {
        }
    }
    cudaGetLastError();
    delete st;
}

class Runner {
public:
    Runner(const Plan &plan, const Bindings &b, PlanState &st, SlotSet &set)
        : plan_(plan), b_(b), st_(st), set_(set) {}

    char *address(const TensorRef &ref) const {
        switch (ref.storage) {
            case Storage::Arena: return static_cast<char *>(b_.arena) + ref.offset;
            case Storage::Variable: return static_cast<char *>(b_.variables[ref.index]);
            case Storage::Constant: return const_cast<char *>(static_cast<const char *>(b_.constants[ref.index]));
            case Storage::Feed: return static_cast<char *>(set_.feeds[ref.index]);
            case Storage::Output: return static_cast<char *>(set_.outputs[ref.index]);
            case Storage::Scalar: return reinterpret_cast<char *>(const_cast<float *>(b_.scalars + ref.index));
        }
        return nullptr;
    }

    // The addresses that programs and graphs bake in.
    // Only what the plan references: adding nodes to the graph (which
    // grows the bindings) must not force a rebuild.
    // The variables and constants referenced are listed once, at compile
    // (PlanState::bound_refs), so a run does not walk the plan for them.
    std::vector<const void *> bound() const {
        std::vector<const void *> key{b_.arena, b_.scalars};
        key.reserve(2 + st_.bound_refs.size());
        for (const TensorRef &ref : st_.bound_refs) key.push_back(address(ref));
        return key;
    }

    // Builds every fused step's program, batches independent neighbours,
    // and uploads programs and batch tables (synchronously: this happens
    // once per slot set, or when bound addresses change).
    void build_programs(Context &ctx) {
        std::vector<unsigned char> image;
        st_.batches.clear();
        st_.batch_of.assign(plan_.steps.size(), -1);
        std::vector<std::vector<FusedLaunch>> tables;
        // Byte ranges the current batch reads and writes.
        std::vector<std::pair<uintptr_t, uintptr_t>> reads, writes;
        auto overlaps = [](const std::vector<std::pair<uintptr_t, uintptr_t>> &ranges, uintptr_t lo, uintptr_t hi) {
            for (const auto &r : ranges) {
                if (lo < r.second && r.first < hi) return true;
            }
            return false;
        };
        bool open = false;
        for (size_t i = 0; i < plan_.steps.size(); ++i) {
            const Step &step = plan_.steps[i];
            if (st_.fusion.skip[i]) continue;
            if (step.kind != StepKind::Fused) {
                open = false;
                continue;
            }
            if (st_.jit[i].kernel) {  // launched alone, in its place
                open = false;
                continue;
            }
            const Fused &fused = *st_.programs[i];
            std::vector<const float *> loads;
            std::vector<float *> stores;
            std::vector<std::pair<uintptr_t, uintptr_t>> my_reads, my_writes;
            bool writes_variables = false;
            for (const TensorRef &ref : fused.loads) {
                loads.push_back(reinterpret_cast<const float *>(address(ref)));
                auto lo = reinterpret_cast<uintptr_t>(loads.back());
                my_reads.emplace_back(lo, lo + byte_size(ref));
            }
            for (const auto &store : fused.stores) {
                stores.push_back(reinterpret_cast<float *>(address(store.second)));
                auto lo = reinterpret_cast<uintptr_t>(stores.back());
                my_writes.emplace_back(lo, lo + byte_size(store.second));
                writes_variables |= store.second.storage == Storage::Variable;
            }
            if (!st_.sum_regs[i].empty()) {  // runs alone
                FusedProgram program = build_fused(fused, loads, stores, writes_variables, st_.sum_regs[i]);
                st_.batches.emplace_back();
                PlanState::Batch &batch = st_.batches.back();
                batch.first_step = i;
                batch.sums = true;
                batch.guarded = writes_variables && st_.checks;
                image.resize((image.size() + 15) / 16 * 16, 0);
                batch.program_offset = image.size();
                batch.max_program_bytes = program.bytes.size();
                image.insert(image.end(), program.bytes.begin(), program.bytes.end());
                tables.emplace_back();
                st_.batch_of[i] = int(st_.batches.size() - 1);
                open = false;
                continue;
            }
            // Joins the open batch unless it touches what the batch writes, or
            // writes what the batch reads (its blocks run in any order).
            bool independent = open;
            for (const auto &r : my_reads) independent = independent && !overlaps(writes, r.first, r.second);
            for (const auto &w : my_writes) {
                independent = independent && !overlaps(writes, w.first, w.second) && !overlaps(reads, w.first, w.second);
            }
            if (!independent) {
                st_.batches.emplace_back();
                st_.batches.back().first_step = i;
                tables.emplace_back();
                reads.clear();
                writes.clear();
                open = true;
            }
            reads.insert(reads.end(), my_reads.begin(), my_reads.end());
            writes.insert(writes.end(), my_writes.begin(), my_writes.end());
            FusedProgram program = build_fused(fused, loads, stores, writes_variables);
            PlanState::Batch &batch = st_.batches.back();
            FusedLaunch launch{};
            launch.offset = image.size();
            launch.bytes = int32_t(program.bytes.size());
            launch.guarded = writes_variables && st_.checks;
            launch.elements = program.elements;
            launch.block_begin = batch.blocks;
            launch.blocks = fused_blocks(program.elements);
            batch.blocks += launch.blocks;
            batch.count += 1;
            batch.max_program_bytes = std::max(batch.max_program_bytes, program.bytes.size());
            batch.int32_index = batch.int32_index && program.elements < kInt32Limit;
            tables.back().push_back(launch);
            st_.batch_of[i] = int(st_.batches.size() - 1);
            image.insert(image.end(), program.bytes.begin(), program.bytes.end());
        }
        for (size_t b = 0; b < tables.size(); ++b) {
            image.resize((image.size() + 15) / 16 * 16, 0);
            st_.batches[b].table_offset = image.size();
            const auto *bytes = reinterpret_cast<const unsigned char *>(tables[b].data());
            image.insert(image.end(), bytes, bytes + tables[b].size() * sizeof(FusedLaunch));
        }
        if (image.empty()) return;
        if (image.size() > set_.programs_capacity) {
            set_.programs = allocate(ctx, st_, image.size());
            set_.programs_capacity = image.size();
        }
        check(cudaMemcpyAsync(set_.programs, image.data(), image.size(), cudaMemcpyHostToDevice, ctx.internal),
              "cudaMemcpyAsync");
        check(cudaStreamSynchronize(ctx.internal), "cudaStreamSynchronize");
    }

    void enqueue(const KernelContext &k) const {
        for (size_t i = 0; i < plan_.steps.size(); ++i) {
            if (!st_.fusion.skip[i]) enqueue_step(k, i);
        }
    }

    // The plan as a graph of its launch units (a step, or a batch of fused
    // steps), each captured on its own and depending on exactly the earlier
    // units whose memory it shares (read after write, write after read or
    // write), so that independent branches (a loss next to its gradient,
    // weight gradients next to the backward pass) run side by side.
    cudaGraph_t build_graph(KernelContext k, cudaStream_t stream) const {
        std::vector<Unit> units = launch_units();
        cudaGraph_t graph = nullptr;
        check(cudaGraphCreate(&graph, 0), "cudaGraphCreate");
        std::vector<cudaGraphNode_t> nodes(units.size());
        k.stream = stream;
        try {
            for (size_t u = 0; u < units.size(); ++u) {
                std::vector<cudaGraphNode_t> deps;
                for (size_t v = 0; v < u; ++v) {
                    if (overlap(units[v].writes, units[u].reads) || overlap(units[v].writes, units[u].writes) ||
                        overlap(units[v].reads, units[u].writes)) {
                        deps.push_back(nodes[v]);
                    }
                }
                cudaGraph_t part = nullptr;
                check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
                try {
                    enqueue_step(k, units[u].step);
                } catch (...) {
                    cudaStreamEndCapture(stream, &part);
                    if (part) cudaGraphDestroy(part);
                    cudaGetLastError();
                    throw;
                }
                check(cudaStreamEndCapture(stream, &part), "cudaStreamEndCapture");
                size_t count = 0;
                cudaError_t err = cudaGraphGetNodes(part, nullptr, &count);
                if (err == cudaSuccess) {
                    err = count == 0 ? cudaGraphAddEmptyNode(&nodes[u], graph, deps.data(), deps.size())
                                     : cudaGraphAddChildGraphNode(&nodes[u], graph, deps.data(), deps.size(), part);
                }
                cudaGraphDestroy(part);
                check(err, "cudaGraphAddChildGraphNode");
            }
        } catch (...) {
            cudaGraphDestroy(graph);
            throw;
        }
        return graph;
    }

    // The same, with device events around every step, whose times go to
    // the profile once the run is done (it synchronizes).
    void enqueue_profiled(const KernelContext &k, StepProfile &profile) const {
        std::vector<size_t> steps;
        for (size_t i = 0; i < plan_.steps.size(); ++i) {
            if (!st_.fusion.skip[i]) steps.push_back(i);
        }
        std::vector<cudaEvent_t> events(steps.size() + 1, nullptr);
        try {
            for (cudaEvent_t &event : events) check(cudaEventCreate(&event), "cudaEventCreate");
            check(cudaEventRecord(events[0], k.stream), "cudaEventRecord");
            for (size_t n = 0; n < steps.size(); ++n) {
                enqueue_step(k, steps[n]);
                check(cudaEventRecord(events[n + 1], k.stream), "cudaEventRecord");
            }
            check(cudaEventSynchronize(events.back()), "cudaEventSynchronize");
            for (size_t n = 0; n < steps.size(); ++n) {
                float ms = 0;
                check(cudaEventElapsedTime(&ms, events[n], events[n + 1]), "cudaEventElapsedTime");
                const size_t i = steps[n];
                const char *note = nullptr;
                if (st_.dnn_convs[i]) {
                    note = "cuDNN";
                } else if (plan_.steps[i].kind == StepKind::Fused && st_.jit[i].kernel) {
                    note = st_.jit[i].sums ? "compiled, + channel sums" : "compiled";
                } else if (plan_.steps[i].kind == StepKind::Fused) {
                    const PlanState::Batch &batch = st_.batches[size_t(st_.batch_of[i])];
                    if (batch.first_step != i) continue;  // timed with its batch
                    note = batch.sums ? "+ channel sums" : batch.count > 1 ? "+ the rest of its batch" : nullptr;
                }
                profile.add(plan_.steps[i], ms * 1e-3, note);
            }
        } catch (...) {
            for (cudaEvent_t event : events) {
                if (event) cudaEventDestroy(event);
            }
            throw;
        }
        for (cudaEvent_t event : events) cudaEventDestroy(event);
    }

    void enqueue_step(const KernelContext &k, size_t i) const {
        const Step &step = plan_.steps[i];
        switch (step.kind) {
            case StepKind::Copy:
                copy_bytes(k, address(step.output), address(step.inputs[0]), byte_size(step.output),
                           st_.checks && step.output.storage == Storage::Variable);
                break;
            case StepKind::Fused: {
                if (st_.jit[i].kernel) return launch_compiled(k, i);
                const PlanState::Batch &batch = st_.batches[size_t(st_.batch_of[i])];
                if (batch.first_step != i) break;  // launched with its batch
                const auto *image = static_cast<const unsigned char *>(set_.programs);
                if (batch.sums) {
                    launch_fused_sums(with_workspace(k), image + batch.program_offset, batch.max_program_bytes,
                                      batch.guarded, channel_sums(i), set_.run_index);
                    break;
                }
                launch_fused_batch(k, image, reinterpret_cast<const FusedLaunch *>(image + batch.table_offset),
                                   batch.count, batch.blocks, batch.max_program_bytes, batch.int32_index,
                                   set_.run_index);
                break;
            }
            case StepKind::Kernel:
                if (st_.dnn_convs[i]) {
                    dnn_conv_run(with_workspace(k), *st_.dnn, *st_.dnn_convs[i], in(step, 0), in(step, 1), out(step));
                } else if (element_count(step.output.shape) != 0) {
                    KernelContext tagged = k;
                    tagged.step_tag = int32_t(i + 1);
                    if (st_.blas_lane[i] >= 0) tagged.blas_workspace = st_.blas_workspaces[st_.blas_lane[i]];
                    kernel(tagged, step);
                }
                break;
        }
    }

private:
    using Range = std::pair<uintptr_t, uintptr_t>;
    // What one launch unit of build_graph reads and writes.
    struct Unit {
        size_t step;  // the first
        std::vector<Range> reads, writes;
    };

    static Range range(const void *ptr, size_t bytes) {
        auto lo = reinterpret_cast<uintptr_t>(ptr);
        return Range(lo, lo + bytes);
    }
    static bool overlap(const std::vector<Range> &a, const std::vector<Range> &b) {
        for (const Range &x : a) {
            for (const Range &y : b) {
                if (x.first < y.second && y.first < x.second) return true;
            }
        }
        return false;
    }

    // The plan's launch units in order. Shared scratch counts as written
    // (the workspace, a cuBLAS lane), and so does the data-error record by
    // the steps that check indices; steps that write variables read it.
    std::vector<Unit> launch_units() const {
        const Range errors = range(st_.errors, sizeof(DataError));
        const Range workspace = range(st_.workspace, st_.workspace_bytes);
        std::vector<Unit> units;
        std::vector<int> unit_of(plan_.steps.size(), -1);
        for (size_t i = 0; i < plan_.steps.size(); ++i) {
            const Step &step = plan_.steps[i];
            if (st_.fusion.skip[i]) continue;
            Unit *unit;
            const bool batched = step.kind == StepKind::Fused && !st_.jit[i].kernel;
            if (batched && st_.batches[size_t(st_.batch_of[i])].first_step != i) {
                unit = &units[size_t(unit_of[st_.batches[size_t(st_.batch_of[i])].first_step])];
            } else {
                unit_of[i] = int(units.size());
                units.push_back(Unit{i, {}, {}});
                unit = &units.back();
            }
            if (st_.workspace_need[i]) unit->writes.push_back(workspace);
            if (st_.blas_lane[i] >= 0) {
                unit->writes.push_back(range(st_.blas_workspaces[st_.blas_lane[i]], kBlasWorkspaceBytes));
            }
            bool writes_variables = false;
            if (step.kind == StepKind::Fused) {
                const Fused &fused = *st_.programs[i];
                for (const TensorRef &ref : fused.loads) unit->reads.push_back(range(address(ref), byte_size(ref)));
                for (const auto &store : fused.stores) {
                    unit->writes.push_back(range(address(store.second), byte_size(store.second)));
                    writes_variables |= store.second.storage == Storage::Variable;
                }
                for (const ChannelSumSpec &sum : st_.fusion.sums[i]) {
                    unit->writes.push_back(range(address(sum.out), byte_size(sum.out)));
                }
            } else {
                for (const TensorRef &ref : step.inputs) unit->reads.push_back(range(address(ref), byte_size(ref)));
                unit->writes.push_back(range(address(step.output), byte_size(step.output)));
                writes_variables = step.output.storage == Storage::Variable;
                if (step.kind == StepKind::Kernel && checks_indices(step.prim)) unit->writes.push_back(errors);
            }
            if (writes_variables && st_.checks) unit->reads.push_back(errors);
        }
        return units;
    }

    void launch_compiled(const KernelContext &k, size_t i) const {
        const Fused &fused = *st_.programs[i];
        std::vector<const float *> loads;
        std::vector<float *> stores;
        bool writes_variables = false;
        for (const TensorRef &ref : fused.loads) loads.push_back(reinterpret_cast<const float *>(address(ref)));
        for (const auto &store : fused.stores) {
            stores.push_back(reinterpret_cast<float *>(address(store.second)));
            writes_variables |= store.second.storage == Storage::Variable;
        }
        const JitKernel &kernel = st_.jit[i];
        ChannelSums sums;
        if (kernel.sums) sums = channel_sums(i);
        jit_launch(with_workspace(k), kernel, loads, stores, writes_variables && st_.checks,
                   kernel.sums ? &sums : nullptr, set_.run_index);
    }

    KernelContext with_workspace(const KernelContext &k) const {
        KernelContext with = k;
        with.workspace = st_.workspace;
        return with;
    }

    ChannelSums channel_sums(size_t i) const {
        ChannelSums sums = sums_geometry(st_, i);
        const std::vector<ChannelSumSpec> &specs = st_.fusion.sums[i];
        for (size_t k = 0; k < specs.size(); ++k) sums.out[k] = reinterpret_cast<float *>(address(specs[k].out));
        return sums;
    }

    const float *in(const Step &s, size_t i) const { return reinterpret_cast<const float *>(address(s.inputs[i])); }
    const int32_t *in_i32(const Step &s, size_t i) const {
        return reinterpret_cast<const int32_t *>(address(s.inputs[i]));
    }
    float *out(const Step &s) const { return reinterpret_cast<float *>(address(s.output)); }

    // Copies `x` (x_shape) into the region of `y` (y_shape) starting at `starts`.
    void place(const KernelContext &k, const Shape &x_shape, const void *x, const Shape &y_shape, const int64_t *starts,
               void *y, size_t element_size) const {
        std::vector<int64_t> ys = dense_strides(y_shape), xs = dense_strides(x_shape);
        int64_t offset = 0;
        for (size_t d = 0; d < y_shape.size(); ++d) offset += starts[d] * ys[d];
        strided_copy(k, x_shape, x, xs.data(), static_cast<char *>(y) + offset * int64_t(element_size), ys.data(),
                     element_size);
    }

    void kernel(const KernelContext &base, const Step &s) const {
        KernelContext k = with_workspace(base);
        const fm_op_attrs &a = s.attrs;
        const Shape &ys = s.output.shape;
        auto shape = [&](size_t i) -> const Shape & { return s.inputs[i].shape; };
        const size_t element = dtype_size(s.output.dtype, "dtype");
        switch (s.prim) {
            case Prim::MatMul: return matmul_step(k, s, in(s, 0), in(s, 1), out(s));
            case Prim::Conv2d: return conv2d_forward(k, conv_shape(s), in(s, 0), in(s, 1), out(s));
            case Prim::Conv2dBackwardInput: return conv2d_backward_input(k, conv_shape(s), in(s, 0), in(s, 1), out(s));
            case Prim::Conv2dBackwardWeight:
                return conv2d_backward_weight(k, conv_shape(s), in(s, 0), in(s, 1), out(s));
            case Prim::MaxPool2d: return max_pool2d_forward(k, pool_shape(s), in(s, 0), out(s));
            case Prim::MaxPool2dBackward: return max_pool2d_backward(k, pool_shape(s), in(s, 0), in(s, 1), out(s));
            case Prim::AvgPool2d: return avg_pool2d_forward(k, pool_shape(s), in(s, 0), out(s));
            case Prim::AvgPool2dBackward: return avg_pool2d_backward(k, pool_shape(s), in(s, 0), out(s));
            case Prim::ReduceSum:
            case Prim::ReduceMax:
            case Prim::ReduceMin: {
                Reduction kind = s.prim == Prim::ReduceSum   ? Reduction::Sum
                                 : s.prim == Prim::ReduceMax ? Reduction::Max
                                                             : Reduction::Min;
                return reduce(k, kind, shape(0), axes_mask(a, shape(0).size()), in(s, 0), out(s));
            }
            case Prim::ArgMax:
                return argmax(k, shape(0), int(a.axes[0]), in(s, 0), reinterpret_cast<int32_t *>(address(s.output)));
            case Prim::ReduceToLike: {
                uint32_t mask = reduce_to_like_mask(shape(0), shape(1));
                if (mask == 0) return copy_bytes(k, out(s), in(s, 0), byte_size(s.output), false);
                return reduce(k, Reduction::Sum, shape(0), mask, in(s, 0), out(s));
            }
            case Prim::BroadcastLike: {
                Shape x = padded(shape(0), ys.size());
                std::vector<int64_t> xs = dense_strides(x), dst = dense_strides(ys);
                for (size_t d = 0; d < x.size(); ++d) {
                    if (x[d] == 1) xs[d] = 0;
                }
                return strided_copy(k, ys, in(s, 0), xs.data(), out(s), dst.data(), element);
            }
            case Prim::Permute: {
                std::vector<int64_t> xs = dense_strides(shape(0)), src(ys.size()), dst = dense_strides(ys);
                for (size_t i = 0; i < ys.size(); ++i) src[i] = xs[size_t(a.axes[i])];
                return strided_copy(k, ys, address(s.inputs[0]), src.data(), address(s.output), dst.data(), element);
            }
            case Prim::Slice: {
                int64_t starts[FM_MAX_RANK];
                Shape result;
                resolve_slice(shape(0), a, starts, &result);
                std::vector<int64_t> xs = dense_strides(shape(0)), dst = dense_strides(ys);
                int64_t offset = 0;
                for (size_t d = 0; d < ys.size(); ++d) offset += starts[d] * xs[d];
                return strided_copy(k, ys, address(s.inputs[0]) + offset * int64_t(element), xs.data(),
                                    address(s.output), dst.data(), element);
            }
            case Prim::SliceBackward: {
                int64_t starts[FM_MAX_RANK];
                Shape result;
                resolve_slice(ys, a, starts, &result);
                fill(k, out(s), element_count(ys), 0.0f);
                return place(k, shape(0), in(s, 0), ys, starts, out(s), element);
            }
            case Prim::Pad:
                fill(k, out(s), element_count(ys), float(a.value));
                return place(k, shape(0), in(s, 0), ys, a.pad_before, out(s), element);
            case Prim::Concat: {
                int64_t starts[FM_MAX_RANK] = {};
                const int axis = int(a.axes[0]);
                for (size_t i = 0; i < s.inputs.size(); ++i) {
                    place(k, shape(i), address(s.inputs[i]), ys, starts, out(s), element);
                    starts[axis] += shape(i)[size_t(axis)];
                }
                return;
            }
            case Prim::Softmax:
            case Prim::LogSoftmax: {
                int64_t outer, middle, inner;
                axis_split(ys.data(), ys.size(), int(a.axes[0]), &outer, &middle, &inner);
                return softmax(k, outer, middle, inner, in(s, 0), out(s), s.prim == Prim::LogSoftmax);
            }
            case Prim::GatherRows:
                return gather_rows(k, in(s, 0), shape(0)[0], shape(0)[1], in_i32(s, 1), element_count(shape(1)),
                                   out(s));
            case Prim::ScatterAddRows:
                return scatter_add_rows(k, in(s, 0), ys[1], in_i32(s, 1), element_count(shape(1)), ys[0], out(s));
            case Prim::OneHot: return one_hot(k, in_i32(s, 0), element_count(shape(0)), a.depth, out(s));
            case Prim::Pick: {
                int64_t outer, classes, inner;
                axis_split(shape(0).data(), shape(0).size(), 1, &outer, &classes, &inner);
                return pick(k, outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
            }
            case Prim::PickBackward: {
                int64_t outer, classes, inner;
                axis_split(ys.data(), ys.size(), 1, &outer, &classes, &inner);
                return pick_backward(k, outer, classes, inner, in(s, 0), in_i32(s, 1), out(s));
            }
            default:
                fail(FM_ERR_INTERNAL, s.origin, ": the CUDA backend has no kernel for ", prim_name(s.prim));
        }
    }

    const Plan &plan_;
    const Bindings &b_;
    PlanState &st_;
    SlotSet &set_;
};

// Entries kept at most in Context::produced; beyond, it starts afresh.
constexpr size_t kMaxProduced = 1024;

void note_outputs(Context &ctx, const std::vector<void *> &outputs, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(ctx.produced_mutex);
    if (ctx.produced.size() + outputs.size() > kMaxProduced) {
        // Destroying a pending event is safe: CUDA releases it once reached.
        for (auto &entry : ctx.produced) cudaEventDestroy(entry.second);
        ctx.produced.clear();
    }
    for (void *ptr : outputs) {
        cudaEvent_t &event = ctx.produced[ptr];
        if (!event) check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaEventRecord(event, stream), "cudaEventRecord");
    }
}

void wait_for_producer(Context &ctx, cudaStream_t waiter, const void *feed) {
    std::lock_guard<std::mutex> lock(ctx.produced_mutex);
    auto found = ctx.produced.find(feed);
    if (found != ctx.produced.end()) check(cudaStreamWaitEvent(waiter, found->second, 0), "cudaStreamWaitEvent");
}

// Reports (and clears) the data error of a finished run, if any.
void report_errors(PlanState &st, cudaStream_t stream) {
    if (!st.checks || !st.errors_pending) return;
    if (cudaEventQuery(st.errors_copied) != cudaSuccess) {
        cudaGetLastError();  // cudaErrorNotReady is not an error to keep
        return;
    }
    st.errors_pending = false;
    DataError e = *st.errors_host;
    if (!e.set) return;
    std::memset(st.errors_host, 0, sizeof *st.errors_host);
    // Cleared in `stream`'s order, which every later run of the plan follows.
    check(cudaMemsetAsync(st.errors, 0, sizeof(DataError), stream), "cudaMemsetAsync");
    check(cudaEventRecord(st.done, stream), "cudaEventRecord");
    st.last_stream = stream;
    const unsigned long long key = ~e.key;
    fail(FM_ERR_OUT_OF_RANGE, e.what == kBadLabel ? "label " : "index ", int32_t(uint32_t(key & 0xffffffffu)),
         " at position ", int64_t(key >> 32), " is outside [0, ", e.limit,
         ") (found on the GPU; that run left the variables unchanged)");
}

// The programs and channel sums of `fusion`, into `st`; false if one does
// not fit the interpreter (a merged group needing too many registers).
bool adopt(const Plan &plan, StepFusion fusion, PlanState &st) {
    st.programs.assign(plan.steps.size(), nullptr);
    st.sum_regs.assign(plan.steps.size(), {});
    bool fits = true;
    for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (fusion.skip[i] || plan.steps[i].kind != StepKind::Fused) continue;
        std::shared_ptr<const Fused> program = fusion.fused[i] ? fusion.fused[i] : plan.steps[i].fused;
        const std::vector<bool> &skip_store = fusion.skip_store[i];
        if (!skip_store.empty()) {
            auto kept = std::make_shared<Fused>(*program);
            kept->stores.clear();
            for (size_t k = 0; k < program->stores.size(); ++k) {
                if (!skip_store[k]) kept->stores.push_back(program->stores[k]);
            }
            program = kept;
        }
        for (const ChannelSumSpec &sum : fusion.sums[i]) st.sum_regs[i].push_back(sum.reg);
        fits = fits && fused_misfit(*program, st.sum_regs[i]).empty();
        st.programs[i] = std::move(program);
    }
    st.fusion = std::move(fusion);
    return fits;
}

void fuse(const Plan &plan, PlanState &st) {
    StepFusionOptions options;
    options.conv_bias = false;  // the convolutions are cuBLAS GEMMs
    // Smaller groups (an MLP's bias gradients) have too few elements per
    // channel to fill the channel-major kernel; the plain reduction wins.
    options.min_sum_elements = int64_t(1) << 18;
    options.max_channel_sums = kMaxChannelSums;
    if (!env_flag("FERROMETAL_CUDA_FUSION", true) || !adopt(plan, fuse_steps(plan, options), st)) {
        // Unfused, every group is the planner's; check_fused reports a misfit.
        adopt(plan, unfused_steps(plan), st);
    }
    print_fused_plan_if_asked(plan, st.fusion);
}

// Compiles the fused steps of at least jit_min_elements() to kernels of
// their own (all of a plan's in one NVRTC program).
void compile_fused_groups(DeviceExec &de, const Plan &plan, PlanState &st) {
    st.jit.assign(plan.steps.size(), JitKernel{});
    if (!de.jit) return;
    std::vector<JitGroup> groups;
    std::vector<size_t> steps;
    const int64_t min_elements = jit_min_elements();
    for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (st.fusion.skip[i] || plan.steps[i].kind != StepKind::Fused) continue;
        if (element_count(st.programs[i]->shape) < min_elements) continue;
        JitGroup group;
        group.fused = st.programs[i].get();
        group.sum_regs = st.sum_regs[i];
        if (!group.sum_regs.empty()) group.sums = sums_geometry(st, i);
        groups.push_back(group);
        steps.push_back(i);
    }
    std::vector<JitKernel> kernels = jit_compile(*de.jit, groups);
    for (size_t g = 0; g < steps.size(); ++g) st.jit[steps[g]] = kernels[g];
}

// Whether a plan's graph runs independent branches side by side. That pays
// where kernels are too small to fill the GPU alone (H100: cnn64 3.9k ->
// 4.4k, mlp 8.7k -> 9.3k steps/s) and costs where they are not (cifar,
// whose activations have 4M elements: 568 -> 520), so plans whose largest
// value has fewer than 2^20 elements branch. FERROMETAL_CUDA_BRANCHES=0/1
// decides for every plan.
bool use_branches(const Plan &plan) {
    const char *value = std::getenv("FERROMETAL_CUDA_BRANCHES");
    if (value && *value) return std::strcmp(value, "0") != 0;
    int64_t largest = 0;
    for (const Step &step : plan.steps) {
        largest = std::max(largest, element_count(step.kind == StepKind::Fused ? step.fused->shape : step.output.shape));
    }
    return largest < (int64_t(1) << 20);
}

// Captures the plan's kernels (queued on `stream`, a private one) into
// `graph`: as a graph of independent branches, or as one chain in plan order.
void capture(const Runner &runner, KernelContext k, cudaStream_t stream, bool branches, cudaGraphExec_t *graph) {
    cudaGraph_t captured = nullptr;
    if (branches) {
        captured = runner.build_graph(k, stream);
    } else {
        k.stream = stream;
        check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        try {
            runner.enqueue(k);
        } catch (...) {
            cudaGraph_t broken = nullptr;
            cudaStreamEndCapture(stream, &broken);
            if (broken) cudaGraphDestroy(broken);
            cudaGetLastError();
            throw;
        }
        check(cudaStreamEndCapture(stream, &captured), "cudaStreamEndCapture");
    }
    cudaError_t err = cudaGraphInstantiate(graph, captured, 0);
    cudaGraphDestroy(captured);
    check(err, "cudaGraphInstantiate");
}

}  // namespace

void *exec_compile(void *device_ctx, const Plan &plan) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    DeviceExec &de = device_exec(ctx);
    auto *raw = new PlanState();
    try {
        fuse(plan, *raw);
        raw->dnn = de.dnn;
        raw->dnn_convs.assign(plan.steps.size(), nullptr);
        compile_fused_groups(de, plan, *raw);
        raw->workspace_need.assign(plan.steps.size(), 0);
        raw->blas_lane.assign(plan.steps.size(), -1);
        size_t gemm_steps = 0;
        for (size_t i = 0; i < plan.steps.size(); ++i) {
            const Step &step = plan.steps[i];
            if (raw->fusion.skip[i]) continue;
            if (step.kind == StepKind::Kernel) {
                if (!kernel_supported(step.prim)) {
                    fail(FM_ERR_UNSUPPORTED, step.origin, ": the CUDA backend has no kernel for ", prim_name(step.prim));
                }
                raw->checks |= checks_indices(step.prim);
                size_t bytes = 0;
                switch (step.prim) {
                    case Prim::Conv2d: case Prim::Conv2dBackwardInput: case Prim::Conv2dBackwardWeight:
                        if (de.dnn) {
                            KernelContext k;
                            k.blas = de.blas;
                            k.blas_workspace_bytes = kBlasWorkspaceBytes;
                            k.sm_count = de.sm_count;
                            const ConvShape shape = conv_shape(step);
                            // The measurements use the shared cuBLAS handle, as runs do.
                            std::lock_guard<std::mutex> lock(de.mutex);
                            raw->dnn_convs[i] = dnn_conv(*de.dnn, step.prim, shape,
                                                         [&] { return time_im2col_conv(k, step.prim, shape); });
                        }
                        bytes = raw->dnn_convs[i] ? dnn_workspace_bytes(*raw->dnn_convs[i])
                                                  : conv_workspace_bytes(conv_shape(step));
                        break;
                    case Prim::ReduceSum: case Prim::ReduceMax: case Prim::ReduceMin:
                        bytes = reduce_workspace_bytes(step.inputs[0].shape,
                                                       axes_mask(step.attrs, step.inputs[0].shape.size()));
                        break;
                    case Prim::ReduceToLike:
                        bytes = reduce_workspace_bytes(step.inputs[0].shape,
                                                       reduce_to_like_mask(step.inputs[0].shape, step.inputs[1].shape));
                        break;
                    default: break;
                }
                raw->workspace_bytes = std::max(raw->workspace_bytes, bytes);
                raw->workspace_need[i] = bytes;
                const bool conv = step.prim == Prim::Conv2d || step.prim == Prim::Conv2dBackwardInput ||
                                  step.prim == Prim::Conv2dBackwardWeight;
                if (step.prim == Prim::MatMul || (conv && !raw->dnn_convs[i])) {
                    raw->blas_lane[i] = int(gemm_steps++ % kBlasLanes);
                }
            } else if (step.kind == StepKind::Fused) {
                check_fused(*raw->programs[i], raw->sum_regs[i], step.origin);
                if (!raw->sum_regs[i].empty()) {
                    raw->workspace_need[i] = fused_sums_workspace_bytes(sums_geometry(*raw, i));
                    raw->workspace_bytes = std::max(raw->workspace_bytes, raw->workspace_need[i]);
                }
            }
        }
        raw->dropout = plan.uses_dropout;
        std::set<std::pair<int, uint32_t>> seen;
        auto note_bound = [&](const TensorRef &ref) {
            if (ref.storage != Storage::Variable && ref.storage != Storage::Constant) return;
            if (seen.emplace(int(ref.storage), ref.index).second) raw->bound_refs.push_back(ref);
        };
        for (size_t i = 0; i < plan.steps.size(); ++i) {
            const Step &step = plan.steps[i];
            for (const TensorRef &ref : step.inputs) note_bound(ref);
            note_bound(step.output);
            if (raw->programs[i]) {
                for (const TensorRef &ref : raw->programs[i]->loads) note_bound(ref);
                for (const auto &store : raw->programs[i]->stores) note_bound(store.second);
            }
            for (const ChannelSumSpec &sum : raw->fusion.sums[i]) note_bound(sum.out);
        }
        // Feed slots: every reference to a feed, views included, spans its bytes.
        auto note_feed = [&](const TensorRef &ref) {
            if (ref.storage != Storage::Feed) return;
            if (raw->feed_bytes.size() <= ref.index) raw->feed_bytes.resize(ref.index + 1, 0);
            raw->feed_bytes[ref.index] = std::max(raw->feed_bytes[ref.index], byte_size(ref));
        };
        for (size_t i = 0; i < plan.steps.size(); ++i) {
            for (const TensorRef &ref : plan.steps[i].inputs) note_feed(ref);
            if (plan.steps[i].fused) {
                for (const TensorRef &ref : plan.steps[i].fused->loads) note_feed(ref);
            }
            if (raw->programs[i]) {
                for (const TensorRef &ref : raw->programs[i]->loads) note_feed(ref);
            }
        }
        for (const TensorRef &out : plan.outputs) raw->output_bytes.push_back(byte_size(out));
        for (SlotSet &set : raw->sets) {
            set.feeds.assign(raw->feed_bytes.size(), nullptr);
            for (size_t i = 0; i < raw->feed_bytes.size(); ++i) {
                if (raw->feed_bytes[i]) set.feeds[i] = allocate(ctx, *raw, raw->feed_bytes[i]);
            }
            for (size_t bytes : raw->output_bytes) set.outputs.push_back(allocate(ctx, *raw, bytes));
            if (plan.uses_dropout) set.run_index = static_cast<uint64_t *>(allocate(ctx, *raw, sizeof(uint64_t)));
            check(cudaEventCreateWithFlags(&set.free, cudaEventDisableTiming), "cudaEventCreate");
        }
        if (raw->workspace_bytes) raw->workspace = allocate(ctx, *raw, raw->workspace_bytes);
        for (void *&lane : raw->blas_workspaces) lane = allocate(ctx, *raw, kBlasWorkspaceBytes);
        raw->errors = static_cast<DataError *>(allocate(ctx, *raw, sizeof(DataError)));
        check(cudaMemsetAsync(raw->errors, 0, sizeof(DataError), ctx.internal), "cudaMemsetAsync");
        if (raw->checks) {
            check(cudaMallocHost(reinterpret_cast<void **>(&raw->errors_host), sizeof(DataError)), "cudaMallocHost");
            std::memset(raw->errors_host, 0, sizeof(DataError));
            check(cudaEventCreateWithFlags(&raw->errors_copied, cudaEventDisableTiming), "cudaEventCreate");
        }
        check(cudaEventCreateWithFlags(&raw->done, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaEventCreateWithFlags(&raw->ordered, cudaEventDisableTiming), "cudaEventCreate");
        check(cudaStreamCreateWithFlags(&raw->capture, cudaStreamNonBlocking), "cudaStreamCreate");
        check(cudaStreamCreateWithFlags(&raw->feeder, cudaStreamNonBlocking), "cudaStreamCreate");
        raw->use_graph = env_flag("FERROMETAL_CUDA_GRAPHS", true);
        raw->branches = use_branches(plan);
        check(cudaStreamSynchronize(ctx.internal), "cudaStreamSynchronize");
    } catch (...) {
        release_state(ctx, raw);
        throw;
    }
    return raw;
}

void exec_release(void *device_ctx, void *exec_ctx) {
    release_state(context(device_ctx), static_cast<PlanState *>(exec_ctx));
}

void exec_run(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *stream_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    DeviceExec &de = device_exec(ctx);
    std::lock_guard<std::mutex> lock(de.mutex);
    PlanState &st = *static_cast<PlanState *>(exec_ctx);
    cudaStream_t stream = queue_of(ctx, stream_ctx);
    report_errors(st, stream);
    SlotSet &set = st.sets[st.next_set];
    st.next_set ^= 1;

    // Feeds: copied into the set once the run before last has finished
    // with it, and waited for here, so that the caller may overwrite its
    // feed tensors as soon as this returns. The previous run may still be
    // computing meanwhile.
    if (set.used) check(cudaStreamWaitEvent(st.feeder, set.free, 0), "cudaStreamWaitEvent");
    // Feeds written by queued work: on a caller's stream everything queued
    // there comes first; without one, a feed may be the output of an earlier
    // run still queued on the internal stream.
    if (stream_ctx) {
        check(cudaEventRecord(st.ordered, stream), "cudaEventRecord");
        check(cudaStreamWaitEvent(st.feeder, st.ordered, 0), "cudaStreamWaitEvent");
    } else {
        for (size_t i = 0; i < set.feeds.size(); ++i) {
            if (set.feeds[i]) wait_for_producer(ctx, st.feeder, bindings.feeds[i]);
        }
    }
    bool fed = false;
    for (size_t i = 0; i < set.feeds.size(); ++i) {
        if (!set.feeds[i]) continue;
        check(cudaMemcpyAsync(set.feeds[i], bindings.feeds[i], st.feed_bytes[i], cudaMemcpyDeviceToDevice, st.feeder),
              "cudaMemcpyAsync");
        fed = true;
    }
    if (fed) check(cudaStreamSynchronize(st.feeder), "cudaStreamSynchronize");
    // The plan's memory is shared by its runs: a run on another stream
    // waits for the previous one, and for the variable writes queued on the
    // internal stream (a learning rate).
    if (st.last_stream && st.last_stream != stream) {
        check(cudaStreamWaitEvent(stream, st.done, 0), "cudaStreamWaitEvent");
    }
    if (stream != ctx.internal) {
        check(cudaEventRecord(st.ordered, ctx.internal), "cudaEventRecord");
        check(cudaStreamWaitEvent(stream, st.ordered, 0), "cudaStreamWaitEvent");
    }
    if (st.dropout) {
        set_u64_kernel<<<1, 1, 0, stream>>>(set.run_index, bindings.run_index);
        check_launch("run index");
    }

    Runner runner(plan, bindings, st, set);
    std::vector<const void *> bound = runner.bound();
    if (bound != set.bound) {
        // The set's programs are rewritten: its last run must be done with them.
        if (set.used) check(cudaEventSynchronize(set.free), "cudaEventSynchronize");
        if (set.graph) {
            cudaGraphExecDestroy(set.graph);
            set.graph = nullptr;
        }
        runner.build_programs(ctx);
        set.bound = std::move(bound);
    }
    KernelContext k;
    k.blas = de.blas;
    k.blas_workspace = st.blas_workspaces[0];
    k.blas_workspace_bytes = kBlasWorkspaceBytes;
    k.sm_count = de.sm_count;
    k.errors = st.errors;
    k.abort = st.checks ? &st.errors->set : nullptr;
    StepProfile *profile = st.runs++ > 0 ? StepProfile::get() : nullptr;
    if (profile) {
        k.stream = stream;
        runner.enqueue_profiled(k, *profile);
    } else if (st.use_graph) {
        if (!set.graph) capture(runner, k, st.capture, st.branches, &set.graph);
        check(cudaGraphLaunch(set.graph, stream), "cudaGraphLaunch");
    } else {
        k.stream = stream;
        runner.enqueue(k);
    }
    for (size_t i = 0; i < set.outputs.size(); ++i) {
        if (st.output_bytes[i] == 0) continue;
        check(cudaMemcpyAsync(bindings.outputs[i], set.outputs[i], st.output_bytes[i], cudaMemcpyDeviceToDevice,
                              stream),
              "cudaMemcpyAsync");
    }
    if (!stream_ctx) note_outputs(ctx, bindings.outputs, stream);
    if (st.checks) {
        check(cudaMemcpyAsync(st.errors_host, st.errors, sizeof(DataError), cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync");
        check(cudaEventRecord(st.errors_copied, stream), "cudaEventRecord");
        st.errors_pending = true;
    }
    check(cudaEventRecord(set.free, stream), "cudaEventRecord");
    set.used = true;
    check(cudaEventRecord(st.done, stream), "cudaEventRecord");
    st.last_stream = stream;
}

void exec_check(void *device_ctx, void *exec_ctx) {
    Context &ctx = context(device_ctx);
    activate(ctx);
    PlanState &st = *static_cast<PlanState *>(exec_ctx);
    if (!st.checks || !st.errors_pending) return;
    check(cudaEventSynchronize(st.errors_copied), "cudaEventSynchronize");
    report_errors(st, queue_of(ctx, nullptr));
}

void release_exec(Context &ctx) noexcept {
    for (auto &entry : ctx.produced) cudaEventDestroy(entry.second);
    ctx.produced.clear();
    if (!ctx.exec) return;
    if (ctx.exec->blas) cublasDestroy(ctx.exec->blas);
    dnn_close(ctx.exec->dnn);
    jit_close(ctx.exec->jit);
    delete ctx.exec;
    ctx.exec = nullptr;
}

}  // namespace cuda
}  // namespace fm
