// Declarations for checking native/metal on Linux (see ../README.md):
// the part of MetalPerformanceShaders the Metal backend uses. Not Apple's header.
#pragma once

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

NS_ASSUME_NONNULL_BEGIN

typedef NS_ENUM(uint32_t, MPSDataType) {
    MPSDataTypeFloatBit = 0x10000000,
    MPSDataTypeSignedBit = 0x20000000,
    MPSDataTypeAlternateEncodingBit = 0x80000000,
    MPSDataTypeFloat32 = MPSDataTypeFloatBit | 32,
    MPSDataTypeInt32 = MPSDataTypeSignedBit | 32,
    MPSDataTypeUInt64 = 64,
    MPSDataTypeBool = MPSDataTypeAlternateEncodingBit | 8,
};

typedef NS_ENUM(NSUInteger, MPSImageEdgeMode) {
    MPSImageEdgeModeZero = 0,
};

typedef NS_ENUM(NSUInteger, MPSImageFeatureChannelFormat) {
    MPSImageFeatureChannelFormatFloat32 = 4,
};

typedef NS_OPTIONS(NSUInteger, MPSCNNConvolutionGradientOption) {
    MPSCNNConvolutionGradientOptionGradientWithData = 1,
    MPSCNNConvolutionGradientOptionGradientWithWeightsAndBias = 2,
};

typedef struct {
    NSInteger x, y, z;
} MPSOffset;

typedef NSArray<NSNumber *> MPSShape;

FM_SDK_EXTERN BOOL MPSSupportsMTLDevice(id<MTLDevice> _Nullable device);

@interface MPSKernel : NSObject <NSCopying>
@property (nullable, copy, atomic) NSString *label;
@end

@interface MPSCommandBuffer : NSObject <MTLCommandBuffer>
+ (instancetype)commandBufferFromCommandQueue:(id<MTLCommandQueue>)commandQueue API_AVAILABLE(macos(10.15));
+ (instancetype)commandBufferWithCommandBuffer:(id<MTLCommandBuffer>)commandBuffer API_AVAILABLE(macos(10.15));
@end

@interface MPSState : NSObject
@end

@interface MPSNNGradientState : MPSState
@end

@interface MPSImageDescriptor : NSObject <NSCopying>
+ (instancetype)imageDescriptorWithChannelFormat:(MPSImageFeatureChannelFormat)channelFormat width:(NSUInteger)width height:(NSUInteger)height featureChannels:(NSUInteger)featureChannels numberOfImages:(NSUInteger)numberOfImages usage:(MTLTextureUsage)usage;
@end

@interface MPSImage : NSObject
- (instancetype)initWithDevice:(id<MTLDevice>)device imageDescriptor:(MPSImageDescriptor *)imageDescriptor;
@property (readonly, nonatomic) NSUInteger width;
@property (readonly, nonatomic) NSUInteger height;
@property (readonly, nonatomic) id<MTLTexture> texture;
@end

@interface MPSCNNConvolutionDescriptor : NSObject <NSCopying>
+ (instancetype)cnnConvolutionDescriptorWithKernelWidth:(NSUInteger)kernelWidth kernelHeight:(NSUInteger)kernelHeight inputFeatureChannels:(NSUInteger)inputFeatureChannels outputFeatureChannels:(NSUInteger)outputFeatureChannels;
@property (readwrite, nonatomic) NSUInteger strideInPixelsX;
@property (readwrite, nonatomic) NSUInteger strideInPixelsY;
@property (readwrite, nonatomic) NSUInteger groups;
@property (readwrite, nonatomic) NSUInteger dilationRateX;
@property (readwrite, nonatomic) NSUInteger dilationRateY;
@end

@protocol MPSCNNConvolutionDataSource <NSCopying, NSObject>
- (MPSDataType)dataType;
- (MPSCNNConvolutionDescriptor *_Nonnull)descriptor;
- (void *_Nonnull)weights;
- (float *_Nullable)biasTerms;
- (BOOL)load;
- (void)purge;
- (NSString *_Nullable)label;
@end

@interface MPSCNNConvolutionWeightsAndBiasesState : MPSState
- (instancetype)initWithWeights:(id<MTLBuffer>)weights weightsOffset:(NSUInteger)weightsOffset biases:(nullable id<MTLBuffer>)biases biasesOffset:(NSUInteger)biasesOffset cnnConvolutionDescriptor:(MPSCNNConvolutionDescriptor *)descriptor API_AVAILABLE(macos(10.15));
@end

