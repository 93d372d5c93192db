// Shapes: dims of a tensor, with the helpers every op's inference needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fm {

using Shape = std::vector<int64_t>;

// The most elements a value may have: its bytes (8 per element at most)
// must fit in int64_t.
constexpr int64_t kMaxElements = INT64_MAX / 8;

// 1 for a scalar. Throws FM_ERR_INVALID_ARGUMENT when the product
// overflows int64_t, so a forged shape never wraps to a small count.
int64_t element_count(const Shape &shape);
// Throws FM_ERR_INVALID_ARGUMENT naming `what` unless the dims (FM_BATCH
// ones left out) multiply to at most kMaxElements.
void check_element_count(const Shape &shape, const std::string &what);
std::string to_string(const Shape &shape);  // "[2, 3]"

// While one lives on a thread, to_string shows `batch` as -1: inference on
// probe shapes then reports shapes as the user declared them.
class ProbeDisplay {
public:
    explicit ProbeDisplay(int64_t batch);
    ~ProbeDisplay();
    ProbeDisplay(const ProbeDisplay &) = delete;
    ProbeDisplay &operator=(const ProbeDisplay &) = delete;

private:
    int64_t previous_;
};

// NumPy broadcasting of two shapes; throws FM_ERR_SHAPE_MISMATCH naming `op`.
Shape broadcast_shapes(const Shape &a, const Shape &b, const char *op);

// A possibly negative axis resolved against `rank`; throws naming `op`.
int normalize_axis(int64_t axis, size_t rank, const char *op);

}  // namespace fm
