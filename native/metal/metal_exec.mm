// Plans on Metal: the Builder of lowering.h spelled in MPSGraph and MPS
// calls. Every decision (which ops, which path, where to cut, what to stage)
// was made by the lowering, which runs and is tested on every platform;
// this file only translates calls, compiles each segment once into an
// MPSGraphExecutable, and encodes a whole run into one command buffer.
//
// The core compiles one plan per input-shape signature and caches it, so an
// executable here is specialised to static shapes, and a new batch size is
// a new plan (compiled, never refused).
#include "metal_context.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "error.h"

namespace fm::metal {

namespace {

MPSDataType data_type(DType dtype) {
    switch (dtype) {
        case DType::F32: return MPSDataTypeFloat32;
        case DType::I32: return MPSDataTypeInt32;
        case DType::Bool: return MPSDataTypeBool;
        case DType::U64: return MPSDataTypeUInt64;
    }
    return MPSDataTypeFloat32;
}

// MPSGraph's shapes; a rank-0 tensor is [1] there.
MPSShape *shape_of(const Shape &shape) {
    NSMutableArray<NSNumber *> *dims = [NSMutableArray arrayWithCapacity:shape.size()];
    for (int64_t d : shape) [dims addObject:@(static_cast<long long>(d))];
    if (shape.empty()) [dims addObject:@1];
    return dims;
}

NSArray<NSNumber *> *numbers(const std::vector<int64_t> &values) {
    NSMutableArray<NSNumber *> *out = [NSMutableArray arrayWithCapacity:values.size()];
    for (int64_t v : values) [out addObject:@(static_cast<long long>(v))];
    return out;
}

// A placeholder or a result of a segment, and the memory bound to it.
struct Binding {
    Location location;
    MPSShape *shape;
    MPSDataType type = MPSDataTypeFloat32;
    MPSGraphTensor *tensor;
};

struct Item {
    enum Kind { Segment, Matmul, Conv, Blit } kind = Segment;
    // Segment
    MPSGraph *graph;
    MPSGraphExecutable *executable;
    std::vector<Binding> feeds, results;  // in the executable's order once compiled
    // Matmul
    MatmulKernel matmul;
    MPSMatrixMultiplication *multiplication;
    MPSMatrixDescriptor *a, *b, *c;
    // Conv
    ConvKernel conv;
    MPSCNNConvolutionDescriptor *descriptor;
    MPSCNNConvolution *forward;
    MPSCNNConvolutionGradient *gradient;
    MPSImage *source_image, *gradient_image, *result_image;
    // Blit
    Location from, to;
    // The plan steps this item runs, for GPU errors (a debug group of the
    // command buffer, reported by the encoders' execution status).
    size_t first_step = SIZE_MAX, last_step = 0;
    std::string steps;
};

struct Exec {
    std::vector<Item> items;
    std::vector<std::string> origins;  // of every plan step
    id<MTLBuffer> scratch;
    std::string what;  // names the plan's steps in GPU error messages
};

}  // namespace
}  // namespace fm::metal

// The weights of an MPSCNNConvolution[Gradient] come from buffers each run
// (reloadWeightsAndBiasesWithCommandBuffer:state:), so the data source only
// describes the convolution and gives zeros to create it.
@interface FMConvolutionWeights : NSObject <MPSCNNConvolutionDataSource>
- (instancetype)initWithDescriptor:(MPSCNNConvolutionDescriptor *)descriptor weightCount:(NSUInteger)count;
@end

@implementation FMConvolutionWeights {
    MPSCNNConvolutionDescriptor *_descriptor;
    NSMutableData *_zeros;
}

- (instancetype)initWithDescriptor:(MPSCNNConvolutionDescriptor *)descriptor weightCount:(NSUInteger)count {
    self = [super init];
    if (self != nil) {
        _descriptor = descriptor;
        _zeros = [NSMutableData dataWithLength:count * sizeof(float)];
    }
    return self;
}

- (MPSDataType)dataType {
    return MPSDataTypeFloat32;
}

- (MPSCNNConvolutionDescriptor *)descriptor {
    return _descriptor;
}

- (void *)weights {
    return _zeros.mutableBytes;
}

- (float *)biasTerms {
    return nullptr;
}

- (BOOL)load {
    return YES;
}

- (void)purge {
}

- (NSString *)label {
    return @"ferrometal";
}

- (id)copyWithZone:(NSZone *)zone {
    (void)zone;
    return self;  // immutable after init
}

@end