@interface MPSCNNConvolutionGradientState : MPSNNGradientState
@property (readonly, nonatomic) id<MTLBuffer> gradientForWeights;
@end

@interface MPSCNNKernel : MPSKernel
@property (readwrite, nonatomic) MPSOffset offset;
@property (readwrite, nonatomic) MPSImageEdgeMode edgeMode;
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer sourceImage:(MPSImage *)sourceImage destinationImage:(MPSImage *)destinationImage;
@end

@interface MPSCNNConvolution : MPSCNNKernel
- (instancetype)initWithDevice:(id<MTLDevice>)device weights:(id<MPSCNNConvolutionDataSource>)weights API_AVAILABLE(macos(10.13));
- (void)reloadWeightsAndBiasesWithCommandBuffer:(id<MTLCommandBuffer>)commandBuffer state:(MPSCNNConvolutionWeightsAndBiasesState *)state API_AVAILABLE(macos(10.14));
- (MPSCNNConvolutionGradientState *_Nullable)resultStateForSourceImage:(MPSImage *)sourceImage sourceStates:(NSArray<MPSState *> *_Nullable)sourceStates destinationImage:(MPSImage *)destinationImage API_AVAILABLE(macos(10.15));
@end

@interface MPSCNNBinaryKernel : MPSKernel
@end

@interface MPSCNNGradientKernel : MPSCNNBinaryKernel
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer sourceGradient:(MPSImage *)sourceGradient sourceImage:(MPSImage *)sourceImage gradientState:(MPSState *)gradientState destinationGradient:(MPSImage *)destinationGradient API_AVAILABLE(macos(10.14));
@end

@interface MPSCNNConvolutionGradient : MPSCNNGradientKernel
- (instancetype)initWithDevice:(id<MTLDevice>)device weights:(id<MPSCNNConvolutionDataSource>)weights API_AVAILABLE(macos(10.14));
@property (readwrite, nonatomic) MPSCNNConvolutionGradientOption gradientOption;
- (void)reloadWeightsAndBiasesWithCommandBuffer:(id<MTLCommandBuffer>)commandBuffer state:(MPSCNNConvolutionWeightsAndBiasesState *)state API_AVAILABLE(macos(10.14));
@end

@interface MPSMatrixDescriptor : NSObject
+ (MPSMatrixDescriptor *)matrixDescriptorWithRows:(NSUInteger)rows columns:(NSUInteger)columns matrices:(NSUInteger)matrices rowBytes:(NSUInteger)rowBytes matrixBytes:(NSUInteger)matrixBytes dataType:(MPSDataType)dataType API_AVAILABLE(macos(10.13));
@end

@interface MPSMatrix : NSObject
- (instancetype)initWithBuffer:(id<MTLBuffer>)buffer offset:(NSUInteger)offset descriptor:(MPSMatrixDescriptor *)descriptor API_AVAILABLE(macos(10.15));
@end

@interface MPSMatrixBinaryKernel : MPSKernel
@property (readwrite, nonatomic) NSUInteger batchSize;
@end

@interface MPSMatrixMultiplication : MPSKernel
- (instancetype)initWithDevice:(id<MTLDevice>)device transposeLeft:(BOOL)transposeLeft transposeRight:(BOOL)transposeRight resultRows:(NSUInteger)resultRows resultColumns:(NSUInteger)resultColumns interiorColumns:(NSUInteger)interiorColumns alpha:(double)alpha beta:(double)beta;
@property (readwrite, nonatomic) NSUInteger batchSize;
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer leftMatrix:(MPSMatrix *)leftMatrix rightMatrix:(MPSMatrix *)rightMatrix resultMatrix:(MPSMatrix *)resultMatrix;
@end

@interface MPSNDArrayDescriptor : NSObject
+ (instancetype)descriptorWithDataType:(MPSDataType)dataType shape:(MPSShape *)shape;
@end

@interface MPSNDArray : NSObject
- (instancetype)initWithBuffer:(id<MTLBuffer>)buffer offset:(NSUInteger)offset descriptor:(MPSNDArrayDescriptor *)descriptor API_AVAILABLE(macos(13.0));
@end

NS_ASSUME_NONNULL_END
