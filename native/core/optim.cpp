// Optimizers as update subgraphs (PyTorch's update rules). The learning
// rate and the step count are scalar variables, so changing them needs no
// recompilation; every update is elementwise and fuses per parameter.
#include <cmath>
#include <functional>
#include <map>
#include <string>

#include "builder.h"
#include "error.h"

namespace fm {

namespace {

class Optimizer : public Builder {
public:
    Optimizer(Graph &graph, const fm_optimizer &config, std::string prefix)
        : Builder(graph, "optimizer"), o(config), prefix(std::move(prefix)) {}

    uint32_t state(const std::string &owner, const char *what, const Shape &shape, double value) {
        VariableInit init;
        init.init.kind = value == 0.0 ? FM_INIT_ZEROS : FM_INIT_CONSTANT;
        init.init.value = value;
        return g.add_variable(prefix + owner + "." + what, FM_DTYPE_F32, shape, init);
    }

    // Stores `value` into `variable` (its old value instead while `keep` is
    // 0, when guarded) and returns `value` for the rest of the update.
    uint32_t assign(uint32_t variable, uint32_t value) {
        uint32_t stored = keep >= 0 ? where(uint32_t(keep), value, variable) : value;
        tokens.push_back(prim(Prim::Assign, {variable, stored}));
        return value;
    }

    // 1 - b^t for a scalar value t, without cancellation. 1 - exp(t ln b)
    // in f32 rounds b^t first, so for b near 1 (Adam's beta2 = 0.999) the
    // difference kept only a few digits: 2e-5 relative in the first steps.
    // This is -expm1(x) with x = t ln b, written with tanh, which is
    // accurate near 0: expm1(x) = 2 tanh(x/2) / (1 - tanh(x/2)).
    uint32_t one_minus_power(double base, uint32_t t) {
        uint32_t half = unary(Prim::Tanh, mul(t, 0.5 * std::log(base)));
        return div(mul(half, -2.0), sub(scalar(1.0), half));
    }

    uint32_t sqrt(uint32_t x) { return unary(Prim::Sqrt, x); }

    void update(uint32_t p, uint32_t grad);

    // Scalars every parameter's update shares, built once (not once per
    // parameter), so the plan computes them once.
    uint32_t first_step() {
        if (!first_) first_ = prim(Prim::Equal, {step, scalar(0.0)}) + 1;
        return first_ - 1;
    }
    // 1 - beta^t, the bias correction of Adam-style moments.
    uint32_t correction(double beta) {
        auto found = corrections_.find(beta);
        if (found != corrections_.end()) return found->second;
        return corrections_[beta] = one_minus_power(beta, t);
    }
    uint32_t shared(const std::string &key, const std::function<uint32_t()> &make) {
        auto found = shared_.find(key);
        if (found != shared_.end()) return found->second;
        return shared_[key] = make();
    }
    uint32_t first_ = 0;  // index + 1, 0 until built
    std::map<double, uint32_t> corrections_;
    std::map<std::string, uint32_t> shared_;