namespace fm::metal {

namespace {

// --- the builder: one MPSGraph call per lowering call --------------------------

class GraphBuilder : public Builder {
public:
    GraphBuilder(MetalDevice &device, Exec &exec) : d_(device), exec_(exec) {}

    void begin_segment(size_t) override {
        @autoreleasepool {
            Item item;
            item.kind = Item::Segment;
            item.graph = [[MPSGraph alloc] init];
            exec_.items.push_back(item);
            tensors_ = [NSMutableArray array];
        }
    }

    Tensor input(const Location &from, const Shape &shape, DType dtype) override {
        @autoreleasepool {
            Binding binding;
            binding.location = from;
            binding.shape = shape_of(shape);
            binding.type = data_type(dtype);
            binding.tensor = [graph() placeholderWithShape:binding.shape dataType:binding.type name:nil];
            segment().feeds.push_back(binding);
            covers(segment());
            return add(binding.tensor);
        }
    }

    Tensor op(const Call &c) override {
        @autoreleasepool {
            covers(segment());
            return add(translate(c));
        }
    }

    void output(Tensor tensor, const Location &to) override {
        @autoreleasepool {
            Binding binding;
            binding.location = to;
            binding.tensor = tensors_[NSUInteger(tensor)];
            binding.shape = binding.tensor.shape;
            binding.type = binding.tensor.dataType;
            segment().results.push_back(binding);
        }
    }

    void end_segment() override {
        @autoreleasepool {
            Item &item = segment();
            NSMutableDictionary<MPSGraphTensor *, MPSGraphShapedType *> *feeds = [NSMutableDictionary dictionary];
            for (const Binding &feed : item.feeds) {
                feeds[feed.tensor] = [[MPSGraphShapedType alloc] initWithShape:feed.shape dataType:feed.type];
            }
            NSMutableArray<MPSGraphTensor *> *targets = [NSMutableArray array];
            for (const Binding &result : item.results) [targets addObject:result.tensor];
            item.executable = [item.graph compileWithDevice:d_.graph_device
                                                      feeds:feeds
                                              targetTensors:targets
                                           targetOperations:nil
                                      compilationDescriptor:nil];
            // Inputs and results are passed in the executable's own order.
            item.feeds = reorder(item.feeds, item.executable.feedTensors);
            item.results = reorder(item.results, item.executable.targetTensors);
            tensors_ = nil;
        }
    }

    void matmul_kernel(const MatmulKernel &k) override {
        @autoreleasepool {
            Item item;
            item.kind = Item::Matmul;
            item.matmul = k;
            item.multiplication = [[MPSMatrixMultiplication alloc] initWithDevice:d_.device
                                                                    transposeLeft:k.transpose_a
                                                                   transposeRight:k.transpose_b
                                                                       resultRows:NSUInteger(k.m)
                                                                    resultColumns:NSUInteger(k.n)
                                                                  interiorColumns:NSUInteger(k.k)
                                                                            alpha:1.0
                                                                             beta:0.0];
            item.multiplication.batchSize = NSUInteger(k.batch);
            item.multiplication.label = [NSString stringWithUTF8String:k.origin];
            item.a = matrix(k.a_rows, k.a_cols, k.batch);
            item.b = matrix(k.b_rows, k.b_cols, k.batch);
            item.c = matrix(k.m, k.n, k.batch);
            exec_.items.push_back(item);
            covers(exec_.items.back());
        }
    }

