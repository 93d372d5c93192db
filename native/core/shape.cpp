#include "shape.h"

#include "error.h"

namespace fm {

int64_t element_count(const Shape &shape) {
    int64_t count = 1;
    for (int64_t dim : shape) {
        if (__builtin_mul_overflow(count, dim, &count)) {
            fail(FM_ERR_INVALID_ARGUMENT, "shape ", to_string(shape), " has more elements than an int64_t holds");
        }
    }
    return count;
}

void check_element_count(const Shape &shape, const std::string &what) {
    int64_t count = 1;
    for (int64_t dim : shape) {
        if (dim == FM_BATCH) continue;
        if (dim < 0) continue;  // reported by the callers' own checks
        if (__builtin_mul_overflow(count, dim, &count) || count > kMaxElements) {
            fail(FM_ERR_INVALID_ARGUMENT, what, ": shape ", to_string(shape), " has too many elements (at most ",
                 kMaxElements, ")");
        }
    }
}

namespace {
thread_local int64_t displayed_batch = 0;
}

ProbeDisplay::ProbeDisplay(int64_t batch) : previous_(displayed_batch) { displayed_batch = batch; }

ProbeDisplay::~ProbeDisplay() { displayed_batch = previous_; }

std::string to_string(const Shape &shape) {
    std::string text = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) text += ", ";
        bool batch = displayed_batch != 0 && shape[i] == displayed_batch;
        text += batch ? std::string("-1") : std::to_string(shape[i]);
    }
    return text + "]";
}

Shape broadcast_shapes(const Shape &a, const Shape &b, const char *op) {
    size_t rank = std::max(a.size(), b.size());
    Shape out(rank);
    for (size_t i = 0; i < rank; ++i) {
        int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1) {
            fail(FM_ERR_SHAPE_MISMATCH, op, ": shapes ", to_string(a), " and ", to_string(b),
                 " do not broadcast: dim ", i, " is ", da, " vs ", db);
        }
        out[i] = da == 1 ? db : da;
    }
    return out;
}

int normalize_axis(int64_t axis, size_t rank, const char *op) {
    int64_t r = static_cast<int64_t>(rank);
    if (axis < -r || axis >= r) {
        fail(FM_ERR_INVALID_ARGUMENT, op, ": axis ", axis, " is out of range for rank ", rank);
    }
    return static_cast<int>(axis < 0 ? axis + r : axis);
}

}  // namespace fm
