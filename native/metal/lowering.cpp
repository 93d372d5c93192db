// The platform-independent lowering of a plan to MPSGraph segments and MPS
// kernels (see lowering.h). The semantics reproduced are those of
// native/cpu/cpu_exec.cpp and native/cpu/elementwise.cpp.
#include "lowering.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

#include "dtype.h"
#include "error.h"

namespace fm::metal {

const char *dtype_name(DType dtype) {
    switch (dtype) {
        case DType::F32: return "f32";
        case DType::I32: return "i32";
        case DType::Bool: return "bool";
        case DType::U64: return "u64";
    }
    return "?";
}

const char *layout_name(Layout layout) {
    switch (layout) {
        case Layout::None: return "-";
        case Layout::NCHW: return "NCHW";
        case Layout::OIHW: return "OIHW";
        case Layout::OHWI: return "OHWI";
        case Layout::ImageSlices: return "image-slices";
    }
    return "?";
}

const char *space_name(Space space) {
    switch (space) {
        case Space::Arena: return "arena";
        case Space::Variable: return "variable";
        case Space::Constant: return "constant";
        case Space::Feed: return "feed";
        case Space::Output: return "output";
        case Space::Scratch: return "scratch";
        case Space::RunIndex: return "run_index";
    }
    return "?";
}

const char *op_name(Op op) {
    static const char *const names[] = {
        "constant", "cast", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "sigmoid", "tanh", "erf", "relu", "identity",
        "add", "sub", "mul", "div", "pow", "max_nan", "min_nan",
        "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
        "bit_xor", "shift_right", "select", "clamp",
        "reshape", "transpose", "broadcast", "slice", "pad", "concat",
        "reduce_sum", "reduce_max", "reduce_min", "argmax", "softmax", "matmul",
        "conv2d", "conv2d_data_gradient", "conv2d_weights_gradient",
        "max_pool2d", "avg_pool2d", "max_pool2d_gradient", "avg_pool2d_gradient",
        "gather", "scatter_add", "one_hot", "coordinate",
    };
    static_assert(sizeof(names) / sizeof(names[0]) == size_t(Op::Count), "a name per op");
    return op < Op::Count ? names[size_t(op)] : "?";
}

bool Location::overlaps(const Location &other) const {
    if (space != other.space) return false;
    if (space != Space::Arena && space != Space::Scratch && index != other.index) return false;
    return offset < other.offset + other.bytes && other.offset < offset + bytes;
}

bool Location::operator==(const Location &other) const {
    return space == other.space && index == other.index && offset == other.offset && bytes == other.bytes;
}

Options Options::parse(const char *value) {
    Options options;
    if (value == nullptr) return options;
    std::stringstream list(value);
    std::string entry;
    while (std::getline(list, entry, ',')) {
        entry.erase(std::remove(entry.begin(), entry.end(), ' '), entry.end());
        if (entry.empty()) continue;
        if (entry == "conv") {
            options.conv = Path::Kernel;
        } else if (entry == "matmul") {
            options.matmul = Path::Kernel;
        } else if (entry == "all") {
            options.conv = options.matmul = Path::Kernel;
        } else if (entry == "none") {
            options.conv = options.matmul = Path::Graph;
        } else {
            fail(FM_ERR_INVALID_ARGUMENT, "FERROMETAL_METAL_KERNELS: unknown entry '", entry,
                 "' (expected a comma list of conv, matmul, all, none)");
        }
    }
    return options;
}

void image_slices(int64_t channels, int64_t *slices, int64_t *pixel) {
    // MPSImage stores 1 or 2 channels as R / RG pixels, more as RGBA slices.
    *pixel = channels <= 2 ? channels : 4;
    *slices = (channels + *pixel - 1) / *pixel;
}

namespace {

constexpr uint64_t kMix1 = 0xbf58476d1ce4e5b9ull;
constexpr uint64_t kMix2 = 0x94d049bb133111ebull;
constexpr uint64_t kRunSalt = 0x632be59bd9b4e019ull;
constexpr double kSqrtHalf = 0.70710678118654752;
constexpr double kInvSqrt2Pi = 0.39894228040143268;
constexpr double kTanhScale = 0.79788456080286536;
constexpr double kTanhCubic = 0.044715;

[[noreturn]] void unsupported(const Step &step, const char *what, const std::string &why) {
    fail(FM_ERR_UNSUPPORTED, step.origin, ": the metal backend cannot lower ", what, " (", why, ")");
}

size_t byte_size(const Shape &shape, fm_dtype dtype) {
    return size_t(element_count(shape)) * dtype_size(dtype, "dtype");
}

Location location_of(const TensorRef &ref) {
    Location loc;
    switch (ref.storage) {
        case Storage::Arena: loc.space = Space::Arena; break;
        case Storage::Variable: loc.space = Space::Variable; break;
        case Storage::Constant: loc.space = Space::Constant; break;
        case Storage::Feed: loc.space = Space::Feed; break;
        case Storage::Output: loc.space = Space::Output; break;
        case Storage::Scalar: fail(FM_ERR_INTERNAL, "metal lowering: a scalar has no location");
    }
    loc.index = ref.storage == Storage::Arena ? 0 : ref.index;
    loc.offset = ref.storage == Storage::Arena ? ref.offset : 0;
    loc.bytes = byte_size(ref.shape, ref.dtype);
    return loc;
}

// The memory a step reads and writes, for the liveness of values across
// segment cuts.
void step_ranges(const Step &step, std::vector<Location> *reads, std::vector<Location> *writes) {
    auto add = [](std::vector<Location> *to, const TensorRef &ref) {
        if (ref.storage != Storage::Scalar) to->push_back(location_of(ref));
    };
    switch (step.kind) {
        case StepKind::Copy:
            add(reads, step.inputs[0]);
            add(writes, step.output);
            break;
        case StepKind::Fused:
            for (const TensorRef &ref : step.fused->loads) add(reads, ref);
            for (const auto &store : step.fused->stores) add(writes, store.second);
            break;
        case StepKind::Kernel:
            for (size_t i = 0; i < step.inputs.size(); ++i) {
                if (!input_is_shape_only(step.prim, i)) add(reads, step.inputs[i]);
            }
            add(writes, step.output);
            break;
    }
}

class Lowering {
public:
    Lowering(const Plan &plan, const Options &options, Builder &builder)
        : plan_(plan), options_(options), b_(builder) {
        for (const Step &step : plan.steps) {
            std::vector<Location> reads, writes;
            step_ranges(step, &reads, &writes);
            reads_.push_back(std::move(reads));
            writes_.push_back(std::move(writes));
        }
    }

