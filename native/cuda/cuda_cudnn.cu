// Convolutions through cuDNN, for builds with the `cudnn` feature. Builds
// without it (the default) compile only the "no cuDNN here" answers at the
// bottom, and every convolution takes the im2col + cuBLAS path of
// cuda_conv.cu.
//
// cuDNN's convolution API of descriptors (deprecated in cuDNN 9 in favour
// of its graph API, but complete and capturable in CUDA graphs). For each
// shape and direction the executor asks once, when it compiles a plan; the
// answer is cached per device, so that every plan with that shape runs the
// same algorithm and gives the same bits. The algorithm is the fastest
// that cudnnFind* measures among the deterministic ones (the im2col path
// is deterministic too, and our tests compare runs bit for bit), with FMA
// math (no TF32) unless FERROMETAL_TF32=1, as for cuBLAS.
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_check.h"
#include "cuda_kernels.h"
#include "error.h"

#ifdef FM_WITH_CUDNN
#include <cudnn.h>
#endif

namespace fm {
namespace cuda {

#ifdef FM_WITH_CUDNN

namespace {

// The most workspace an algorithm may need; faster ones beyond it are passed over.
constexpr size_t kMaxWorkspaceBytes = size_t(512) << 20;

void check_dnn(cudnnStatus_t status, const char *call) {
    if (status == CUDNN_STATUS_SUCCESS) return;
    fail(status == CUDNN_STATUS_ALLOC_FAILED ? FM_ERR_OUT_OF_MEMORY : FM_ERR_BACKEND, call, ": ",
         cudnnGetErrorString(status), " (FERROMETAL_CUDNN=0 runs convolutions without cuDNN)");
}

bool fits_int(const ConvShape &s) {
    const int64_t limit = int64_t(1) << 31;
    return s.n * s.c_in * s.h * s.w < limit && s.n * s.c_out * s.out_h * s.out_w < limit &&
           s.c_out * s.c_in * s.kh * s.kw < limit;
}

}  // namespace

struct DnnConv {
    Prim prim = Prim::Conv2d;
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t conv = nullptr;
    int algo = 0;
    size_t workspace = 0;
    float milliseconds = 0;  // as cudnnFind* measured it

