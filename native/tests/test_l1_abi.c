/*
 * Conformance test of the level-1 C ABI (versions, errors, dtypes, handles,
 * devices, pools, streams, buffers) against ferrometal.h, the contract.
 *
 * Every function of level 1 is called with good input and with bad input:
 * zero, forged, released and wrong-kind handles; NULL pointers; unknown
 * enum values; sizes that overflow; ranges past the end; values a dtype
 * cannot hold. Each failing call must return the documented status, leave
 * its out-pointer alone, and leave a message that starts with its own name.
 *
 * No framework: CHECK counts failures and prints file:line and
 * fm_last_error(). The exit status is 0 when nothing failed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_test_support.h"
#include "ferrometal.h"

/* Under AddressSanitizer, an allocation larger than it supports must come
 * back as NULL (FM_ERR_OUT_OF_MEMORY), as it does without it, even when this
 * program runs outside ctest. ASan calls this hook at start-up; elsewhere it
 * is an unused function. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

static const uintptr_t FORGED = 0xdeadbeef;
#define HIGH_BIT ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))

static fm_device open_cpu(void) {
    fm_device device = 0;
    CHECK_OK(fm_device_open(&device, FM_BACKEND_CPU, 0));
    return device;
}

static fm_buffer new_buffer(fm_device device, fm_dtype dtype, size_t count) {
    fm_buffer buffer = 0;
    CHECK_OK(fm_buffer_new(&buffer, device, dtype, count));
    return buffer;
}

static fm_pool_stats stats_of(fm_device device) {
    fm_pool_stats stats;
    memset(&stats, 0, sizeof stats);
    CHECK_OK(fm_device_pool_stats(&stats, device));
    return stats;
}

static int stats_equal(fm_pool_stats a, fm_pool_stats b) {
    return a.bytes_in_use == b.bytes_in_use && a.bytes_cached == b.bytes_cached &&
           a.peak_bytes_in_use == b.peak_bytes_in_use && a.allocations == b.allocations &&
           a.system_allocations == b.system_allocations;
}

/* Reads `count` f32 from `buffer` and compares them with `want`. */
static int f32_equal(fm_buffer buffer, const float *want, size_t count) {
    float got[64];
    if (count > 64 || fm_buffer_read(buffer, 0, got, count, 0) != FM_OK) return 0;
    return memcmp(got, want, count * sizeof *got) == 0;
}

/* Fills a one-element buffer of `dtype` with `value` and returns its bits. */
static uint16_t fill_bits16(fm_device device, fm_dtype dtype, double value) {
    fm_buffer buffer = new_buffer(device, dtype, 1);
    uint16_t bits = 0xabcd;
    CHECK_OK(fm_buffer_fill(buffer, 0, 1, value, 0));
    CHECK_OK(fm_buffer_read(buffer, 0, &bits, 1, 0));
    CHECK_OK(fm_release(buffer));
    return bits;
}

/* ---------------------------------------------------------------------------
 * Versions, names, dtypes
 * ------------------------------------------------------------------------- */

static void test_versions(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", FM_VERSION_MAJOR, FM_VERSION_MINOR,
             FM_VERSION_PATCH);
    CHECK(fm_version() != NULL);
    CHECK(strcmp(fm_version(), expected) == 0);
    CHECK(fm_abi_version() == FM_ABI_VERSION);
}

static void test_names(void) {
    static const char *const status_names[] = {
        "FM_OK",           "FM_ERR_INVALID_HANDLE",   "FM_ERR_INVALID_ARGUMENT",
        "FM_ERR_OUT_OF_RANGE", "FM_ERR_DTYPE_MISMATCH", "FM_ERR_SHAPE_MISMATCH",
        "FM_ERR_OUT_OF_MEMORY", "FM_ERR_DEVICE_NOT_FOUND", "FM_ERR_NOT_COMPILED",
        "FM_ERR_UNSUPPORTED", "FM_ERR_BACKEND",         "FM_ERR_IO",
        "FM_ERR_NUMERICAL", "FM_ERR_INTERNAL",
    };
    static const char *const dtype_names[] = {"f32", "f16", "bf16", "i32", "i8", "u8"};
    static const char *const backend_names[] = {"cpu", "cuda", "metal"};
    int i;

    CHECK(sizeof status_names / sizeof *status_names == FM_STATUS_COUNT);
    for (i = 0; i < FM_STATUS_COUNT; i++) {
        CHECK(strcmp(fm_status_str((fm_status)i), status_names[i]) == 0);
    }
    CHECK(strcmp(fm_status_str(FM_STATUS_COUNT), "FM_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(fm_status_str((fm_status)99), "FM_STATUS_UNKNOWN") == 0);

    CHECK(sizeof dtype_names / sizeof *dtype_names == FM_DTYPE_COUNT);
    for (i = 0; i < FM_DTYPE_COUNT; i++) {
        CHECK(strcmp(fm_dtype_str((fm_dtype)i), dtype_names[i]) == 0);
    }
    CHECK(strcmp(fm_dtype_str(FM_DTYPE_COUNT), "unknown") == 0);
    CHECK(strcmp(fm_dtype_str((fm_dtype)99), "unknown") == 0);

    CHECK(sizeof backend_names / sizeof *backend_names == FM_BACKEND_COUNT);
    for (i = 0; i < FM_BACKEND_COUNT; i++) {
        CHECK(strcmp(fm_backend_str((fm_backend)i), backend_names[i]) == 0);
    }
    CHECK(strcmp(fm_backend_str(FM_BACKEND_COUNT), "unknown") == 0);
    CHECK(strcmp(fm_backend_str((fm_backend)99), "unknown") == 0);
}

static void test_dtype_size(void) {
    static const size_t sizes[FM_DTYPE_COUNT] = {4, 2, 2, 4, 1, 1};
    size_t bytes;
    int i;
    for (i = 0; i < FM_DTYPE_COUNT; i++) {
        bytes = 0;
        CHECK_OK(fm_dtype_size(&bytes, (fm_dtype)i));
        CHECK(bytes == sizes[i]);
    }
    bytes = 77;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_dtype_size(&bytes, FM_DTYPE_COUNT));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_dtype_size(&bytes, (fm_dtype)99));
    CHECK(bytes == 77);
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_dtype_size(NULL, FM_DTYPE_F32));
    CHECK(strstr(fm_last_error(), "out_bytes") != NULL);
}

