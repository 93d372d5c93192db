// The fused elementwise interpreter on the GPU. A planner group becomes a
// small program (loads, instructions over registers, stores) that each
// block copies into shared memory; every thread then runs the whole program
// for its elements, so a chain of elementwise ops reads and writes memory
// once. The formulas are the core's (elementwise_math.h), shared with the CPU.
//
// Registers are renumbered by liveness when the program is built, and each
// load happens just before its first use, so a long chain (an optimizer
// update) needs only a few live registers. All loads precede all stores, as
// on the CPU, so a group that updates a variable in place reads it first.
//
// A second kernel runs one program over [n, channels, inner] elements a
// channel at a time and also sums some of its registers per channel (the
// cross-step fusion of step_fusion.h): a BatchNorm's statistics or a bias
// gradient come out of the pass that computes their operand.
#include <algorithm>
#include <cstring>

#include "cuda_check.h"
#include "cuda_fused_device.h"
#include "cuda_kernels.h"
#include "elementwise_math.h"
#include "error.h"

namespace fm {
namespace cuda {

namespace {

// Programs live in shared memory, which a launch gets up to 48 KiB of
// without opting in (the channel-sum kernel keeps a little for itself).
constexpr size_t kMaxProgramBytes = size_t(46) << 10;

// kAlongOneDim: a broadcast that varies along one dim only (a per-channel
// vector), indexed with one division instead of one per dim.
enum LoadMode : int32_t { kContiguous = 0, kScalar = 1, kStrided = 2, kAlongOneDim = 3 };
enum OpKind : int32_t { kLoad = 0, kCompute = 1 };

// The device image: a header, then `ops` Op records, then `stores` Store
// records, then `loads` Load records, then `sums` registers (int32) whose
// channel sums are taken. All 8-byte aligned.
struct Header {
    int32_t rank, ops, stores, loads, sums, pad;
    int64_t dense[FM_MAX_RANK];  // dense strides of the group's shape
    int64_t shape[FM_MAX_RANK];
};
struct Op {
    int32_t kind, prim, dst, a, b, c;  // for a load, `a` is the load index
    float p0, p1;
    uint64_t seed;
};
struct Store {
    float *ptr;
    int32_t reg, pad;
};
struct Load {
    const float *ptr;
    int32_t mode, dim;  // dim: the one dim of kAlongOneDim
    int64_t strides[FM_MAX_RANK];
};

// The program in execution order with virtual registers (loads first by
// index, then instructions), and the physical register of each.
struct Schedule {
    std::vector<Op> ops;
    std::vector<int32_t> physical;  // by virtual register
    int32_t registers = 0;
};

Schedule schedule(const Fused &fused, const std::vector<int32_t> &sum_regs) {
    const int32_t loads = int32_t(fused.loads.size());
    const int32_t virtuals = loads + int32_t(fused.code.size());
    Schedule s;
    std::vector<bool> loaded(size_t(loads), false);
    for (size_t k = 0; k < fused.code.size(); ++k) {
        const FusedInstruction &ins = fused.code[k];
        for (int32_t operand : {ins.a, ins.b, ins.c}) {
            if (operand >= 0 && operand < loads && !loaded[size_t(operand)]) {
                loaded[size_t(operand)] = true;
                s.ops.push_back(Op{kLoad, 0, operand, operand, -1, -1, 0, 0, 0});
            }
        }
        s.ops.push_back(Op{kCompute, int32_t(ins.prim), loads + int32_t(k), ins.a, ins.b, ins.c, ins.p0, ins.p1,
                           ins.seed});
    }
    // Registers kept to the end: the stored and the summed ones.
    std::vector<int32_t> kept;
    for (const auto &store : fused.stores) kept.push_back(store.first);
    kept.insert(kept.end(), sum_regs.begin(), sum_regs.end());
    for (int32_t reg : kept) {  // a kept load (never emitted by the planner, but cheap)
        if (reg < loads && !loaded[size_t(reg)]) {
            loaded[size_t(reg)] = true;
            s.ops.push_back(Op{kLoad, 0, reg, reg, -1, -1, 0, 0, 0});
        }
    }
    // Last op reading each virtual register; stored ones live to the end.
    std::vector<int64_t> last_use(size_t(virtuals), -1);
    for (size_t i = 0; i < s.ops.size(); ++i) {
        if (s.ops[i].kind != kCompute) continue;
        for (int32_t operand : {s.ops[i].a, s.ops[i].b, s.ops[i].c}) {
            if (operand >= 0) last_use[size_t(operand)] = int64_t(i);
        }
    }
    for (int32_t reg : kept) last_use[size_t(reg)] = int64_t(s.ops.size());
    // Linear scan: a register is free again after its value's last use.
    s.physical.assign(size_t(virtuals), -1);
    std::vector<int32_t> free_list;
    std::vector<std::vector<int32_t>> expiring(s.ops.size() + 1);
    for (size_t i = 0; i < s.ops.size(); ++i) {
        Op &op = s.ops[i];
        int32_t reg;
        if (!free_list.empty()) {
            reg = free_list.back();
            free_list.pop_back();
        } else {
            reg = s.registers++;
        }
        s.physical[size_t(op.dst)] = reg;
        int64_t last = last_use[size_t(op.dst)];
        // A value nobody reads is dead at once (its register is reused next op).
        expiring[size_t(last < int64_t(i) ? int64_t(i) : last)].push_back(reg);
        for (int32_t r : expiring[i]) free_list.push_back(r);
    }
    return s;
}

__device__ float compute(const Op &op, const float *r, int64_t index, uint64_t run_index) {
    if (Prim(op.prim) == Prim::DropoutMask) {
        return ew::dropout_mask(ew::dropout_base(op.seed, run_index), uint64_t(index), op.p0);
    }
    return ew::apply(Prim(op.prim), op.a >= 0 ? r[op.a] : 0.0f, op.b >= 0 ? r[op.b] : 0.0f,
                     op.c >= 0 ? r[op.c] : 0.0f, op.p0, op.p1);
}

// Runs a program's loads and instructions for element `i` into `r`.
template <class Index>
__device__ __forceinline__ void evaluate(const unsigned char *program, float *r, Index i, uint64_t run_index) {
    const Header &h = *reinterpret_cast<const Header *>(program);
    const Op *ops = reinterpret_cast<const Op *>(program + sizeof(Header));
    const Load *loads = reinterpret_cast<const Load *>(reinterpret_cast<const Store *>(ops + h.ops) + h.stores);
    for (int32_t k = 0; k < h.ops; ++k) {
        const Op &op = ops[k];
        if (op.kind == kLoad) {
            const Load &load = loads[op.a];
            Index offset = 0;
            if (load.mode == kContiguous) {
                offset = i;
            } else if (load.mode == kAlongOneDim) {
                offset = (i / Index(h.dense[load.dim]) % Index(h.shape[load.dim])) * Index(load.strides[load.dim]);
            } else if (load.mode == kStrided) {
                for (int d = 0; d < h.rank; ++d) {
                    offset += (i / Index(h.dense[d]) % Index(h.shape[d])) * Index(load.strides[d]);
                }
            }
            r[op.dst] = load.ptr[offset];
        } else {
            r[op.dst] = compute(op, r, i, run_index);
        }
    }
}

// Index is int32_t when every group has fewer than 2^31 elements: 64-bit
// division, which broadcast loads need per dim, costs several times more.
template <class Index>
__global__ void fused_kernel(const unsigned char *image, const FusedLaunch *table, int count, const int32_t *abort,
                             const uint64_t *run_index_ptr) {
    // The group of this block: the last whose first block is not after it.
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (table[mid].block_begin <= int64_t(blockIdx.x)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    const FusedLaunch launch = table[lo];
    if (launch.guarded && abort && *abort) return;
    extern __shared__ __align__(16) unsigned char program[];
    const unsigned char *source = image + launch.offset;
    for (int at = threadIdx.x * 8; at < launch.bytes; at += blockDim.x * 8) {
        *reinterpret_cast<uint64_t *>(program + at) = *reinterpret_cast<const uint64_t *>(source + at);
    }
    __syncthreads();
    const Header &h = *reinterpret_cast<const Header *>(program);
    const Store *stores = reinterpret_cast<const Store *>(program + sizeof(Header) + size_t(h.ops) * sizeof(Op));
    const uint64_t run_index = run_index_ptr ? *run_index_ptr : 0;
    float r[kFusedRegisters];
    const Index elements = Index(launch.elements);
    const Index stride = Index(launch.blocks) * Index(blockDim.x);
    const Index first = Index(int64_t(blockIdx.x) - launch.block_begin) * Index(blockDim.x) + Index(threadIdx.x);
    for (Index i = first; i < elements; i += stride) {
        evaluate(program, r, i, run_index);
        for (int32_t s = 0; s < h.stores; ++s) stores[s].ptr[i] = r[stores[s].reg];
    }
}

// Every element a block of the channel-sum kernel visits has the same
// channel, so a load that varies along the channel dim only (a BatchNorm's
// mean, scale or shift) reads one value: it becomes a scalar load of that
// value in the block's copy of the program, with no index arithmetic.
__device__ void pin_channel_loads(unsigned char *program, int64_t channel, int64_t channels, int64_t inner) {
    const Header &h = *reinterpret_cast<const Header *>(program);
    Load *loads = reinterpret_cast<Load *>(program + sizeof(Header) + size_t(h.ops) * sizeof(Op) +
                                           size_t(h.stores) * sizeof(Store));
    for (int32_t k = 0; k < h.loads; ++k) {
        Load &load = loads[k];
        if (load.mode != kAlongOneDim || h.dense[load.dim] != inner || h.shape[load.dim] != channels) continue;
        load.ptr += channel * load.strides[load.dim];
        load.mode = kScalar;
    }
}

// Blocks are (channel, slice); a slice is a fixed range of the channel's
// elements, walked as (image, position) so that no element needs a division.
template <class Index>
__global__ void fused_sums_kernel(const unsigned char *source, int bytes, ChannelSums sums, int64_t slices,
                                  bool guarded, const int32_t *abort, const uint64_t *run_index_ptr,
                                  double *partials) {
    extern __shared__ __align__(16) unsigned char program[];
    __shared__ double warp_sums[kThreads / 32];
    for (int at = threadIdx.x * 8; at < bytes; at += blockDim.x * 8) {
        *reinterpret_cast<uint64_t *>(program + at) = *reinterpret_cast<const uint64_t *>(source + at);
    }
    __syncthreads();
    if (threadIdx.x == 0) pin_channel_loads(program, blockIdx.x, sums.channels, sums.inner);
    __syncthreads();
    const Header &h = *reinterpret_cast<const Header *>(program);
    const Store *stores = reinterpret_cast<const Store *>(program + sizeof(Header) + size_t(h.ops) * sizeof(Op));
    const int32_t *sum_regs = reinterpret_cast<const int32_t *>(
        program + sizeof(Header) + size_t(h.ops) * sizeof(Op) + size_t(h.stores) * sizeof(Store) +
        size_t(h.loads) * sizeof(Load));
    const bool store = !(guarded && abort && *abort);
    const uint64_t run_index = run_index_ptr ? *run_index_ptr : 0;
    const Index channel = Index(blockIdx.x), slice = Index(blockIdx.y);
    const Index inner = Index(sums.inner), channels = Index(sums.channels);
    const Index per_channel = Index(sums.elements / sums.channels);
    const Index per_slice = (per_channel + Index(slices) - 1) / Index(slices);
    const Index begin = slice * per_slice, end = min(per_channel, begin + per_slice);
    const Index step = Index(blockDim.x), step_image = step / inner, step_position = step % inner;
    Index t = begin + Index(threadIdx.x);
    Index image = t / inner, position = t % inner;
    float r[kFusedRegisters];
    double acc[kMaxChannelSums] = {};
    for (; t < end; t += step) {
        const Index i = (image * channels + channel) * inner + position;
        evaluate(program, r, i, run_index);
        if (store) {
            for (int32_t s = 0; s < h.stores; ++s) stores[s].ptr[i] = r[stores[s].reg];
        }
        for (int32_t k = 0; k < h.sums; ++k) acc[k] += r[sum_regs[k]];
        image += step_image;
        position += step_position;
        if (position >= inner) position -= inner, image += 1;
    }
    for (int32_t k = 0; k < h.sums; ++k) {
        const double total = block_sum(acc[k], warp_sums);
        if (threadIdx.x == 0) partials[(int64_t(k) * sums.channels + blockIdx.x) * slices + blockIdx.y] = total;
    }
}

__global__ void combine_channel_sums_kernel(ChannelSums sums, int64_t slices, const double *partials) {
    const int64_t total = int64_t(sums.count) * sums.channels, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
        double acc = 0;
        for (int64_t s = 0; s < slices; ++s) acc += partials[o * slices + s];
        sums.out[o / sums.channels][o % sums.channels] = float(acc);
    }
}

}  // namespace

// Enough blocks for every multiprocessor to hold several (132 on an H100),
// each with at least a few thousand elements. The count depends on the
// shape only, so the sums' order does too.
int64_t channel_sum_slices(const ChannelSums &sums) {
    constexpr int64_t kBlocks = 132 * 8;
    const int64_t per_channel = sums.elements / std::max<int64_t>(sums.channels, 1);
    const int64_t want = (kBlocks + sums.channels - 1) / std::max<int64_t>(sums.channels, 1);
    return std::clamp<int64_t>(std::min(want, per_channel / 2048), 1, 256);
}

namespace {

bool supported(Prim prim) {
    return prim_is_elementwise(prim) || prim == Prim::DropoutMask;
}

}  // namespace

LoadPattern load_pattern(const Shape &in, const Shape &group) {
    LoadPattern pattern;
    const int64_t count = element_count(in);
    if (count == 1) {
        pattern.kind = LoadKind::Scalar;
    } else if (count == element_count(group)) {
        pattern.kind = LoadKind::Contiguous;  // same elements, so the same layout
    } else {
        pattern.kind = LoadKind::Strided;
        int64_t stride = 1;
        for (size_t k = in.size(); k-- > 0;) {
            size_t o = k + group.size() - in.size();
            pattern.strides[o] = in[k] == 1 ? 0 : stride;
            stride *= in[k];
        }
        int varying = 0;
        for (size_t d = 0; d < group.size(); ++d) {
            if (pattern.strides[d] != 0) varying += 1, pattern.dim = int32_t(d);
        }
        if (varying == 1) pattern.kind = LoadKind::AlongOneDim;
    }
    return pattern;
}

std::string fused_misfit(const Fused &fused, const std::vector<int32_t> &sum_regs) {
    for (const FusedInstruction &ins : fused.code) {
        if (!supported(ins.prim)) return std::string("the CUDA backend cannot fuse ") + prim_name(ins.prim);
    }
    if (fused.shape.size() > FM_MAX_RANK) return "rank above FM_MAX_RANK";
    if (sum_regs.size() > size_t(kMaxChannelSums)) return "more channel sums than the CUDA interpreter takes";
    Schedule s = schedule(fused, sum_regs);
    size_t bytes = sizeof(Header) + s.ops.size() * sizeof(Op) + fused.stores.size() * sizeof(Store) +
                   fused.loads.size() * sizeof(Load) + sum_regs.size() * sizeof(int32_t);
    if (bytes > kMaxProgramBytes) {
        return "a fused group of " + std::to_string(fused.code.size()) + " ops is too long for the CUDA interpreter";
    }
    if (s.registers > kFusedRegisters) {
        return "a fused group of " + std::to_string(fused.code.size()) + " ops needs " + std::to_string(s.registers) +
               " live values; the CUDA interpreter has " + std::to_string(kFusedRegisters);
    }
    return "";
}

void check_fused(const Fused &fused, const std::vector<int32_t> &sum_regs, const char *origin) {
    std::string misfit = fused_misfit(fused, sum_regs);
    if (!misfit.empty()) fail(FM_ERR_UNSUPPORTED, origin, ": ", misfit);
}

FusedProgram build_fused(const Fused &fused, const std::vector<const float *> &load_ptrs,
                         const std::vector<float *> &store_ptrs, bool writes_variables,
                         const std::vector<int32_t> &sum_regs) {
    Schedule s = schedule(fused, sum_regs);
    const int64_t total = element_count(fused.shape);
    Header h{};
    h.rank = int32_t(fused.shape.size());
    h.ops = int32_t(s.ops.size());
    h.stores = int32_t(fused.stores.size());
    h.loads = int32_t(fused.loads.size());
    h.sums = int32_t(sum_regs.size());
    int64_t dense = 1;
    for (int d = h.rank - 1; d >= 0; --d) {
        h.shape[d] = fused.shape[size_t(d)];
        h.dense[d] = dense;
        dense *= fused.shape[size_t(d)];
    }
    for (Op &op : s.ops) {
        op.dst = s.physical[size_t(op.dst)];
        if (op.kind == kCompute) {
            for (int32_t *operand : {&op.a, &op.b, &op.c}) {
                if (*operand >= 0) *operand = s.physical[size_t(*operand)];
            }
        }
    }
    std::vector<Store> stores;
    for (size_t i = 0; i < fused.stores.size(); ++i) {
        stores.push_back(Store{store_ptrs[i], s.physical[size_t(fused.stores[i].first)], 0});
    }
    std::vector<Load> loads;
    for (size_t i = 0; i < fused.loads.size(); ++i) {
        const LoadPattern pattern = load_pattern(fused.loads[i].shape, fused.shape);
        Load load{};
        load.ptr = load_ptrs[i];
        load.mode = pattern.kind == LoadKind::Contiguous ? kContiguous
                    : pattern.kind == LoadKind::Scalar   ? kScalar
                    : pattern.kind == LoadKind::Strided  ? kStrided
                                                         : kAlongOneDim;
        load.dim = pattern.dim;
        std::memcpy(load.strides, pattern.strides, sizeof load.strides);
        loads.push_back(load);
    }
    FusedProgram program;
    program.elements = total;
    program.writes_variables = writes_variables;
    auto append = [&](const void *data, size_t bytes) {
        const auto *p = static_cast<const unsigned char *>(data);
        program.bytes.insert(program.bytes.end(), p, p + bytes);
    };
    append(&h, sizeof h);
    append(s.ops.data(), s.ops.size() * sizeof(Op));
    append(stores.data(), stores.size() * sizeof(Store));
    append(loads.data(), loads.size() * sizeof(Load));
    for (int32_t reg : sum_regs) {
        const int32_t physical = s.physical[size_t(reg)];
        append(&physical, sizeof physical);
    }
    program.bytes.resize((program.bytes.size() + 15) / 16 * 16, 0);
    return program;
}

int64_t fused_blocks(int64_t elements) {
    constexpr int64_t kMaxBlocks = 132 * 16;  // a few waves of an H100; threads loop beyond
    return std::clamp<int64_t>((elements + kThreads - 1) / kThreads, 1, kMaxBlocks);
}

void launch_fused_batch(const KernelContext &k, const unsigned char *image, const FusedLaunch *table, int count,
                        int64_t total_blocks, size_t max_program_bytes, bool int32_index, const uint64_t *run_index) {
    if (count == 0 || total_blocks == 0) return;
    if (int32_index) {
        fused_kernel<int32_t><<<unsigned(total_blocks), kThreads, max_program_bytes, k.stream>>>(image, table, count,
                                                                                                k.abort, run_index);
    } else {
        fused_kernel<int64_t><<<unsigned(total_blocks), kThreads, max_program_bytes, k.stream>>>(image, table, count,
                                                                                                k.abort, run_index);
    }
    check_launch("fused elementwise kernel");
}

size_t fused_sums_workspace_bytes(const ChannelSums &sums) {
    return size_t(sums.count * sums.channels * channel_sum_slices(sums)) * sizeof(double);
}

void launch_fused_sums(const KernelContext &k, const unsigned char *program, size_t program_bytes, bool guarded,
                       const ChannelSums &sums, const uint64_t *run_index) {
    if (sums.elements == 0 || sums.channels == 0) return;
    const int64_t slices = channel_sum_slices(sums);
    auto *partials = static_cast<double *>(k.workspace);
    dim3 grid(unsigned(sums.channels), unsigned(slices));
    if (sums.elements < kInt32Limit) {
        fused_sums_kernel<int32_t><<<grid, kThreads, program_bytes, k.stream>>>(
            program, int(program_bytes), sums, slices, guarded, k.abort, run_index, partials);
    } else {
        fused_sums_kernel<int64_t><<<grid, kThreads, program_bytes, k.stream>>>(
            program, int(program_bytes), sums, slices, guarded, k.abort, run_index, partials);
    }
    check_launch("fused elementwise kernel with channel sums");
    combine_channel_sums(k, sums, partials);
}

void combine_channel_sums(const KernelContext &k, const ChannelSums &sums, const double *partials) {
    const int64_t slices = channel_sum_slices(sums);
    combine_channel_sums_kernel<<<blocks_for(sums.count * sums.channels, k), kThreads, 0, k.stream>>>(sums, slices,
                                                                                                       partials);
    check_launch("channel sums (combining slices)");
}

void check_launch(const char *kernel) {
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) fail_cuda(err, kernel);
}

}  // namespace cuda
}  // namespace fm
