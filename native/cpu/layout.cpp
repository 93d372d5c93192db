// Layout kernels: permute, broadcast_to, slice, pad and concat are all one
// strided copy (destination and source each with their own strides), so
// they share copy_strided below and differ only in how they set it up.
#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "strides.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

using CopyLoop = StridedLoop<2>;  // operand 0: destination, 1: source
constexpr int kDst = 0, kSrc = 1;

// Work per task, in elements: large enough that the pool's per-task cost
// (a lock and a wake-up) is noise, small enough to spread a 1 MB copy.
constexpr int64_t kTaskElements = int64_t(1) << 15;
constexpr int64_t kTile = 32;  // 32 x 32 x 4 bytes per side of a transpose: L1-resident

size_t grain_for(int64_t elements_per_item) {
    return size_t(std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_item)));
}

// Copies rows along the innermost dim. Elements are moved with memcpy of a
// constant size, so any element type is copied without aliasing concerns.
template <size_t S>
void copy_rows(const CopyLoop &loop, char *dst, const char *src) {
    const int outer_dims = loop.rank - 1;
    const int64_t len = loop.shape[outer_dims];
    const int64_t ds = loop.strides[kDst][outer_dims] * int64_t(S);
    const int64_t ss = loop.strides[kSrc][outer_dims] * int64_t(S);
    const int64_t rows = loop.count(outer_dims);
    ThreadPool::global().parallel_for(size_t(rows), grain_for(len), [&](size_t begin, size_t end) {
        StridedCursor<2> cursor(loop, outer_dims, int64_t(begin));
        for (size_t row = begin; row < end; ++row, cursor.next()) {
            char *d = dst + cursor.offset(kDst) * int64_t(S);
            const char *s = src + cursor.offset(kSrc) * int64_t(S);
            if (ds == int64_t(S) && ss == int64_t(S)) {
                std::memcpy(d, s, size_t(len) * S);
            } else {
                for (int64_t j = 0; j < len; ++j) std::memcpy(d + j * ds, s + j * ss, S);
            }
        }
    });
}

// A transpose-like copy: the source is contiguous along dim rank-2 and the
// destination along dim rank-1. Row by row, one side would be read or
// written a cache line per element; square tiles keep both in L1.
template <size_t S>
void copy_tiles(const CopyLoop &loop, char *dst, const char *src) {
    const int outer_dims = loop.rank - 2;
    const int64_t rows = loop.shape[outer_dims], cols = loop.shape[outer_dims + 1];
    const int64_t d_row = loop.strides[kDst][outer_dims] * int64_t(S);
    const int64_t s_col = loop.strides[kSrc][outer_dims + 1] * int64_t(S);
    const int64_t row_tiles = (rows + kTile - 1) / kTile;
    const int64_t items = loop.count(outer_dims) * row_tiles;
    ThreadPool::global().parallel_for(
        size_t(items), grain_for(kTile * cols), [&](size_t begin, size_t end) {
            for (size_t item = begin; item < end; ++item) {
                const int64_t outer = int64_t(item) / row_tiles;
                const int64_t r0 = int64_t(item) % row_tiles * kTile;
                const int64_t r1 = std::min(rows, r0 + kTile);
                StridedCursor<2> cursor(loop, outer_dims, outer);
                char *d = dst + cursor.offset(kDst) * int64_t(S);
                const char *s = src + cursor.offset(kSrc) * int64_t(S);
                for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
                    const int64_t c1 = std::min(cols, c0 + kTile);
                    for (int64_t r = r0; r < r1; ++r) {
                        for (int64_t c = c0; c < c1; ++c) {
                            std::memcpy(d + r * d_row + c * int64_t(S), s + r * int64_t(S) + c * s_col, S);
                        }
                    }
                }
            }
        });
}

