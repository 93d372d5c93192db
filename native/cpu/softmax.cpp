// Softmax and log-softmax over the middle dim of [outer, classes, inner].
// Subtracting each column's maximum first keeps exp() from overflowing, so
// logits like 1e30 give finite results; the sum of exponentials is in double.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

constexpr int64_t kTaskElements = int64_t(1) << 14;  // exp() is the cost: a smaller grain
constexpr int64_t kColumns = 64;                     // inner positions handled together

// Runs over blocks of up to kColumns neighbouring inner positions of one
// outer index, so with inner > 1 every pass reads contiguous memory.
template <bool Log>
void softmax_family(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y) {
    if (outer * classes * inner == 0) return;
    const int64_t blocks = (inner + kColumns - 1) / kColumns;
    const int64_t per_item = classes * std::min(inner, kColumns);
    const size_t grain = size_t(std::max<int64_t>(1, kTaskElements / per_item));
    ThreadPool::global().parallel_for(size_t(outer * blocks), grain, [&](size_t begin, size_t end) {
        float max[kColumns];
        double sum[kColumns];
        for (size_t item = begin; item < end; ++item) {
            const int64_t o = int64_t(item) / blocks;
            const int64_t c0 = int64_t(item) % blocks * kColumns;
            const int64_t width = std::min(kColumns, inner - c0);
            const float *xb = x + o * classes * inner + c0;
            float *yb = y + o * classes * inner + c0;
            // NaN propagates: a NaN maximum makes every output of its column NaN.
            std::copy(xb, xb + width, max);
            for (int64_t c = 1; c < classes; ++c) {
                const float *row = xb + c * inner;
                for (int64_t j = 0; j < width; ++j) {
                    if (row[j] > max[j] || std::isnan(row[j])) max[j] = row[j];
                }
            }
            std::fill(sum, sum + width, 0.0);
            for (int64_t c = 0; c < classes; ++c) {
                const float *row = xb + c * inner;
                float *out = yb + c * inner;
                for (int64_t j = 0; j < width; ++j) {
                    const float e = std::exp(row[j] - max[j]);
                    sum[j] += e;
                    if (!Log) out[j] = e;  // scaled below, saving a second exp()
                }
            }
            for (int64_t j = 0; j < width; ++j) {
                if (Log) {
                    sum[j] = std::log(sum[j]);
                } else {
                    sum[j] = 1.0 / sum[j];
                }
            }
            for (int64_t c = 0; c < classes; ++c) {
                const float *row = xb + c * inner;
                float *out = yb + c * inner;
                for (int64_t j = 0; j < width; ++j) {
                    if (Log) {
                        out[j] = float(double(row[j] - max[j]) - sum[j]);
                    } else {
                        out[j] = float(double(out[j]) * sum[j]);
                    }
                }
            }
        }
    });
}

}  // namespace

void softmax(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y) {
    softmax_family<false>(outer, classes, inner, x, y);
}

void log_softmax(int64_t outer, int64_t classes, int64_t inner, const float *x, float *y) {
    softmax_family<true>(outer, classes, inner, x, y);
}

}  // namespace fm::cpu