/* ---------------------------------------------------------------------------
 * Backends and devices
 * ------------------------------------------------------------------------- */

static void test_backends(void) {
    int compiled = -1;
    size_t count = 77;
    fm_device device = 77;
    int b;

    CHECK_OK(fm_backend_is_compiled(&compiled, FM_BACKEND_CPU));
    CHECK(compiled == 1);
    CHECK_OK(fm_device_count(&count, FM_BACKEND_CPU));
    CHECK(count == 1);

    for (b = FM_BACKEND_CUDA; b < FM_BACKEND_COUNT; b++) {
        fm_backend backend = (fm_backend)b;
        compiled = -1;
        CHECK_OK(fm_backend_is_compiled(&compiled, backend));
        CHECK(compiled == 0 || compiled == 1);
        count = 77;
        device = 77;
        if (!compiled) {
            EXPECT(FM_ERR_NOT_COMPILED, fm_device_count(&count, backend));
            CHECK(count == 77);
            EXPECT(FM_ERR_NOT_COMPILED, fm_device_open(&device, backend, 0));
            CHECK(device == 77);
        } else {
            /* Compiled in, but this machine may have no such device. */
            CHECK_OK(fm_device_count(&count, backend));
            EXPECT(FM_ERR_DEVICE_NOT_FOUND, fm_device_open(&device, backend, count));
            CHECK(device == 77);
        }
    }

    compiled = -1;
    count = 77;
    device = 77;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_backend_is_compiled(&compiled, FM_BACKEND_COUNT));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_backend_is_compiled(&compiled, (fm_backend)99));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_backend_is_compiled(NULL, FM_BACKEND_CPU));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_count(&count, FM_BACKEND_COUNT));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_count(NULL, FM_BACKEND_CPU));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_open(&device, (fm_backend)99, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_open(NULL, FM_BACKEND_CPU, 0));
    EXPECT(FM_ERR_DEVICE_NOT_FOUND, fm_device_open(&device, FM_BACKEND_CPU, 99));
    EXPECT(FM_ERR_DEVICE_NOT_FOUND, fm_device_open(&device, FM_BACKEND_CPU, SIZE_MAX));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_open_best(NULL));
    CHECK(compiled == -1 && count == 77 && device == 77);
}

static void test_open_best(void) {
    fm_backend expected = FM_BACKEND_CPU;
    fm_backend preferred[2] = {FM_BACKEND_CUDA, FM_BACKEND_METAL};
    fm_device_info info;
    fm_device device = 0;
    int i;

    for (i = 1; i >= 0; i--) {
        int compiled = 0;
        size_t count = 0;
        CHECK_OK(fm_backend_is_compiled(&compiled, preferred[i]));
        if (compiled && fm_device_count(&count, preferred[i]) == FM_OK && count > 0) {
            expected = preferred[i];
        }
    }
    CHECK_OK(fm_device_open_best(&device));
    CHECK_OK(fm_device_info_get(&info, device));
    CHECK(info.backend == expected);
    CHECK(info.index == 0);
    CHECK_OK(fm_release(device));
}

static void test_device_info(void) {
    fm_device device = open_cpu();
    fm_device_info info;
    memset(&info, 0x55, sizeof info);
    CHECK_OK(fm_device_info_get(&info, device));
    CHECK(info.backend == FM_BACKEND_CPU);
    CHECK(info.index == 0);
    CHECK(memchr(info.name, '\0', sizeof info.name) != NULL);
    CHECK(info.name[0] != '\0');
    CHECK(info.total_memory > 0);
    CHECK(info.free_memory <= info.total_memory);
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_info_get(NULL, device));
    CHECK_OK(fm_device_synchronize(device));
    CHECK_OK(fm_release(device));
}

/* fm_device_open twice: two handles, one device, one pool. */
static void test_device_open_twice(void) {
    fm_device first = open_cpu();
    fm_device second = open_cpu();
    fm_buffer buffer;
    CHECK(first != second);
    buffer = new_buffer(first, FM_DTYPE_F32, 1000);
    CHECK(stats_equal(stats_of(first), stats_of(second)));
    CHECK_OK(fm_release(buffer));
    CHECK(stats_equal(stats_of(first), stats_of(second)));
    CHECK_OK(fm_device_pool_trim(second));
    CHECK(stats_of(first).bytes_cached == 0);
    CHECK_OK(fm_release(first));
    CHECK_OK(fm_release(second));
}

/* ---------------------------------------------------------------------------
 * Handles: zero, forged, released, wrong kind; reference counting
 * ------------------------------------------------------------------------- */