    fm_optimizer o;
    std::string prefix;
    int64_t keep = -1;  // the guard's flag, or -1
    uint32_t lr = 0, step = 0, t = 0, mu_t = 0, mu_next = 0, mu_product = 0;
    std::vector<uint32_t> tokens;
};

void Optimizer::update(uint32_t p, uint32_t grad) {
    // Copies: the nodes added below may reallocate the graph's storage.
    const std::string name = g.node(p).name;
    const Shape shape = g.node(p).probe[0];
    uint32_t gr = grad;
    if (o.weight_decay != 0.0 && o.kind != FM_OPTIMIZER_ADAMW) gr = add(gr, mul(p, o.weight_decay));
    uint32_t delta;  // what is subtracted from p
    switch (o.kind) {
        case FM_OPTIMIZER_SGD: {
            uint32_t direction = gr;
            if (o.momentum != 0.0) {
                uint32_t buffer = state(name, "momentum_buffer", shape, 0.0);
                // The first step takes the gradient itself, as PyTorch does.
                uint32_t first = first_step();
                uint32_t blended = add(mul(buffer, o.momentum), mul(gr, 1.0 - o.dampening));
                uint32_t next = assign(buffer, where(first, gr, blended));
                direction = o.nesterov ? add(gr, mul(next, o.momentum)) : next;
            }
            delta = mul(direction, lr);
            break;
        }
        case FM_OPTIMIZER_ADAM:
        case FM_OPTIMIZER_ADAMW: {
            uint32_t base = p;
            if (o.kind == FM_OPTIMIZER_ADAMW && o.weight_decay != 0.0) {
                base = sub(p, mul(mul(p, lr), o.weight_decay));
            }
            uint32_t m0 = state(name, "exp_avg", shape, 0.0);
            uint32_t v0 = state(name, "exp_avg_sq", shape, 0.0);
            uint32_t m = assign(m0, add(mul(m0, o.beta1), mul(gr, 1.0 - o.beta1)));
            uint32_t v = assign(v0, add(mul(v0, o.beta2), mul(mul(gr, gr), 1.0 - o.beta2)));
            uint32_t root_bias2 = shared("sqrt(bias2)", [&] { return sqrt(correction(o.beta2)); });
            uint32_t step_size = shared("lr/bias1", [&] { return div(lr, correction(o.beta1)); });
            uint32_t denom = add(div(sqrt(v), root_bias2), o.eps);
            assign(p, sub(base, div(mul(step_size, m), denom)));
            return;
        }
        case FM_OPTIMIZER_RMSPROP: {
            uint32_t sq = state(name, "square_avg", shape, 0.0);
            uint32_t avg_sq = assign(sq, add(mul(sq, o.alpha), mul(mul(gr, gr), 1.0 - o.alpha)));
            uint32_t avg;
            if (o.centered) {
                uint32_t ga = state(name, "grad_avg", shape, 0.0);
                uint32_t grad_avg = assign(ga, add(mul(ga, o.alpha), mul(gr, 1.0 - o.alpha)));
                avg = add(sqrt(sub(avg_sq, mul(grad_avg, grad_avg))), o.eps);
            } else {
                avg = add(sqrt(avg_sq), o.eps);
            }
            if (o.momentum > 0.0) {
                uint32_t buffer = state(name, "momentum_buffer", shape, 0.0);
                uint32_t next = assign(buffer, add(mul(buffer, o.momentum), div(gr, avg)));
                delta = mul(next, lr);
            } else {
                delta = mul(div(gr, avg), lr);
            }
            break;
        }
        case FM_OPTIMIZER_ADAGRAD: {
            uint32_t acc = state(name, "sum", shape, o.initial_accumulator);
            uint32_t total = assign(acc, add(acc, mul(gr, gr)));
            delta = mul(div(gr, add(sqrt(total), o.eps)), lr);
            break;
        }
        case FM_OPTIMIZER_ADADELTA: {
            uint32_t sq = state(name, "square_avg", shape, 0.0);
            uint32_t acc = state(name, "acc_delta", shape, 0.0);
            uint32_t avg = assign(sq, add(mul(sq, o.rho), mul(mul(gr, gr), 1.0 - o.rho)));
            uint32_t change = mul(div(sqrt(add(acc, o.eps)), sqrt(add(avg, o.eps))), gr);
            assign(acc, add(mul(acc, o.rho), mul(mul(change, change), 1.0 - o.rho)));
            delta = mul(change, lr);
            break;
        }
        case FM_OPTIMIZER_NADAM: {
            uint32_t m0 = state(name, "exp_avg", shape, 0.0);
            uint32_t v0 = state(name, "exp_avg_sq", shape, 0.0);
            uint32_t m = assign(m0, add(mul(m0, o.beta1), mul(gr, 1.0 - o.beta1)));
            uint32_t v = assign(v0, add(mul(v0, o.beta2), mul(mul(gr, gr), 1.0 - o.beta2)));
            uint32_t denom = add(sqrt(div(v, correction(o.beta2))), o.eps);
            uint32_t grad_weight = shared("nadam.grad_weight", [&] {
                uint32_t one = scalar(1.0);
                return div(mul(sub(one, mu_t), lr), sub(one, mu_product));
            });
            uint32_t m_weight = shared("nadam.m_weight", [&] {
                uint32_t one = scalar(1.0);
                return div(mul(mu_next, lr), sub(one, mul(mu_product, mu_next)));
            });
            delta = add(mul(grad_weight, div(gr, denom)), mul(m_weight, div(m, denom)));
            break;
        }
        default:
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer': unknown kind ", int(o.kind));
    }
    assign(p, sub(p, delta));
}

}  // namespace

void check_optimizer(const fm_optimizer &o) {
    if (static_cast<unsigned>(o.kind) >= FM_OPTIMIZER_COUNT) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer': unknown kind ", int(o.kind));
    }
    // Every field is checked, read by this kind or not: a NaN left in one is
    // a mistake either way.
    auto in = [](const char *field, double value, double low, double high, bool high_open) {
        bool fits = std::isfinite(value) && value >= low && (high_open ? value < high : value <= high);
        if (!fits) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer': ", field, " is ", value, ", it must be finite and in [",
                 low, ", ", high, high_open ? ")" : "]");
        }
    };
    const double inf = HUGE_VAL;
    in("learning_rate", o.learning_rate, 0.0, inf, true);
    in("momentum", o.momentum, 0.0, inf, true);
    in("dampening", o.dampening, 0.0, 1.0, false);
    in("beta1", o.beta1, 0.0, 1.0, true);
    in("beta2", o.beta2, 0.0, 1.0, true);
    in("eps", o.eps, 0.0, inf, true);
    in("weight_decay", o.weight_decay, 0.0, inf, true);
    in("alpha", o.alpha, 0.0, 1.0, false);
    in("rho", o.rho, 0.0, 1.0, false);
    in("initial_accumulator", o.initial_accumulator, 0.0, inf, true);
    in("momentum_decay", o.momentum_decay, 0.0, inf, true);
    in("clip_value", o.clip_value, 0.0, inf, true);
    in("clip_norm", o.clip_norm, 0.0, inf, true);
    if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0)) {
        fail(FM_ERR_INVALID_ARGUMENT, "argument 'optimizer': nesterov needs momentum > 0 and dampening 0 (momentum ",
             o.momentum, ", dampening ", o.dampening, ")");
    }
}