    Lowered run() {
        for (size_t i = 0; i < plan_.steps.size(); ++i) {
            at_ = i;
            b_.step(i, plan_.steps[i]);
            lower_step(plan_.steps[i]);
        }
        close(plan_.steps.size());
        result_.scratch_bytes = scratch_;
        return result_;
    }

private:
    struct Written {
        Location loc;
        Tensor tensor;
        Shape shape;
    };
    struct Input {
        Location loc;
        Tensor tensor;
        Shape shape;
    };

    // --- segments -----------------------------------------------------

    void open() {
        if (open_) return;
        open_ = true;
        b_.begin_segment(result_.segments++);
    }

    // Whether memory at `loc` is read after step `after` before being
    // overwritten: only then must a segment store a value there.
    bool live_after(const Location &loc, size_t after) const {
        for (size_t s = after; s < plan_.steps.size(); ++s) {
            for (const Location &r : reads_[s]) {
                if (r.overlaps(loc)) return true;
            }
            for (const Location &w : writes_[s]) {
                if (w.overlaps(loc) && w.offset <= loc.offset && w.offset + w.bytes >= loc.offset + loc.bytes) {
                    return false;  // wholly overwritten first
                }
            }
        }
        return false;
    }

    Location scratch(size_t bytes) {
        Location loc;
        loc.space = Space::Scratch;
        loc.offset = scratch_;
        loc.bytes = bytes;
        scratch_ += (bytes + 255) / 256 * 256;
        return loc;
    }

    // Ends the open segment; `next` is the first step whose reads come
    // after it (from memory).
    void close(size_t next) {
        if (!open_) return;
        std::vector<std::pair<Tensor, Location>> stores = forced_;
        for (const Written &w : written_) {
            if (w.loc.space != Space::Arena || live_after(w.loc, next)) stores.emplace_back(w.tensor, w.loc);
        }
        // A target that is a placeholder of the segment (a value copied
        // through), or a tensor already targeted, is made distinct by an
        // identity: one executable result per tensor, none a feed.
        std::vector<Tensor> targeted;
        for (auto &[tensor, loc] : stores) {
            const Input *fed = nullptr;
            for (const Input &in : inputs_) if (in.tensor == tensor) fed = &in;
            bool again = std::find(targeted.begin(), targeted.end(), tensor) != targeted.end();
            if (fed || again) {
                Shape shape = fed ? fed->shape : shape_of(tensor);
                tensor = unary(Op::Identity, tensor, shape, dtype_of_tensor(tensor));
            }
            targeted.push_back(tensor);
        }
        // A result that lands on memory this executable also reads (an
        // in-place optimizer update) goes to scratch first, then a blit.
        std::vector<std::pair<Location, Location>> blits;
        for (auto &[tensor, loc] : stores) {
            bool hazard = false;
            for (const Input &in : inputs_) hazard = hazard || in.loc.overlaps(loc);
            if (hazard) {
                Location staged = scratch(loc.bytes);
                blits.emplace_back(staged, loc);
                b_.output(tensor, staged);
            } else {
                b_.output(tensor, loc);
            }
        }
        b_.end_segment();
        for (const auto &[from, to] : blits) {
            b_.blit(from, to);
            ++result_.blits;
        }
        open_ = false;
        written_.clear();
        inputs_.clear();
        forced_.clear();
        constants_.clear();
    }

    // --- values ---------------------------------------------------------

    Tensor call(Call c) {
        Tensor t = b_.op(c);
        tensor_info_[t] = {c.shape, c.dtype};
        return t;
    }

    Tensor new_input(const Location &loc, const Shape &shape, DType dtype) {
        Tensor t = b_.input(loc, shape, dtype);
        tensor_info_[t] = {shape, dtype};
        inputs_.push_back({loc, t, shape});
        return t;
    }

    Shape shape_of(Tensor t) const { return tensor_info_.at(t).first; }
    DType dtype_of_tensor(Tensor t) const { return tensor_info_.at(t).second; }

    Tensor constant(double value, DType dtype = DType::F32) {
        auto key = std::make_pair(value, int(dtype));
        auto found = constants_.find(key);
        if (found != constants_.end()) return found->second;
        Call c;
        c.op = Op::Constant;
        c.dtype = dtype;
        c.value = value;
        return constants_[key] = call(c);
    }

    Tensor constant_u64(uint64_t bits) {
        Call c;
        c.op = Op::Constant;
        c.dtype = DType::U64;
        c.bits = bits;
        c.value = double(bits);
        return call(c);
    }