/* Every function that takes a device, given a handle that is not one. */
static void expect_bad_device(fm_device bad) {
    fm_device_info info;
    fm_pool_stats stats;
    fm_stream stream = 77;
    fm_buffer buffer = 77;
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_info_get(&info, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_synchronize(bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_pool_stats(&stats, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_pool_trim(bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_pool_reset_peak(bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_stream_new(&stream, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_new(&buffer, bad, FM_DTYPE_F32, 4));
    CHECK(stream == 77 && buffer == 77);
}

/* Every function that takes a buffer, given a handle that is not one.
 * `good` is a live f32 buffer of at least 4 elements. */
static void expect_bad_buffer(fm_buffer bad, fm_buffer good) {
    size_t count = 77, bytes = 77;
    fm_dtype dtype = (fm_dtype)77;
    fm_device device = 77;
    float host[4] = {1, 2, 3, 4};
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_count(&count, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_dtype(&dtype, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_nbytes(&bytes, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_device(&device, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_write(bad, 0, host, 4, 0));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_read(bad, 0, host, 4, 0));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_copy(bad, 0, good, 0, 4, 0));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_copy(good, 0, bad, 0, 4, 0));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_fill(bad, 0, 4, 1.0, 0));
    CHECK(count == 77 && bytes == 77 && dtype == (fm_dtype)77 && device == 77);
    CHECK(host[0] == 1 && host[3] == 4);
}

/* Every function that takes a stream, given a non-zero handle that is not
 * one. (Zero means "synchronous" for the buffer functions.) */
static void expect_bad_stream(fm_stream bad, fm_buffer good) {
    float host[4] = {1, 2, 3, 4};
    EXPECT(FM_ERR_INVALID_HANDLE, fm_stream_synchronize(bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_write(good, 0, host, 4, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_read(good, 0, host, 4, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_copy(good, 0, good, 0, 4, bad));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_fill(good, 0, 4, 1.0, bad));
}

static void test_bad_handles(void) {
    fm_device device = open_cpu();
    fm_buffer buffer = new_buffer(device, FM_DTYPE_F32, 8);
    fm_stream stream = 0;
    fm_device freed_device = open_cpu();
    fm_buffer freed_buffer = new_buffer(device, FM_DTYPE_F32, 8);
    fm_stream freed_stream = 0;
    const uintptr_t forged[] = {0, FORGED, UINTPTR_MAX, (uintptr_t)1, (uintptr_t)1 << 32};
    size_t i;

    CHECK_OK(fm_stream_new(&stream, device));
    CHECK_OK(fm_stream_new(&freed_stream, device));
    CHECK_OK(fm_release(freed_device));
    CHECK_OK(fm_release(freed_buffer));
    CHECK_OK(fm_release(freed_stream));

    for (i = 0; i < sizeof forged / sizeof *forged; i++) {
        expect_bad_device(forged[i]);
        expect_bad_buffer(forged[i], buffer);
        if (forged[i] != 0) expect_bad_stream(forged[i], buffer);
        EXPECT(FM_ERR_INVALID_HANDLE, fm_retain(forged[i]));
        EXPECT(FM_ERR_INVALID_HANDLE, fm_release(forged[i]));
    }
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(0));
    CHECK(strstr(fm_last_error(), "zero") != NULL);

    /* A real handle with its high bits flipped. */
    expect_bad_device(device ^ HIGH_BIT);
    expect_bad_device(device ^ ((uintptr_t)0xff << 56));
    expect_bad_buffer(buffer ^ HIGH_BIT, buffer);
    expect_bad_stream(stream ^ HIGH_BIT, buffer);
    EXPECT(FM_ERR_INVALID_HANDLE, fm_retain(buffer ^ HIGH_BIT));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(device ^ HIGH_BIT));

    /* Released handles. */
    expect_bad_device(freed_device);
    expect_bad_buffer(freed_buffer, buffer);
    expect_bad_stream(freed_stream, buffer);
    EXPECT(FM_ERR_INVALID_HANDLE, fm_retain(freed_buffer));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(freed_stream));

    /* Handles of the wrong kind. */
    expect_bad_device(buffer);
    expect_bad_device(stream);
    expect_bad_buffer(device, buffer);
    expect_bad_buffer(stream, buffer);
    expect_bad_stream(device, buffer);
    expect_bad_stream(buffer, buffer);
    CHECK(strstr(fm_last_error(), "buffer") != NULL);

    /* None of that disturbed the live handles. */
    {
        float values[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        CHECK_OK(fm_buffer_write(buffer, 0, values, 8, stream));
        CHECK_OK(fm_stream_synchronize(stream));
        CHECK(f32_equal(buffer, values, 8));
    }
    CHECK_OK(fm_release(stream));
    CHECK_OK(fm_release(buffer));
    CHECK_OK(fm_release(device));
}

/* A released slot is reused with a new generation: the stale handle stays
 * invalid while the new one works. */
static void test_stale_handles(void) {
    fm_device device = open_cpu();
    fm_buffer old_handles[16];
    fm_buffer new_handles[16];
    size_t count = 0;
    int i, j;
    for (i = 0; i < 16; i++) old_handles[i] = new_buffer(device, FM_DTYPE_U8, 4);
    for (i = 0; i < 16; i++) CHECK_OK(fm_release(old_handles[i]));
    for (i = 0; i < 16; i++) new_handles[i] = new_buffer(device, FM_DTYPE_U8, 4);
    for (i = 0; i < 16; i++) {
        for (j = 0; j < 16; j++) CHECK(old_handles[i] != new_handles[j]);
        EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_count(&count, old_handles[i]));
        EXPECT(FM_ERR_INVALID_HANDLE, fm_release(old_handles[i]));
        CHECK_OK(fm_buffer_count(&count, new_handles[i]));
        CHECK(count == 4);
    }
    for (i = 0; i < 16; i++) CHECK_OK(fm_release(new_handles[i]));
    CHECK_OK(fm_release(device));
}

static void test_reference_counting(void) {
    fm_device device = open_cpu();
    fm_device again = 0;
    fm_buffer buffer = new_buffer(device, FM_DTYPE_F32, 4);
    fm_stream stream = 0;
    size_t count = 0;
    float values[4] = {1, 2, 3, 4};

    /* Retain, then two releases: the second one destroys. */
    CHECK_OK(fm_retain(buffer));
    CHECK_OK(fm_release(buffer));
    CHECK_OK(fm_buffer_count(&count, buffer));
    CHECK(count == 4);
    CHECK_OK(fm_buffer_write(buffer, 0, values, 4, 0));
    CHECK_OK(fm_release(buffer));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_count(&count, buffer));
    /* A third release is an error, not a crash. */
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(buffer));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(buffer));

    /* A buffer keeps its device open after the device handle is gone. */
    buffer = new_buffer(device, FM_DTYPE_F32, 4);
    CHECK_OK(fm_stream_new(&stream, device));
    CHECK_OK(fm_release(device));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_device_synchronize(device));
    CHECK_OK(fm_buffer_write(buffer, 0, values, 4, stream));
    CHECK_OK(fm_stream_synchronize(stream));
    CHECK(f32_equal(buffer, values, 4));
    CHECK_OK(fm_buffer_device(&again, buffer));
    CHECK(again != 0 && again != device);
    CHECK(stats_of(again).bytes_in_use > 0);

    /* fm_buffer_device returns a new reference of its own. */
    CHECK_OK(fm_retain(again));
    CHECK_OK(fm_release(again));
    CHECK_OK(fm_release(stream));
    CHECK_OK(fm_release(buffer));
    CHECK_OK(fm_device_synchronize(again));
    CHECK_OK(fm_release(again));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(again));
}

/* ---------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------- */