uint32_t build_optimizer(Graph &graph, const fm_optimizer &config, const std::vector<uint32_t> &variables,
                         const std::vector<uint32_t> &gradients, const std::string &prefix, int64_t keep) {
    check_optimizer(config);
    for (size_t i = 0; i < variables.size(); ++i) {
        const Node &v = graph.node(variables[i]);
        if (v.prim != Prim::Variable) {
            fail(FM_ERR_INVALID_ARGUMENT, "argument 'variables': entry ", i, " is not a variable");
        }
        if (v.dtype != FM_DTYPE_F32) fail(FM_ERR_DTYPE_MISMATCH, "argument 'variables': '", v.name, "' is not f32");
        if (!graph.same_shape(variables[i], gradients[i])) {
            fail(FM_ERR_SHAPE_MISMATCH, "argument 'gradients': entry ", i, " is ",
                 to_string(graph.public_shape(gradients[i])), ", variable '", v.name, "' is ",
                 to_string(v.probe[0]));
        }
    }
    Optimizer opt(graph, config, prefix);
    opt.keep = keep;
    VariableInit lr_init;
    lr_init.init.kind = FM_INIT_CONSTANT;
    lr_init.init.value = config.learning_rate;
    opt.lr = graph.add_variable(prefix + "lr", FM_DTYPE_F32, {}, lr_init);
    opt.step = graph.add_variable(prefix + "step", FM_DTYPE_F32, {}, VariableInit{});
    opt.t = opt.assign(opt.step, opt.add(opt.step, 1.0));
    if (config.kind == FM_OPTIMIZER_NADAM) {
        double psi = config.momentum_decay;
        auto mu = [&](double shift) {
            uint32_t exponent = opt.mul(opt.add(opt.t, shift), psi);
            uint32_t decay = opt.unary(Prim::Exp, opt.mul(exponent, std::log(0.96)));
            return opt.mul(opt.sub(opt.scalar(1.0), opt.mul(decay, 0.5)), config.beta1);
        };
        opt.mu_t = mu(0.0);
        opt.mu_next = mu(1.0);
        VariableInit one;
        one.init.kind = FM_INIT_CONSTANT;
        one.init.value = 1.0;
        uint32_t product = graph.add_variable(prefix + "mu_product", FM_DTYPE_F32, {}, one);
        opt.mu_product = opt.assign(product, opt.mul(product, opt.mu_t));
    }
    std::vector<uint32_t> grads = gradients;
    if (config.clip_value > 0.0) {
        fm_op_attrs clip = default_attrs();
        clip.min = -config.clip_value;
        clip.max = config.clip_value;
        for (uint32_t &g : grads) g = opt.prim(Prim::Clamp, {g}, clip);
    }
    if (config.clip_norm > 0.0 && !grads.empty()) {
        uint32_t total = 0;
        for (size_t i = 0; i < grads.size(); ++i) {
            uint32_t squares = opt.sum(opt.mul(grads[i], grads[i]), {}, false);
            total = i == 0 ? squares : opt.add(total, squares);
        }
        // PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6), at most 1.
        uint32_t scale = opt.prim(Prim::Minimum, {opt.scalar(1.0),
                                                  opt.div(opt.scalar(config.clip_norm),
                                                          opt.add(opt.sqrt(total), 1e-6))});
        for (uint32_t &g : grads) g = opt.mul(g, scale);
    }
    for (size_t i = 0; i < variables.size(); ++i) opt.update(variables[i], grads[i]);
    return opt.prim(Prim::Group, opt.tokens);
}

}  // namespace fm
