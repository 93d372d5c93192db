// Shapes: dims of a tensor, with the helpers every op's inference needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fm {

using Shape = std::vector<int64_t>;

int64_t element_count(const Shape &shape);  // 1 for a scalar
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