static void test_buffer_properties(void) {
    fm_device device = open_cpu();
    fm_pool_stats device_stats = stats_of(device);
    int i;
    for (i = 0; i < FM_DTYPE_COUNT; i++) {
        fm_buffer buffer = new_buffer(device, (fm_dtype)i, 10);
        size_t count = 0, bytes = 0, size = 0;
        fm_dtype dtype = FM_DTYPE_COUNT;
        fm_device owner = 0;
        CHECK_OK(fm_dtype_size(&size, (fm_dtype)i));
        CHECK_OK(fm_buffer_count(&count, buffer));
        CHECK_OK(fm_buffer_dtype(&dtype, buffer));
        CHECK_OK(fm_buffer_nbytes(&bytes, buffer));
        CHECK_OK(fm_buffer_device(&owner, buffer));
        CHECK(count == 10 && dtype == (fm_dtype)i && bytes == 10 * size);
        device_stats = stats_of(device);
        CHECK(stats_equal(stats_of(owner), device_stats));
        CHECK_OK(fm_release(owner));
        CHECK_OK(fm_release(buffer));
    }

    {
        fm_buffer buffer = new_buffer(device, FM_DTYPE_F32, 4);
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(NULL, device, FM_DTYPE_F32, 4));
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_count(NULL, buffer));
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_dtype(NULL, buffer));
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_nbytes(NULL, buffer));
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_device(NULL, buffer));
        CHECK_OK(fm_release(buffer));
    }
    CHECK_OK(fm_release(device));
}

static void test_buffer_new_errors(void) {
    fm_device device = open_cpu();
    fm_buffer buffer = 77;
    fm_pool_stats before, after;
    float values[4] = {1, 2, 3, 4};

    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(&buffer, device, FM_DTYPE_COUNT, 4));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(&buffer, device, (fm_dtype)99, 4));
    CHECK(strstr(fm_last_error(), "dtype") != NULL);
    /* count * element size overflows size_t. */
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(&buffer, device, FM_DTYPE_F32, SIZE_MAX));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(&buffer, device, FM_DTYPE_F16, SIZE_MAX / 2 + 1));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_new(&buffer, device, FM_DTYPE_I32, SIZE_MAX / 4 + 1));
    CHECK(strstr(fm_last_error(), "count") != NULL);
    CHECK(buffer == 77);

    /* Too large for any memory: out of memory, and the pool stays usable. */
    before = stats_of(device);
    EXPECT(FM_ERR_OUT_OF_MEMORY, fm_buffer_new(&buffer, device, FM_DTYPE_U8, (size_t)1 << 60));
    EXPECT(FM_ERR_OUT_OF_MEMORY, fm_buffer_new(&buffer, device, FM_DTYPE_F32, SIZE_MAX / 4));
    EXPECT(FM_ERR_OUT_OF_MEMORY, fm_buffer_new(&buffer, device, FM_DTYPE_U8, SIZE_MAX));
    CHECK(buffer == 77);
    after = stats_of(device);
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.allocations == before.allocations);
    CHECK(after.system_allocations == before.system_allocations);
    buffer = new_buffer(device, FM_DTYPE_F32, 4);
    CHECK_OK(fm_buffer_write(buffer, 0, values, 4, 0));
    CHECK(f32_equal(buffer, values, 4));
    CHECK_OK(fm_release(buffer));
    CHECK_OK(fm_release(device));
}

static void test_zero_length(void) {
    fm_device device = open_cpu();
    fm_buffer empty = new_buffer(device, FM_DTYPE_F32, 0);
    fm_buffer other = new_buffer(device, FM_DTYPE_F32, 4);
    size_t count = 77, bytes = 77;
    float host[1] = {0};

    CHECK_OK(fm_buffer_count(&count, empty));
    CHECK_OK(fm_buffer_nbytes(&bytes, empty));
    CHECK(count == 0 && bytes == 0);
    /* Zero-count operations succeed, even with NULL host pointers. */
    CHECK_OK(fm_buffer_write(empty, 0, host, 0, 0));
    CHECK_OK(fm_buffer_write(empty, 0, NULL, 0, 0));
    CHECK_OK(fm_buffer_read(empty, 0, NULL, 0, 0));
    CHECK_OK(fm_buffer_fill(empty, 0, 0, 1.0, 0));
    CHECK_OK(fm_buffer_copy(empty, 0, other, 4, 0, 0));
    CHECK_OK(fm_buffer_copy(other, 2, empty, 0, 0, 0));
    CHECK_OK(fm_buffer_write(other, 4, NULL, 0, 0));
    CHECK_OK(fm_buffer_read(other, 1, NULL, 0, 0));
    CHECK_OK(fm_buffer_fill(other, 4, 0, 1.0, 0));
    /* An offset beyond the end is out of range even for zero elements. */
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write(empty, 1, host, 0, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_read(empty, 1, host, 0, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_fill(empty, 1, 0, 1.0, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(empty, 1, other, 0, 0, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(other, 0, empty, 1, 0, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write(empty, 0, host, 1, 0));
    CHECK_OK(fm_release(empty));
    CHECK_OK(fm_release(other));
    CHECK_OK(fm_release(device));
}

static void test_write_read(void) {
    fm_device device = open_cpu();
    fm_buffer f32 = new_buffer(device, FM_DTYPE_F32, 10);
    float values[10], back[10];
    int i;

    for (i = 0; i < 10; i++) values[i] = (float)i * 1.5f - 3.0f;
    CHECK_OK(fm_buffer_write(f32, 0, values, 10, 0));
    memset(back, 0, sizeof back);
    CHECK_OK(fm_buffer_read(f32, 0, back, 10, 0));
    CHECK(memcmp(back, values, sizeof values) == 0);

    /* Partial, at offsets. */
    {
        float three[3] = {100, 200, 300};
        float part[4] = {0};
        CHECK_OK(fm_buffer_write(f32, 7, three, 3, 0));
        CHECK_OK(fm_buffer_read(f32, 6, part, 4, 0));
        CHECK(part[0] == values[6] && part[1] == 100 && part[2] == 200 && part[3] == 300);
    }

    /* Every dtype stores the host's bytes unchanged (no conversion). */
    for (i = 0; i < FM_DTYPE_COUNT; i++) {
        unsigned char bytes[40], got[40];
        size_t size = 0, k;
        fm_buffer buffer = new_buffer(device, (fm_dtype)i, 10);
        CHECK_OK(fm_dtype_size(&size, (fm_dtype)i));
        for (k = 0; k < sizeof bytes; k++) bytes[k] = (unsigned char)(k * 37 + 11 + i);
        memset(got, 0, sizeof got);
        CHECK_OK(fm_buffer_write(buffer, 0, bytes, 10, 0));
        CHECK_OK(fm_buffer_read(buffer, 0, got, 10, 0));
        CHECK(memcmp(got, bytes, 10 * size) == 0);
        CHECK_OK(fm_release(buffer));
    }

    /* NULL host pointers with count > 0. */
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_write(f32, 0, NULL, 1, 0));
    CHECK(strstr(fm_last_error(), "src") != NULL);
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_read(f32, 0, NULL, 1, 0));
    CHECK(strstr(fm_last_error(), "dst") != NULL);
    CHECK_OK(fm_release(f32));
    CHECK_OK(fm_release(device));
}

/* Staging buffers: host memory the device copies from directly. */
static void test_staging(void) {
    fm_device device = open_cpu();
    fm_buffer f32 = new_buffer(device, FM_DTYPE_F32, 8);
    fm_staging staging = 0;
    void *ptr = NULL;
    size_t bytes = 0;
    float back[8];
    int i;

    CHECK_OK(fm_staging_new(&staging, device, 8 * sizeof(float)));
    CHECK_OK(fm_staging_data(&ptr, &bytes, staging));
    CHECK(ptr != NULL && bytes == 8 * sizeof(float) && (uintptr_t)ptr % 64 == 0);
    for (i = 0; i < 8; i++) ((float *)ptr)[i] = (float)i + 0.5f;
    /* Elements 2..5 from bytes 4..20 of the staging buffer. */
    CHECK_OK(fm_buffer_fill(f32, 0, 8, 0.0, 0));
    CHECK_OK(fm_buffer_write_staged(f32, 2, staging, 4, 4 * sizeof(float), 0));
    CHECK_OK(fm_buffer_read(f32, 0, back, 8, 0));
    CHECK(back[0] == 0 && back[1] == 0 && back[2] == 1.5f && back[5] == 4.5f && back[6] == 0);
    /* Ranges, part of an element, and handle kinds are refused; nothing changes. */
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write_staged(f32, 6, staging, 0, 4 * sizeof(float), 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write_staged(f32, 0, staging, 20, 4 * sizeof(float), 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_write_staged(f32, 0, staging, 0, 3, 0));
    CHECK(strstr(fm_last_error(), "bytes") != NULL);
    EXPECT(FM_ERR_INVALID_HANDLE, fm_buffer_write_staged(staging, 0, f32, 0, 4, 0));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_staging_data(&ptr, &bytes, f32));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_staging_new(NULL, device, 4));
    CHECK_OK(fm_buffer_read(f32, 0, back, 8, 0));
    CHECK(back[2] == 1.5f && back[6] == 0);
    CHECK_OK(fm_release(staging));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_staging_data(&ptr, &bytes, staging));
    CHECK_OK(fm_release(f32));
    CHECK_OK(fm_release(device));
}

