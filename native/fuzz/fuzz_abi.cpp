// libFuzzer target: the C ABI driven by call sequences decoded from the
// input. Each input is a program over small pools of handles (devices,
// buffers, streams, tensors, graphs and their values, executables,
// trainers, inference engines) whose calls take arguments from the input:
// dtypes, shapes and attributes good and bad, NULL pointers, stale, forged
// and wrong-kind handles, double releases. Every call must return a
// status; sanitizers and the out-of-bounds guards below catch the rest.
// Everything still held is released at the end, so leaks show.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ferrometal.h"

namespace {

class Input {
public:
    Input(const uint8_t *data, size_t size) : p_(data), end_(data + size) {}
    bool empty() const { return p_ == end_; }
    uint8_t byte() { return p_ == end_ ? 0 : *p_++; }
    uint32_t below(uint32_t n) { return n ? byte() % n : 0; }
    bool coin() { return byte() & 1; }
    int64_t dim() {
        switch (below(16)) {
            case 0: return 0;
            case 1: return -1;  // FM_BATCH
            // Huge: past any memory (allocations fail, or sizes overflow),
            // never merely large, which would only make the fuzzer slow.
            case 2: return int64_t(1) << (45 + below(18));
            case 3: return -int64_t(below(5)) - 2;
            default: return 1 + below(6);
        }
    }
    double real() {
        switch (below(12)) {
            case 0: return NAN;
            case 1: return INFINITY;
            case 2: return -INFINITY;
            case 3: return -1.0;
            case 4: return 0.0;
            case 5: return 1e30;
            default: return double(byte()) / 64.0;
        }
    }
    std::string name() {
        static const char *names[] = {"x", "y", "w", "fc1", "dense0.weight", "optimizer.lr", "", "x"};
        return names[below(8)];
    }

private:
    const uint8_t *p_;
    const uint8_t *end_;
};

// A pool of handles of one kind; `pick` may also hand out a stale, forged
// or wrong-kind handle, which the ABI must refuse.
struct Pool {
    std::vector<uintptr_t> live;
    void add(uintptr_t h) {
        if (h && live.size() < 8) {
            live.push_back(h);
        } else if (h) {
            fm_release(h);
        }
    }
};

struct World {
    Pool devices, buffers, streams, tensors, graphs, execs, trainers, inferences;
    std::vector<uintptr_t> released;  // stale handles
    std::vector<fm_value> values;     // of any graph
    uintptr_t any(Input &in) {
        Pool *pools[] = {&devices, &buffers, &streams, &tensors, &graphs, &execs, &trainers, &inferences};
        Pool &p = *pools[in.below(8)];
        if (!p.live.empty()) return p.live[in.below(uint32_t(p.live.size()))];
        return 0;
    }
    uintptr_t pick(Input &in, Pool &pool) {
        switch (in.below(16)) {
            case 0: return 0;
            case 1: return released.empty() ? 0xdeadbeef : released[in.below(uint32_t(released.size()))];
            case 2: return uintptr_t(in.byte()) << 32 | in.byte();  // forged
            case 3: return any(in);  // maybe another kind
            default: return pool.live.empty() ? 0 : pool.live[in.below(uint32_t(pool.live.size()))];
        }
    }
    void release(uintptr_t h) {
        if (fm_release(h) == FM_OK && released.size() < 64) released.push_back(h);
    }
    void release_all() {
        for (Pool *p : {&inferences, &trainers, &execs, &graphs, &tensors, &streams, &buffers, &devices}) {
            for (uintptr_t h : p->live) fm_release(h);
            p->live.clear();
        }
    }
};

// Host memory for transfers, with guard bytes behind it that must never change.
constexpr size_t kHost = 4096, kGuard = 64;
unsigned char host[kHost + kGuard];

void check_guard() {
    for (size_t i = 0; i < kGuard; ++i) {
        if (host[kHost + i] != 0xa5) {
            std::fprintf(stderr, "a call wrote past the host memory it was given\n");
            __builtin_trap();
        }
    }
}

fm_dtype dtype(Input &in) { return fm_dtype(in.below(FM_DTYPE_COUNT + 2)); }

// Whether `host` holds the data of a value of this dtype and shape: the
// header makes the caller promise that much, so the harness keeps it.
bool fits_host(fm_dtype type, const int64_t *dims, size_t rank) {
    size_t bytes = 1;
    if (fm_dtype_size(&bytes, type) != FM_OK) return true;  // refused anyway
    for (size_t i = 0; i < rank && i < FM_MAX_RANK; ++i) {
        if (dims[i] < 0) return true;  // refused anyway
        if (__builtin_mul_overflow(bytes, size_t(dims[i]), &bytes)) return false;
    }
    return bytes <= kHost;
}

size_t shape(Input &in, int64_t *dims) {
    size_t rank = in.below(FM_MAX_RANK + 3);
    for (size_t i = 0; i < rank && i < FM_MAX_RANK; ++i) dims[i] = in.dim();
    return rank;
}

// A tensor of small, valid shape, so feeds and batches often fit.
fm_tensor small_tensor(Input &in, World &w, fm_dtype type, size_t rank, const int64_t *dims) {
    fm_tensor t = 0;
    fm_device d = w.pick(in, w.devices);
    if (fm_tensor_new(&t, d, type, dims, rank) != FM_OK) return 0;
    w.tensors.add(t);
    return t;
}

fm_op_attrs attrs(Input &in) {
    fm_op_attrs a = fm_op_attrs_default();
    int fields = int(in.below(6));
    for (int i = 0; i < fields; ++i) {
        switch (in.below(14)) {
            case 0: a.num_axes = in.below(FM_MAX_RANK + 3); break;
            case 1: a.axes[in.below(FM_MAX_RANK)] = int64_t(in.byte()) - 128; break;
            case 2: a.rank = in.below(FM_MAX_RANK + 3); break;
            case 3: a.shape[in.below(FM_MAX_RANK)] = in.dim(); break;
            case 4: a.kernel_size[in.below(2)] = in.dim(); break;
            case 5: a.stride[in.below(2)] = in.dim(); break;
            case 6: a.padding[in.below(2)] = in.dim(); break;
            case 7: a.dilation[in.below(2)] = in.dim(); break;
            case 8: a.groups = in.dim(); break;
            case 9: a.depth = in.dim(); break;
            case 10: a.p = in.real(); break;
            case 11: a.transpose_a = in.coin(), a.transpose_b = in.coin(); break;
            case 12: a.starts[in.below(FM_MAX_RANK)] = in.dim(), a.ends[in.below(FM_MAX_RANK)] = in.dim(); break;
            case 13: a.normalized_rank = int64_t(in.below(10)) - 1; break;
        }
    }
    return a;
}

fm_value value(Input &in, World &w) {
    if (w.values.empty() || in.below(10) == 0) return fm_value(in.byte()) << 32 | in.byte();
    return w.values[in.below(uint32_t(w.values.size()))];
}

fm_layer_spec layer(Input &in) {
    fm_layer_spec s = fm_layer_spec_default(fm_layer_kind(in.below(FM_LAYER_COUNT + 1)));
    s.units = in.coin() ? 1 + in.below(8) : in.dim();
    for (int k = 0; k < 2; ++k) {
        s.kernel_size[k] = 1 + in.below(3);
        if (in.below(4) == 0) s.stride[k] = in.dim();
        if (in.below(4) == 0) s.padding[k] = in.dim();
    }
    if (in.below(4) == 0) s.init = fm_init_kind(in.below(FM_INIT_COUNT + 1));
    if (in.below(4) == 0) s.rate = in.real();
    if (in.below(8) == 0) s.groups = in.dim();
    if (in.below(4) == 0) s.name = in.coin() ? "fc1" : "fc1";  // duplicate names too
    return s;
}

fm_optimizer optimizer(Input &in) {
    fm_optimizer o = fm_optimizer_default(fm_optimizer_kind(in.below(FM_OPTIMIZER_COUNT + 1)));
    if (in.below(4) == 0) o.learning_rate = in.real();
    if (in.below(6) == 0) o.beta2 = in.real();
    if (in.below(6) == 0) o.momentum = in.real();
    if (in.below(6) == 0) o.clip_norm = in.real();
    if (in.below(8) == 0) o.nesterov = 1;
    return o;
}

// FM_FUZZ_TRACE=1 prints each call's kind and the last error, to read a
// crashing input.
const bool trace = std::getenv("FM_FUZZ_TRACE") != nullptr;

void step(Input &in, World &w) {
    fm_status s = FM_OK;
    const uint32_t call = in.below(24);
    if (trace) std::fprintf(stderr, "call %u\n", call);
    switch (call) {
        case 0: {
            fm_device d = 0;
            s = in.coin() ? fm_device_open(&d, fm_backend(in.below(FM_BACKEND_COUNT + 1)), int32_t(in.below(3)))
                          : fm_device_open_best(&d);
            if (s == FM_OK) w.devices.add(d);
            break;
        }
        case 1: {
            fm_buffer b = 0;
            size_t count = in.coin() ? in.below(256) : (size_t(1) << (45 + in.below(19)));
            if (fm_buffer_new(&b, w.pick(in, w.devices), dtype(in), count) == FM_OK) w.buffers.add(b);
            break;
        }
        case 2: {
            fm_buffer b = w.pick(in, w.buffers);
            size_t offset = in.below(64), count = in.below(1100);
            fm_dtype t = FM_DTYPE_U8;
            fm_buffer_dtype(&t, b);
            size_t bytes = 1;
            fm_dtype_size(&bytes, t);
            if (count * bytes > kHost) count = kHost / bytes;
            void *ptr = in.below(8) == 0 ? nullptr : host;
            fm_stream st = in.coin() ? 0 : w.pick(in, w.streams);
            switch (in.below(4)) {
                case 0: fm_buffer_write(b, offset, ptr, count, st); break;
                case 1: fm_buffer_read(b, offset, ptr, count, st); break;
                case 2: fm_buffer_fill(b, offset, count, in.real(), st); break;
                default: fm_buffer_copy(b, offset, w.pick(in, w.buffers), in.below(64), count, st);
            }
            check_guard();
            break;
        }
        case 3: {
            fm_stream st = 0;
            if (fm_stream_new(&st, w.pick(in, w.devices)) == FM_OK) w.streams.add(st);
            fm_stream_synchronize(w.pick(in, w.streams));
            break;
        }
        case 4: {
            int64_t dims[FM_MAX_RANK];
            size_t rank = shape(in, dims);
            if (in.coin()) {
                small_tensor(in, w, dtype(in), rank, dims);
            } else {
                fm_tensor t = 0;
                if (fm_tensor_from_buffer(&t, w.pick(in, w.buffers), dims, rank) == FM_OK) w.tensors.add(t);
            }
            break;
        }
        case 5: {
            int64_t *dims = new int64_t[FM_MAX_RANK];  // exactly the room the header promises
            size_t rank = 0;
            fm_tensor_shape(dims, &rank, w.pick(in, w.tensors));
            delete[] dims;
            break;
        }
        case 6: {
            fm_graph g = 0;
            if (fm_graph_new(&g) == FM_OK) w.graphs.add(g);
            break;
        }
        case 7: {
            int64_t dims[FM_MAX_RANK];
            size_t rank = shape(in, dims);
            fm_value v = 0;
            fm_graph g = w.pick(in, w.graphs);
            std::string name = in.name();
            switch (in.below(4)) {
                case 0: s = fm_graph_placeholder(&v, g, in.below(8) ? name.c_str() : nullptr, dtype(in), dims, rank); break;
                case 1: {
                    fm_init init = fm_init_default();
                    init.kind = fm_init_kind(in.below(FM_INIT_COUNT + 1));
                    fm_dtype type = dtype(in);
                    init.data = in.coin() && fits_host(type, dims, rank) ? host : nullptr;
                    init.value = in.real();
                    s = fm_graph_variable(&v, g, name.c_str(), type, dims, rank, in.coin() ? &init : nullptr);
                    break;
                }
                case 2: {
                    fm_dtype type = dtype(in);
                    const void *data = in.coin() && fits_host(type, dims, rank) ? host : nullptr;
                    s = fm_graph_constant(&v, g, type, dims, rank, data);
                    break;
                }
                default: s = fm_graph_scalar(&v, g, in.real());
            }
            if (s == FM_OK && w.values.size() < 64) w.values.push_back(v);
            break;
        }
        case 8:
        case 9: {
            fm_value inputs[4];
            size_t n = in.below(5);
            for (size_t i = 0; i < n; ++i) inputs[i] = value(in, w);
            fm_op_attrs a = attrs(in);
            fm_value out = 0;
            const fm_op op = fm_op(in.below(FM_OP_COUNT + 2));
            s = fm_graph_op(&out, w.pick(in, w.graphs), op, inputs, n, in.below(4) ? &a : nullptr);
            if (trace) std::fprintf(stderr, "  op %s over %zu inputs: %s\n", fm_op_str(op), n, fm_status_str(s));
            if (s == FM_OK && w.values.size() < 64) w.values.push_back(out);
            break;
        }
        case 10: {
            fm_dtype t;
            int64_t *dims = new int64_t[FM_MAX_RANK];
            size_t rank = 0;
            fm_graph_value_info(&t, dims, &rank, w.pick(in, w.graphs), value(in, w));
            delete[] dims;
            break;
        }
        case 11: {
            fm_value wrt[3], grads[3];
            size_t n = 1 + in.below(3);
            for (size_t i = 0; i < n; ++i) wrt[i] = value(in, w);
            fm_graph g = w.pick(in, w.graphs);
            if (fm_graph_gradients(grads, g, value(in, w), wrt, n) == FM_OK) {
                fm_optimizer o = optimizer(in);
                fm_value token = 0;
                if (in.coin() && fm_graph_optimizer(&token, g, &o, wrt, grads, n, nullptr) == FM_OK) {
                    if (w.values.size() < 64) w.values.push_back(token);
                }
                for (size_t i = 0; i < n && w.values.size() < 64; ++i) w.values.push_back(grads[i]);
            }
            break;
        }
        case 12: {
            fm_exec e = 0;
            if (fm_graph_compile(&e, w.pick(in, w.graphs), w.pick(in, w.devices)) == FM_OK) w.execs.add(e);
            break;
        }
        case 13: {
            fm_feed feeds[3];
            size_t nf = in.below(4);
            for (size_t i = 0; i < nf; ++i) feeds[i] = {value(in, w), w.pick(in, w.tensors)};
            fm_value fetches[3];
            size_t n = in.below(4);
            for (size_t i = 0; i < n; ++i) fetches[i] = value(in, w);
            fm_tensor outs[3] = {0, 0, 0};
            if (fm_exec_run(w.pick(in, w.execs), feeds, nf, fetches, n, outs, in.coin() ? 0 : w.pick(in, w.streams)) ==
                FM_OK) {
                for (size_t i = 0; i < n; ++i) w.tensors.add(outs[i]);
            }
            fm_exec_synchronize(w.pick(in, w.execs));
            break;
        }
        case 14: {
            fm_exec e = w.pick(in, w.execs);
            std::string name = in.name();
            size_t count = in.below(64);
            if (in.coin()) {
                fm_exec_read_variable(e, name.c_str(), host, count);
            } else {
                fm_exec_write_variable(e, name.c_str(), host, count);
            }
            check_guard();
            int64_t *dims = new int64_t[FM_MAX_RANK];
            size_t rank = 0;
            fm_exec_variable_shape(dims, &rank, e, name.c_str());
            delete[] dims;
            break;
        }
        case 15: {
            fm_layer_spec layers[4];
            size_t n = in.below(5);
            for (size_t i = 0; i < n; ++i) layers[i] = layer(in);
            int64_t input[3];
            size_t rank = 1 + in.below(3);
            for (size_t i = 0; i < rank; ++i) input[i] = in.coin() ? 1 + in.below(6) : in.dim();
            fm_optimizer o = optimizer(in);
            fm_loss_config loss = {fm_op(in.coin() ? FM_OP_SOFTMAX_CROSS_ENTROPY : in.below(FM_OP_COUNT)), in.real(),
                                   in.real()};
            fm_trainer_options options = fm_trainer_options_default();
            options.nonfinite_guard = in.coin();
            if (in.coin()) {
                fm_trainer t = 0;
                if (fm_trainer_new(&t, w.pick(in, w.devices), layers, n, input, rank, &o, &loss, in.byte(),
                                   in.coin() ? &options : nullptr) == FM_OK) {
                    w.trainers.add(t);
                }
            } else {
                fm_inference e = 0;
                if (fm_inference_new(&e, w.pick(in, w.devices), layers, n, input, rank) == FM_OK) w.inferences.add(e);
            }
            break;
        }
        case 16: {
            fm_trainer t = w.pick(in, w.trainers);
            fm_tensor x = w.pick(in, w.tensors), y = w.pick(in, w.tensors);
            float loss = 0;
            uint64_t correct = 0;
            switch (in.below(5)) {
                case 0: fm_trainer_step(t, x, y, in.coin() ? &loss : nullptr); break;
                case 1: fm_trainer_evaluate(t, x, y, &loss, &correct); break;
                case 2: {
                    fm_tensor out = 0;
                    if (fm_trainer_predict(&out, t, x) == FM_OK) w.tensors.add(out);
                    break;
                }
                case 3: fm_trainer_set_learning_rate(t, in.real()); break;
                default: {
                    fm_trainer_synchronize(t);
                    fm_trainer_stats stats;
                    fm_trainer_stats_get(&stats, t);
                }
            }
            break;
        }
        case 17: {
            // Inputs shaped for what a trainer or engine expects, so steps run.
            fm_trainer t = w.pick(in, w.trainers);
            int64_t out_dims[FM_MAX_RANK];
            size_t out_rank = 0;
            if (fm_trainer_output_shape(out_dims, &out_rank, t) != FM_OK) break;
            int64_t batch = 1 + in.below(3);
            int64_t dims[4] = {batch, 1 + in.below(4), 1 + in.below(6), 1 + in.below(6)};
            fm_tensor x = small_tensor(in, w, FM_DTYPE_F32, 1 + in.below(4), dims);
            fm_tensor y = small_tensor(in, w, in.coin() ? FM_DTYPE_I32 : FM_DTYPE_F32, 1, dims);
            float loss;
            fm_trainer_step(t, x, y, &loss);
            break;
        }
        case 18: {
            fm_inference e = w.pick(in, w.inferences);
            fm_tensor out = 0;
            if (in.coin()) {
                if (fm_infer(&out, e, w.pick(in, w.tensors)) == FM_OK) w.tensors.add(out);
            } else if (fm_inference_from_trainer(&out, w.pick(in, w.trainers), w.pick(in, w.devices)) == FM_OK) {
                w.inferences.add(out);
            }
            break;
        }
        case 19: {
            static const std::string path = "/tmp/fm-fuzz-abi-" + std::to_string(long(getpid())) + ".safetensors";
            fm_trainer t = w.pick(in, w.trainers);
            switch (in.below(4)) {
                case 0: fm_trainer_save(t, in.coin() ? path.c_str() : nullptr, "{}"); break;
                case 1: fm_trainer_load(t, path.c_str()); break;
                case 2: fm_trainer_load_weights(t, path.c_str()); break;
                default: fm_inference_load(w.pick(in, w.inferences), path.c_str());
            }
            break;
        }
        case 20: {
            uintptr_t h = w.any(in);
            if (in.coin()) {
                fm_retain(h);
                fm_release(h);
            } else {
                // Release one reference the pool holds: the handle goes stale.
                for (Pool *p : {&w.buffers, &w.tensors, &w.graphs, &w.execs, &w.trainers, &w.streams}) {
                    for (size_t i = 0; i < p->live.size(); ++i) {
                        if (p->live[i] == h) {
                            p->live.erase(p->live.begin() + long(i));
                            w.release(h);
                            return;
                        }
                    }
                }
            }
            break;
        }
        case 21: fm_release(w.pick(in, w.buffers)); break;  // usually a double release later
        case 22: {
            fm_pool_stats stats;
            fm_device_pool_stats(&stats, w.pick(in, w.devices));
            fm_device_pool_trim(w.pick(in, w.devices));
            break;
        }
        default: {
            uint64_t peak, unshared, runs;
            fm_exec_planned_memory(&peak, &unshared, w.pick(in, w.execs));
            fm_exec_run_count(&runs, w.pick(in, w.execs));
            fm_exec_set_run_count(w.pick(in, w.execs), in.byte());
        }
    }
    (void)s;
    const char *message = fm_last_error();
    if (message == nullptr) __builtin_trap();
    if (trace) std::fprintf(stderr, "  last error: %s\n", message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::memset(host, 0, kHost);
    std::memset(host + kHost, 0xa5, kGuard);
    Input in(data, size);
    World w;
    fm_device cpu = 0;
    if (fm_device_open(&cpu, FM_BACKEND_CPU, 0) == FM_OK) w.devices.add(cpu);
    for (int calls = 0; !in.empty() && calls < 64; ++calls) step(in, w);
    w.release_all();
    return 0;
}