    Tensor unary(Op op, Tensor x, const Shape &shape, DType dtype = DType::F32) {
        Call c;
        c.op = op;
        c.inputs = {x};
        c.shape = shape;
        c.dtype = dtype;
        return call(c);
    }

    Tensor binary(Op op, Tensor x, Tensor y, const Shape &shape, DType dtype = DType::F32) {
        Call c;
        c.op = op;
        c.inputs = {x, y};
        c.shape = shape;
        c.dtype = dtype;
        if (op >= Op::Equal && op <= Op::GreaterEqual) c.dtype = DType::Bool;
        return call(c);
    }

    Tensor select(Tensor cond, Tensor a, Tensor b, const Shape &shape, DType dtype = DType::F32) {
        Call c;
        c.op = Op::Select;
        c.inputs = {cond, a, b};
        c.shape = shape;
        c.dtype = dtype;
        return call(c);
    }

    Tensor cast(Tensor x, const Shape &shape, DType to) { return unary(Op::Cast, x, shape, to); }

    Tensor reshape(Tensor x, const Shape &to, DType dtype = DType::F32) {
        Call c;
        c.op = Op::Reshape;
        c.inputs = {x};
        c.shape = to;
        c.dtype = dtype;
        return call(c);
    }

    Tensor transpose(Tensor x, const std::vector<int64_t> &perm, const Shape &from, DType dtype = DType::F32) {
        Call c;
        c.op = Op::Transpose;
        c.inputs = {x};
        c.ints = perm;
        for (int64_t p : perm) c.shape.push_back(from[size_t(p)]);
        c.dtype = dtype;
        return call(c);
    }

    Tensor broadcast(Tensor x, const Shape &to) {
        Call c;
        c.op = Op::Broadcast;
        c.inputs = {x};
        c.shape = to;
        return call(c);
    }

    Tensor reduce(Op op, Tensor x, const Shape &from, uint32_t mask) {
        Call c;
        c.op = op;
        c.inputs = {x};
        c.shape = from;
        for (size_t i = 0; i < from.size(); ++i) {
            if (mask >> i & 1) c.ints.push_back(int64_t(i)), c.shape[i] = 1;
        }
        return call(c);
    }

    Tensor pad(Tensor x, const std::vector<int64_t> &before, const std::vector<int64_t> &after, double value,
               const Shape &to, DType dtype = DType::F32) {
        Call c;
        c.op = Op::Pad;
        c.inputs = {x};
        c.ints = before;
        c.ints2 = after;
        c.value = value;
        c.shape = to;
        c.dtype = dtype;
        return call(c);
    }

    Tensor slice(Tensor x, const std::vector<int64_t> &starts, const Shape &to, DType dtype = DType::F32) {
        Call c;
        c.op = Op::Slice;
        c.inputs = {x};
        c.ints = starts;
        for (size_t i = 0; i < to.size(); ++i) c.ints2.push_back(starts[i] + to[i]);
        c.shape = to;
        c.dtype = dtype;
        return call(c);
    }

    Tensor one_hot(Tensor indices, const Shape &indices_shape, int64_t depth, int64_t axis) {
        Call c;
        c.op = Op::OneHot;
        c.inputs = {indices};
        c.ints = {depth};
        c.axis = axis;
        c.shape = indices_shape;
        c.shape.insert(c.shape.begin() + axis, depth);
        return call(c);
    }

    // The tensor of `ref` in the open segment: a constant for a plan scalar,
    // the segment's own value when it wrote this memory, else an input.
    Tensor read(const TensorRef &ref) {
        open();
        if (ref.storage == Storage::Scalar) {
            Tensor t = constant(plan_.scalars.at(ref.index));
            return ref.shape.empty() ? t : reshape(t, ref.shape);
        }
        Location loc = location_of(ref);
        DType dtype = dtype_of(ref.dtype);
        for (const Written &w : written_) {
            if (w.loc == loc) return w.shape == ref.shape ? w.tensor : reshape(w.tensor, ref.shape, dtype);
            if (w.loc.overlaps(loc)) {
                fail(FM_ERR_INTERNAL, "metal lowering: a read of ", space_name(loc.space), "+", loc.offset,
                     " overlaps a different value written in the same segment");
            }
        }
        for (const Input &in : inputs_) {
            if (in.loc == loc) return in.shape == ref.shape ? in.tensor : reshape(in.tensor, ref.shape, dtype);
        }
        return new_input(loc, ref.shape, dtype);
    }

    void write(const TensorRef &ref, Tensor t) {
        open();
        Location loc = location_of(ref);
        written_.erase(std::remove_if(written_.begin(), written_.end(),
                                      [&](const Written &w) { return w.loc.overlaps(loc); }),
                       written_.end());
        written_.push_back({loc, t, ref.shape});
    }

    DType dtype_of(fm_dtype dtype) const {
        if (dtype == FM_DTYPE_F32) return DType::F32;
        if (dtype == FM_DTYPE_I32) return DType::I32;
        const Step &step = plan_.steps[at_];
        unsupported(step, step.kind == StepKind::Kernel ? prim_name(step.prim) : "a step",
                    std::string("dtype ") + fm_dtype_str(dtype) + "; only f32 and i32 are lowered");
    }

    void expect_f32(const Step &step, const TensorRef &ref) const {
        if (ref.dtype != FM_DTYPE_F32) {
            unsupported(step, step.kind == StepKind::Kernel ? prim_name(step.prim) : "an elementwise step",
                        std::string("dtype ") + fm_dtype_str(ref.dtype) + " where f32 is needed");
        }
    }

    // --- steps ----------------------------------------------------------