template <size_t S>
void copy_typed(CopyLoop &loop, char *dst, const char *src) {
    if (loop.rank == 0) {
        std::memcpy(dst, src, S);
        return;
    }
    const int last = loop.rank - 1;
    // A source stride of 0 (broadcast) is a fill, which rows do well.
    if (loop.rank >= 2 && loop.strides[kDst][last] == 1 && loop.strides[kSrc][last] > 1) {
        // Find a dim along which the source is contiguous, and move it next to
        // the innermost one (the order in which a copy visits elements is free).
        for (int d = last - 1; d >= 0; --d) {
            if (loop.strides[kSrc][d] != 1) continue;
            // Rotating [d, last) left by one moves dim d to last - 1.
            std::rotate(loop.shape + d, loop.shape + d + 1, loop.shape + last);
            std::rotate(loop.strides[kDst] + d, loop.strides[kDst] + d + 1, loop.strides[kDst] + last);
            std::rotate(loop.strides[kSrc] + d, loop.strides[kSrc] + d + 1, loop.strides[kSrc] + last);
            copy_tiles<S>(loop, dst, src);
            return;
        }
    }
    copy_rows<S>(loop, dst, src);
}

// dst[offsets] = src[offsets] over `loop` (strides in elements).
void copy_strided(CopyLoop loop, void *dst, const void *src, size_t element_size) {
    if (loop.count(loop.rank) == 0) return;
    loop.simplify();
    auto *d = static_cast<char *>(dst);
    const auto *s = static_cast<const char *>(src);
    switch (element_size) {
        case 1: return copy_typed<1>(loop, d, s);
        case 2: return copy_typed<2>(loop, d, s);
        case 4: return copy_typed<4>(loop, d, s);
        case 8: return copy_typed<8>(loop, d, s);
        default: break;
    }
    // Any other size: its bytes become the innermost dim, copied as bytes.
    for (int dim = 0; dim < loop.rank; ++dim) {
        loop.strides[kDst][dim] *= int64_t(element_size);
        loop.strides[kSrc][dim] *= int64_t(element_size);
    }
    loop.push_dim(int64_t(element_size), {1, 1});
    loop.simplify();
    copy_typed<1>(loop, d, s);
}

void fill(float *y, int64_t count, float value) {
    ThreadPool::global().parallel_for(size_t(count), size_t(kTaskElements), [&](size_t b, size_t e) {
        std::fill(y + b, y + e, value);
    });
}

}  // namespace

void permute(const int64_t *shape, int rank, const int64_t *perm, const void *x, void *y,
             size_t element_size) {
    check_rank(rank, "permute");
    bool seen[kMaxRank] = {};
    for (int i = 0; i < rank; ++i) {
        if (perm[i] < 0 || perm[i] >= rank || seen[perm[i]]) {
            fail(FM_ERR_INVALID_ARGUMENT, "permute: axis ", perm[i], " at position ", i,
                 " does not make a permutation of [0, ", rank, ")");
        }
        seen[perm[i]] = true;
    }
    int64_t x_strides[kMaxRank], y_shape[kMaxRank], y_strides[kMaxRank];
    dense_strides(shape, rank, x_strides);
    for (int i = 0; i < rank; ++i) y_shape[i] = shape[perm[i]];
    dense_strides(y_shape, rank, y_strides);
    CopyLoop loop;
    for (int i = 0; i < rank; ++i) loop.push_dim(y_shape[i], {y_strides[i], x_strides[perm[i]]});
    copy_strided(loop, y, x, element_size);
}

void broadcast_to(const int64_t *in_shape, const int64_t *out_shape, int rank, const float *x,
                  float *y) {
    check_rank(rank, "broadcast_to");
    int64_t x_strides[kMaxRank], y_strides[kMaxRank];
    dense_strides(in_shape, rank, x_strides);
    dense_strides(out_shape, rank, y_strides);
    CopyLoop loop;
    for (int d = 0; d < rank; ++d) {
        if (in_shape[d] != out_shape[d] && in_shape[d] != 1) {
            fail(FM_ERR_SHAPE_MISMATCH, "broadcast_to: dim ", d, " of size ", in_shape[d],
                 " cannot broadcast to ", out_shape[d]);
        }
        loop.push_dim(out_shape[d], {y_strides[d], in_shape[d] == 1 ? 0 : x_strides[d]});
    }
    copy_strided(loop, y, x, sizeof(float));
}

