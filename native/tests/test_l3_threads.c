/*
 * Level 3 and executables from several threads at once, the way the header
 * allows it (run it under ThreadSanitizer: scripts/sanitize.sh thread):
 * one trainer stepped, evaluated, read, saved and re-tuned by four threads;
 * one inference engine shared by two more; variables of a trainer's
 * executable read while it steps. The calls must be serialised, never
 * interleaved: every read of a weight sees a whole step's values (all
 * finite), every step succeeds, and the step counter ends exact.
 */
#define _POSIX_C_SOURCE 200809L /* getpid */

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "c_test_support.h"
#include "ferrometal.h"

enum { THREADS = 6, STEPS = 40, FEATURES = 6, BATCH = 8, UNITS = 5 };


static fm_device device;
static fm_trainer trainer;
static fm_inference inference;
static fm_tensor inputs, labels;
static char path[64];

static fm_tensor tensor_of(fm_dtype dtype, const int64_t *shape, size_t rank, const void *data, size_t count) {
    fm_tensor t = 0;
    fm_buffer b = 0;
    CHECK_OK(fm_tensor_new(&t, device, dtype, shape, rank));
    CHECK_OK(fm_tensor_buffer(&b, t));
    CHECK_OK(fm_buffer_write(b, 0, data, count, 0));
    fm_release(b);
    return t;
}

static void *worker(void *argument) {
    int id = (int)(intptr_t)argument;
    fm_exec exec = 0;
    CHECK_OK(fm_trainer_exec(&exec, trainer));
    for (int i = 0; i < STEPS; ++i) {
        switch (id) {
            case 0:
            case 1: {
                float loss = 0;
                CHECK_OK(fm_trainer_step(trainer, inputs, labels, i % 4 == 0 ? &loss : NULL));
                CHECK(isfinite(loss));
                break;
            }
            case 2: {
                float loss = 0;
                uint64_t correct = 0;
                fm_tensor out = 0;
                CHECK_OK(fm_trainer_evaluate(trainer, inputs, labels, &loss, &correct));
                CHECK_OK(fm_trainer_predict(&out, trainer, inputs));
                fm_release(out);
                CHECK_OK(fm_trainer_set_learning_rate(trainer, 1e-3 * (1 + i % 3)));
                break;
            }
            case 3: {
                float weight[UNITS * FEATURES];
                CHECK_OK(fm_exec_read_variable(exec, "dense0.weight", weight, UNITS * FEATURES));
                for (int k = 0; k < UNITS * FEATURES; ++k) CHECK(isfinite(weight[k]));
                fm_trainer_stats stats;
                CHECK_OK(fm_trainer_stats_get(&stats, trainer));
                CHECK(stats.skipped_steps == 0);
                if (i % 10 == 0) CHECK_OK(fm_trainer_save(trainer, path, NULL));
                break;
            }
            default: {
                fm_tensor out = 0;
                CHECK_OK(fm_infer(&out, inference, inputs));
                fm_release(out);
                if (i % 10 == 5) CHECK_OK(fm_inference_load(inference, path));
            }
        }
    }
    fm_release(exec);
    return NULL;
}

int main(void) {
    snprintf(path, sizeof path, "/tmp/fm-l3-threads-%ld.safetensors", (long)getpid());
    CHECK_OK(fm_device_open(&device, FM_BACKEND_CPU, 0));
    fm_layer_spec layers[3];
    layers[0] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[0].units = UNITS;
    layers[1] = fm_layer_spec_default(FM_LAYER_RELU);
    layers[2] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[2].units = 3;
    const int64_t input_shape[] = {FEATURES};
    fm_optimizer adam = fm_optimizer_default(FM_OPTIMIZER_ADAM);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    CHECK_OK(fm_trainer_new(&trainer, device, layers, 3, input_shape, 1, &adam, &loss, 7, NULL));
    CHECK_OK(fm_inference_from_trainer(&inference, trainer, device));
    CHECK_OK(fm_trainer_save(trainer, path, NULL));
    float xs[BATCH * FEATURES];
    int32_t ys[BATCH];
    for (int i = 0; i < BATCH * FEATURES; ++i) xs[i] = (float)((i * 5) % 7) / 7.0f - 0.5f;
    for (int i = 0; i < BATCH; ++i) ys[i] = i % 3;
    const int64_t x_shape[] = {BATCH, FEATURES}, y_shape[] = {BATCH};
    inputs = tensor_of(FM_DTYPE_F32, x_shape, 2, xs, BATCH * FEATURES);
    labels = tensor_of(FM_DTYPE_I32, y_shape, 1, ys, BATCH);

    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; ++i) pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; ++i) pthread_join(threads[i], NULL);

    fm_trainer_stats stats;
    CHECK_OK(fm_trainer_stats_get(&stats, trainer));
    CHECK(stats.steps == 2 * STEPS);
    fm_exec exec = 0;
    float step = 0;
    CHECK_OK(fm_trainer_exec(&exec, trainer));
    CHECK_OK(fm_exec_read_variable(exec, "optimizer.step", &step, 1));
    CHECK(step == 2 * STEPS);
    fm_release(exec);
    fm_release(inputs);
    fm_release(labels);
    fm_release(inference);
    fm_release(trainer);
    fm_release(device);
    remove(path);
    printf("test_l3_threads: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
