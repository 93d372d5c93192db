/*
 * The C ABI under hostile input: each case is an input that once crashed,
 * corrupted memory or was wrongly accepted (issue 24's findings), and must
 * now fail with a clear error and change nothing.
 *
 * Run it under AddressSanitizer too (scripts/sanitize.sh): some cases
 * (names freed after the call) only show themselves there.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_test_support.h"
#include "ferrometal.h"

static fm_device open_cpu(void) {
    fm_device device = 0;
    CHECK_OK(fm_device_open(&device, FM_BACKEND_CPU, 0));
    return device;
}

/* After 2^24 - 1 reuses of a slot, a released handle must not come back
 * to life: the slot is retired instead of its generation wrapping. Runs
 * first, while the handle table's free list holds one slot, so every
 * cycle reuses it. */
static void test_generations_never_wrap(fm_device device) {
    fm_buffer first = 0;
    CHECK_OK(fm_buffer_new(&first, device, FM_DTYPE_F32, 1));
    CHECK_OK(fm_release(first));
    const long cycles = (1L << 24) + 16;
    long revived = 0;
    for (long i = 0; i < cycles; ++i) {
        fm_buffer buffer = 0;
        if (fm_buffer_new(&buffer, device, FM_DTYPE_F32, 1) != FM_OK) {
            CHECK(!"fm_buffer_new failed in the loop");
            return;
        }
        revived += buffer == first;
        fm_release(buffer);
    }
    CHECK(revived == 0);
    EXPECT(FM_ERR_INVALID_HANDLE, fm_release(first));
}

/* A dense layer named through a string the caller overwrites and frees
 * right after fm_trainer_new: the trainer must have copied it. */
static void test_layer_names_are_copied(fm_device device) {
    char *name = malloc(8);
    if (name == NULL) return;
    strcpy(name, "fc1");
    fm_layer_spec layers[2];
    layers[0] = fm_layer_spec_default(FM_LAYER_FLATTEN);
    layers[1] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[1].units = 3;
    layers[1].name = name;
    const int64_t input_shape[] = {2, 2};
    fm_optimizer optimizer = fm_optimizer_default(FM_OPTIMIZER_SGD);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    fm_trainer trainer = 0;
    CHECK_OK(fm_trainer_new(&trainer, device, layers, 2, input_shape, 2, &optimizer, &loss, 7, NULL));
    strcpy(name, "zz9");
    free(name);
    fm_inference inference = 0;
    CHECK_OK(fm_inference_from_trainer(&inference, trainer, device));
    fm_exec exec = 0;
    CHECK_OK(fm_inference_exec(&exec, inference));
    int64_t dims[FM_MAX_RANK];
    size_t rank = 0;
    CHECK_OK(fm_exec_variable_shape(dims, &rank, exec, "fc1.weight"));
    CHECK(rank == 2 && dims[0] == 3 && dims[1] == 4);
    fm_release(exec);
    fm_release(inference);
    fm_release(trainer);
}

/* FM_INIT_DATA is a valid fm_init_kind, but a layer spec has no data to
 * copy: an error naming the layer, never memcpy(NULL). */
static void test_layer_init_data_refused(fm_device device) {
    fm_layer_spec layers[1];
    layers[0] = fm_layer_spec_default(FM_LAYER_DENSE);
    layers[0].units = 2;
    layers[0].init = FM_INIT_DATA;
    const int64_t input_shape[] = {3};
    fm_optimizer optimizer = fm_optimizer_default(FM_OPTIMIZER_SGD);
    fm_loss_config loss = {FM_OP_SOFTMAX_CROSS_ENTROPY, 0.0, 1.0};
    fm_trainer trainer = 0;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_trainer_new(&trainer, device, layers, 1, input_shape, 1, &optimizer, &loss, 1, NULL));
    CHECK(strstr(fm_last_error(), "layer 0 'dense0'") != NULL && strstr(fm_last_error(), "FM_INIT_DATA") != NULL);
    CHECK(trainer == 0);
    fm_inference inference = 0;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_inference_new(&inference, device, layers, 1, input_shape, 1));
    CHECK(inference == 0);
    layers[0].init = (fm_init_kind)99;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_inference_new(&inference, device, layers, 1, input_shape, 1));
}

/* Results of rank above FM_MAX_RANK are refused where they arise, so
 * fm_graph_value_info never writes past the caller's FM_MAX_RANK dims. */