    void lower_step(const Step &step) {
        switch (step.kind) {
            case StepKind::Copy: {
                Tensor t = read(step.inputs[0]);
                if (step.inputs[0].shape != step.output.shape) t = reshape(t, step.output.shape, dtype_of(step.output.dtype));
                write(step.output, t);
                return;
            }
            case StepKind::Fused: return lower_fused(step);
            case StepKind::Kernel:
                if (element_count(step.output.shape) == 0) return;
                return lower_kernel(step);
        }
    }

    void lower_fused(const Step &step) {
        const Fused &f = *step.fused;
        for (const TensorRef &ref : f.loads) expect_f32(step, ref);
        std::vector<Tensor> reg;
        for (const TensorRef &ref : f.loads) {
            Tensor t = read(ref);
            if (ref.shape != f.shape) t = broadcast(t, f.shape);
            reg.push_back(t);
        }
        for (const FusedInstruction &ins : f.code) reg.push_back(instruction(step, ins, reg, f.shape));
        for (const auto &[r, ref] : f.stores) write(ref, reg.at(size_t(r)));
    }

    Tensor instruction(const Step &step, const FusedInstruction &ins, const std::vector<Tensor> &reg,
                       const Shape &s) {
        Tensor a = ins.a >= 0 ? reg.at(size_t(ins.a)) : -1;
        Tensor b = ins.b >= 0 ? reg.at(size_t(ins.b)) : -1;
        Tensor c = ins.c >= 0 ? reg.at(size_t(ins.c)) : -1;
        auto k = [&](double v) { return constant(v); };
        auto mul = [&](Tensor x, Tensor y) { return binary(Op::Mul, x, y, s); };
        auto add = [&](Tensor x, Tensor y) { return binary(Op::Add, x, y, s); };
        auto sub = [&](Tensor x, Tensor y) { return binary(Op::Sub, x, y, s); };
        auto positive = [&](Tensor x) { return binary(Op::Greater, x, k(0), s); };
        auto as_f32 = [&](Tensor boolean) { return cast(boolean, s, DType::F32); };
        switch (ins.prim) {
            case Prim::Neg: return unary(Op::Neg, a, s);
            case Prim::Abs: return unary(Op::Abs, a, s);
            case Prim::Exp: return unary(Op::Exp, a, s);
            case Prim::Log: return unary(Op::Log, a, s);
            case Prim::Sqrt: return unary(Op::Sqrt, a, s);
            case Prim::Rsqrt: return unary(Op::Rsqrt, a, s);
            case Prim::Sigmoid: return unary(Op::Sigmoid, a, s);
            case Prim::Tanh: return unary(Op::Tanh, a, s);
            case Prim::Relu: return unary(Op::Relu, a, s);
            case Prim::Pow: return binary(Op::Pow, a, k(ins.p0), s);
            case Prim::Clamp: {
                Call cl;
                cl.op = Op::Clamp;
                cl.inputs = {a, k(ins.p0), k(ins.p1)};
                cl.shape = s;
                return call(cl);
            }
            case Prim::LeakyRelu: return select(positive(a), a, mul(a, k(ins.p0)), s);
            case Prim::Elu:
                return select(positive(a), a, mul(k(ins.p0), sub(unary(Op::Exp, a, s), k(1))), s);
            case Prim::Silu: return mul(a, unary(Op::Sigmoid, a, s));
            case Prim::GeluErf:
                return mul(mul(k(0.5), a), add(k(1), unary(Op::Erf, mul(a, k(kSqrtHalf)), s)));
            case Prim::GeluTanh: return mul(mul(k(0.5), a), add(k(1), gelu_tanh_inner(a, s)));
            case Prim::GeluErfDerivative: {
                Tensor cdf = mul(k(0.5), add(k(1), unary(Op::Erf, mul(a, k(kSqrtHalf)), s)));
                Tensor pdf = mul(k(kInvSqrt2Pi), unary(Op::Exp, mul(k(-0.5), mul(a, a)), s));
                return add(cdf, mul(a, pdf));
            }
            case Prim::GeluTanhDerivative: {
                Tensor t = gelu_tanh_inner(a, s);
                Tensor left = mul(k(0.5), add(k(1), t));
                Tensor slope = mul(k(kTanhScale), add(k(1), mul(k(3 * kTanhCubic), mul(a, a))));
                Tensor right = mul(mul(mul(k(0.5), a), sub(k(1), mul(t, t))), slope);
                return add(left, right);
            }
            case Prim::Softplus: {
                Tensor tail = unary(Op::Log, add(k(1), unary(Op::Exp, unary(Op::Neg, unary(Op::Abs, a, s), s), s)), s);
                return add(binary(Op::MaxNaN, a, k(0), s), tail);
            }
            case Prim::Step: return as_f32(positive(a));
            case Prim::Sign:
                return sub(as_f32(positive(a)), as_f32(binary(Op::Less, a, k(0), s)));
            case Prim::Add: return add(a, b);
            case Prim::Sub: return sub(a, b);
            case Prim::Mul: return mul(a, b);
            case Prim::Div: return binary(Op::Div, a, b, s);
            case Prim::Maximum: return binary(Op::MaxNaN, a, b, s);
            case Prim::Minimum: return binary(Op::MinNaN, a, b, s);
            case Prim::Equal: return as_f32(binary(Op::Equal, a, b, s));
            case Prim::NotEqual: return as_f32(binary(Op::NotEqual, a, b, s));
            case Prim::Less: return as_f32(binary(Op::Less, a, b, s));
            case Prim::LessEqual: return as_f32(binary(Op::LessEqual, a, b, s));
            case Prim::Greater: return as_f32(binary(Op::Greater, a, b, s));
            case Prim::GreaterEqual: return as_f32(binary(Op::GreaterEqual, a, b, s));
            case Prim::Where: return select(binary(Op::NotEqual, a, k(0), s), b, c, s);
            case Prim::BatchNormalize: return mul(sub(a, b), c);
            case Prim::DropoutMask: return dropout_mask(ins, s);
            default: break;
        }
        unsupported(step, prim_name(ins.prim), "not an elementwise primitive of a fused step");
    }