static void test_out_of_range(void) {
    fm_device device = open_cpu();
    fm_buffer ten = new_buffer(device, FM_DTYPE_F32, 10);
    fm_buffer four = new_buffer(device, FM_DTYPE_F32, 4);
    float values[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    float host[16];
    size_t i;
    struct {
        size_t offset, count;
    } bad[] = {
        {8, 4}, {0, 11}, {10, 1}, {11, 0}, {SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX, SIZE_MAX},
    };

    CHECK_OK(fm_buffer_write(ten, 0, values, 10, 0));
    for (i = 0; i < 16; i++) host[i] = -1;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write(ten, bad[i].offset, host, bad[i].count, 0));
        EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_read(ten, bad[i].offset, host, bad[i].count, 0));
        EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_fill(ten, bad[i].offset, bad[i].count, 5.0, 0));
        EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(ten, bad[i].offset, ten, 0, bad[i].count, 0));
        EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(ten, 0, ten, bad[i].offset, bad[i].count, 0));
    }
    /* The message names the argument, like the header's example. */
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_read(ten, 8, host, 4, 0));
    CHECK(starts_with(fm_last_error(), "fm_buffer_read: argument 'count'"));
    CHECK(strstr(fm_last_error(), "10") != NULL);
    /* A range that fits one buffer but not the other. */
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(four, 0, ten, 0, 5, 0));
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_copy(ten, 0, four, 1, 4, 0));
    /* Nothing was written, and the host memory was not touched. */
    CHECK(f32_equal(ten, values, 10));
    for (i = 0; i < 16; i++) CHECK(host[i] == -1);
    /* The last element exactly fits. */
    CHECK_OK(fm_buffer_read(ten, 9, host, 1, 0));
    CHECK(host[0] == 9);
    CHECK_OK(fm_release(ten));
    CHECK_OK(fm_release(four));
    CHECK_OK(fm_release(device));
}

static void test_copy(void) {
    fm_device device = open_cpu();
    fm_buffer a = new_buffer(device, FM_DTYPE_F32, 10);
    fm_buffer b = new_buffer(device, FM_DTYPE_F32, 10);
    float values[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};

    CHECK_OK(fm_buffer_write(a, 0, values, 10, 0));
    CHECK_OK(fm_buffer_fill(b, 0, 10, -1.0, 0));
    CHECK_OK(fm_buffer_copy(b, 0, a, 0, 10, 0));
    CHECK(f32_equal(b, values, 10));
    {
        float want[10] = {-1, -1, -1, -1, -1, -1, 1, 2, 3, -1};
        CHECK_OK(fm_buffer_fill(b, 0, 10, -1.0, 0));
        CHECK_OK(fm_buffer_copy(b, 6, a, 1, 3, 0));
        CHECK(f32_equal(b, want, 10));
    }

    /* Overlapping ranges of one buffer behave like memmove, both ways. */
    {
        float forward[10] = {0, 1, 0, 1, 2, 3, 4, 5, 8, 9};
        float backward[10] = {2, 3, 4, 5, 6, 7, 6, 7, 8, 9};
        CHECK_OK(fm_buffer_copy(a, 2, a, 0, 6, 0));
        CHECK(f32_equal(a, forward, 10));
        CHECK_OK(fm_buffer_write(a, 0, values, 10, 0));
        CHECK_OK(fm_buffer_copy(a, 0, a, 2, 6, 0));
        CHECK(f32_equal(a, backward, 10));
        CHECK_OK(fm_buffer_write(a, 0, values, 10, 0));
        CHECK_OK(fm_buffer_copy(a, 0, a, 0, 10, 0));
        CHECK(f32_equal(a, values, 10));
    }

    /* Different dtypes, even of one size, do not copy. */
    {
        fm_buffer i32 = new_buffer(device, FM_DTYPE_I32, 10);
        fm_buffer f16 = new_buffer(device, FM_DTYPE_F16, 10);
        fm_buffer bf16 = new_buffer(device, FM_DTYPE_BF16, 10);
        EXPECT(FM_ERR_DTYPE_MISMATCH, fm_buffer_copy(i32, 0, a, 0, 10, 0));
        EXPECT(FM_ERR_DTYPE_MISMATCH, fm_buffer_copy(a, 0, i32, 0, 10, 0));
        EXPECT(FM_ERR_DTYPE_MISMATCH, fm_buffer_copy(f16, 0, bf16, 0, 1, 0));
        CHECK(strstr(fm_last_error(), "f16") != NULL && strstr(fm_last_error(), "bf16") != NULL);
        EXPECT(FM_ERR_DTYPE_MISMATCH, fm_buffer_copy(f16, 0, bf16, 0, 0, 0));
        CHECK(f32_equal(a, values, 10));
        CHECK_OK(fm_release(i32));
        CHECK_OK(fm_release(f16));
        CHECK_OK(fm_release(bf16));
    }
    CHECK_OK(fm_release(a));
    CHECK_OK(fm_release(b));
    CHECK_OK(fm_release(device));
}

