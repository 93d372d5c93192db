// The Metal backend's lowering, the platform-independent half: a plan
// becomes calls on an abstract Builder. metal_backend.mm implements the
// Builder with MPSGraph and MPS kernels; tests implement it with a recorder
// (recording_builder.h), so every decision below runs on Linux too.
//
// What the lowering decides, so that the Objective-C++ side does not:
// - how each primitive and fused instruction is spelled in MPSGraph ops
//   (compositions such as GELU, log-softmax, pick, the dropout hash);
// - where the plan is cut into MPSGraph segments around MPS kernels (the
//   hybrid path), which values cross a cut through memory, and the layout
//   conversions a kernel needs (NCHW <-> image slices, OIHW <-> OHWI);
// - which results would overwrite memory the same executable still reads
//   (in-place optimizer updates), and routes those through scratch + a blit;
// - every refusal: an op that cannot be lowered fails here, at compile,
//   with FM_ERR_UNSUPPORTED naming it, never during a step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "plan.h"

namespace fm::metal {

// Per op family, how it runs: inside the MPSGraph, or as an MPS kernel
// (MPSCNNConvolution / MPSCNNConvolutionGradient, MPSMatrixMultiplication)
// encoded into the same command buffer between graph segments.
enum class Path : uint8_t { Graph, Kernel };

struct Options {
    Path conv = Path::Graph;    // Conv2d, Conv2dBackwardInput, Conv2dBackwardWeight
    Path matmul = Path::Graph;  // MatMul
    // Parses FERROMETAL_METAL_KERNELS: a comma list of "conv", "matmul",
    // or "all" / "none" (empty: the defaults above). Throws
    // FM_ERR_INVALID_ARGUMENT naming an unknown entry.
    static Options parse(const char *value);
};

// Element types the builder sees: the plan's two, plus the lowering's own
// (comparisons give Bool; the dropout hash works in U64).
enum class DType : uint8_t { F32, I32, Bool, U64 };
const char *dtype_name(DType dtype);

// Memory layouts named in calls.
enum class Layout : uint8_t {
    None,
    NCHW,          // activations, as the plan stores them
    OIHW,          // conv weights, as the plan stores them
    OHWI,          // MPSCNNConvolution's weights
    ImageSlices,   // [N][S][H][W][P]: MPSImage feature slices of P channels
};
const char *layout_name(Layout layout);

// A byte range bound at run time.
enum class Space : uint8_t {
    Arena, Variable, Constant, Feed, Output,  // the plan's storage (Bindings)
    Scratch,   // the lowering's own buffer, `Lowered::scratch_bytes` long
    RunIndex,  // the run counter as one u64, written by the backend per run
};
const char *space_name(Space space);

struct Location {
    Space space = Space::Arena;
    uint32_t index = 0;
    size_t offset = 0;
    size_t bytes = 0;
    bool overlaps(const Location &other) const;
    bool operator==(const Location &other) const;
};

// One MPSGraph method each (the .mm maps them one to one).
enum class Op : uint8_t {
    Constant,                  // value, shape, dtype
    Cast,                      // (x) to dtype
    Neg, Abs, Exp, Log, Sqrt, Rsqrt, Sigmoid, Tanh, Erf, Relu,
    Identity,                  // a copy: a result that is a segment input, or a second target
    Add, Sub, Mul, Div, Pow, MaxNaN, MinNaN,
    Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual,  // -> Bool
    BitXor, ShiftRight,        // U64
    Select,                    // (bool, a, b)
    Clamp,                     // (x, lo, hi)
    Reshape,                   // to shape
    Transpose,                 // ints: permutation
    Broadcast,                 // to shape
    Slice,                     // ints: starts, ints2: ends (stride 1)
    Pad,                       // ints: before, ints2: after, value
    Concat,                    // axis
    ReduceSum, ReduceMax, ReduceMin,  // ints: axes (dims kept)
    ArgMax,                    // axis (dim kept) -> I32
    Softmax,                   // axis
    MatMul,                    // (a, b), batch dims broadcast
    Conv2d,                    // (x, w), window
    Conv2dDataGradient,        // (dy, w), window, shape = the input's
    Conv2dWeightsGradient,     // (dy, x), window, shape = the weights'
    MaxPool2d, AvgPool2d,      // (x), window
    MaxPool2dGradient,         // (dy, x), window
    AvgPool2dGradient,         // (dy, x: only its shape), window
    Gather,                    // (table, indices), axis
    ScatterAdd,                // (updates, indices), axis, shape
    OneHot,                    // (indices), depth (ints[0]), axis -> F32
    Coordinate,                // axis, shape -> I32: the index along axis
    Count
};
const char *op_name(Op op);

// Convolution and pooling windows, as MPSGraph's descriptors take them.
struct Window {
    int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1;
    int64_t dilation_h = 1, dilation_w = 1;
    int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
    int64_t groups = 1;
    bool count_include_pad = false;
    Layout data = Layout::NCHW, weights = Layout::OIHW;
};

using Tensor = int32_t;  // a builder's handle for a graph tensor

struct Call {
    Op op = Op::Count;
    std::vector<Tensor> inputs;
    Shape shape;  // of the result
    DType dtype = DType::F32;
    std::vector<int64_t> ints, ints2;
    int64_t axis = 0;
    double value = 0;
    uint64_t bits = 0;  // U64 constants
    Window window;
};

// MPSMatrixMultiplication over buffers: C[b] = op(A[b]) op(B[b]).
struct MatmulKernel {
    Location a, b, c;
    int64_t batch = 1, m = 0, n = 0, k = 0;
    bool transpose_a = false, transpose_b = false;
    int64_t a_rows = 0, a_cols = 0, b_rows = 0, b_cols = 0;  // as stored
    const char *origin = "";
};

// MPSCNNConvolution (Forward) or MPSCNNConvolutionGradient (Data /
// Weights) over MPSImages filled from and drained to buffers in
// ImageSlices layout by blits; weights in OHWI.
struct ConvKernel {
    enum Kind : uint8_t { Forward, DataGradient, WeightsGradient } kind = Forward;
    Location source;       // ImageSlices: x (Forward, WeightsGradient) or dy (DataGradient)
    Location gradient;     // ImageSlices: dy for WeightsGradient; unused otherwise
    Location weights;      // OHWI (read; written by WeightsGradient)
    Location result;       // ImageSlices, or OHWI weights for WeightsGradient
    int64_t n = 0, c_in = 0, h = 0, w = 0, c_out = 0, out_h = 0, out_w = 0;
    int64_t in_slices = 0, in_pixel = 0, out_slices = 0, out_pixel = 0;  // S and P of each side
    Window window;
    // MPSCNNKernel.offset that centres the window the way explicit padding does.
    int64_t offset_x = 0, offset_y = 0;
    const char *origin = "";
};

class Builder {
public:
    virtual ~Builder() = default;
    // A new MPSGraph (one executable); `index` counts segments from 0.
    virtual void begin_segment(size_t index) = 0;
    // A placeholder bound at run time to `from`.
    virtual Tensor input(const Location &from, const Shape &shape, DType dtype) = 0;
    virtual Tensor op(const Call &call) = 0;
    // `tensor` is a target of the segment, written to `to`.
    virtual void output(Tensor tensor, const Location &to) = 0;
    virtual void end_segment() = 0;
    // Work between segments, encoded into the same command buffer.
    virtual void matmul_kernel(const MatmulKernel &kernel) = 0;
    virtual void conv_kernel(const ConvKernel &kernel) = 0;
    virtual void blit(const Location &from, const Location &to) = 0;
    // Step `index` of the plan is lowered next (its calls follow), so the
    // backend can name the steps of each segment and kernel in GPU errors.
    virtual void step(size_t index, const Step &step) {
        (void)index;
        (void)step;
    }
};

struct Lowered {
    size_t segments = 0, kernels = 0, blits = 0;
    size_t scratch_bytes = 0;
};

// Lowers `plan` into `builder`. Throws FM_ERR_UNSUPPORTED naming the op
// (and its origin) for anything this backend cannot run.
Lowered lower(const Plan &plan, const Options &options, Builder &builder);

// MPSImage packing of `channels` feature channels: P channels per pixel
// (1, 2 or 4) and S slices.
void image_slices(int64_t channels, int64_t *slices, int64_t *pixel);

}  // namespace fm::metal