    Tensor gelu_tanh_inner(Tensor x, const Shape &s) {
        Tensor cube = binary(Op::Mul, x, binary(Op::Mul, x, x, s), s);
        Tensor inner = binary(Op::Add, x, binary(Op::Mul, constant(kTanhCubic), cube, s), s);
        return unary(Op::Tanh, binary(Op::Mul, constant(kTanhScale), inner, s), s);
    }

    // elementwise.cpp's hash in U64 ops: keep element i with probability
    // 1 - p by mix(base ^ i) >> 11 compared to p * 2^53, bit for bit.
    Tensor mix(Tensor z, const Shape &s) {
        auto shift_xor = [&](Tensor x, uint64_t bits) {
            return binary(Op::BitXor, x, binary(Op::ShiftRight, x, constant_u64(bits), s, DType::U64), s, DType::U64);
        };
        z = binary(Op::Mul, shift_xor(z, 30), constant_u64(kMix1), s, DType::U64);
        z = binary(Op::Mul, shift_xor(z, 27), constant_u64(kMix2), s, DType::U64);
        return shift_xor(z, 31);
    }

    Tensor dropout_mask(const FusedInstruction &ins, const Shape &s) {
        Location run;
        run.space = Space::RunIndex;
        run.bytes = sizeof(uint64_t);
        Tensor run_index = new_input(run, {}, DType::U64);
        Shape scalar;
        Tensor salted = binary(Op::Add, run_index, constant_u64(kRunSalt), scalar, DType::U64);
        Tensor base = mix(binary(Op::BitXor, constant_u64(ins.seed), mix(salted, scalar), scalar, DType::U64), scalar);
        Shape flat{element_count(s)};
        Call coordinate;
        coordinate.op = Op::Coordinate;
        coordinate.shape = flat;
        coordinate.dtype = DType::I32;
        coordinate.axis = 0;
        Tensor index = cast(call(coordinate), flat, DType::U64);
        Tensor hash = mix(binary(Op::BitXor, base, index, flat, DType::U64), flat);
        Tensor top = binary(Op::ShiftRight, hash, constant_u64(11), flat, DType::U64);
        double threshold = std::ceil(double(ins.p0) * 0x1.0p53);
        Tensor keep = binary(Op::GreaterEqual, top, constant_u64(uint64_t(threshold)), flat);
        float scale = 1.0f / (1.0f - ins.p0);
        return reshape(select(keep, constant(scale), constant(0), flat), s);
    }

    // --- kernels --------------------------------------------------------

    Window conv_window(const fm_op_attrs &a, const Shape &kernel) const {
        Window w;
        w.kernel_h = kernel[2], w.kernel_w = kernel[3];
        w.stride_h = a.stride[0], w.stride_w = a.stride[1];
        w.dilation_h = a.dilation[0], w.dilation_w = a.dilation[1];
        w.pad_top = w.pad_bottom = a.padding[0];
        w.pad_left = w.pad_right = a.padding[1];
        w.groups = a.groups;
        return w;
    }

    Window pool_window(const fm_op_attrs &a) const {
        Window w;
        w.kernel_h = a.kernel_size[0], w.kernel_w = a.kernel_size[1];
        w.stride_h = a.stride[0], w.stride_w = a.stride[1];
        w.dilation_h = a.dilation[0], w.dilation_w = a.dilation[1];
        w.pad_top = w.pad_bottom = a.padding[0];
        w.pad_left = w.pad_right = a.padding[1];
        w.count_include_pad = a.count_include_pad != 0;
        w.weights = Layout::None;
        return w;
    }