static void test_rank_limit(void) {
    fm_graph graph = 0;
    CHECK_OK(fm_graph_new(&graph));
    const int64_t shape8[FM_MAX_RANK] = {1, 1, 1, 1, 1, 1, 1, 2};
    fm_value x = 0, indices = 0, out = 0;
    CHECK_OK(fm_graph_placeholder(&x, graph, "x", FM_DTYPE_F32, shape8, FM_MAX_RANK));
    CHECK_OK(fm_graph_placeholder(&indices, graph, "i", FM_DTYPE_I32, shape8, FM_MAX_RANK));
    fm_op_attrs attrs = fm_op_attrs_default();
    attrs.num_axes = FM_MAX_RANK;
    for (size_t i = 0; i < FM_MAX_RANK; ++i) attrs.axes[i] = (int64_t)i;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_op(&out, graph, FM_OP_UNSQUEEZE, &x, 1, &attrs));
    CHECK(strstr(fm_last_error(), "FM_MAX_RANK") != NULL);
    attrs = fm_op_attrs_default();
    attrs.depth = 4;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_op(&out, graph, FM_OP_ONE_HOT, &indices, 1, &attrs));
    CHECK(out == 0);
    /* One below the limit still works. */
    const int64_t shape7[7] = {1, 1, 1, 1, 1, 1, 2};
    fm_value y = 0;
    CHECK_OK(fm_graph_placeholder(&y, graph, "y", FM_DTYPE_I32, shape7, 7));
    CHECK_OK(fm_graph_op(&out, graph, FM_OP_ONE_HOT, &y, 1, &attrs));
    fm_dtype dtype;
    int64_t dims[FM_MAX_RANK + 1];
    size_t rank = 0;
    dims[FM_MAX_RANK] = 12345;
    CHECK_OK(fm_graph_value_info(&dtype, dims, &rank, graph, out));
    CHECK(rank == FM_MAX_RANK && dims[FM_MAX_RANK - 1] == 4 && dims[FM_MAX_RANK] == 12345);
    fm_release(graph);
}

/* Shapes whose element count overflows 64 bits: [3, 6148914691236517206]
 * wraps to 2 elements, which once matched a 2-element buffer. */
static void test_overflowing_shapes(fm_device device) {
    const int64_t wrapping[2] = {3, 6148914691236517206LL};
    const int64_t huge[3] = {1LL << 40, 1LL << 40, 1LL << 40};
    fm_buffer buffer = 0;
    CHECK_OK(fm_buffer_new(&buffer, device, FM_DTYPE_F32, 2));
    fm_tensor tensor = 0;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_tensor_from_buffer(&tensor, buffer, wrapping, 2));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_tensor_from_buffer(&tensor, buffer, huge, 3));
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_tensor_new(&tensor, device, FM_DTYPE_F32, wrapping, 2));
    CHECK(tensor == 0);
    fm_release(buffer);

    fm_graph graph = 0;
    CHECK_OK(fm_graph_new(&graph));
    fm_value value = 0;
    const float data[2] = {1, 2};
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_constant(&value, graph, FM_DTYPE_F32, wrapping, 2, data));
    fm_init init = fm_init_default();
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_variable(&value, graph, "v", FM_DTYPE_F32, wrapping, 2, &init));
    init.kind = FM_INIT_DATA;
    init.data = data;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_variable(&value, graph, "w", FM_DTYPE_F32, wrapping, 2, &init));
    const int64_t batch_huge[3] = {FM_BATCH, 1LL << 40, 1LL << 40};
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_placeholder(&value, graph, "p", FM_DTYPE_F32, wrapping, 2));
    /* A batch dim whose probe sizes overflow the rest of the shape. */
    fm_value p = 0;
    fm_status status = fm_graph_placeholder(&p, graph, "q", FM_DTYPE_F32, batch_huge, 3);
    CHECK(status == FM_ERR_INVALID_ARGUMENT || status == FM_OK);
    CHECK(value == 0);
    fm_release(graph);
}

/* Zero-sized transfers from and to NULL are no-ops (UBSan checks that no
 * memcpy sees a NULL pointer). */