void slice(const int64_t *x_shape, int rank, const int64_t *starts, const int64_t *y_shape,
           const float *x, float *y) {
    check_rank(rank, "slice");
    int64_t x_strides[kMaxRank], y_strides[kMaxRank];
    dense_strides(x_shape, rank, x_strides);
    dense_strides(y_shape, rank, y_strides);
    CopyLoop loop;
    int64_t x_offset = 0;
    for (int d = 0; d < rank; ++d) {
        if (starts[d] < 0 || y_shape[d] < 0 || starts[d] + y_shape[d] > x_shape[d]) {
            fail(FM_ERR_OUT_OF_RANGE, "slice: [", starts[d], ", ", starts[d] + y_shape[d],
                 ") along dim ", d, " is outside [0, ", x_shape[d], ")");
        }
        x_offset += starts[d] * x_strides[d];
        loop.push_dim(y_shape[d], {y_strides[d], x_strides[d]});
    }
    // An empty slice may start at the end of x: no element is read then.
    if (loop.count(rank) == 0) return;
    copy_strided(loop, y, x + x_offset, sizeof(float));
}

void pad(const int64_t *x_shape, int rank, const int64_t *before, const int64_t *y_shape,
         float value, const float *x, float *y) {
    check_rank(rank, "pad");
    fill(y, element_count(y_shape, rank), value);
    // Only the part of x that lands inside y is copied, so a negative
    // `before` (or a y too small for x) crops instead of writing outside y.
    int64_t x_strides[kMaxRank], y_strides[kMaxRank];
    dense_strides(x_shape, rank, x_strides);
    dense_strides(y_shape, rank, y_strides);
    CopyLoop loop;
    int64_t x_offset = 0, y_offset = 0;
    for (int d = 0; d < rank; ++d) {
        const int64_t lo = std::max<int64_t>(0, before[d]);
        const int64_t hi = std::min(y_shape[d], before[d] + x_shape[d]);
        if (hi <= lo) return;
        x_offset += (lo - before[d]) * x_strides[d];
        y_offset += lo * y_strides[d];
        loop.push_dim(hi - lo, {y_strides[d], x_strides[d]});
    }
    copy_strided(loop, y + y_offset, x + x_offset, sizeof(float));
}

void concat(const float *const *inputs, const int64_t *const *input_shapes, size_t count, int rank,
            int axis, float *y) {
    check_rank(rank, "concat");
    if (count == 0) return;
    if (axis < 0 || axis >= rank) {
        fail(FM_ERR_INVALID_ARGUMENT, "concat: axis ", axis, " is outside [0, ", rank, ")");
    }
    int64_t y_shape[kMaxRank];
    std::copy(input_shapes[0], input_shapes[0] + rank, y_shape);
    y_shape[axis] = 0;
    for (size_t i = 0; i < count; ++i) {
        for (int d = 0; d < rank; ++d) {
            if (d != axis && input_shapes[i][d] != y_shape[d]) {
                fail(FM_ERR_SHAPE_MISMATCH, "concat: input ", i, " has size ", input_shapes[i][d],
                     " along dim ", d, " where input 0 has ", y_shape[d]);
            }
        }
        y_shape[axis] += input_shapes[i][axis];
    }
    int64_t y_strides[kMaxRank];
    dense_strides(y_shape, rank, y_strides);
    int64_t position = 0;  // along the axis
    for (size_t i = 0; i < count; ++i) {
        int64_t x_strides[kMaxRank];
        dense_strides(input_shapes[i], rank, x_strides);
        CopyLoop loop;
        for (int d = 0; d < rank; ++d) loop.push_dim(input_shapes[i][d], {y_strides[d], x_strides[d]});
        copy_strided(loop, y + position * y_strides[axis], inputs[i], sizeof(float));
        position += input_shapes[i][axis];
    }
}

}  // namespace fm::cpu