    void lower_kernel(const Step &s) {
        const fm_op_attrs &a = s.attrs;
        const Shape &ys = s.output.shape;
        auto shape = [&](size_t i) -> const Shape & { return s.inputs[i].shape; };
        auto windowed = [&](Op op, std::vector<Tensor> in, const Window &w) {
            Call c;
            c.op = op;
            c.inputs = std::move(in);
            c.shape = ys;
            c.window = w;
            return call(c);
        };
        auto f32_inputs = [&](std::initializer_list<size_t> which) {
            for (size_t i : which) expect_f32(s, s.inputs[i]);
        };
        switch (s.prim) {
            case Prim::MatMul: {
                f32_inputs({0, 1});
                if (options_.matmul == Path::Kernel && matmul_kernel(s)) return;
                Tensor x = read(s.inputs[0]), y = read(s.inputs[1]);
                if (a.transpose_a) x = transpose(x, last_two(shape(0).size()), shape(0));
                if (a.transpose_b) y = transpose(y, last_two(shape(1).size()), shape(1));
                Call c;
                c.op = Op::MatMul;
                c.inputs = {x, y};
                c.shape = ys;
                return write(s.output, call(c));
            }
            case Prim::Conv2d:
            case Prim::Conv2dBackwardInput:
            case Prim::Conv2dBackwardWeight: {
                f32_inputs({0, 1});
                const Shape &kernel = s.prim == Prim::Conv2dBackwardWeight ? ys : shape(1);
                Window w = conv_window(a, kernel);
                if (options_.conv == Path::Kernel && a.groups == 1) return conv_kernel(s, w);
                if (s.prim == Prim::Conv2d) return write(s.output, windowed(Op::Conv2d, {read(s.inputs[0]), read(s.inputs[1])}, w));
                if (s.prim == Prim::Conv2dBackwardInput) {
                    return write(s.output, windowed(Op::Conv2dDataGradient, {read(s.inputs[0]), read(s.inputs[1])}, w));
                }
                return write(s.output, windowed(Op::Conv2dWeightsGradient, {read(s.inputs[1]), read(s.inputs[0])}, w));
            }
            case Prim::MaxPool2d:
                f32_inputs({0});
                return write(s.output, windowed(Op::MaxPool2d, {read(s.inputs[0])}, pool_window(a)));
            case Prim::AvgPool2d:
                f32_inputs({0});
                return write(s.output, windowed(Op::AvgPool2d, {read(s.inputs[0])}, pool_window(a)));
            case Prim::MaxPool2dBackward:
                f32_inputs({0, 1});
                return write(s.output,
                             windowed(Op::MaxPool2dGradient, {read(s.inputs[1]), read(s.inputs[0])}, pool_window(a)));
            case Prim::AvgPool2dBackward: {
                f32_inputs({0});
                // MPSGraph wants the forward source; only its shape matters.
                Call zeros;
                zeros.op = Op::Constant;
                zeros.shape = ys;
                Tensor source = call(zeros);
                return write(s.output, windowed(Op::AvgPool2dGradient, {read(s.inputs[0]), source}, pool_window(a)));
            }
            case Prim::ReduceSum:
            case Prim::ReduceMax:
            case Prim::ReduceMin: {
                f32_inputs({0});
                Op op = s.prim == Prim::ReduceSum ? Op::ReduceSum : s.prim == Prim::ReduceMax ? Op::ReduceMax : Op::ReduceMin;
                uint32_t mask = axes_mask(a, shape(0).size());
                Tensor r = reduce(op, read(s.inputs[0]), shape(0), mask);
                return write(s.output, reduced_to(r, shape(0), mask, ys));
            }
            case Prim::ArgMax: {
                f32_inputs({0});
                Call c;
                c.op = Op::ArgMax;
                c.inputs = {read(s.inputs[0])};
                c.axis = a.axes[0];
                c.shape = shape(0);
                c.shape[size_t(c.axis)] = 1;
                c.dtype = DType::I32;
                Tensor r = call(c);
                return write(s.output, c.shape == ys ? r : reshape(r, ys, DType::I32));
            }
            case Prim::ReduceToLike: {
                f32_inputs({0});
                const Shape &x = shape(0);
                Shape like(x.size() - shape(1).size(), 1);
                like.insert(like.end(), shape(1).begin(), shape(1).end());
                uint32_t mask = 0;
                for (size_t i = 0; i < x.size(); ++i) if (like[i] == 1 && x[i] != 1) mask |= 1u << i;
                Tensor t = read(s.inputs[0]);
                if (mask != 0) t = reduce(Op::ReduceSum, t, x, mask);
                Shape kept = x;
                for (size_t i = 0; i < x.size(); ++i) if (mask >> i & 1) kept[i] = 1;
                return write(s.output, kept == ys ? t : reshape(t, ys));
            }
            case Prim::BroadcastLike:
                f32_inputs({0});
                return write(s.output, broadcast(read(s.inputs[0]), ys));
            case Prim::Permute: {
                std::vector<int64_t> perm(a.axes, a.axes + a.num_axes);
                DType dtype = dtype_of(s.output.dtype);
                return write(s.output, transpose(read(s.inputs[0]), perm, shape(0), dtype));
            }
            case Prim::Slice: {
                int64_t starts[FM_MAX_RANK];
                Shape result;
                resolve_slice(shape(0), a, starts, &result);
                DType dtype = dtype_of(s.output.dtype);
                return write(s.output, slice(read(s.inputs[0]), {starts, starts + ys.size()}, ys, dtype));
            }
            case Prim::SliceBackward: {
                f32_inputs({0});
                int64_t starts[FM_MAX_RANK];
                Shape result;
                resolve_slice(ys, a, starts, &result);
                std::vector<int64_t> before(starts, starts + ys.size()), after;
                for (size_t i = 0; i < ys.size(); ++i) after.push_back(ys[i] - starts[i] - shape(0)[i]);
                return write(s.output, pad(read(s.inputs[0]), before, after, 0.0, ys));
            }
            case Prim::Pad: {
                std::vector<int64_t> before(a.pad_before, a.pad_before + ys.size());
                std::vector<int64_t> after(a.pad_after, a.pad_after + ys.size());
                for (size_t i = 0; i < ys.size(); ++i) {
                    if (before[i] < 0 || after[i] < 0) unsupported(s, "pad", "negative padding (cropping)");
                }
                DType dtype = dtype_of(s.output.dtype);
                return write(s.output, pad(read(s.inputs[0]), before, after, a.value, ys, dtype));
            }
            case Prim::Concat: {
                Call c;
                c.op = Op::Concat;
                for (const TensorRef &ref : s.inputs) c.inputs.push_back(read(ref));
                c.axis = a.axes[0];
                c.shape = ys;
                c.dtype = dtype_of(s.output.dtype);
                return write(s.output, call(c));
            }
            case Prim::Softmax: {
                f32_inputs({0});
                Call c;
                c.op = Op::Softmax;
                c.inputs = {read(s.inputs[0])};
                c.axis = a.axes[0];
                c.shape = ys;
                return write(s.output, call(c));
            }
            case Prim::LogSoftmax: {
                f32_inputs({0});
                uint32_t mask = 1u << a.axes[0];
                Tensor x = read(s.inputs[0]);
                Tensor shifted = binary(Op::Sub, x, reduce(Op::ReduceMax, x, ys, mask), ys);
                Tensor sum = reduce(Op::ReduceSum, unary(Op::Exp, shifted, ys), ys, mask);
                Shape kept = ys;
                kept[size_t(a.axes[0])] = 1;
                return write(s.output, binary(Op::Sub, shifted, unary(Op::Log, sum, kept), ys));
            }
            case Prim::GatherRows: {
                f32_inputs({0});
                Call c;
                c.op = Op::Gather;
                c.inputs = {read(s.inputs[0]), read(s.inputs[1])};
                c.axis = 0;
                c.shape = ys;
                return write(s.output, call(c));
            }
            case Prim::ScatterAddRows: {
                f32_inputs({0});
                int64_t rows = element_count(shape(1));
                Tensor updates = read(s.inputs[0]), indices = read(s.inputs[1]);
                Shape flat_updates{rows, ys[1]}, flat_indices{rows};
                if (shape(0) != flat_updates) updates = reshape(updates, flat_updates);
                if (shape(1) != flat_indices) indices = reshape(indices, flat_indices, DType::I32);
                Call c;
                c.op = Op::ScatterAdd;
                c.inputs = {updates, indices};
                c.axis = 0;
                c.shape = ys;
                return write(s.output, call(c));
            }
            case Prim::OneHot:
                return write(s.output, one_hot(read(s.inputs[0]), shape(0), a.depth, int64_t(shape(0).size())));
            case Prim::Pick: {
                f32_inputs({0});
                const Shape &x = shape(0);
                Tensor hot = one_hot(read(s.inputs[1]), shape(1), x[1], 1);
                Tensor picked = reduce(Op::ReduceSum, binary(Op::Mul, hot, read(s.inputs[0]), x), x, 2u);
                return write(s.output, reshape(picked, ys));
            }
            case Prim::PickBackward: {
                f32_inputs({0});
                Tensor hot = one_hot(read(s.inputs[1]), shape(1), ys[1], 1);
                Shape kept = ys;
                kept[1] = 1;
                Tensor dy = reshape(read(s.inputs[0]), kept);
                return write(s.output, binary(Op::Mul, hot, dy, ys));
            }
            default: break;
        }
        unsupported(s, prim_name(s.prim), "no lowering for this primitive as a kernel step");
    }

