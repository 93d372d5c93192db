/*
 * The level-1 ABI from many threads at once (run it under the sanitizers:
 * scripts/sanitize.sh). The header promises that devices and the handle
 * table are thread-safe and that fm_last_error() is per thread.
 *
 * Each worker thread, in a loop: retains and releases the shared device
 * handle; opens and releases its own handle to the same device; creates
 * buffers of every dtype, fills, writes, copies and reads them on its own
 * stream and checks the values; provokes an error and checks that the
 * message is its own; reads the pool statistics and resets the peak. Some
 * workers also swap buffers in a shared table while others use the old
 * handles, which must then fail cleanly with FM_ERR_INVALID_HANDLE.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "c_test_support.h"
#include "ferrometal.h"

enum { THREADS = 8, ITERATIONS = 300, SHARED_SLOTS = 4, ELEMENTS = 257 };


static fm_device shared_device;

/* Buffers that threads replace while others use them. */
static pthread_mutex_t slots_mutex = PTHREAD_MUTEX_INITIALIZER;
static fm_buffer slots[SHARED_SLOTS];

static fm_buffer take_slot(int index) {
    fm_buffer handle;
    pthread_mutex_lock(&slots_mutex);
    handle = slots[index];
    pthread_mutex_unlock(&slots_mutex);
    return handle;
}

/* Puts `fresh` into the slot and returns the handle it replaced, which the
 * caller releases (outside the lock, while others may still be using it). */
static fm_buffer swap_slot(int index, fm_buffer fresh) {
    fm_buffer old;
    pthread_mutex_lock(&slots_mutex);
    old = slots[index];
    slots[index] = fresh;
    pthread_mutex_unlock(&slots_mutex);
    return old;
}

static void own_buffers(int id, int iteration, fm_device device, fm_stream stream) {
    fm_dtype dtype = (fm_dtype)((id + iteration) % FM_DTYPE_COUNT);
    size_t size = 0, count = ELEMENTS + (size_t)(iteration % 7) * 100;
    unsigned char pattern[4 * (ELEMENTS + 600)];
    unsigned char back[sizeof pattern];
    fm_buffer first = 0, second = 0;
    size_t i;

    CHECK_OK(fm_dtype_size(&size, dtype));
    CHECK_OK(fm_buffer_new(&first, device, dtype, count));
    CHECK_OK(fm_buffer_new(&second, shared_device, dtype, count));
    for (i = 0; i < count * size; i++) pattern[i] = (unsigned char)(i * 7 + (size_t)id);
    CHECK_OK(fm_buffer_write(first, 0, pattern, count, stream));
    CHECK_OK(fm_buffer_fill(second, 0, count, 1.0, stream));
    CHECK_OK(fm_buffer_copy(second, 1, first, 1, count - 2, stream));
    memset(back, 0, sizeof back);
    CHECK_OK(fm_buffer_read(second, 0, back, count, stream));
    CHECK_OK(fm_stream_synchronize(stream));
    /* The middle was copied; both ends keep the fill value. */
    CHECK(memcmp(back + size, pattern + size, (count - 2) * size) == 0);
    CHECK(memcmp(back, back + (count - 1) * size, size) == 0);
    CHECK_OK(fm_release(first));
    CHECK_OK(fm_release(second));
}

static void shared_buffers(int id, int iteration) {
    int index = (id + iteration) % SHARED_SLOTS;
    fm_buffer handle = take_slot(index);
    float values[16], back[16];
    fm_status status;
    int i;

    for (i = 0; i < 16; i++) values[i] = (float)(id * 1000 + i);
    /* Another thread may have released `handle` since: then, and only then,
     * the calls fail, with FM_ERR_INVALID_HANDLE. */
    status = fm_buffer_write(handle, (size_t)id * 16, values, 16, 0);
    CHECK(status == FM_OK || status == FM_ERR_INVALID_HANDLE);
    status = fm_buffer_read(handle, (size_t)id * 16, back, 16, 0);
    CHECK(status == FM_OK || status == FM_ERR_INVALID_HANDLE);
    if (status != FM_OK) CHECK(strncmp(fm_last_error(), "fm_buffer_read:", 15) == 0);

    if (iteration % 10 == id % 10) {
        fm_buffer fresh = 0;
        CHECK_OK(fm_buffer_new(&fresh, shared_device, FM_DTYPE_F32, THREADS * 16));
        CHECK_OK(fm_release(swap_slot(index, fresh)));
    }
}

static void *worker(void *argument) {
    int id = (int)(intptr_t)argument;
    fm_device own = 0;
    fm_stream stream = 0;
    char expected[64];
    int iteration;

    /* A new thread starts with an empty message. */
    CHECK(fm_last_error()[0] == '\0');

    CHECK_OK(fm_device_open(&own, FM_BACKEND_CPU, 0));
    CHECK_OK(fm_stream_new(&stream, own));
    for (iteration = 0; iteration < ITERATIONS; iteration++) {
        fm_device temporary = 0;
        fm_pool_stats stats;
        size_t count = 0;
        float sink[1];

        CHECK_OK(fm_retain(shared_device));
        CHECK_OK(fm_device_open(&temporary, FM_BACKEND_CPU, 0));
        own_buffers(id, iteration, temporary, stream);
        shared_buffers(id, iteration);
        CHECK_OK(fm_device_pool_stats(&stats, shared_device));
        CHECK(stats.system_allocations <= stats.allocations);
        if (iteration % 50 == 0) CHECK_OK(fm_device_pool_reset_peak(temporary));
        if (iteration % 97 == id) CHECK_OK(fm_device_pool_trim(shared_device));

        /* This thread's error message is its own, whatever others do. */
        CHECK(fm_buffer_read(0, (size_t)id, sink, 1, 0) == FM_ERR_INVALID_HANDLE);
        CHECK(fm_device_count(&count, (fm_backend)(100 + id)) == FM_ERR_INVALID_ARGUMENT);
        snprintf(expected, sizeof expected, "%d", 100 + id);
        CHECK(strncmp(fm_last_error(), "fm_device_count:", 16) == 0);
        CHECK(strstr(fm_last_error(), expected) != NULL);

        CHECK_OK(fm_release(temporary));
        CHECK_OK(fm_release(shared_device));
    }
    CHECK_OK(fm_release(stream));
    CHECK_OK(fm_release(own));
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    fm_pool_stats before, after;
    int i;

    CHECK_OK(fm_device_open(&shared_device, FM_BACKEND_CPU, 0));
    before.bytes_in_use = 0;
    CHECK_OK(fm_device_pool_stats(&before, shared_device));
    for (i = 0; i < SHARED_SLOTS; i++) {
        CHECK_OK(fm_buffer_new(&slots[i], shared_device, FM_DTYPE_F32, THREADS * 16));
    }

    for (i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);

    for (i = 0; i < SHARED_SLOTS; i++) CHECK_OK(fm_release(slots[i]));
    after.bytes_in_use = 1;
    CHECK_OK(fm_device_pool_stats(&after, shared_device));
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.allocations > before.allocations);
    /* Every retain was matched: one release is left, then the handle is gone. */
    CHECK_OK(fm_release(shared_device));
    CHECK(fm_release(shared_device) == FM_ERR_INVALID_HANDLE);

    printf("test_l1_threads: %d threads x %d iterations, %d checks, %d failed\n", THREADS,
           ITERATIONS, checks, failures);
    return failures == 0 ? 0 : 1;
}