    DnnConv() = default;
    DnnConv(const DnnConv &) = delete;
    DnnConv &operator=(const DnnConv &) = delete;
    ~DnnConv() {
        if (x) cudnnDestroyTensorDescriptor(x);
        if (y) cudnnDestroyTensorDescriptor(y);
        if (w) cudnnDestroyFilterDescriptor(w);
        if (conv) cudnnDestroyConvolutionDescriptor(conv);
    }
};

struct DnnLibrary {
    std::mutex mutex;  // the handle's stream is per call; the cache
    cudnnHandle_t handle = nullptr;
    cudaStream_t measure = nullptr;  // where cudnnFind* runs, apart from every plan's work
    bool tf32 = false;
    std::map<std::vector<int64_t>, std::shared_ptr<const DnnConv>> chosen;  // null: cuDNN cannot
};

DnnLibrary *dnn_open(bool tf32) {
    const char *flag = std::getenv("FERROMETAL_CUDNN");
    if (flag && std::strcmp(flag, "0") == 0) return nullptr;
    auto dnn = std::make_unique<DnnLibrary>();
    dnn->tf32 = tf32;
    check_dnn(cudnnCreate(&dnn->handle), "cudnnCreate");
    cudaError_t made = cudaStreamCreateWithFlags(&dnn->measure, cudaStreamNonBlocking);
    if (made != cudaSuccess) {
        cudnnDestroy(dnn->handle);
        check(made, "cudaStreamCreate");
    }
    return dnn.release();
}

void dnn_close(DnnLibrary *dnn) noexcept {
    if (!dnn) return;
    if (dnn->measure) cudaStreamSynchronize(dnn->measure);
    dnn->chosen.clear();
    if (dnn->handle) cudnnDestroy(dnn->handle);
    if (dnn->measure) cudaStreamDestroy(dnn->measure);
    delete dnn;
}

namespace {

// The fastest deterministic algorithm of `perf` (sorted fastest first)
// within the workspace bound; false if there is none.
template <class Perf>
bool pick(const Perf *perf, int count, bool tf32, DnnConv *conv) {
    for (int i = 0; i < count; ++i) {
        const Perf &p = perf[i];
        if (p.status != CUDNN_STATUS_SUCCESS || p.determinism != CUDNN_DETERMINISTIC) continue;
        if (p.memory > kMaxWorkspaceBytes) continue;
        if (!tf32 && p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) continue;
        conv->algo = int(p.algo);
        conv->workspace = p.memory;
        conv->milliseconds = p.time;
        check_dnn(cudnnSetConvolutionMathType(conv->conv, p.mathType), "cudnnSetConvolutionMathType");
        return true;
    }
    return false;
}

// Runs `find` (one of cudnnFind*Algorithm) and picks from what it measured.
template <class Perf, int kCount, class Find>
bool measure(DnnLibrary &dnn, DnnConv *conv, const char *call, Find find) {
    Perf perf[kCount];
    int returned = 0;
    check_dnn(find(kCount, &returned, perf), call);
    return pick(perf, returned, dnn.tf32, conv);
}

std::shared_ptr<const DnnConv> choose(DnnLibrary &dnn, Prim prim, const ConvShape &s) {
    if (s.n == 0 || s.c_out == 0 || s.out_h == 0 || s.out_w == 0 || !fits_int(s)) return nullptr;
    auto conv = std::make_shared<DnnConv>();
    conv->prim = prim;
    check_dnn(cudnnCreateTensorDescriptor(&conv->x), "cudnnCreateTensorDescriptor");
    check_dnn(cudnnCreateTensorDescriptor(&conv->y), "cudnnCreateTensorDescriptor");
    check_dnn(cudnnCreateFilterDescriptor(&conv->w), "cudnnCreateFilterDescriptor");
    check_dnn(cudnnCreateConvolutionDescriptor(&conv->conv), "cudnnCreateConvolutionDescriptor");
    check_dnn(cudnnSetTensor4dDescriptor(conv->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.n), int(s.c_in),
                                         int(s.h), int(s.w)),
              "cudnnSetTensor4dDescriptor");
    check_dnn(cudnnSetTensor4dDescriptor(conv->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.n), int(s.c_out),
                                         int(s.out_h), int(s.out_w)),
              "cudnnSetTensor4dDescriptor");
    check_dnn(cudnnSetFilter4dDescriptor(conv->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, int(s.c_out),
                                         int(s.c_in / s.groups), int(s.kh), int(s.kw)),
              "cudnnSetFilter4dDescriptor");
    check_dnn(cudnnSetConvolution2dDescriptor(conv->conv, int(s.pad_h), int(s.pad_w), int(s.stride_h),
                                              int(s.stride_w), int(s.dilation_h), int(s.dilation_w),
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "cudnnSetConvolution2dDescriptor");
    check_dnn(cudnnSetConvolutionGroupCount(conv->conv, int(s.groups)), "cudnnSetConvolutionGroupCount");
    check_dnn(cudnnSetConvolutionMathType(conv->conv, dnn.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH),
              "cudnnSetConvolutionMathType");
    // A shape cuDNN reads differently (a transposed convolution's output
    // padding it cannot express) stays on the im2col path.
    int n = 0, c = 0, h = 0, w = 0;
    check_dnn(cudnnGetConvolution2dForwardOutputDim(conv->conv, conv->x, conv->w, &n, &c, &h, &w),
              "cudnnGetConvolution2dForwardOutputDim");
    if (n != s.n || c != s.c_out || h != s.out_h || w != s.out_w) return nullptr;

    check_dnn(cudnnSetStream(dnn.handle, dnn.measure), "cudnnSetStream");
    bool found = false;
    switch (prim) {
        case Prim::Conv2d:
            found = measure<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
                dnn, conv.get(), "cudnnFindConvolutionForwardAlgorithm", [&](int n, int *returned, auto *perf) {
                    return cudnnFindConvolutionForwardAlgorithm(dnn.handle, conv->x, conv->w, conv->conv, conv->y, n,
                                                                returned, perf);
                });
            break;
        case Prim::Conv2dBackwardInput:
            found = measure<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
                dnn, conv.get(), "cudnnFindConvolutionBackwardDataAlgorithm", [&](int n, int *returned, auto *perf) {
                    return cudnnFindConvolutionBackwardDataAlgorithm(dnn.handle, conv->w, conv->y, conv->conv, conv->x,
                                                                     n, returned, perf);
                });
            break;
        case Prim::Conv2dBackwardWeight:
            found = measure<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
                dnn, conv.get(), "cudnnFindConvolutionBackwardFilterAlgorithm", [&](int n, int *returned, auto *perf) {
                    return cudnnFindConvolutionBackwardFilterAlgorithm(dnn.handle, conv->x, conv->y, conv->conv,
                                                                       conv->w, n, returned, perf);
                });
            break;
        default: fail(FM_ERR_INTERNAL, "dnn_conv: ", prim_name(prim), " is not a convolution");
    }
    check(cudaStreamSynchronize(dnn.measure), "cudaStreamSynchronize");
    if (!found) return nullptr;
    return conv;
}

}  // namespace