    static std::vector<int64_t> last_two(size_t rank) {
        std::vector<int64_t> perm;
        for (size_t i = 0; i < rank; ++i) perm.push_back(int64_t(i));
        std::swap(perm[rank - 2], perm[rank - 1]);
        return perm;
    }

    Tensor reduced_to(Tensor r, const Shape &from, uint32_t mask, const Shape &to) {
        Shape kept = from;
        for (size_t i = 0; i < from.size(); ++i) if (mask >> i & 1) kept[i] = 1;
        return kept == to ? r : reshape(r, to);
    }

    // MPSMatrixMultiplication over the operands' memory. False (and the
    // graph path is taken) for batch broadcasting it cannot express.
    bool matmul_kernel(const Step &s) {
        const fm_op_attrs &a = s.attrs;
        const Shape &as = s.inputs[0].shape, &bs = s.inputs[1].shape, &ys = s.output.shape;
        if (s.inputs[0].storage == Storage::Scalar || s.inputs[1].storage == Storage::Scalar) return false;
        size_t rank = ys.size();
        auto batch_of = [&](const Shape &x) {
            int64_t n = 1;
            for (size_t i = 0; i + 2 < x.size(); ++i) n *= x[i];
            return n;
        };
        int64_t batches = batch_of(ys), a_batch = batch_of(as), b_batch = batch_of(bs);
        MatmulKernel k;
        k.m = ys[rank - 2], k.n = ys[rank - 1];
        k.k = a.transpose_a ? as[as.size() - 2] : as[as.size() - 1];
        k.transpose_a = a.transpose_a != 0, k.transpose_b = a.transpose_b != 0;
        if (a_batch == batches && b_batch == batches) {
            k.batch = batches;
        } else if (a_batch == batches && b_batch == 1 && !k.transpose_a) {
            k.batch = 1, k.m *= batches;  // [batch, m, k] rows are one [batch*m, k] matrix
        } else {
            return false;
        }
        k.a_rows = k.transpose_a ? k.k : k.m, k.a_cols = k.transpose_a ? k.m : k.k;
        k.b_rows = k.transpose_b ? k.n : k.k, k.b_cols = k.transpose_b ? k.k : k.n;
        close(at_);  // this step reads the operands from memory
        k.a = location_of(s.inputs[0]);
        k.b = location_of(s.inputs[1]);
        k.c = location_of(s.output);
        k.origin = s.origin;
        b_.matmul_kernel(k);
        ++result_.kernels;
        return true;
    }

    // NCHW -> [N][S][H][W][P] (zero channels padded up to S*P).
    Tensor to_image_slices(Tensor x, const Shape &nchw, int64_t slices, int64_t pixel) {
        Shape padded = nchw;
        padded[1] = slices * pixel;
        if (padded != nchw) x = pad(x, {0, 0, 0, 0}, {0, padded[1] - nchw[1], 0, 0}, 0.0, padded);
        Shape split{nchw[0], slices, pixel, nchw[2], nchw[3]};
        return transpose(reshape(x, split), {0, 1, 3, 4, 2}, split);
    }