static void test_fill_integers(void) {
    fm_device device = open_cpu();
    fm_buffer i32 = new_buffer(device, FM_DTYPE_I32, 4);
    fm_buffer i8 = new_buffer(device, FM_DTYPE_I8, 4);
    fm_buffer u8 = new_buffer(device, FM_DTYPE_U8, 4);
    int32_t i32_values[4];
    int8_t i8_values[4];
    uint8_t u8_values[4];

    CHECK_OK(fm_buffer_fill(i32, 0, 4, -7.0, 0));
    CHECK_OK(fm_buffer_fill(i32, 1, 1, 2147483647.0, 0));
    CHECK_OK(fm_buffer_fill(i32, 2, 1, -2147483648.0, 0));
    CHECK_OK(fm_buffer_read(i32, 0, i32_values, 4, 0));
    CHECK(i32_values[0] == -7 && i32_values[1] == INT32_MAX && i32_values[2] == INT32_MIN &&
          i32_values[3] == -7);
    CHECK_OK(fm_buffer_fill(i8, 0, 4, -128.0, 0));
    CHECK_OK(fm_buffer_fill(i8, 3, 1, 127.0, 0));
    CHECK_OK(fm_buffer_read(i8, 0, i8_values, 4, 0));
    CHECK(i8_values[0] == -128 && i8_values[2] == -128 && i8_values[3] == 127);
    CHECK_OK(fm_buffer_fill(u8, 0, 4, 255.0, 0));
    CHECK_OK(fm_buffer_fill(u8, 0, 1, 0.0, 0));
    CHECK_OK(fm_buffer_read(u8, 0, u8_values, 4, 0));
    CHECK(u8_values[0] == 0 && u8_values[1] == 255 && u8_values[3] == 255);

    /* Values an integer dtype cannot hold. */
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i32, 0, 4, 1.5, 0));
    CHECK(strstr(fm_last_error(), "value") != NULL);
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i32, 0, 4, 2147483648.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i32, 0, 4, -2147483649.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i32, 0, 4, NAN, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i32, 0, 4, INFINITY, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(u8, 0, 4, 300.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(u8, 0, 4, 256.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(u8, 0, 4, -1.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(u8, 0, 4, 0.5, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i8, 0, 4, NAN, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i8, 0, 4, 128.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i8, 0, 4, -129.0, 0));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(i8, 0, 4, -INFINITY, 0));
    /* ... and the buffers are unchanged. */
    CHECK_OK(fm_buffer_read(u8, 0, u8_values, 4, 0));
    CHECK(u8_values[0] == 0 && u8_values[1] == 255);
    CHECK_OK(fm_buffer_read(i32, 0, i32_values, 4, 0));
    CHECK(i32_values[0] == -7 && i32_values[1] == INT32_MAX);
    CHECK_OK(fm_release(i32));
    CHECK_OK(fm_release(i8));
    CHECK_OK(fm_release(u8));
    CHECK_OK(fm_release(device));
}