std::shared_ptr<const DnnConv> dnn_conv(DnnLibrary &dnn, Prim prim, const ConvShape &s,
                                        const std::function<float()> &im2col_ms) {
    const std::vector<int64_t> key{int64_t(prim), s.n,        s.c_in,       s.h,          s.w,
                                   s.c_out,       s.kh,       s.kw,         s.stride_h,   s.stride_w,
                                   s.pad_h,       s.pad_w,    s.dilation_h, s.dilation_w, s.groups,
                                   s.out_h,       s.out_w};
    std::lock_guard<std::mutex> lock(dnn.mutex);
    auto found = dnn.chosen.find(key);
    if (found != dnn.chosen.end()) return found->second;
    std::shared_ptr<const DnnConv> conv = choose(dnn, prim, s);
    if (conv && im2col_ms() < conv->milliseconds) conv = nullptr;
    dnn.chosen.emplace(key, conv);
    return conv;
}

size_t dnn_workspace_bytes(const DnnConv &conv) { return conv.workspace; }

void dnn_conv_run(const KernelContext &k, DnnLibrary &dnn, const DnnConv &conv, const float *a, const float *b,
                  float *out) {
    const float one = 1.0f, zero = 0.0f;
    std::lock_guard<std::mutex> lock(dnn.mutex);
    check_dnn(cudnnSetStream(dnn.handle, k.stream), "cudnnSetStream");
    switch (conv.prim) {
        case Prim::Conv2d:  // a = x, b = w
            return check_dnn(cudnnConvolutionForward(dnn.handle, &one, conv.x, a, conv.w, b, conv.conv,
                                                     cudnnConvolutionFwdAlgo_t(conv.algo), k.workspace,
                                                     conv.workspace, &zero, conv.y, out),
                             "cudnnConvolutionForward");
        case Prim::Conv2dBackwardInput:  // a = dy, b = w
            return check_dnn(cudnnConvolutionBackwardData(dnn.handle, &one, conv.w, b, conv.y, a, conv.conv,
                                                          cudnnConvolutionBwdDataAlgo_t(conv.algo), k.workspace,
                                                          conv.workspace, &zero, conv.x, out),
                             "cudnnConvolutionBackwardData");
        case Prim::Conv2dBackwardWeight:  // a = x, b = dy
            return check_dnn(cudnnConvolutionBackwardFilter(dnn.handle, &one, conv.x, a, conv.y, b, conv.conv,
                                                            cudnnConvolutionBwdFilterAlgo_t(conv.algo), k.workspace,
                                                            conv.workspace, &zero, conv.w, out),
                             "cudnnConvolutionBackwardFilter");
        default: fail(FM_ERR_INTERNAL, "dnn_conv_run: ", prim_name(conv.prim), " is not a convolution");
    }
}

#else  // no cuDNN in this build: every convolution takes the im2col path

struct DnnLibrary {};
struct DnnConv {};

DnnLibrary *dnn_open(bool) { return nullptr; }
void dnn_close(DnnLibrary *) noexcept {}
std::shared_ptr<const DnnConv> dnn_conv(DnnLibrary &, Prim, const ConvShape &, const std::function<float()> &) {
    return nullptr;
}
size_t dnn_workspace_bytes(const DnnConv &) { return 0; }
void dnn_conv_run(const KernelContext &, DnnLibrary &, const DnnConv &, const float *, const float *, float *) {
    fail(FM_ERR_INTERNAL, "dnn_conv_run: this build has no cuDNN");
}

#endif

}  // namespace cuda
}  // namespace fm
