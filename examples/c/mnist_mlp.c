/* Trains an MLP on MNIST from C through ferrometal's level 3, and prints the
 * test accuracy. One call per training step; parameters stay on the device.
 *
 *   mnist_mlp [DATA_DIR [EPOCHS [TRAIN_LIMIT [MIN_ACCURACY]]]]
 *
 * DATA_DIR holds the four MNIST files (gzip); the default is data/mnist.
 * Exits 1 on any error, or when the test accuracy is below MIN_ACCURACY. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ferrometal.h"

#define PIXELS 784
#define BATCH 64

static int report(fm_status status, const char *what) {
    if (status == FM_OK) return 0;
    fprintf(stderr, "%s failed: %s: %s\n", what, fm_status_str(status), fm_last_error());
    return 1;
}

/* Reads an IDX file (gzip) with `rank` dims; returns its data (caller
 * frees) and the first dim in *count, or NULL with a message. */
static unsigned char *read_idx(const char *dir, const char *name, int rank, size_t *count) {
    char path[1024];
    unsigned char header[16];
    size_t items = 1, bytes;
    unsigned char *data;
    gzFile file;
    int i;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    file = gzopen(path, "rb");
    if (!file) {
        fprintf(stderr, "cannot open %s (the MNIST files are expected there)\n", path);
        return NULL;
    }
    if (gzread(file, header, (unsigned)(4 + 4 * rank)) != 4 + 4 * rank || header[2] != 8 ||
        header[3] != rank) {
        fprintf(stderr, "%s is not an IDX file of rank %d\n", path, rank);
        gzclose(file);
        return NULL;
    }
    for (i = 0; i < rank; ++i) {
        size_t dim = ((size_t)header[4 + 4 * i] << 24) | ((size_t)header[5 + 4 * i] << 16) |
                     ((size_t)header[6 + 4 * i] << 8) | header[7 + 4 * i];
        if (i == 0) *count = dim;
        items *= dim;
    }
    bytes = items;
    data = malloc(bytes ? bytes : 1);
    if (!data || (size_t)gzread(file, data, (unsigned)bytes) != bytes) {
        fprintf(stderr, "%s is truncated\n", path);
        free(data);
        data = NULL;
    }
    gzclose(file);
    return data;
}

/* Copies samples [first, first + n) into the trainer's input tensors. */
static fm_status load_batch(fm_tensor images, fm_tensor labels, const unsigned char *pixels,
                            const unsigned char *digits, size_t first, size_t n) {
    static float x[BATCH * PIXELS];
    static int32_t y[BATCH];
    fm_buffer buffer = 0;
    fm_status status;
    size_t i;
    for (i = 0; i < n * PIXELS; ++i) x[i] = (pixels[first * PIXELS + i] / 255.0f - 0.1307f) / 0.3081f;
    for (i = 0; i < n; ++i) y[i] = digits[first + i];
    status = fm_tensor_buffer(&buffer, images);
    if (status == FM_OK) status = fm_buffer_write(buffer, 0, x, n * PIXELS, 0);
    fm_release(buffer);
    if (status != FM_OK) return status;
    status = fm_tensor_buffer(&buffer, labels);
    if (status == FM_OK) status = fm_buffer_write(buffer, 0, y, n, 0);
    fm_release(buffer);
    return status;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "data/mnist";
    int epochs = argc > 2 ? atoi(argv[2]) : 2;
    size_t limit = argc > 3 ? (size_t)atol(argv[3]) : 0;
    double min_accuracy = argc > 4 ? atof(argv[4]) : 0.0;
    size_t train_count = 0, test_count = 0, label_count = 0, first, correct = 0;
    unsigned char *train_x = read_idx(dir, "train-images-idx3-ubyte.gz", 3, &train_count);
    unsigned char *train_y = read_idx(dir, "train-labels-idx1-ubyte.gz", 1, &label_count);
    unsigned char *test_x = read_idx(dir, "t10k-images-idx3-ubyte.gz", 3, &test_count);
    unsigned char *test_y = read_idx(dir, "t10k-labels-idx1-ubyte.gz", 1, &label_count);
    fm_device device = 0;
    fm_trainer trainer = 0;
    fm_tensor images = 0, labels = 0;
    fm_layer_spec layers[5];
    fm_optimizer optimizer = fm_optimizer_default(FM_OPTIMIZER_ADAM);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    int64_t input_shape[3] = {1, 28, 28}, batch_shape[4] = {BATCH, 1, 28, 28}, label_shape[1] = {BATCH};
    int failed = 1, epoch;
    double accuracy;

    if (!train_x || !train_y || !test_x || !test_y) goto done;
    if (limit && limit < train_count) train_count = limit;

    layers[0] = fm_layer_spec_default(FM_LAYER_FLATTEN);
    layers[1] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[1].units = 128;
    layers[2] = fm_layer_spec_default(FM_LAYER_RELU);
    layers[3] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[3].units = 10;
    optimizer.learning_rate = 2e-3;
    if (report(fm_device_open_best(&device), "fm_device_open_best")) goto done;
    if (report(fm_trainer_new(&trainer, device, layers, 4, input_shape, 3, &optimizer, &loss, 1, NULL),
               "fm_trainer_new")) {
        goto done;
    }
    if (report(fm_tensor_new(&images, device, FM_DTYPE_F32, batch_shape, 4), "fm_tensor_new") ||
        report(fm_tensor_new(&labels, device, FM_DTYPE_I32, label_shape, 1), "fm_tensor_new")) {
        goto done;
    }
    /* Full batches only: the fixed tensors are reused for every step. */
    for (epoch = 1; epoch <= epochs; ++epoch) {
        float last = 0;
        for (first = 0; first + BATCH <= train_count; first += BATCH) {
            int read_loss = first + 2 * BATCH > train_count;
            if (report(load_batch(images, labels, train_x, train_y, first, BATCH), "load") ||
                report(fm_trainer_step(trainer, images, labels, read_loss ? &last : NULL),
                       "fm_trainer_step")) {
                goto done;
            }
        }
        printf("epoch %d: last batch loss %.4f\n", epoch, last);
    }
    for (first = 0; first + BATCH <= test_count; first += BATCH) {
        float batch_loss;
        uint64_t batch_correct;
        if (report(load_batch(images, labels, test_x, test_y, first, BATCH), "load") ||
            report(fm_trainer_evaluate(trainer, images, labels, &batch_loss, &batch_correct),
                   "fm_trainer_evaluate")) {
            goto done;
        }
        correct += batch_correct;
    }
    accuracy = (double)correct / (double)(test_count / BATCH * BATCH);
    printf("test accuracy: %.2f%% (%zu training images, %d epochs)\n", 100.0 * accuracy,
           train_count, epochs);
    failed = accuracy < min_accuracy;
    if (failed) fprintf(stderr, "accuracy below the required %.2f%%\n", 100.0 * min_accuracy);
done:
    if (images) fm_release(images);
    if (labels) fm_release(labels);
    if (trainer) fm_release(trainer);
    if (device) fm_release(device);
    free(train_x);
    free(train_y);
    free(test_x);
    free(test_y);
    return failed;
}