static void test_fill_floats(void) {
    fm_device device = open_cpu();
    fm_buffer f32 = new_buffer(device, FM_DTYPE_F32, 6);
    float f32_values[6];
    uint16_t bits;

    CHECK_OK(fm_buffer_fill(f32, 0, 6, 0.0, 0));
    CHECK_OK(fm_buffer_fill(f32, 2, 3, 3.25, 0));
    CHECK_OK(fm_buffer_read(f32, 0, f32_values, 6, 0));
    CHECK(f32_values[0] == 0 && f32_values[1] == 0 && f32_values[2] == 3.25f &&
          f32_values[4] == 3.25f && f32_values[5] == 0);
    CHECK_OK(fm_buffer_fill(f32, 0, 1, 0.1, 0));
    CHECK_OK(fm_buffer_fill(f32, 1, 1, NAN, 0));
    CHECK_OK(fm_buffer_fill(f32, 2, 1, -INFINITY, 0));
    CHECK_OK(fm_buffer_read(f32, 0, f32_values, 3, 0));
    CHECK(f32_values[0] == 0.1f && isnan(f32_values[1]) && isinf(f32_values[2]) &&
          f32_values[2] < 0);

    /* f16: sign 1, exponent 5 (bias 15), mantissa 10 bits. Derived by hand:
     *   1.0   = 2^0            -> 0 01111 0000000000 = 0x3c00
     *   -2.5  = -1.25 * 2^1    -> 1 10000 0100000000 = 0xc100
     *   65504 = 1.1111111111b * 2^15 (largest finite)  = 0x7bff
     *   65519 < 65520 (halfway to 2^16)               -> 0x7bff
     *   65520 = halfway, ties to even (mantissa 0x3ff is odd) -> inf 0x7c00
     *   70000 > 65520                                  -> inf 0x7c00
     *   1e-7  = 1.68 * 2^-24 -> subnormal, 2 units of 2^-24 = 0x0002
     *   2^-24 = smallest subnormal = 0x0001; 2^-25 = half of it, ties to
     *   even -> 0x0000; 3 * 2^-25 = 1.5 units, ties to even -> 0x0002
     *   2^-14 = smallest normal = 0x0400; 1023.5 * 2^-24 ties up into it
     *   1 + 2^-11 = halfway between 0x3c00 and 0x3c01 -> even 0x3c00
     *   1 + 3 * 2^-11 = halfway between 0x3c01 and 0x3c02 -> even 0x3c02
     *   2049 = halfway between 2048 (0x6800) and 2050 (0x6801) -> 0x6800
     *   2051 = halfway between 2050 (0x6801) and 2052 (0x6802) -> 0x6802 */
    CHECK(fill_bits16(device, FM_DTYPE_F16, 1.0) == 0x3c00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, -2.5) == 0xc100);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 0.0) == 0x0000);
    CHECK(fill_bits16(device, FM_DTYPE_F16, -0.0) == 0x8000);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 65504.0) == 0x7bff);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 65519.0) == 0x7bff);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 65520.0) == 0x7c00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 70000.0) == 0x7c00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, -70000.0) == 0xfc00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, INFINITY) == 0x7c00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 1e-7) == 0x0002);
    CHECK(fill_bits16(device, FM_DTYPE_F16, ldexp(1, -24)) == 0x0001);
    CHECK(fill_bits16(device, FM_DTYPE_F16, ldexp(1, -25)) == 0x0000);
    CHECK(fill_bits16(device, FM_DTYPE_F16, ldexp(3, -25)) == 0x0002);
    CHECK(fill_bits16(device, FM_DTYPE_F16, ldexp(1, -14)) == 0x0400);
    CHECK(fill_bits16(device, FM_DTYPE_F16, ldexp(1023.5, -24)) == 0x0400);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 1.0 + ldexp(1, -11)) == 0x3c00);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 1.0 + ldexp(3, -11)) == 0x3c02);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 2049.0) == 0x6800);
    CHECK(fill_bits16(device, FM_DTYPE_F16, 2051.0) == 0x6802);
    bits = fill_bits16(device, FM_DTYPE_F16, NAN);
    CHECK((bits & 0x7c00) == 0x7c00 && (bits & 0x03ff) != 0);
    /* Just above a tie, the value must round up; it does not when the
     * double is first rounded to float (1 + 2^-11 + 2^-40 becomes the tie). */
    CHECK(fill_bits16(device, FM_DTYPE_F16, 1.0 + ldexp(1, -11) + ldexp(1, -40)) == 0x3c01);

    /* bf16: the upper half of an f32 (8 exponent bits, 7 mantissa bits):
     *   1.0   = f32 0x3f800000 -> 0x3f80;  -2.5 = f32 0xc0200000 -> 0xc020
     *   65504 = f32 0x477fe000 -> low half 0xe000 > 0x8000, rounds up -> 0x4780
     *   70000 = f32 0x4788b800 -> low half 0xb800 > 0x8000 -> 0x4789
     *   1e-7  = f32 0x33d6bf95 -> rounds up -> 0x33d7
     *   257   = halfway between 256 (0x4380) and 258 (0x4381) -> even 0x4380
     *   259   = halfway between 258 (0x4381) and 260 (0x4382) -> even 0x4382
     *   1 + 2^-8 ties to 0x3f80; 1 + 3 * 2^-8 ties to 0x3f82
     *   FLT_MAX is above the halfway point past the largest bf16 -> inf 0x7f80 */
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 1.0) == 0x3f80);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, -2.5) == 0xc020);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, -0.0) == 0x8000);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 65504.0) == 0x4780);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 70000.0) == 0x4789);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, -70000.0) == 0xc789);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 1e-7) == 0x33d7);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 257.0) == 0x4380);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 259.0) == 0x4382);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 1.0 + ldexp(1, -8)) == 0x3f80);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 1.0 + ldexp(3, -8)) == 0x3f82);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 3.4028234663852886e38) == 0x7f80);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, -INFINITY) == 0xff80);
    bits = fill_bits16(device, FM_DTYPE_BF16, NAN);
    CHECK((bits & 0x7f80) == 0x7f80 && (bits & 0x007f) != 0);
    CHECK(fill_bits16(device, FM_DTYPE_BF16, 1.0 + ldexp(1, -8) + ldexp(1, -30)) == 0x3f81);

    /* A fill covers exactly its range, in a 2-byte dtype too. */
    {
        fm_buffer f16 = new_buffer(device, FM_DTYPE_F16, 5);
        uint16_t got[5];
        CHECK_OK(fm_buffer_fill(f16, 0, 5, 0.0, 0));
        CHECK_OK(fm_buffer_fill(f16, 1, 3, -2.5, 0));
        CHECK_OK(fm_buffer_read(f16, 0, got, 5, 0));
        CHECK(got[0] == 0 && got[1] == 0xc100 && got[2] == 0xc100 && got[3] == 0xc100 &&
              got[4] == 0);
        CHECK_OK(fm_release(f16));
    }
    CHECK_OK(fm_release(f32));
    CHECK_OK(fm_release(device));
}

/* ---------------------------------------------------------------------------
 * Memory pool
 * ------------------------------------------------------------------------- */

static void test_pool(void) {
    fm_device device = open_cpu();
    fm_pool_stats start, live, released, reused, after;
    fm_buffer buffer, big;
    uint64_t block;

    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_device_pool_stats(NULL, device));
    CHECK_OK(fm_device_pool_trim(device));
    start = stats_of(device);
    CHECK(start.bytes_cached == 0);
    CHECK(start.system_allocations <= start.allocations);

    /* A new size: the pool asks the system. */
    buffer = new_buffer(device, FM_DTYPE_F32, 1000);
    live = stats_of(device);
    block = live.bytes_in_use - start.bytes_in_use;
    CHECK(block >= 4000);
    CHECK(live.allocations == start.allocations + 1);
    CHECK(live.system_allocations == start.system_allocations + 1);
    CHECK(live.peak_bytes_in_use >= live.bytes_in_use);

    /* Released: back in the cache, not in use. */
    CHECK_OK(fm_release(buffer));
    released = stats_of(device);
    CHECK(released.bytes_in_use == start.bytes_in_use);
    CHECK(released.bytes_cached == block);
    CHECK(released.allocations == live.allocations);

    /* The same size again: served from the cache. */
    buffer = new_buffer(device, FM_DTYPE_F32, 1000);
    reused = stats_of(device);
    CHECK(reused.allocations == released.allocations + 1);
    CHECK(reused.system_allocations == released.system_allocations);
    CHECK(reused.bytes_cached == 0);
    CHECK(reused.bytes_in_use == live.bytes_in_use);

    /* Peak: follows the high-water mark until reset. */
    CHECK_OK(fm_device_pool_reset_peak(device));
    CHECK(stats_of(device).peak_bytes_in_use == reused.bytes_in_use);
    big = new_buffer(device, FM_DTYPE_U8, 1 << 20);
    CHECK_OK(fm_release(big));
    after = stats_of(device);
    CHECK(after.bytes_in_use == reused.bytes_in_use);
    CHECK(after.peak_bytes_in_use >= reused.bytes_in_use + (1 << 20));
    CHECK(after.bytes_cached >= (1 << 20));
    CHECK_OK(fm_device_pool_reset_peak(device));
    CHECK(stats_of(device).peak_bytes_in_use == after.bytes_in_use);

    /* Trim: the cache is emptied, live buffers stay. */
    CHECK_OK(fm_device_pool_trim(device));
    after = stats_of(device);
    CHECK(after.bytes_cached == 0);
    CHECK(after.bytes_in_use == reused.bytes_in_use);
    {
        float one = 42.0f, back = 0.0f;
        CHECK_OK(fm_buffer_write(buffer, 999, &one, 1, 0));
        CHECK_OK(fm_buffer_read(buffer, 999, &back, 1, 0));
        CHECK(back == 42.0f);
    }
    CHECK_OK(fm_release(buffer));
    CHECK(stats_of(device).bytes_in_use == start.bytes_in_use);
    CHECK_OK(fm_release(device));
}