    void conv_kernel(const ConvKernel &k) override {
        @autoreleasepool {
            Item item;
            item.kind = Item::Conv;
            item.conv = k;
            MPSCNNConvolutionDescriptor *descriptor =
                [MPSCNNConvolutionDescriptor cnnConvolutionDescriptorWithKernelWidth:NSUInteger(k.window.kernel_w)
                                                                        kernelHeight:NSUInteger(k.window.kernel_h)
                                                                inputFeatureChannels:NSUInteger(k.c_in)
                                                               outputFeatureChannels:NSUInteger(k.c_out)];
            descriptor.strideInPixelsX = NSUInteger(k.window.stride_w);
            descriptor.strideInPixelsY = NSUInteger(k.window.stride_h);
            descriptor.dilationRateX = NSUInteger(k.window.dilation_w);
            descriptor.dilationRateY = NSUInteger(k.window.dilation_h);
            descriptor.groups = NSUInteger(k.window.groups);
            NSUInteger weights = NSUInteger(k.c_out * k.c_in * k.window.kernel_h * k.window.kernel_w);
            FMConvolutionWeights *source = [[FMConvolutionWeights alloc] initWithDescriptor:descriptor
                                                                                weightCount:weights];
            item.descriptor = descriptor;
            item.forward = [[MPSCNNConvolution alloc] initWithDevice:d_.device weights:source];
            item.forward.offset = MPSOffset{NSInteger(k.offset_x), NSInteger(k.offset_y), 0};
            item.forward.edgeMode = MPSImageEdgeModeZero;
            item.forward.label = [NSString stringWithUTF8String:k.origin];
            MPSImage *x = image(k.c_in, k.w, k.h, k.n);
            MPSImage *y = image(k.c_out, k.out_w, k.out_h, k.n);
            if (k.kind == ConvKernel::Forward) {
                item.source_image = x, item.result_image = y;
            } else {
                item.gradient = [[MPSCNNConvolutionGradient alloc] initWithDevice:d_.device weights:source];
                item.gradient.gradientOption = k.kind == ConvKernel::DataGradient
                                                   ? MPSCNNConvolutionGradientOptionGradientWithData
                                                   : MPSCNNConvolutionGradientOptionGradientWithWeightsAndBias;
                item.gradient.label = item.forward.label;
                // source_image: the forward source (x); gradient_image: dy;
                // result_image: dx (unused for the weights' gradient).
                item.source_image = x, item.gradient_image = y, item.result_image = image(k.c_in, k.w, k.h, k.n);
            }
            exec_.items.push_back(item);
            covers(exec_.items.back());
        }
    }

    void blit(const Location &from, const Location &to) override {
        Item item;
        item.kind = Item::Blit;
        item.from = from, item.to = to;
        exec_.items.push_back(item);
        covers(exec_.items.back());
    }

    void step(size_t index, const Step &step) override {
        step_ = index;
        exec_.origins.push_back(step.origin);
    }

private:
    // Notes that the current step has work in `item`.
    void covers(Item &item) {
        item.first_step = std::min(item.first_step, step_);
        item.last_step = std::max(item.last_step, step_);
    }

    Item &segment() { return exec_.items.back(); }
    MPSGraph *graph() { return segment().graph; }

    Tensor add(MPSGraphTensor *tensor) {
        [tensors_ addObject:tensor];
        return Tensor(tensors_.count - 1);
    }

    static std::vector<Binding> reorder(const std::vector<Binding> &bindings, NSArray<MPSGraphTensor *> *order) {
        std::vector<Binding> out;
        for (NSUInteger i = 0; i < order.count; ++i) {
            for (const Binding &b : bindings) {
                if (b.tensor == order[i]) out.push_back(b);
            }
        }
        return out;
    }

    MPSMatrixDescriptor *matrix(int64_t rows, int64_t columns, int64_t batch) {
        return [MPSMatrixDescriptor matrixDescriptorWithRows:NSUInteger(rows)
                                                     columns:NSUInteger(columns)
                                                    matrices:NSUInteger(batch)
                                                    rowBytes:NSUInteger(columns) * sizeof(float)
                                                 matrixBytes:NSUInteger(rows * columns) * sizeof(float)
                                                    dataType:MPSDataTypeFloat32];
    }

    MPSImage *image(int64_t channels, int64_t width, int64_t height, int64_t count) {
        MPSImageDescriptor *descriptor =
            [MPSImageDescriptor imageDescriptorWithChannelFormat:MPSImageFeatureChannelFormatFloat32
                                                           width:NSUInteger(width)
                                                          height:NSUInteger(height)
                                                 featureChannels:NSUInteger(channels)
                                                  numberOfImages:NSUInteger(count)
                                                           usage:MTLTextureUsageShaderRead | MTLTextureUsageShaderWrite];
        return [[MPSImage alloc] initWithDevice:d_.device imageDescriptor:descriptor];
    }

    MPSGraphTensor *t(const Call &c, size_t i) { return tensors_[NSUInteger(c.inputs.at(i))]; }