    Tensor from_image_slices(Tensor x, const Shape &nchw, int64_t slices, int64_t pixel) {
        Shape sliced{nchw[0], slices, nchw[2], nchw[3], pixel};
        Tensor t = transpose(x, {0, 1, 4, 2, 3}, sliced);
        Shape padded{nchw[0], slices * pixel, nchw[2], nchw[3]};
        t = reshape(t, padded);
        return padded == nchw ? t : slice(t, {0, 0, 0, 0}, nchw);
    }

    // The MPS CNN path: layout conversions in the current segment, the
    // kernel between segments, the conversion back at the next one's start.
    void conv_kernel(const Step &s, const Window &w) {
        ConvKernel k;
        k.window = w;
        k.origin = s.origin;
        const Shape &ys = s.output.shape;
        const Shape *x, *y, *weights;
        if (s.prim == Prim::Conv2d) {
            k.kind = ConvKernel::Forward, x = &s.inputs[0].shape, weights = &s.inputs[1].shape, y = &ys;
        } else if (s.prim == Prim::Conv2dBackwardInput) {
            k.kind = ConvKernel::DataGradient, x = &ys, weights = &s.inputs[1].shape, y = &s.inputs[0].shape;
        } else {
            k.kind = ConvKernel::WeightsGradient, x = &s.inputs[0].shape, weights = &ys, y = &s.inputs[1].shape;
        }
        k.n = (*x)[0], k.c_in = (*x)[1], k.h = (*x)[2], k.w = (*x)[3];
        k.c_out = (*weights)[0], k.out_h = (*y)[2], k.out_w = (*y)[3];
        image_slices(k.c_in, &k.in_slices, &k.in_pixel);
        image_slices(k.c_out, &k.out_slices, &k.out_pixel);
        k.offset_x = (w.dilation_w * (w.kernel_w - 1) + 1) / 2 - w.pad_left;
        k.offset_y = (w.dilation_h * (w.kernel_h - 1) + 1) / 2 - w.pad_top;
        auto image_bytes = [](const Shape &nchw, int64_t slices, int64_t pixel) {
            return size_t(nchw[0] * slices * pixel * nchw[2] * nchw[3]) * sizeof(float);
        };
        size_t weight_bytes = size_t(element_count(*weights)) * sizeof(float);
        auto force = [&](Tensor t, size_t bytes) {
            Location loc = scratch(bytes);
            forced_.emplace_back(t, loc);
            return loc;
        };
        auto ohwi = [&](Tensor oihw) { return transpose(oihw, {0, 2, 3, 1}, *weights); };
        Shape ohwi_shape{(*weights)[0], (*weights)[2], (*weights)[3], (*weights)[1]};
        switch (k.kind) {
            case ConvKernel::Forward:
                k.source = force(to_image_slices(read(s.inputs[0]), *x, k.in_slices, k.in_pixel),
                                 image_bytes(*x, k.in_slices, k.in_pixel));
                k.weights = force(ohwi(read(s.inputs[1])), weight_bytes);
                k.result = scratch(image_bytes(*y, k.out_slices, k.out_pixel));
                break;
            case ConvKernel::DataGradient:
                k.source = force(to_image_slices(read(s.inputs[0]), *y, k.out_slices, k.out_pixel),
                                 image_bytes(*y, k.out_slices, k.out_pixel));
                k.weights = force(ohwi(read(s.inputs[1])), weight_bytes);
                k.result = scratch(image_bytes(*x, k.in_slices, k.in_pixel));
                break;
            case ConvKernel::WeightsGradient:
                k.source = force(to_image_slices(read(s.inputs[0]), *x, k.in_slices, k.in_pixel),
                                 image_bytes(*x, k.in_slices, k.in_pixel));
                k.gradient = force(to_image_slices(read(s.inputs[1]), *y, k.out_slices, k.out_pixel),
                                   image_bytes(*y, k.out_slices, k.out_pixel));
                k.result = scratch(weight_bytes);
                break;
        }
        close(at_ + 1);
        b_.conv_kernel(k);
        ++result_.kernels;
        open();
        Tensor back;
        if (k.kind == ConvKernel::WeightsGradient) {
            Tensor t = new_input(k.result, ohwi_shape, DType::F32);
            back = transpose(t, {0, 3, 1, 2}, ohwi_shape);
        } else {
            const Shape &nchw = k.kind == ConvKernel::Forward ? *y : *x;
            int64_t slices = k.kind == ConvKernel::Forward ? k.out_slices : k.in_slices;
            int64_t pixel = k.kind == ConvKernel::Forward ? k.out_pixel : k.in_pixel;
            Shape stored{nchw[0], slices, nchw[2], nchw[3], pixel};
            Tensor t = new_input(k.result, stored, DType::F32);
            back = from_image_slices(t, nchw, slices, pixel);
        }
        write(s.output, back);
    }

    const Plan &plan_;
    Options options_;
    Builder &b_;
    Lowered result_;
    std::vector<std::vector<Location>> reads_, writes_;
    size_t at_ = 0;
    bool open_ = false;
    size_t scratch_ = 0;
    std::vector<Written> written_;
    std::vector<Input> inputs_;
    std::vector<std::pair<Tensor, Location>> forced_;
    std::map<std::pair<double, int>, Tensor> constants_;
    std::map<Tensor, std::pair<Shape, DType>> tensor_info_;
};

}  // namespace

Lowered lower(const Plan &plan, const Options &options, Builder &builder) {
    return Lowering(plan, options, builder).run();
}

}  // namespace fm::metal