/* ---------------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------------- */

static void test_streams(void) {
    fm_device device = open_cpu();
    fm_stream stream = 77;
    fm_buffer a = new_buffer(device, FM_DTYPE_F32, 8);
    fm_buffer b = new_buffer(device, FM_DTYPE_F32, 8);
    float host[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float back[8] = {0};
    float want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int i;

    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_stream_new(NULL, device));
    CHECK_OK(fm_stream_new(&stream, device));
    CHECK(stream != 77 && stream != 0);

    /* The host source may be reused as soon as the write returns. */
    CHECK_OK(fm_buffer_write(a, 0, host, 8, stream));
    for (i = 0; i < 8; i++) host[i] = -1;
    CHECK_OK(fm_buffer_copy(b, 0, a, 0, 8, stream));
    CHECK_OK(fm_buffer_fill(b, 6, 2, 0.5, stream));
    CHECK_OK(fm_buffer_read(b, 0, back, 8, stream));
    CHECK_OK(fm_stream_synchronize(stream));
    want[6] = want[7] = 0.5f;
    CHECK(memcmp(back, want, sizeof want) == 0);
    CHECK_OK(fm_device_synchronize(device));

    /* Errors of queued calls are reported at once, like synchronous ones. */
    EXPECT(FM_ERR_OUT_OF_RANGE, fm_buffer_write(a, 4, host, 8, stream));
    CHECK_OK(fm_stream_synchronize(stream));

    /* A buffer released with work queued, and a stream released before the
     * buffers it was used with. */
    CHECK_OK(fm_buffer_fill(a, 0, 8, 2.0, stream));
    CHECK_OK(fm_release(a));
    CHECK_OK(fm_stream_synchronize(stream));
    CHECK_OK(fm_release(stream));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_stream_synchronize(stream));
    CHECK_OK(fm_buffer_fill(b, 0, 8, 3.0, 0));
    CHECK_OK(fm_release(b));
    CHECK_OK(fm_release(device));
}

/* Streams and copies between two devices, when this machine has a second
 * (a CUDA or Metal GPU). The CPU backend has only one device. */
static void test_two_devices(void) {
    fm_backend backends[2] = {FM_BACKEND_CUDA, FM_BACKEND_METAL};
    int i;
    for (i = 0; i < 2; i++) {
        int compiled = 0;
        size_t count = 0;
        fm_device cpu = 0, gpu = 0;
        fm_stream cpu_stream = 0, gpu_stream = 0;
        fm_buffer host_side, device_side;
        float values[4] = {1, 2, 3, 4}, zeros[4] = {0, 0, 0, 0};

        CHECK_OK(fm_backend_is_compiled(&compiled, backends[i]));
        if (!compiled || fm_device_count(&count, backends[i]) != FM_OK || count == 0) continue;
        printf("  also testing %s:0\n", fm_backend_str(backends[i]));
        cpu = open_cpu();
        CHECK_OK(fm_device_open(&gpu, backends[i], 0));
        CHECK_OK(fm_stream_new(&cpu_stream, cpu));
        CHECK_OK(fm_stream_new(&gpu_stream, gpu));
        host_side = new_buffer(cpu, FM_DTYPE_F32, 4);
        device_side = new_buffer(gpu, FM_DTYPE_F32, 4);
        CHECK_OK(fm_buffer_write(host_side, 0, values, 4, 0));
        /* A stream of one device cannot be used with another's buffer. */
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_write(device_side, 0, values, 4, cpu_stream));
        EXPECT(FM_ERR_INVALID_ARGUMENT, fm_buffer_fill(host_side, 0, 4, 1.0, gpu_stream));
        /* Copies across devices, with either device's stream. */
        CHECK_OK(fm_buffer_fill(device_side, 0, 4, 0.0, gpu_stream));
        CHECK_OK(fm_buffer_copy(device_side, 0, host_side, 0, 4, gpu_stream));
        CHECK_OK(fm_stream_synchronize(gpu_stream));
        CHECK_OK(fm_buffer_write(host_side, 0, zeros, 4, 0));
        CHECK_OK(fm_buffer_copy(host_side, 0, device_side, 0, 4, cpu_stream));
        CHECK_OK(fm_stream_synchronize(cpu_stream));
        CHECK(f32_equal(host_side, values, 4));
        CHECK_OK(fm_release(host_side));
        CHECK_OK(fm_release(device_side));
        CHECK_OK(fm_release(cpu_stream));
        CHECK_OK(fm_release(gpu_stream));
        CHECK_OK(fm_release(cpu));
        CHECK_OK(fm_release(gpu));
    }
}

int main(void) {
    /* Before anything failed on this thread, the message is empty. */
    CHECK(fm_last_error() != NULL && fm_last_error()[0] == '\0');

    test_versions();
    test_names();
    test_dtype_size();
    test_backends();
    test_open_best();
    test_device_info();
    test_device_open_twice();
    test_bad_handles();
    test_stale_handles();
    test_reference_counting();
    test_buffer_properties();
    test_buffer_new_errors();
    test_zero_length();
    test_write_read();
    test_staging();
    test_out_of_range();
    test_copy();
    test_fill_integers();
    test_fill_floats();
    test_pool();
    test_streams();
    test_two_devices();

    printf("test_l1_abi: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