static void test_zero_byte_transfers(fm_device device) {
    fm_buffer empty = 0;
    CHECK_OK(fm_buffer_new(&empty, device, FM_DTYPE_F32, 0));
    CHECK_OK(fm_buffer_write(empty, 0, NULL, 0, 0));
    CHECK_OK(fm_buffer_read(empty, 0, NULL, 0, 0));
    CHECK_OK(fm_buffer_fill(empty, 0, 0, 1.0, 0));
    fm_buffer other = 0;
    CHECK_OK(fm_buffer_new(&other, device, FM_DTYPE_F32, 0));
    CHECK_OK(fm_buffer_copy(other, 0, empty, 0, 0, 0));
    fm_release(other);
    fm_release(empty);
}

/* Found by fuzz_abi (native/fuzz): each once read or wrote out of bounds
 * or overflowed, under ASan/UBSan. */
static void test_fuzzer_findings(fm_device device) {
    fm_graph graph = 0;
    CHECK_OK(fm_graph_new(&graph));
    fm_value v = 0, out = 0;
    /* FM_INIT_DATA with a negative dim sized the copy from the caller's data. */
    const float data[4] = {1, 2, 3, 4};
    const int64_t negative[2] = {-3, 2};
    fm_init init = fm_init_default();
    init.kind = FM_INIT_DATA;
    init.data = data;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_variable(&v, graph, "w", FM_DTYPE_F32, negative, 2, &init));
    /* Slice read attrs.axes past FM_MAX_RANK when num_axes was larger. */
    const int64_t shape[4] = {2, 3, 4, 5};
    fm_value x = 0;
    CHECK_OK(fm_graph_placeholder(&x, graph, "x", FM_DTYPE_F32, shape, 4));
    fm_op_attrs attrs = fm_op_attrs_default();
    attrs.num_axes = FM_MAX_RANK + 1;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_op(&out, graph, FM_OP_SLICE, &x, 1, &attrs));
    /* A transposed convolution's output size overflowed with a huge stride. */
    const int64_t weight_shape[4] = {3, 2, 3, 3};
    fm_value w = 0;
    init = fm_init_default();
    CHECK_OK(fm_graph_variable(&w, graph, "cw", FM_DTYPE_F32, weight_shape, 4, &init));
    fm_value conv_inputs[2] = {x, w};
    attrs = fm_op_attrs_default();
    attrs.stride[0] = (int64_t)1 << 57;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_op(&out, graph, FM_OP_CONV_TRANSPOSE2D, conv_inputs, 2, &attrs));
    attrs = fm_op_attrs_default();
    attrs.dilation[1] = (int64_t)1 << 40;
    EXPECT(FM_ERR_INVALID_ARGUMENT, fm_graph_op(&out, graph, FM_OP_CONV2D, conv_inputs, 2, &attrs));
    /* Concat (and the other layout kernels) copied 4-byte elements out of
     * a u8 variable's 1-byte ones. */
    const int64_t small[2] = {4, 4};
    fm_value bytes = 0;
    CHECK_OK(fm_graph_variable(&bytes, graph, "u", FM_DTYPE_U8, small, 2, &init));
    attrs = fm_op_attrs_default();
    EXPECT(FM_ERR_DTYPE_MISMATCH, fm_graph_op(&out, graph, FM_OP_CONCAT, &bytes, 1, &attrs));
    attrs.num_axes = 1;
    attrs.axes[0] = 0;
    attrs.starts[0] = 1;
    attrs.ends[0] = 3;
    EXPECT(FM_ERR_DTYPE_MISMATCH, fm_graph_op(&out, graph, FM_OP_SLICE, &bytes, 1, &attrs));
    /* f32 and i32 still concatenate. */
    fm_value ints = 0;
    CHECK_OK(fm_graph_variable(&ints, graph, "i", FM_DTYPE_I32, small, 2, &init));
    attrs = fm_op_attrs_default();
    CHECK_OK(fm_graph_op(&out, graph, FM_OP_CONCAT, &ints, 1, &attrs));
    fm_exec exec = 0;
    CHECK_OK(fm_graph_compile(&exec, graph, device));
    fm_tensor result = 0;
    CHECK_OK(fm_exec_run(exec, NULL, 0, &out, 1, &result, 0));
    fm_release(result);
    fm_release(exec);
    fm_release(graph);
}

int main(void) {
    fm_device device = open_cpu();
    test_generations_never_wrap(device);
    test_layer_names_are_copied(device);
    test_layer_init_data_refused(device);
    test_rank_limit();
    test_overflowing_shapes(device);
    test_zero_byte_transfers(device);
    test_fuzzer_findings(device);
    fm_release(device);
    printf("test_abi_hostile: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
