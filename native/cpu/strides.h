// Index arithmetic shared by the layout, reduction and indexing kernels:
// dense strides, and an odometer that walks a loop nest carrying one offset
// per operand, so no kernel repeats the div/mod of a linear index per element.
#pragma once

#include <cstdint>

#include "error.h"
#include "ferrometal.h"

namespace fm::cpu {

constexpr int kMaxRank = FM_MAX_RANK;

// Kernels are called by the graph executor, which has validated shapes; this
// guards the fixed-size index arrays below against a caller bug all the same.
inline void check_rank(int rank, const char *kernel) {
    if (rank < 0 || rank > kMaxRank) {
        fail(FM_ERR_INVALID_ARGUMENT, kernel, ": rank ", rank, " is outside [0, ", kMaxRank, "]");
    }
}

inline int64_t element_count(const int64_t *shape, int rank) {
    int64_t count = 1;
    for (int d = 0; d < rank; ++d) count *= shape[d];
    return count;
}

inline void dense_strides(const int64_t *shape, int rank, int64_t *strides) {
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; --d) {
        strides[d] = stride;
        stride *= shape[d];
    }
}

// A row-major loop nest over `shape` in which operand o advances by
// strides[o][d] along dim d. One dim more than a tensor has, so a copy of
// elements of any size can add their bytes as the innermost dim.
template <int N>
struct StridedLoop {
    static constexpr int kCapacity = kMaxRank + 1;
    int rank = 0;
    int64_t shape[kCapacity] = {};
    int64_t strides[N][kCapacity] = {};

    void push_dim(int64_t size, const int64_t (&dim_strides)[N]) {
        shape[rank] = size;
        for (int o = 0; o < N; ++o) strides[o][rank] = dim_strides[o];
        ++rank;
    }

    // Drops size-1 dims and merges each dim into the next where every
    // operand steps across the pair as across one dim, so the innermost
    // loop is as long as the layouts allow (a contiguous copy becomes one
    // memcpy). Leaves the loop's iteration order and offsets unchanged.
    void simplify() {
        int out = 0;
        for (int d = 0; d < rank; ++d) {
            if (shape[d] == 1) continue;
            bool mergeable = out > 0;
            for (int o = 0; o < N && mergeable; ++o) {
                mergeable = strides[o][out - 1] == strides[o][d] * shape[d];
            }
            if (mergeable) {
                shape[out - 1] *= shape[d];
                for (int o = 0; o < N; ++o) strides[o][out - 1] = strides[o][d];
            } else {
                shape[out] = shape[d];
                for (int o = 0; o < N; ++o) strides[o][out] = strides[o][d];
                ++out;
            }
        }
        rank = out;
    }

    int64_t count(int dims) const { return element_count(shape, dims); }
};

// Walks the first `dims` dims of a StridedLoop (none of size 0) in row-major
// order from any linear position, so a parallel chunk starts with one
// div/mod per dim and then only increments.
template <int N>
class StridedCursor {
public:
    StridedCursor(const StridedLoop<N> &loop, int dims, int64_t start) : loop_(loop), dims_(dims) {
        for (int o = 0; o < N; ++o) offset_[o] = 0;
        for (int d = dims - 1; d >= 0; --d) {
            index_[d] = start % loop.shape[d];
            start /= loop.shape[d];
            for (int o = 0; o < N; ++o) offset_[o] += index_[d] * loop.strides[o][d];
        }
    }

    int64_t offset(int operand) const { return offset_[operand]; }

    void next() {
        for (int d = dims_ - 1; d >= 0; --d) {
            for (int o = 0; o < N; ++o) offset_[o] += loop_.strides[o][d];
            if (++index_[d] < loop_.shape[d]) return;
            for (int o = 0; o < N; ++o) offset_[o] -= loop_.strides[o][d] * loop_.shape[d];
            index_[d] = 0;
        }
    }

private:
    const StridedLoop<N> &loop_;
    int dims_;
    int64_t index_[StridedLoop<N>::kCapacity] = {};
    int64_t offset_[N];
};

}  // namespace fm::cpu
