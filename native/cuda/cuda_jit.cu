// Fused elementwise groups compiled to kernels of their own at run time.
//
// The interpreter (cuda_elementwise.cu) decodes every instruction for every
// element: on large groups (a BatchNorm pass over a whole activation) that
// decoding, not memory, bounds it. For those, this file writes the group
// out as CUDA C++ (one statement per instruction, every load's indexing
// with its constants), compiles it with NVRTC and launches the result. The
// instructions call the same formulas (elementwise_math.h, embedded in the
// library together with prim.h and cuda_fused_device.h), in the same
// order, without contracting a multiply and an add into one FMA, and the
// channel sums are reduced in the interpreter's order: a compiled group
// gives the interpreter's bits.
//
// The source depends on the group's structure and shape, not on its
// addresses (those are kernel parameters), so a device compiles each
// distinct source once. Every group is compiled by default: even small
// ones, launched one by one, beat the interpreter's batches of them (H100:
// mlp 8.1k -> 9.2k steps/s, cnn64 3.8k -> 4.4k). FERROMETAL_CUDA_JIT=0
// turns this off; FERROMETAL_CUDA_JIT_MIN sets the smallest group compiled
// (elements), the rest going to the interpreter.
#include <nvrtc.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "cuda_check.h"
#include "cuda_kernels.h"
#include "error.h"

