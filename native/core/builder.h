// Helpers for adding primitives to a graph, shared by the op builder,
// autodiff and the optimizers: each call infers shapes and names `origin`
// in errors.
#pragma once

#include <initializer_list>

#include "graph.h"

namespace fm {

fm_op_attrs default_attrs();

class Builder {
public:
    Builder(Graph &graph, const char *origin) : g(graph), origin(origin) {}

    uint32_t prim(Prim prim, std::vector<uint32_t> inputs, const fm_op_attrs &attrs);
    uint32_t prim(Prim prim, std::vector<uint32_t> inputs) { return this->prim(prim, std::move(inputs), default_attrs()); }
    uint32_t scalar(double value) { return g.add_scalar(value); }

    uint32_t add(uint32_t a, uint32_t b) { return prim(Prim::Add, {a, b}); }
    uint32_t sub(uint32_t a, uint32_t b) { return prim(Prim::Sub, {a, b}); }
    uint32_t mul(uint32_t a, uint32_t b) { return prim(Prim::Mul, {a, b}); }
    uint32_t div(uint32_t a, uint32_t b) { return prim(Prim::Div, {a, b}); }
    uint32_t mul(uint32_t a, double b) { return mul(a, scalar(b)); }
    uint32_t add(uint32_t a, double b) { return add(a, scalar(b)); }
    uint32_t neg(uint32_t a) { return prim(Prim::Neg, {a}); }
    uint32_t unary(Prim p, uint32_t a) { return prim(p, {a}); }
    uint32_t pow(uint32_t a, double exponent);
    uint32_t where(uint32_t c, uint32_t a, uint32_t b) { return prim(Prim::Where, {c, a, b}); }

    // Sum over `axes` (all when empty), keeping reduced dims as 1 if `keep`.
    uint32_t sum(uint32_t x, const std::vector<int> &axes, bool keep);
    // Mean over `axes`, dividing by their element count at run time.
    uint32_t mean(uint32_t x, const std::vector<int> &axes, bool keep);
    uint32_t count(uint32_t x, const std::vector<int> &axes);
    // x summed down to like's shape; x itself when the shapes already agree.
    uint32_t reduce_to(uint32_t x, uint32_t like);
    uint32_t broadcast_to(uint32_t x, uint32_t like);
    uint32_t reshape_like(uint32_t x, uint32_t like);
    uint32_t unsqueeze(uint32_t x, const std::vector<int> &axes);
    // A tensor of zeros with like's shape (reads nothing of like).
    uint32_t zeros_like(uint32_t like) { return broadcast_to(scalar(0.0), like); }

    Graph &g;
    const char *origin;
};

}  // namespace fm
