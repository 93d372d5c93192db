/*
 * device_tour.c — a tour of ferrometal's level-1 C API: devices, buffers,
 * the memory pool, streams, and errors.
 *
 * Build and run: scripts/c-host.sh (or cmake -S examples/c -B build/c-host).
 * Exits 0 when every step gave the expected result, 1 otherwise.
 */
#include <stdio.h>
#include <string.h>

#include "ferrometal.h"

/* Runs a call that must succeed; on failure prints the message and fails. */
#define TRY(call)                                                                   \
    do {                                                                            \
        fm_status status_ = (call);                                                 \
        if (status_ != FM_OK) {                                                     \
            fprintf(stderr, "%s failed: %s: %s\n", #call, fm_status_str(status_),   \
                    fm_last_error());                                               \
            return 1;                                                               \
        }                                                                           \
    } while (0)

/* A value check: prints what was wrong and fails. */
#define EXPECT(cond)                                                                \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: unexpected: %s\n", __FILE__, __LINE__, #cond);  \
            return 1;                                                               \
        }                                                                           \
    } while (0)

static void print_pool(const char *when, fm_device device) {
    fm_pool_stats s;
    if (fm_device_pool_stats(&s, device) != FM_OK) return;
    printf("  pool %-18s in use %8llu B, cached %8llu B, peak %8llu B, "
           "allocations %llu (%llu from the system)\n",
           when, (unsigned long long)s.bytes_in_use, (unsigned long long)s.bytes_cached,
           (unsigned long long)s.peak_bytes_in_use, (unsigned long long)s.allocations,
           (unsigned long long)s.system_allocations);
}

/* Calls that must fail, showing what a failure looks like. */
static int show_errors(fm_device device) {
    fm_buffer buffer = 0;
    float four[4] = {0};
    fm_status status;

    printf("errors (each call fails on purpose):\n");
    TRY(fm_buffer_new(&buffer, device, FM_DTYPE_F32, 4));
    TRY(fm_release(buffer));

    /* A released handle is detected, not dereferenced. */
    status = fm_buffer_write(buffer, 0, four, 4, 0);
    printf("  released handle: %s\n    %s\n", fm_status_str(status), fm_last_error());
    EXPECT(status == FM_ERR_INVALID_HANDLE);

    /* Releasing twice is an error too, never a double free. */
    status = fm_release(buffer);
    printf("  second release:  %s\n    %s\n", fm_status_str(status), fm_last_error());
    EXPECT(status == FM_ERR_INVALID_HANDLE);

    /* Reading past the end of a buffer. */
    TRY(fm_buffer_new(&buffer, device, FM_DTYPE_F32, 10));
    status = fm_buffer_read(buffer, 8, four, 4, 0);
    printf("  read past end:   %s\n    %s\n", fm_status_str(status), fm_last_error());
    EXPECT(status == FM_ERR_OUT_OF_RANGE);
    TRY(fm_release(buffer));
    return 0;
}

int main(void) {
    fm_device device = 0;
    fm_device_info info;
    fm_buffer a = 0, b = 0;
    fm_stream stream = 0;
    float host[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float back[8];
    int i;

    /* 1. Versions: the header and the library must agree on the ABI. */
    printf("ferrometal %s, ABI %u (header: ABI %d)\n", fm_version(), (unsigned)fm_abi_version(),
           FM_ABI_VERSION);
    EXPECT(fm_abi_version() == FM_ABI_VERSION);

    /* 2. The best device: CUDA, else Metal, else the CPU. */
    TRY(fm_device_open_best(&device));
    TRY(fm_device_info_get(&info, device));
    printf("device %s:%zu  %s\n  memory: %.1f GiB total, %.1f GiB free\n",
           fm_backend_str(info.backend), info.index, info.name,
           (double)info.total_memory / (1 << 30), (double)info.free_memory / (1 << 30));

    /* 3. A float buffer round trip: write, read, fill, copy. */
    TRY(fm_buffer_new(&a, device, FM_DTYPE_F32, 8));
    TRY(fm_buffer_new(&b, device, FM_DTYPE_F32, 8));
    TRY(fm_buffer_write(a, 0, host, 8, 0));
    TRY(fm_buffer_read(a, 0, back, 8, 0));
    EXPECT(memcmp(back, host, sizeof host) == 0);
    TRY(fm_buffer_fill(b, 0, 8, 0.5, 0));      /* b = 0.5 everywhere */
    TRY(fm_buffer_copy(b, 2, a, 0, 4, 0));     /* b[2..6) = a[0..4) */
    TRY(fm_buffer_read(b, 0, back, 8, 0));
    printf("buffers: b =");
    for (i = 0; i < 8; i++) printf(" %g", back[i]);
    printf("\n");
    for (i = 0; i < 8; i++) EXPECT(back[i] == (i >= 2 && i < 6 ? host[i - 2] : 0.5f));

    /* 4. The pool: released memory is cached for reuse until trimmed. */
    printf("memory pool:\n");
    print_pool("with 2 buffers", device);
    TRY(fm_release(b));
    b = 0;
    print_pool("after a release", device);
    TRY(fm_device_pool_trim(device));
    print_pool("after a trim", device);

    /* 5. A stream: calls queue work and return; synchronize waits for it
     *    (the host array may be reused as soon as the write returns). */
    TRY(fm_stream_new(&stream, device));
    TRY(fm_buffer_write(a, 0, host, 8, stream));
    TRY(fm_buffer_read(a, 0, back, 8, stream));
    TRY(fm_stream_synchronize(stream));
    EXPECT(memcmp(back, host, sizeof host) == 0);
    printf("stream: write + read, synchronized\n");

    /* 6. Errors: every failure is a status plus a message naming the call. */
    if (show_errors(device) != 0) return 1;

    TRY(fm_release(stream));
    TRY(fm_release(a));
    TRY(fm_release(device));
    printf("ok\n");
    return 0;
}