namespace fm {
namespace cuda {

namespace {

// build.rs (and CMakeLists.txt) write this file: the headers the generated
// source includes, as string literals.
#include "fm_jit_headers.inc"

void check_nvrtc(nvrtcResult result, const char *call) {
    if (result != NVRTC_SUCCESS) {
        fail(FM_ERR_BACKEND, call, ": ", nvrtcGetErrorString(result),
             " (FERROMETAL_CUDA_JIT=0 runs fused groups in the interpreter instead)");
    }
}

// Exact float literals, whatever the value (infinities and NaNs included).
std::string float_literal(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    char text[32];
    std::snprintf(text, sizeof text, "__int_as_float(0x%08" PRIx32 ")", bits);
    return text;
}

// The index expression of load `k` at element `i`.
std::string load_index(const LoadPattern &p, const Shape &group, const char *index) {
    std::ostringstream out;
    switch (p.kind) {
        case LoadKind::Contiguous: return index;
        case LoadKind::Scalar: return "0";
        case LoadKind::AlongOneDim:
        case LoadKind::Strided: {
            int64_t dense = 1;
            std::vector<int64_t> denses(group.size());
            for (size_t d = group.size(); d-- > 0;) denses[d] = dense, dense *= group[d];
            bool first = true;
            for (size_t d = 0; d < group.size(); ++d) {
                if (p.strides[d] == 0) continue;
                out << (first ? "" : " + ") << "(" << index;
                if (denses[d] != 1) out << " / I(" << denses[d] << ")";
                if (d != 0) out << " % I(" << group[d] << ")";
                out << ") * I(" << p.strides[d] << ")";
                first = false;
            }
            return first ? std::string("0") : out.str();
        }
    }
    return "0";
}

// The statements computing every value of `fused` at element `i` into v<k>
// (loads first, by index; then instruction k into v<loads + k>). Loads in
// `pinned` were read once before the loop, into c<k>.
std::string body(const Fused &fused, const std::vector<bool> &pinned) {
    std::ostringstream out;
    const size_t loads = fused.loads.size();
    for (size_t k = 0; k < loads; ++k) {
        if (pinned[k]) {
            out << "        const float v" << k << " = c" << k << ";\n";
            continue;
        }
        const LoadPattern p = load_pattern(fused.loads[k].shape, fused.shape);
        out << "        const float v" << k << " = a.load[" << k << "][" << load_index(p, fused.shape, "i") << "];\n";
    }
    auto operand = [&](int32_t reg) { return reg >= 0 ? "v" + std::to_string(reg) : std::string("0.0f"); };
    for (size_t k = 0; k < fused.code.size(); ++k) {
        const FusedInstruction &ins = fused.code[k];
        out << "        const float v" << loads + k << " = ";
        if (ins.prim == Prim::DropoutMask) {
            out << "fm::ew::dropout_mask(fm::ew::dropout_base(" << ins.seed << "ull, run_index), "
                << "(unsigned long long)i, " << float_literal(ins.p0) << ");\n";
        } else {
            out << "fm::ew::apply(fm::Prim(" << int(ins.prim) << "), " << operand(ins.a) << ", " << operand(ins.b)
                << ", " << operand(ins.c) << ", " << float_literal(ins.p0) << ", " << float_literal(ins.p1) << ");\n";
        }
    }
    return out.str();
}

std::string stores(const Fused &fused, const char *indent) {
    std::ostringstream out;
    for (size_t k = 0; k < fused.stores.size(); ++k) {
        out << indent << "a.store[" << k << "][i] = v" << fused.stores[k].first << ";\n";
    }
    return out.str();
}

bool uses_dropout(const Fused &fused) {
    for (const FusedInstruction &ins : fused.code) {
        if (ins.prim == Prim::DropoutMask) return true;
    }
    return false;
}

// The kernel's one parameter: pointers only, so the host fills it as an
// array of 8-byte values (JitKernel::launch).
std::string arguments(const std::string &name, size_t loads, size_t stores) {
    std::ostringstream out;
    out << "struct " << name << "_args {\n"
        << "    const float *load[" << std::max<size_t>(loads, 1) << "];\n"
        << "    float *store[" << std::max<size_t>(stores, 1) << "];\n"
        << "    const int *abort;\n"
        << "    const unsigned long long *run_index;\n"
        << "    double *partials;\n"
        << "};\n";
    return out.str();
}

std::string plain_kernel(const std::string &name, const Fused &fused) {
    const int64_t elements = element_count(fused.shape);
    std::ostringstream out;
    out << arguments(name, fused.loads.size(), fused.stores.size());
    out << "extern \"C\" __global__ void __launch_bounds__(" << kThreads << ") " << name << "(" << name
        << "_args a) {\n"
        << "    typedef " << (elements < kInt32Limit ? "int" : "long long") << " I;\n"
        << "    if (a.abort && *a.abort) return;\n";
    if (uses_dropout(fused)) out << "    const unsigned long long run_index = a.run_index ? *a.run_index : 0ull;\n";
    out << "    for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < I(" << elements
        << "); i += I(gridDim.x) * I(blockDim.x)) {\n"
        << body(fused, std::vector<bool>(fused.loads.size(), false)) << stores(fused, "        ") << "    }\n"
        << "}\n";
    return out.str();
}

// The interpreter's fused_sums_kernel, written out: the same blocks,
// slices, walk and reduction.
std::string sums_kernel(const std::string &name, const Fused &fused, const std::vector<int32_t> &sum_regs,
                        const ChannelSums &sums) {
    const int64_t per_channel = sums.elements / sums.channels, slices = channel_sum_slices(sums);
    const int64_t per_slice = (per_channel + slices - 1) / slices;
    std::vector<bool> pinned(fused.loads.size(), false);
    std::ostringstream out;
    out << arguments(name, fused.loads.size(), fused.stores.size());
    out << "extern \"C\" __global__ void __launch_bounds__(" << kThreads << ") " << name << "(" << name
        << "_args a) {\n"
        << "    typedef " << (sums.elements < kInt32Limit ? "int" : "long long") << " I;\n"
        << "    __shared__ double warp_sums[" << kThreads / 32 << "];\n"
        << "    const bool store = !(a.abort && *a.abort);\n";
    if (uses_dropout(fused)) out << "    const unsigned long long run_index = a.run_index ? *a.run_index : 0ull;\n";
    out << "    const I channel = I(blockIdx.x), slice = I(blockIdx.y);\n"
        << "    const I inner = I(" << sums.inner << "), channels = I(" << sums.channels << ");\n"
        << "    const I begin = slice * I(" << per_slice << ");\n"
        << "    const I end = begin + I(" << per_slice << ") < I(" << per_channel << ") ? begin + I(" << per_slice
        << ") : I(" << per_channel << ");\n"
        << "    const I step_image = I(blockDim.x) / inner, step_position = I(blockDim.x) % inner;\n";
    // Loads along the channel dim alone read one value per block.
    int64_t dense = 1;
    std::vector<int64_t> denses(fused.shape.size());
    for (size_t d = fused.shape.size(); d-- > 0;) denses[d] = dense, dense *= fused.shape[d];
    for (size_t k = 0; k < fused.loads.size(); ++k) {
        const LoadPattern p = load_pattern(fused.loads[k].shape, fused.shape);
        if (p.kind != LoadKind::AlongOneDim || denses[size_t(p.dim)] != sums.inner ||
            fused.shape[size_t(p.dim)] != sums.channels) {
            continue;
        }
        pinned[k] = true;
        out << "    const float c" << k << " = a.load[" << k << "][channel * I(" << p.strides[p.dim] << ")];\n";
    }
    out << "    I t = begin + I(threadIdx.x);\n"
        << "    I image = t / inner, position = t % inner;\n";
    for (size_t k = 0; k < sum_regs.size(); ++k) out << "    double acc" << k << " = 0;\n";
    out << "    for (; t < end; t += I(blockDim.x)) {\n"
        << "        const I i = (image * channels + channel) * inner + position;\n"
        << body(fused, pinned) << "        if (store) {\n"
        << stores(fused, "            ") << "        }\n";
    for (size_t k = 0; k < sum_regs.size(); ++k) out << "        acc" << k << " += v" << sum_regs[k] << ";\n";
    out << "        image += step_image;\n"
        << "        position += step_position;\n"
        << "        if (position >= inner) position -= inner, image += 1;\n"
        << "    }\n";
    for (size_t k = 0; k < sum_regs.size(); ++k) {
        out << "    {\n"
            << "        const double total = fm::cuda::block_sum(acc" << k << ", warp_sums);\n"
            << "        if (threadIdx.x == 0) a.partials[(" << k << " * channels + channel) * I(" << slices
            << ") + slice] = total;\n"
            << "    }\n";
    }
    out << "}\n";
    return out.str();
}

const char *kPrelude =
    "#define FM_HOST_DEVICE __device__\n"
    "typedef unsigned char uint8_t;\n"
    "typedef unsigned long long uint64_t;\n"
    "#include \"prim.h\"\n"
    "#include \"elementwise_math.h\"\n"
    "#include \"cuda_fused_device.h\"\n";

}  // namespace

struct JitModule {
    cudaLibrary_t library = nullptr;
    ~JitModule() {
        if (library) cudaLibraryUnload(library);
    }
};

struct JitCache {
    std::mutex mutex;
    int device = 0;
    std::string arch;  // "sm_90"
    std::map<std::string, std::shared_ptr<JitModule>> modules;  // by source
};

JitCache *jit_open(int device) {
    const char *flag = std::getenv("FERROMETAL_CUDA_JIT");
    if (flag && std::strcmp(flag, "0") == 0) return nullptr;
    int major = 0, minor = 0;
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
    auto *cache = new JitCache;
    cache->device = device;
    cache->arch = "sm_" + std::to_string(major * 10 + minor);
    return cache;
}

void jit_close(JitCache *cache) noexcept { delete cache; }

int64_t jit_min_elements() {
    const char *value = std::getenv("FERROMETAL_CUDA_JIT_MIN");
    if (value && *value) return std::max<int64_t>(1, std::strtoll(value, nullptr, 10));
    return 1;
}

std::vector<JitKernel> jit_compile(JitCache &cache, const std::vector<JitGroup> &groups) {
    if (groups.empty()) return {};
    std::string source = kPrelude;
    for (size_t g = 0; g < groups.size(); ++g) {
        const std::string name = "fm_fused_" + std::to_string(g);
        source += groups[g].sum_regs.empty() ? plain_kernel(name, *groups[g].fused)
                                             : sums_kernel(name, *groups[g].fused, groups[g].sum_regs, groups[g].sums);
    }
    std::lock_guard<std::mutex> lock(cache.mutex);
    std::shared_ptr<JitModule> &module = cache.modules[source];
    if (!module) {
        nvrtcProgram program = nullptr;
        check_nvrtc(nvrtcCreateProgram(&program, source.c_str(), "ferrometal_fused.cu", kJitHeaderCount,
                                       kJitHeaderSources, kJitHeaderNames),
                    "nvrtcCreateProgram");
        const std::string arch = "--gpu-architecture=" + cache.arch;
        const char *options[] = {arch.c_str(), "--std=c++17", "--fmad=false"};
        nvrtcResult compiled = nvrtcCompileProgram(program, 3, options);
        std::string cubin;
        if (compiled == NVRTC_SUCCESS) {
            size_t size = 0;
            nvrtcGetCUBINSize(program, &size);
            cubin.resize(size);
            compiled = nvrtcGetCUBIN(program, &cubin[0]);
        } else {
            size_t size = 0;
            nvrtcGetProgramLogSize(program, &size);
            std::string log(size, '\0');
            nvrtcGetProgramLog(program, &log[0]);
            nvrtcDestroyProgram(&program);
            cache.modules.erase(source);
            fail(FM_ERR_BACKEND, "NVRTC could not compile a fused group for ", cache.arch, ": ", log,
                 " (FERROMETAL_CUDA_JIT=0 runs fused groups in the interpreter instead)");
        }
        nvrtcDestroyProgram(&program);
        if (compiled != NVRTC_SUCCESS) {
            cache.modules.erase(source);
            check_nvrtc(compiled, "nvrtcGetCUBIN");
        }
        auto loaded = std::make_shared<JitModule>();
        cudaError_t err = cudaLibraryLoadData(&loaded->library, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
        if (err != cudaSuccess) {
            cache.modules.erase(source);
            check(err, "cudaLibraryLoadData");
        }
        module = loaded;
    }
    std::vector<JitKernel> kernels(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
        const std::string name = "fm_fused_" + std::to_string(g);
        JitKernel &kernel = kernels[g];
        kernel.module = module;
        check(cudaLibraryGetKernel(&kernel.kernel, module->library, name.c_str()), "cudaLibraryGetKernel");
        kernel.loads = groups[g].fused->loads.size();
        kernel.stores = groups[g].fused->stores.size();
        kernel.elements = element_count(groups[g].fused->shape);
        kernel.sums = !groups[g].sum_regs.empty();
    }
    return kernels;
}

void jit_launch(const KernelContext &k, const JitKernel &kernel, const std::vector<const float *> &loads,
                const std::vector<float *> &stores, bool guarded, const ChannelSums *sums,
                const uint64_t *run_index) {
    if (kernel.elements == 0) return;
    // The layout of the generated <name>_args: load[], store[], abort, run_index, partials.
    std::vector<const void *> args;
    for (size_t i = 0; i < std::max<size_t>(kernel.loads, 1); ++i) args.push_back(i < loads.size() ? loads[i] : nullptr);
    for (size_t i = 0; i < std::max<size_t>(kernel.stores, 1); ++i) {
        args.push_back(i < stores.size() ? stores[i] : nullptr);
    }
    args.push_back(guarded ? k.abort : nullptr);
    args.push_back(run_index);
    args.push_back(k.workspace);
    void *params[] = {args.data()};
    dim3 grid;
    if (kernel.sums) {
        if (sums->channels == 0) return;
        grid = dim3(unsigned(sums->channels), unsigned(channel_sum_slices(*sums)));
    } else {
        grid = dim3(unsigned(fused_blocks(kernel.elements)));
    }
    check(cudaLaunchKernel(reinterpret_cast<const void *>(kernel.kernel), grid, dim3(kThreads), params, 0, k.stream),
          "cudaLaunchKernel (a compiled fused group)");
    if (kernel.sums) combine_channel_sums(k, *sums, static_cast<const double *>(k.workspace));
}

}  // namespace cuda
}  // namespace fm
