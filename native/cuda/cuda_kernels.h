// The CUDA backend's kernels, as launch functions the executor (cuda_exec.cu)
// calls once per plan step. Every function queues work on `k.stream` and
// returns; none synchronises, allocates or calls into the host, so a whole
// plan can be captured into one CUDA graph. Tensors are dense and row-major
// like on the CPU (kernels.h there documents each primitive's meaning;
// kernel_shapes.h holds the geometry both backends share).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernel_shapes.h"
#include "plan.h"

namespace fm {
namespace cuda {

// A data error found by a kernel (an index or label out of range). The
// first step that finds one claims the record (`set` = its tag); within it
// the lowest position wins, as on the CPU. Lives in device memory; the
// executor copies it back after a run.
struct DataError {
    int32_t set;    // 0: no error, else the tag of the step that found it
    int32_t what;   // DataErrorKind
    int64_t limit;  // the valid range is [0, limit)
    unsigned long long key;  // ~(position << 32 | the bad value as uint32)
};
enum DataErrorKind : int32_t { kBadIndex = 1, kBadLabel = 2 };

// What every launch needs besides its operands.
struct KernelContext {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    // cuBLAS's workspace for this plan: cublasSetStream resets it, and a
    // captured graph must not allocate, so every GEMM sets it again.
    void *blas_workspace = nullptr;
    size_t blas_workspace_bytes = 0;
    int sm_count = 1;
    // Scratch of this step (im2col columns, reduction partials); at least
    // what workspace_bytes() asked for.
    void *workspace = nullptr;
    DataError *errors = nullptr;
    int32_t step_tag = 1;  // names the step in a DataError (any nonzero value)
    // Set once a data error is found: steps that write variables skip, so
    // parameters stay unchanged after a bad batch.
    const int32_t *abort = nullptr;
};

// ---- Fused elementwise ----------------------------------------------------

// A fused group compiled for the GPU interpreter: registers renumbered by
// liveness so that few are live, operands resolved to addresses.
struct FusedProgram {
    std::vector<unsigned char> bytes;  // the device image, see cuda_elementwise.cu
    int64_t elements = 0;
    bool writes_variables = false;
};
// How a fused group reads one of its loads at the group's element i:
// load[i] (Contiguous), load[0] (Scalar), through `strides` per dim of the
// group (Strided, a broadcast), or along the one dim `dim` whose stride is
// nonzero (AlongOneDim, a per-channel vector, say).
enum class LoadKind { Contiguous, Scalar, Strided, AlongOneDim };
struct LoadPattern {
    LoadKind kind = LoadKind::Contiguous;
    int32_t dim = 0;
    int64_t strides[FM_MAX_RANK] = {};
};
LoadPattern load_pattern(const Shape &load, const Shape &group);
// The number of registers the interpreter has; a group needing more is
// refused when the plan is compiled.
constexpr int kFusedRegisters = 40;
// The most channel sums one fused step can take in its pass.
constexpr int kMaxChannelSums = 4;
// Why `fused` (with the channel sums of registers `sum_regs`) does not fit
// the interpreter, or "" if it does.
std::string fused_misfit(const Fused &fused, const std::vector<int32_t> &sum_regs);
// Checks that `fused` fits the interpreter; throws FM_ERR_UNSUPPORTED naming `origin` if not.
void check_fused(const Fused &fused, const std::vector<int32_t> &sum_regs, const char *origin);
// `sum_regs`: registers whose channel sums the program takes (see
// launch_fused_sums); they stay live to the end.
FusedProgram build_fused(const Fused &fused, const std::vector<const float *> &loads,
                         const std::vector<float *> &stores, bool writes_variables,
                         const std::vector<int32_t> &sum_regs = {});
// One group's place in a batched launch: independent groups that follow
// each other in a plan (the optimizer updates of every parameter, say) run
// as one kernel, each on its own range of blocks.
struct FusedLaunch {
    uint64_t offset;      // of the group's program in the image
    int32_t bytes;        // its size
    int32_t guarded;      // skipped once the run found a data error (it writes variables)
    int64_t elements;
    int64_t block_begin;  // its first block in the batch
    int64_t blocks;
};
// Blocks a group of `elements` gets.
int64_t fused_blocks(int64_t elements);
// Runs `count` groups described by `table` (device memory, inside `image`,
// which holds their programs). `run_index` is device memory.
void launch_fused_batch(const KernelContext &k, const unsigned char *image, const FusedLaunch *table, int count,
                        int64_t total_blocks, size_t max_program_bytes, bool int32_index, const uint64_t *run_index);
// A fused group over [n, channels, inner] elements that also sums its
// `sum_regs` registers per channel (a BatchNorm's statistics, a bias
// gradient) in the same pass, into `out` ([channels] each). Blocks own one
// channel and a fixed slice of it; partials combine in a fixed order, so
// the sums are deterministic.
struct ChannelSums {
    int64_t channels = 0, inner = 0, elements = 0;
    int count = 0;
    float *out[kMaxChannelSums] = {};
};
// Workspace (KernelContext::workspace) the launch needs.
size_t fused_sums_workspace_bytes(const ChannelSums &sums);
// `program` is device memory holding a program built with the sums'
// registers; `guarded` skips its stores once the run found a data error.
void launch_fused_sums(const KernelContext &k, const unsigned char *program, size_t program_bytes, bool guarded,
                       const ChannelSums &sums, const uint64_t *run_index);
// Blocks per channel (slices) of a channel-sum pass: blockIdx = (channel,
// slice); slice s of a channel covers its elements [s * per_slice, ...)
// with per_slice = ceil(elements per channel / slices), and writes its
// partial sum k to partials[(k * channels + channel) * slices + s].
int64_t channel_sum_slices(const ChannelSums &sums);
// Adds up those partials, in slice order, into sums.out.
void combine_channel_sums(const KernelContext &k, const ChannelSums &sums, const double *partials);

// ---- Fused elementwise, compiled at run time (cuda_jit.cu) -----------------

// A device's NVRTC-compiled groups, by source. Null from jit_open when
// FERROMETAL_CUDA_JIT=0.
struct JitCache;
JitCache *jit_open(int device);
void jit_close(JitCache *cache) noexcept;
// Groups of at least this many elements are compiled (FERROMETAL_CUDA_JIT_MIN;
// by default 1: every group).
int64_t jit_min_elements();
struct JitModule;
struct JitKernel {
    std::shared_ptr<JitModule> module;  // keeps the code loaded
    cudaKernel_t kernel = nullptr;
    size_t loads = 0, stores = 0;
    int64_t elements = 0;
    bool sums = false;
};
// A group to compile: its program and, if it takes channel sums, their
// registers and geometry (destinations are not needed).
struct JitGroup {
    const Fused *fused = nullptr;
    std::vector<int32_t> sum_regs;
    ChannelSums sums;
};
// Compiles `groups` together (once per distinct source on the device), so
// it may take a while: call it when compiling a plan.
std::vector<JitKernel> jit_compile(JitCache &cache, const std::vector<JitGroup> &groups);
// Runs a compiled group on its operands (in the group's load and store
// order). `guarded`: skip the stores once the run found a data error. A
// group with sums needs k.workspace of fused_sums_workspace_bytes(*sums).
void jit_launch(const KernelContext &k, const JitKernel &kernel, const std::vector<const float *> &loads,
                const std::vector<float *> &stores, bool guarded, const ChannelSums *sums,
                const uint64_t *run_index);

// ---- Matrix products (cuBLAS) ---------------------------------------------

void matmul(const KernelContext &k, const MatmulShape &s, const float *a, const float *b, float *c,
            float beta = 0.0f);
// Row-major C[i] (m x n, leading dim ldc) = op(A[i]) op(B[i]) + beta C[i] for
// i < batch, each operand `stride_*` elements after the previous one: any
// leading dims, so strided views need no copies.
void gemm_batched(const KernelContext &k, bool ta, bool tb, int64_t m, int64_t n, int64_t kk, const float *a,
                  int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float *c, int64_t ldc,
                  int64_t stride_c, int64_t batch, float beta = 0.0f);
void matmul_step(const KernelContext &k, const Step &step, const float *a, const float *b, float *c);

// ---- Convolution and pooling ----------------------------------------------

void conv2d_forward(const KernelContext &k, const ConvShape &s, const float *x, const float *w, float *y);
void conv2d_backward_input(const KernelContext &k, const ConvShape &s, const float *dy, const float *w,
                           float *dx);
void conv2d_backward_weight(const KernelContext &k, const ConvShape &s, const float *x, const float *dy,
                            float *dw);
size_t conv_workspace_bytes(const ConvShape &s);
// Milliseconds `prim` (one of the three above) takes at shape `s`: the best
// of three runs after a warm-up, on scratch memory of its own (k's stream
// and workspaces are not used). Synchronizes; for choosing a path at compile.
float time_im2col_conv(KernelContext k, Prim prim, const ConvShape &s);

// The same three through cuDNN (cuda_cudnn.cu; builds with the `cudnn`
// feature). A device's library is opened once; each convolution step asks
// dnn_conv for its descriptors and algorithm when the plan is compiled.
struct DnnLibrary;
struct DnnConv;
// Null when the build has no cuDNN or FERROMETAL_CUDNN=0. Call with the device current.
DnnLibrary *dnn_open(bool tf32);
void dnn_close(DnnLibrary *dnn) noexcept;
// How `prim` (Conv2d, Conv2dBackwardInput or Conv2dBackwardWeight) runs at
// shape `s` through cuDNN, or null where the im2col path runs it: where
// cuDNN cannot, or where `im2col_ms()` is below cuDNN's best time. The
// first time the device meets a shape it measures, so it synchronizes:
// call it when compiling, never while capturing. The answer is kept, so
// every plan with the shape runs the same code and gives the same bits.
std::shared_ptr<const DnnConv> dnn_conv(DnnLibrary &dnn, Prim prim, const ConvShape &s,
                                        const std::function<float()> &im2col_ms);
// Workspace (KernelContext::workspace) a run needs.
size_t dnn_workspace_bytes(const DnnConv &conv);
// `a` and `b` are the step's two inputs, in the primitive's order.
void dnn_conv_run(const KernelContext &k, DnnLibrary &dnn, const DnnConv &conv, const float *a, const float *b,
                  float *out);

void max_pool2d_forward(const KernelContext &k, const PoolShape &s, const float *x, float *y);
void max_pool2d_backward(const KernelContext &k, const PoolShape &s, const float *x, const float *dy, float *dx);
void avg_pool2d_forward(const KernelContext &k, const PoolShape &s, const float *x, float *y);
void avg_pool2d_backward(const KernelContext &k, const PoolShape &s, const float *dy, float *dx);

// ---- Reductions and softmax -----------------------------------------------

enum class Reduction { Sum, Max, Min };
void reduce(const KernelContext &k, Reduction kind, const Shape &shape, uint32_t axes_mask, const float *x,
            float *y);
size_t reduce_workspace_bytes(const Shape &shape, uint32_t axes_mask);
void argmax(const KernelContext &k, const Shape &shape, int axis, const float *x, int32_t *y);
void softmax(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *x, float *y,
             bool log);

// ---- Layout ---------------------------------------------------------------

// dst[index . dst_strides] = src[index . src_strides] for every index of
// `dims` (element strides; elements of `element_size` bytes: 1, 2, 4 or 8).
void strided_copy(const KernelContext &k, const Shape &dims, const void *src, const int64_t *src_strides,
                  void *dst, const int64_t *dst_strides, size_t element_size);
void fill(const KernelContext &k, float *dst, int64_t count, float value);
void copy_bytes(const KernelContext &k, void *dst, const void *src, size_t bytes, bool guarded);

// ---- Indexing -------------------------------------------------------------

void gather_rows(const KernelContext &k, const float *table, int64_t rows, int64_t width, const int32_t *indices,
                 int64_t count, float *y);
void scatter_add_rows(const KernelContext &k, const float *dy, int64_t width, const int32_t *indices,
                      int64_t count, int64_t rows, float *dtable);
void one_hot(const KernelContext &k, const int32_t *indices, int64_t count, int64_t depth, float *y);
void pick(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *x,
          const int32_t *labels, float *y);
void pick_backward(const KernelContext &k, int64_t outer, int64_t classes, int64_t inner, const float *dy,
                   const int32_t *labels, float *dx);

// ---- Launch helpers -------------------------------------------------------

constexpr int kThreads = 256;
// Below this many elements (or offsets) a kernel may index in int32_t:
// 2^31 less room for the largest grid stride, so `i += stride` cannot wrap.
constexpr int64_t kInt32Limit = (int64_t(1) << 31) - (int64_t(1) << 24);

// Blocks for `n` elements at kThreads per block, capped so that grid-stride
// loops cover the rest.
inline unsigned blocks_for(int64_t n, const KernelContext &k) {
    int64_t blocks = (n + kThreads - 1) / kThreads;
    int64_t cap = int64_t(k.sm_count) * 32;
    return unsigned(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}
// Throws the launch error of the kernel just queued, naming it.
void check_launch(const char *kernel);

}  // namespace cuda
}  // namespace fm
