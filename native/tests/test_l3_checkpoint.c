/*
 * Checkpoints through the C ABI, as a C host uses them: save a trainer,
 * load it into another, take the weights into an inference engine, read
 * the host metadata back, and get errors (not crashes) for bad paths,
 * files and arguments, with nothing changed.
 */
#define _POSIX_C_SOURCE 200809L /* getpid */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "c_test_support.h"
#include "ferrometal.h"

enum { FEATURES = 6, CLASSES = 3, BATCH = 8 };

/* The model: dense 5, relu, dense CLASSES over FEATURES inputs. */
static void model_layers(fm_layer_spec layers[3]) {
    layers[0] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[0].units = 5;
    layers[1] = fm_layer_spec_default(FM_LAYER_RELU);
    layers[2] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[2].units = CLASSES;
}

static fm_trainer new_trainer(fm_device device, fm_optimizer_kind kind, uint64_t seed) {
    fm_layer_spec layers[3];
    model_layers(layers);
    const int64_t input_shape[] = {FEATURES};
    fm_optimizer optimizer = fm_optimizer_default(kind);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    fm_trainer trainer = 0;
    CHECK_OK(fm_trainer_new(&trainer, device, layers, 3, input_shape, 1, &optimizer, &loss, seed, NULL));
    return trainer;
}

static void read_weight(fm_exec exec, float *out) {
    CHECK_OK(fm_exec_read_variable(exec, "dense0.weight", out, 5 * FEATURES));
}

static void train_a_little(fm_device device, fm_trainer trainer) {
    float xs[BATCH * FEATURES];
    int32_t ys[BATCH];
    for (int i = 0; i < BATCH * FEATURES; ++i) xs[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < BATCH; ++i) ys[i] = i % CLASSES;
    const int64_t x_shape[] = {BATCH, FEATURES}, y_shape[] = {BATCH};
    fm_tensor x = 0, y = 0;
    fm_buffer xb = 0, yb = 0;
    CHECK_OK(fm_tensor_new(&x, device, FM_DTYPE_F32, x_shape, 2));
    CHECK_OK(fm_tensor_new(&y, device, FM_DTYPE_I32, y_shape, 1));
    CHECK_OK(fm_tensor_buffer(&xb, x));
    CHECK_OK(fm_tensor_buffer(&yb, y));
    CHECK_OK(fm_buffer_write(xb, 0, xs, BATCH * FEATURES, 0));
    CHECK_OK(fm_buffer_write(yb, 0, ys, BATCH, 0));
    for (int step = 0; step < 3; ++step) CHECK_OK(fm_trainer_step(trainer, x, y, NULL));
    fm_release(xb);
    fm_release(yb);
    fm_release(x);
    fm_release(y);
}

int main(void) {
    char path[64], bad_path[64];
    snprintf(path, sizeof path, "/tmp/fm-c-checkpoint-%ld.safetensors", (long)getpid());
    snprintf(bad_path, sizeof bad_path, "/tmp/fm-c-checkpoint-%ld.bad", (long)getpid());
    fm_device device = 0;
    CHECK_OK(fm_device_open(&device, FM_BACKEND_CPU, 0));
    fm_trainer source = new_trainer(device, FM_OPTIMIZER_ADAM, 1);
    train_a_little(device, source);
    CHECK_OK(fm_trainer_save(source, path, "{\"epoch\": 3}"));

    /* The host metadata comes back whole, and its length first. */
    size_t length = 0;
    char text[64];
    CHECK_OK(fm_checkpoint_metadata(NULL, 0, &length, path));
    CHECK(length == strlen("{\"epoch\": 3}"));
    CHECK_OK(fm_checkpoint_metadata(text, 5, &length, path));
    CHECK(strcmp(text, "{\"ep") == 0 && length == 12);
    CHECK_OK(fm_checkpoint_metadata(text, sizeof text, &length, path));
    CHECK(strcmp(text, "{\"epoch\": 3}") == 0);

    /* A trainer of the same model and optimizer takes everything. */
    fm_trainer copy = new_trainer(device, FM_OPTIMIZER_ADAM, 2);
    CHECK_OK(fm_trainer_load(copy, path));
    fm_exec source_exec = 0, copy_exec = 0;
    CHECK_OK(fm_trainer_exec(&source_exec, source));
    CHECK_OK(fm_trainer_exec(&copy_exec, copy));
    float want[5 * FEATURES], got[5 * FEATURES];
    read_weight(source_exec, want);
    read_weight(copy_exec, got);
    CHECK(memcmp(want, got, sizeof want) == 0);
    uint64_t source_runs = 0, copy_runs = 0;
    CHECK_OK(fm_exec_run_count(&source_runs, source_exec));
    CHECK_OK(fm_exec_run_count(&copy_runs, copy_exec));
    CHECK(source_runs == copy_runs && copy_runs == 3);

    /* Another optimizer: load is refused naming both, load_weights works. */
    fm_trainer sgd = new_trainer(device, FM_OPTIMIZER_SGD, 3);
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_trainer_load(sgd, path));
    CHECK(strstr(fm_last_error(), "'adam'") != NULL && strstr(fm_last_error(), "'sgd'") != NULL);
    CHECK_OK(fm_trainer_load_weights(sgd, path));
    fm_exec sgd_exec = 0;
    CHECK_OK(fm_trainer_exec(&sgd_exec, sgd));
    read_weight(sgd_exec, got);
    CHECK(memcmp(want, got, sizeof want) == 0);

    /* An inference engine takes the weights, and saves its own. */
    fm_inference inference = 0;
    fm_layer_spec layers[3];
    model_layers(layers);
    const int64_t input_shape[] = {FEATURES};
    CHECK_OK(fm_inference_new(&inference, device, layers, 3, input_shape, 1));
    CHECK_OK(fm_inference_load(inference, path));
    CHECK_OK(fm_inference_save(inference, bad_path, NULL));
    CHECK_OK(fm_trainer_load_weights(copy, bad_path));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_trainer_load(copy, bad_path)); /* optimizer "none" */

    /* Bad files and arguments: errors, and the trainer is unchanged. */
    FILE *f = fopen(bad_path, "wb");
    if (f) {
        fputs("not a checkpoint at all", f);
        fclose(f);
    }
    EXPECT(FM_ERR_IO, fm_trainer_load(copy, bad_path));
    EXPECT(FM_ERR_IO, fm_trainer_load(copy, "/nonexistent/folder/x.safetensors"));
    EXPECT(FM_ERR_IO, fm_trainer_save(copy, "/nonexistent/folder/x.safetensors", NULL));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_trainer_load(copy, NULL));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_trainer_save(copy, "", NULL));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_checkpoint_metadata(NULL, 4, &length, path));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_trainer_save(0, path, NULL));
    EXPECT(FM_ERR_INVALID_HANDLE, fm_inference_load((fm_inference)source, path));
    read_weight(copy_exec, got);
    CHECK(memcmp(want, got, sizeof want) == 0);

    fm_release(sgd_exec);
    fm_release(copy_exec);
    fm_release(source_exec);
    fm_release(inference);
    fm_release(sgd);
    fm_release(copy);
    fm_release(source);
    fm_release(device);
    remove(path);
    remove(bad_path);
    printf("test_l3_checkpoint: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