    MPSGraphTensor *translate(const Call &c) {
        MPSGraph *g = graph();
        MPSDataType type = data_type(c.dtype);
        switch (c.op) {
            case Op::Constant:
                if (c.dtype == DType::U64) {
                    uint64_t bits = c.bits;
                    NSData *data = [NSData dataWithBytes:&bits length:sizeof bits];
                    return [g constantWithData:data shape:@[ @1 ] dataType:type];
                }
                if (c.shape.empty()) return [g constantWithScalar:c.value dataType:type];
                return [g constantWithScalar:c.value shape:shape_of(c.shape) dataType:type];
            case Op::Cast: return [g castTensor:t(c, 0) toType:type name:@"cast"];
            case Op::Neg: return [g negativeWithTensor:t(c, 0) name:nil];
            case Op::Abs: return [g absoluteWithTensor:t(c, 0) name:nil];
            case Op::Exp: return [g exponentWithTensor:t(c, 0) name:nil];
            case Op::Log: return [g logarithmWithTensor:t(c, 0) name:nil];
            case Op::Sqrt: return [g squareRootWithTensor:t(c, 0) name:nil];
            case Op::Rsqrt: return [g reciprocalSquareRootWithTensor:t(c, 0) name:nil];
            case Op::Sigmoid: return [g sigmoidWithTensor:t(c, 0) name:nil];
            case Op::Tanh: return [g tanhWithTensor:t(c, 0) name:nil];
            case Op::Erf: return [g erfWithTensor:t(c, 0) name:nil];
            case Op::Relu: return [g reLUWithTensor:t(c, 0) name:nil];
            case Op::Identity: return [g identityWithTensor:t(c, 0) name:nil];
            case Op::Add: return [g additionWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Sub: return [g subtractionWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Mul: return [g multiplicationWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Div: return [g divisionWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Pow: return [g powerWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::MaxNaN:
                return [g maximumWithNaNPropagationWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::MinNaN:
                return [g minimumWithNaNPropagationWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Equal: return [g equalWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::NotEqual: return [g notEqualWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Less: return [g lessThanWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::LessEqual:
                return [g lessThanOrEqualToWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Greater: return [g greaterThanWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::GreaterEqual:
                return [g greaterThanOrEqualToWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::BitXor: return [g bitwiseXORWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::ShiftRight:
                return [g bitwiseRightShiftWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Select:
                return [g selectWithPredicateTensor:t(c, 0)
                                truePredicateTensor:t(c, 1)
                               falsePredicateTensor:t(c, 2)
                                               name:nil];
            case Op::Clamp:
                return [g clampWithTensor:t(c, 0) minValueTensor:t(c, 1) maxValueTensor:t(c, 2) name:nil];
            case Op::Reshape: return [g reshapeTensor:t(c, 0) withShape:shape_of(c.shape) name:nil];
            case Op::Transpose: return [g transposeTensor:t(c, 0) permutation:numbers(c.ints) name:nil];
            case Op::Broadcast: return [g broadcastTensor:t(c, 0) toShape:shape_of(c.shape) name:nil];
            case Op::Slice: {
                std::vector<int64_t> ones(c.ints.size(), 1);
                return [g sliceTensor:t(c, 0)
                               starts:numbers(c.ints)
                                 ends:numbers(c.ints2)
                              strides:numbers(ones)
                                 name:nil];
            }
            case Op::Pad:
                return [g padTensor:t(c, 0)
                    withPaddingMode:MPSGraphPaddingModeConstant
                        leftPadding:numbers(c.ints)
                       rightPadding:numbers(c.ints2)
                      constantValue:c.value
                               name:nil];
            case Op::Concat: {
                NSMutableArray<MPSGraphTensor *> *parts = [NSMutableArray array];
                for (size_t i = 0; i < c.inputs.size(); ++i) [parts addObject:t(c, i)];
                return [g concatTensors:parts dimension:NSInteger(c.axis) name:nil];
            }
            case Op::ReduceSum: return [g reductionSumWithTensor:t(c, 0) axes:numbers(c.ints) name:nil];
            case Op::ReduceMax: return [g reductionMaximumWithTensor:t(c, 0) axes:numbers(c.ints) name:nil];
            case Op::ReduceMin: return [g reductionMinimumWithTensor:t(c, 0) axes:numbers(c.ints) name:nil];
            case Op::ArgMax: {
                MPSGraphTensor *index = [g reductionArgMaximumWithTensor:t(c, 0) axis:NSInteger(c.axis) name:nil];
                return [g castTensor:index toType:MPSDataTypeInt32 name:@"argmax"];
            }
            case Op::Softmax: return [g softMaxWithTensor:t(c, 0) axis:NSInteger(c.axis) name:nil];
            case Op::MatMul:
                return [g matrixMultiplicationWithPrimaryTensor:t(c, 0) secondaryTensor:t(c, 1) name:nil];
            case Op::Conv2d:
                return [g convolution2DWithSourceTensor:t(c, 0) weightsTensor:t(c, 1) descriptor:conv(c.window) name:nil];
            case Op::Conv2dDataGradient:
                return [g convolution2DDataGradientWithIncomingGradientTensor:t(c, 0)
                                                                weightsTensor:t(c, 1)
                                                                  outputShape:shape_of(c.shape)
                                                 forwardConvolutionDescriptor:conv(c.window)
                                                                         name:nil];
            case Op::Conv2dWeightsGradient:
                return [g convolution2DWeightsGradientWithIncomingGradientTensor:t(c, 0)
                                                                    sourceTensor:t(c, 1)
                                                                     outputShape:shape_of(c.shape)
                                                    forwardConvolutionDescriptor:conv(c.window)
                                                                            name:nil];
            case Op::MaxPool2d: return [g maxPooling2DWithSourceTensor:t(c, 0) descriptor:pool(c.window) name:nil];
            case Op::AvgPool2d: return [g avgPooling2DWithSourceTensor:t(c, 0) descriptor:pool(c.window) name:nil];
            case Op::MaxPool2dGradient:
                return [g maxPooling2DGradientWithGradientTensor:t(c, 0)
                                                    sourceTensor:t(c, 1)
                                                      descriptor:pool(c.window)
                                                            name:nil];
            case Op::AvgPool2dGradient:
                return [g avgPooling2DGradientWithGradientTensor:t(c, 0)
                                                    sourceTensor:t(c, 1)
                                                      descriptor:pool(c.window)
                                                            name:nil];
            case Op::Gather:
                return [g gatherWithUpdatesTensor:t(c, 0)
                                    indicesTensor:t(c, 1)
                                             axis:NSUInteger(c.axis)
                                  batchDimensions:0
                                             name:nil];
            case Op::ScatterAdd:
                return [g scatterWithUpdatesTensor:t(c, 0)
                                     indicesTensor:t(c, 1)
                                             shape:shape_of(c.shape)
                                              axis:NSInteger(c.axis)
                                              mode:MPSGraphScatterModeAdd
                                              name:nil];
            case Op::OneHot:
                return [g oneHotWithIndicesTensor:t(c, 0)
                                            depth:NSUInteger(c.ints.at(0))
                                             axis:NSUInteger(c.axis)
                                         dataType:type
                                          onValue:1.0
                                         offValue:0.0
                                             name:nil];
            case Op::Coordinate:
                return [g coordinateAlongAxis:NSInteger(c.axis) withShape:shape_of(c.shape) name:nil];
            case Op::Count: break;
        }
        return nil;  // unreachable: the lowering only makes the ops above
    }

    static MPSGraphConvolution2DOpDescriptor *conv(const Window &w) {
        return [MPSGraphConvolution2DOpDescriptor descriptorWithStrideInX:NSUInteger(w.stride_w)
                                                                strideInY:NSUInteger(w.stride_h)
                                                          dilationRateInX:NSUInteger(w.dilation_w)
                                                          dilationRateInY:NSUInteger(w.dilation_h)
                                                                   groups:NSUInteger(w.groups)
                                                              paddingLeft:NSUInteger(w.pad_left)
                                                             paddingRight:NSUInteger(w.pad_right)
                                                               paddingTop:NSUInteger(w.pad_top)
                                                            paddingBottom:NSUInteger(w.pad_bottom)
                                                             paddingStyle:MPSGraphPaddingStyleExplicit
                                                               dataLayout:MPSGraphTensorNamedDataLayoutNCHW
                                                            weightsLayout:MPSGraphTensorNamedDataLayoutOIHW];
    }

    static MPSGraphPooling2DOpDescriptor *pool(const Window &w) {
        MPSGraphPooling2DOpDescriptor *descriptor =
            [MPSGraphPooling2DOpDescriptor descriptorWithKernelWidth:NSUInteger(w.kernel_w)
                                                        kernelHeight:NSUInteger(w.kernel_h)
                                                           strideInX:NSUInteger(w.stride_w)
                                                           strideInY:NSUInteger(w.stride_h)
                                                     dilationRateInX:NSUInteger(w.dilation_w)
                                                     dilationRateInY:NSUInteger(w.dilation_h)
                                                         paddingLeft:NSUInteger(w.pad_left)
                                                        paddingRight:NSUInteger(w.pad_right)
                                                          paddingTop:NSUInteger(w.pad_top)
                                                       paddingBottom:NSUInteger(w.pad_bottom)
                                                        paddingStyle:MPSGraphPaddingStyleExplicit
                                                          dataLayout:MPSGraphTensorNamedDataLayoutNCHW];
        descriptor.includeZeroPadToAverage = w.count_include_pad;
        return descriptor;
    }

    MetalDevice &d_;
    Exec &exec_;
    NSMutableArray<MPSGraphTensor *> *tensors_;
    size_t step_ = 0;
};

// --- running -------------------------------------------------------------------

// The buffer and offset of a location in this run.
struct Memory {
    id<MTLBuffer> buffer;
    size_t offset = 0;
};

class Resolver {
public:
    Resolver(const Exec &exec, const Bindings &b) : exec_(exec), b_(b) {}

    // Throws FM_ERR_INTERNAL for storage the core did not bind (outside any pool).
    Memory operator()(const Location &loc) const {
        const void *base = nullptr;
        size_t offset = loc.offset;
        switch (loc.space) {
            case Space::Arena: base = b_.arena; break;
            case Space::Variable: base = at(b_.variables, loc.index); break;
            case Space::Constant: base = at(b_.constants, loc.index); break;
            case Space::Feed: base = at(b_.feeds, loc.index); break;
            case Space::Output: base = at(b_.outputs, loc.index); break;
            case Space::Scratch: return {exec_.scratch, offset};
            case Space::RunIndex: return {nil, 0};
        }
        if (base == nullptr) fail(FM_ERR_INTERNAL, "metal: ", space_name(loc.space), " ", loc.index, " is not bound");
        return {buffer_of(base), offset};
    }

private:
    template <class T>
    static const void *at(const std::vector<T> &list, uint32_t index) {
        return index < list.size() ? list[index] : nullptr;
    }
    const Exec &exec_;
    const Bindings &b_;
};

MPSGraphTensorData *tensor_data(MetalDevice &d, const Binding &binding, const Memory &memory, uint64_t run_index) {
    if (binding.location.space == Space::RunIndex) {
        NSData *data = [NSData dataWithBytes:&run_index length:sizeof run_index];
        return [[MPSGraphTensorData alloc] initWithDevice:d.graph_device
                                                     data:data
                                                    shape:binding.shape
                                                 dataType:binding.type];
    }
    if (memory.offset == 0) {
        return [[MPSGraphTensorData alloc] initWithMTLBuffer:memory.buffer shape:binding.shape dataType:binding.type];
    }
    MPSNDArrayDescriptor *descriptor = [MPSNDArrayDescriptor descriptorWithDataType:binding.type shape:binding.shape];
    MPSNDArray *array = [[MPSNDArray alloc] initWithBuffer:memory.buffer offset:memory.offset descriptor:descriptor];
    return [[MPSGraphTensorData alloc] initWithMPSNDArray:array];
}

// Image-slice buffers ([N][S][H][W][P] floats) to and from an MPSImage's
// texture array, one blit per slice (slice n * S + s of the array).
void copy_image(id<MTLBlitCommandEncoder> blit, MPSImage *image, const Memory &memory, int64_t count,
                int64_t slices, int64_t pixel, bool into_image) {
    NSUInteger row = image.width * NSUInteger(pixel) * sizeof(float);
    NSUInteger plane = row * image.height;
    MTLSize size = MTLSizeMake(image.width, image.height, 1);
    for (int64_t i = 0; i < count * slices; ++i) {
        NSUInteger offset = memory.offset + NSUInteger(i) * plane;
        if (into_image) {
            [blit copyFromBuffer:memory.buffer
                       sourceOffset:offset
                  sourceBytesPerRow:row
                sourceBytesPerImage:plane
                         sourceSize:size
                          toTexture:image.texture
                   destinationSlice:NSUInteger(i)
                   destinationLevel:0
                  destinationOrigin:MTLOriginMake(0, 0, 0)];
        } else {
            [blit copyFromTexture:image.texture
                             sourceSlice:NSUInteger(i)
                             sourceLevel:0
                            sourceOrigin:MTLOriginMake(0, 0, 0)
                              sourceSize:size
                                toBuffer:memory.buffer
                       destinationOffset:offset
                  destinationBytesPerRow:row
                destinationBytesPerImage:plane];
        }
    }
}

// `resolve` cannot throw here: run_plan resolved the same locations first.
void encode_conv(MPSCommandBuffer *commands, const Item &item, const Resolver &resolve) {
    const ConvKernel &k = item.conv;
    id<MTLBlitCommandEncoder> in = [commands blitCommandEncoder];
    bool forward_source = k.kind != ConvKernel::DataGradient;
    // Forward and weights gradient read x; the data gradient reads dy into
    // the gradient image.
    if (forward_source) {
        copy_image(in, item.source_image, resolve(k.source), k.n, k.in_slices, k.in_pixel, true);
    } else {
        copy_image(in, item.gradient_image, resolve(k.source), k.n, k.out_slices, k.out_pixel, true);
    }
    if (k.kind == ConvKernel::WeightsGradient) {
        copy_image(in, item.gradient_image, resolve(k.gradient), k.n, k.out_slices, k.out_pixel, true);
    }
    [in endEncoding];
    if (k.kind != ConvKernel::WeightsGradient) {
        Memory w = resolve(k.weights);
        MPSCNNConvolutionWeightsAndBiasesState *state =
            [[MPSCNNConvolutionWeightsAndBiasesState alloc] initWithWeights:w.buffer
                                                              weightsOffset:w.offset
                                                                     biases:nil
                                                               biasesOffset:0
                                                  cnnConvolutionDescriptor:item.descriptor];
        if (k.kind == ConvKernel::Forward) {
            [item.forward reloadWeightsAndBiasesWithCommandBuffer:commands state:state];
        } else {
            [item.gradient reloadWeightsAndBiasesWithCommandBuffer:commands state:state];
        }
    }
    id<MTLBlitCommandEncoder> out = nil;
    if (k.kind == ConvKernel::Forward) {
        [item.forward encodeToCommandBuffer:commands sourceImage:item.source_image destinationImage:item.result_image];
        out = [commands blitCommandEncoder];
        copy_image(out, item.result_image, resolve(k.result), k.n, k.out_slices, k.out_pixel, false);
    } else {
        // The gradient state the forward kernel would produce for these shapes.
        MPSCNNConvolutionGradientState *state = [item.forward resultStateForSourceImage:item.source_image
                                                                         sourceStates:nil
                                                                     destinationImage:item.gradient_image];
        [item.gradient encodeToCommandBuffer:commands
                              sourceGradient:item.gradient_image
                                 sourceImage:item.source_image
                               gradientState:state
                         destinationGradient:item.result_image];
        out = [commands blitCommandEncoder];
        if (k.kind == ConvKernel::DataGradient) {
            copy_image(out, item.result_image, resolve(k.result), k.n, k.in_slices, k.in_pixel, false);
        } else {
            Memory dw = resolve(k.result);
            NSUInteger bytes = NSUInteger(k.c_out * k.c_in * k.window.kernel_h * k.window.kernel_w) * sizeof(float);
            [out copyFromBuffer:state.gradientForWeights
                   sourceOffset:0
                       toBuffer:dw.buffer
              destinationOffset:dw.offset
                           size:bytes];
        }
    }
    [out endEncoding];
}

}  // namespace

void *compile_plan(void *device_ctx, const Plan &plan) {
    MetalDevice &d = device_of(device_ctx);
    auto exec = std::make_unique<Exec>();
    GraphBuilder builder(d, *exec);
    // Throws FM_ERR_UNSUPPORTED naming the op for anything not lowerable,
    // here, at compile; never during a step.
    Lowered lowered = lower(plan, d.options, builder);
    if (lowered.scratch_bytes > 0) {
        @autoreleasepool {
            exec->scratch = [d.device newBufferWithLength:lowered.scratch_bytes options:MTLResourceStorageModePrivate];
        }
        if (exec->scratch == nil) {
            fail(FM_ERR_OUT_OF_MEMORY, "metal: no memory for the ", lowered.scratch_bytes,
                 " bytes of scratch this plan's MPS kernels need");
        }
    }
    static const char *const kinds[] = {"MPSGraph segment", "MPSMatrixMultiplication", "MPSCNNConvolution",
                                        "blit"};
    for (Item &item : exec->items) {
        std::string where = item.first_step == item.last_step
                                ? "step " + std::to_string(item.first_step) + " ('" +
                                      exec->origins.at(item.first_step) + "')"
                                : "steps " + std::to_string(item.first_step) + " ('" +
                                      exec->origins.at(item.first_step) + "') to " + std::to_string(item.last_step) +
                                      " ('" + exec->origins.at(item.last_step) + "')";
        item.steps = std::string(kinds[item.kind]) + " of " + where;
    }
    std::string first = plan.steps.empty() ? "" : plan.steps.front().origin;
    std::string last = plan.steps.empty() ? "" : plan.steps.back().origin;
    exec->what = "running a plan of " + std::to_string(plan.steps.size()) + " steps ('" + first + "' to '" + last +
                 "', " + std::to_string(lowered.segments) + " MPSGraph segments, " +
                 std::to_string(lowered.kernels) + " MPS kernels)";
    return exec.release();
}

void run_plan(void *device_ctx, void *exec_ctx, const Plan &, const Bindings &bindings, void *stream_ctx) {
    MetalDevice &d = device_of(device_ctx);
    Exec &exec = *static_cast<Exec *>(exec_ctx);
    Stream &stream = stream_of(d, stream_ctx);
    Resolver resolve(exec, bindings);
    // Every location resolved before any pool: a missing binding throws here.
    std::vector<std::vector<Memory>> feeds, results;
    std::vector<std::pair<Memory, Memory>> blits;
    for (const Item &item : exec.items) {
        std::vector<Memory> in, out;
        for (const Binding &b : item.feeds) in.push_back(resolve(b.location));
        for (const Binding &b : item.results) out.push_back(resolve(b.location));
        feeds.push_back(in), results.push_back(out);
        if (item.kind == Item::Blit) blits.emplace_back(resolve(item.from), resolve(item.to));
        if (item.kind == Item::Matmul) {
            feeds.back() = {resolve(item.matmul.a), resolve(item.matmul.b), resolve(item.matmul.c)};
        }
        if (item.kind == Item::Conv) {
            const ConvKernel &k = item.conv;
            for (const Location *loc : {&k.source, &k.result}) resolve(*loc);
            if (k.kind == ConvKernel::WeightsGradient) resolve(k.gradient);
            if (k.kind != ConvKernel::WeightsGradient) resolve(k.weights);
        }
    }
    acquire_slot(stream);  // throws the stream's pending GPU error
    MPSCommandBuffer *commands = new_commands(stream);
    @autoreleasepool {
        size_t next_blit = 0;
        for (size_t i = 0; i < exec.items.size(); ++i) {
            const Item &item = exec.items[i];
            [commands pushDebugGroup:[NSString stringWithUTF8String:item.steps.c_str()]];
            switch (item.kind) {
                case Item::Segment: {
                    NSMutableArray<MPSGraphTensorData *> *inputs = [NSMutableArray array];
                    NSMutableArray<MPSGraphTensorData *> *outputs = [NSMutableArray array];
                    for (size_t k = 0; k < item.feeds.size(); ++k) {
                        [inputs addObject:tensor_data(d, item.feeds[k], feeds[i][k], bindings.run_index)];
                    }
                    for (size_t k = 0; k < item.results.size(); ++k) {
                        [outputs addObject:tensor_data(d, item.results[k], results[i][k], bindings.run_index)];
                    }
                    [item.executable encodeToCommandBuffer:commands
                                               inputsArray:inputs
                                              resultsArray:outputs
                                       executionDescriptor:nil];
                    break;
                }
                case Item::Matmul: {
                    const std::vector<Memory> &m = feeds[i];
                    MPSMatrix *a = [[MPSMatrix alloc] initWithBuffer:m[0].buffer offset:m[0].offset descriptor:item.a];
                    MPSMatrix *b = [[MPSMatrix alloc] initWithBuffer:m[1].buffer offset:m[1].offset descriptor:item.b];
                    MPSMatrix *c = [[MPSMatrix alloc] initWithBuffer:m[2].buffer offset:m[2].offset descriptor:item.c];
                    [item.multiplication encodeToCommandBuffer:commands leftMatrix:a rightMatrix:b resultMatrix:c];
                    break;
                }
                case Item::Conv: encode_conv(commands, item, resolve); break;
                case Item::Blit: {
                    const auto &[from, to] = blits[next_blit++];
                    id<MTLBlitCommandEncoder> blit = [commands blitCommandEncoder];
                    [blit copyFromBuffer:from.buffer
                            sourceOffset:from.offset
                                toBuffer:to.buffer
                       destinationOffset:to.offset
                                    size:item.to.bytes];
                    [blit endEncoding];
                    break;
                }
            }
            [commands popDebugGroup];
        }
    }
    commit(stream, commands, exec.what);
    if (stream_ctx == nullptr) synchronize(stream);
}

void release_plan(void *, void *exec_ctx) {
    @autoreleasepool {
        delete static_cast<Exec *>(exec_ctx);
    }
}

}  // namespace fm::metal
