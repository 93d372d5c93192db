// Declarations for checking native/metal on Linux (see ../README.md):
// the part of Foundation the Metal backend uses. Not Apple's header.
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FM_SDK_EXTERN extern "C"
#define NS_INLINE static inline
#define API_AVAILABLE(...) __attribute__((availability(macos, introduced = FM_SDK_VERSION_##__VA_ARGS__)))
#define FM_SDK_VERSION_macos(v) v
#define NS_ENUM(type, name) enum name : type name; enum name : type
// As the SDK spells it in C++: the options type is the integer type itself.
#define NS_OPTIONS(type, name) type name; enum : type
#define NS_ASSUME_NONNULL_BEGIN _Pragma("clang assume_nonnull begin")
#define NS_ASSUME_NONNULL_END _Pragma("clang assume_nonnull end")
#define YES __objc_yes
#define NO __objc_no

#if !defined(nil)
#define nil nullptr
#endif

typedef long NSInteger;
typedef unsigned long NSUInteger;
typedef bool BOOL;

NS_ASSUME_NONNULL_BEGIN

typedef struct _NSZone NSZone;

typedef struct _NSRange {
    NSUInteger location;
    NSUInteger length;
} NSRange;

NS_INLINE NSRange NSMakeRange(NSUInteger location, NSUInteger length) {
    NSRange range = {location, length};
    return range;
}

@class NSString;

@protocol NSObject
@end

@protocol NSCopying
- (id)copyWithZone:(nullable NSZone *)zone;
@end

__attribute__((objc_root_class))
@interface NSObject <NSObject>
+ (instancetype)alloc;
- (instancetype)init;
@end

@interface NSString : NSObject <NSCopying>
+ (nullable instancetype)stringWithUTF8String:(const char *)nullTerminatedCString;
@property (nullable, readonly) const char *UTF8String;
@end

@interface NSValue : NSObject <NSCopying>
@end

@interface NSNumber : NSValue
+ (NSNumber *)numberWithInt:(int)value;
+ (NSNumber *)numberWithLongLong:(long long)value;
@end

@interface NSArray<__covariant ObjectType> : NSObject <NSCopying>
+ (instancetype)array;
+ (instancetype)arrayWithObjects:(const ObjectType _Nonnull[_Nonnull])objects count:(NSUInteger)cnt;
@property (readonly) NSUInteger count;
- (ObjectType)objectAtIndexedSubscript:(NSUInteger)idx;
@end

@interface NSMutableArray<ObjectType> : NSArray<ObjectType>
+ (instancetype)arrayWithCapacity:(NSUInteger)numItems;
- (void)addObject:(ObjectType)anObject;
@end

@interface NSDictionary<__covariant KeyType, __covariant ObjectType> : NSObject <NSCopying>
+ (instancetype)dictionary;
- (nullable ObjectType)objectForKeyedSubscript:(KeyType)key;
@end

@interface NSMutableDictionary<KeyType, ObjectType> : NSDictionary<KeyType, ObjectType>
- (void)setObject:(nullable ObjectType)obj forKeyedSubscript:(id<NSCopying>)key;
@end

@interface NSData : NSObject <NSCopying>
+ (instancetype)dataWithBytes:(nullable const void *)bytes length:(NSUInteger)length;
@end

@interface NSMutableData : NSData
+ (nullable instancetype)dataWithLength:(NSUInteger)length;
@property (readonly) void *mutableBytes;
@end

typedef NSString *NSErrorUserInfoKey;

@interface NSError : NSObject <NSCopying>
@property (readonly) NSInteger code;
@property (readonly, copy) NSDictionary<NSErrorUserInfoKey, id> *userInfo;
@property (readonly, copy) NSString *localizedDescription;
@end

NS_ASSUME_NONNULL_END
