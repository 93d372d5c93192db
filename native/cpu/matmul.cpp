// Batched matrix multiplication: a packed GEMM with register-blocked
// micro-kernels for AVX-512 (8 x 32 tiles), AVX2 + FMA (6 x 16) and a
// portable fallback (4 x 16), picked once at run time from the CPU's
// features (no -march flag in the build; FERROMETAL_CPU_ISA=avx512|avx2|
// generic overrides the choice, for tests and measurements).
//
// Structure (GotoBLAS / BLIS): op(A) is packed once into MR-row micro-panels
// ([panel][k][MR], zero-padded), shared by every task; each task owns a block
// of MB rows x NB columns of C and, per KC-deep slice of k, packs its
// columns of op(B) into NR-column micro-panels ([panel][k][NR]) in a
// thread-local buffer, then runs the micro-kernel over every MR x NR tile
// of its block. Transposed operands are read through strides while packing,
// never copied beforehand.
//
// Determinism: a micro-kernel keeps one accumulator per C element and adds
// the products in increasing k, one fused multiply-add each (AVX-512 and
// AVX2 give bit-identical results; the portable kernel multiplies and adds
// separately). Between KC slices the partial sum goes through C exactly.
// Blocks and tasks only decide which thread computes an element, never the
// order of its sum, so results do not depend on the thread count.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FM_X86_KERNELS 1
#else
#define FM_X86_KERNELS 0
#endif

#include "error.h"
#include "gemm.h"
#include "kernels.h"
#include "thread_pool.h"

namespace fm::cpu {
namespace {

using gemm::kDepthBlock;                  // KC = 256: a B micro-panel (KC x NR) fits L1
constexpr int64_t kMaxRowBlock = 256;     // MB: the A rows one task covers
constexpr int64_t kMaxColumnBlock = 512;  // NB: its packed B slice (KC x NB) fits L2
constexpr int64_t kMinTasks = 8;          // to share out one product over the threads
constexpr double kMinTaskFlops = 2e6;     // below this, splitting costs more than it gains

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// c (MR x NR tile, row stride ldc) = (load ? c : 0) + a_panel * b_panel over
// depth kc; a_panel is [kc][MR], b_panel is [kc][NR].
using MicroKernel = void (*)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                             bool load);
using IndirectKernel = void (*)(int64_t kc, const float *a, const float *const *b, const int64_t *offsets, float *c,
                                int64_t ldc, bool load);

struct Isa {
    const char *name;
    int64_t mr, nr;
    MicroKernel kernel;
    IndirectKernel indirect;          // two bases per tile (runs of nr / 2 columns)
    IndirectKernel indirect_quarters;  // four (runs of nr / 4), where nr / 4 >= 8; else null
    void (*dot)(int64_t, int64_t, const float *, int64_t, int64_t, const float *, int64_t, int64_t, float *, int64_t, int,
                int);
};

#if FM_X86_KERNELS
// The AVX-512 kernels' 8 x 32 tile of C in registers: row i's columns 0-15
// in lo[i], 16-31 in hi[i]; loaded from C (or zero) and stored back whole.
constexpr int kTileRows = 8;

__attribute__((target("avx512f"), always_inline)) inline void load_tile(__m512 *lo, __m512 *hi, const float *c,
                                                                       int64_t ldc, bool load) {
#pragma GCC unroll 8
    for (int i = 0; i < kTileRows; ++i) {
        lo[i] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        hi[i] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
}

__attribute__((target("avx512f"), always_inline)) inline void store_tile(const __m512 *lo, const __m512 *hi, float *c,
                                                                        int64_t ldc) {
#pragma GCC unroll 8
    for (int i = 0; i < kTileRows; ++i) {
        _mm512_storeu_ps(c + i * ldc, lo[i]);
        _mm512_storeu_ps(c + i * ldc + 16, hi[i]);
    }
}

__attribute__((target("avx512f"))) void kernel_avx512_8x32(int64_t kc, const float *a, const float *b,
                                                           float *c, int64_t ldc, bool load) {
    __m512 lo[kTileRows], hi[kTileRows];
    load_tile(lo, hi, c, ldc, load);
    for (int64_t p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b + p * 32), b1 = _mm512_loadu_ps(b + p * 32 + 16);
        const float *ap = a + p * kTileRows;
#pragma GCC unroll 8
        for (int i = 0; i < kTileRows; ++i) {
            const __m512 x = _mm512_set1_ps(ap[i]);
            lo[i] = _mm512_fmadd_ps(x, b0, lo[i]);
            hi[i] = _mm512_fmadd_ps(x, b1, hi[i]);
        }
    }
    store_tile(lo, hi, c, ldc);
}

__attribute__((target("avx2,fma"))) void kernel_avx2_6x16(int64_t kc, const float *a, const float *b,
                                                         float *c, int64_t ldc, bool load) {
    constexpr int kRows = 6;
    __m256 lo[kRows], hi[kRows];
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
        lo[i] = load ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
        hi[i] = load ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
    }
    for (int64_t p = 0; p < kc; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b + p * 16), b1 = _mm256_loadu_ps(b + p * 16 + 8);
        const float *ap = a + p * kRows;
#pragma GCC unroll 6
        for (int i = 0; i < kRows; ++i) {
            const __m256 x = _mm256_broadcast_ss(ap + i);
            lo[i] = _mm256_fmadd_ps(x, b0, lo[i]);
            hi[i] = _mm256_fmadd_ps(x, b1, hi[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
        _mm256_storeu_ps(c + i * ldc, lo[i]);
        _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
    }
}

// 16 floats: 8 from `first`, then 8 from `second`.
__attribute__((target("avx512f"), always_inline)) inline __m512 join_runs(const float *first, const float *second) {
    // The 128-bit blocks 0 and 1 of each (0x44 = blocks 0, 1 of the first, 0, 1 of the second).
    return _mm512_maskz_shuffle_f32x4(0xFFFF, _mm512_castps256_ps512(_mm256_loadu_ps(first)),
                                      _mm512_castps256_ps512(_mm256_loadu_ps(second)), 0x44);
}

// v[p] = lane p of the 16 vectors v[j]: a 16 x 16 transpose in four
// stages; stage k swaps bit k of the row index with bit k of the lane
// index (two-source permutes only).
__attribute__((target("avx512f"), always_inline)) inline void transpose16_in_registers(__m512 v[16]) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
        const int bit = 1 << k;
        alignas(64) int32_t keep[16], take[16];
        for (int lane = 0; lane < 16; ++lane) {
            keep[lane] = (lane & bit) ? 16 + (lane ^ bit) : lane;
            take[lane] = (lane & bit) ? 16 + lane : lane ^ bit;
        }
        const __m512i keep_index = _mm512_load_si512(keep), take_index = _mm512_load_si512(take);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) {
            if (j & bit) continue;
            const __m512 x = v[j], y = v[j | bit];
            v[j] = _mm512_permutex2var_ps(x, keep_index, y);
            v[j | bit] = _mm512_permutex2var_ps(x, take_index, y);
        }
    }
}

// panel[p * panel_stride + j] = rows[j][p] for j < 16, p < 16; with
// `second`, elements 8-15 of row j come from second[j] instead.
__attribute__((target("avx512f"))) void transpose16_avx512(const float *const *rows, float *panel,
                                                          int64_t panel_stride, const float *const *second = nullptr) {
    __m512 v[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) v[j] = second ? join_runs(rows[j], second[j]) : _mm512_loadu_ps(rows[j]);
    transpose16_in_registers(v);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) _mm512_storeu_ps(panel + p * panel_stride, v[p]);
}

// Two 8-row micro-panels of A from 16 rows contiguous in k: lanes 0-7 of
// transposed row p go to first + p * 8, lanes 8-15 to second + p * 8.
__attribute__((target("avx512f"))) void transpose16_to_panels(const float *const *rows, float *first,
                                                             float *second) {
    __m512 v[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) v[j] = _mm512_loadu_ps(rows[j]);
    transpose16_in_registers(v);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) {
        _mm512_mask_storeu_ps(first + p * 8, 0x00FF, v[p]);
        _mm512_mask_storeu_ps(second + p * 8 - 8, 0xFF00, v[p]);
    }
}

// The indirect variants (gemm::multiply_indirect): row p of the tile's
// first half of columns is read at b[0] + offsets[p], of its second half
// at b[1] + offsets[p]; otherwise the same arithmetic as above. With
// kQuarters, each quarter (8 columns) has its own base b[0..3], for images
// whose rows are 8 wide (cifar's 8 x 8 layers) or an odd multiple of 8.
template <bool kQuarters>
__attribute__((target("avx512f"))) void indirect_avx512_8x32(int64_t kc, const float *a, const float *const *b,
                                                             const int64_t *offsets, float *c, int64_t ldc,
                                                             bool load) {
    __m512 lo[kTileRows], hi[kTileRows];
    load_tile(lo, hi, c, ldc, load);
    for (int64_t p = 0; p < kc; ++p) {
        const int64_t at = offsets[p];
        __m512 x0, x1;
        if constexpr (kQuarters) {
            x0 = join_runs(b[0] + at, b[1] + at);
            x1 = join_runs(b[2] + at, b[3] + at);
        } else {
            x0 = _mm512_loadu_ps(b[0] + at);
            x1 = _mm512_loadu_ps(b[1] + at);
        }
        const float *ap = a + p * kTileRows;
#pragma GCC unroll 8
        for (int i = 0; i < kTileRows; ++i) {
            const __m512 x = _mm512_set1_ps(ap[i]);
            lo[i] = _mm512_fmadd_ps(x, x0, lo[i]);
            hi[i] = _mm512_fmadd_ps(x, x1, hi[i]);
        }
    }
    store_tile(lo, hi, c, ldc);
}

// A with its rows read in place (gemm::gathered_a_kernel): A[i][p] =
// rows[i][pos[p]]; B packed [kc][32]. The same products in the same order
// as kernel_avx512_8x32 on the packed A, so the same bits.
__attribute__((target("avx512f"))) void gathered_a_avx512_8x32(int64_t kc, const float *const *rows,
                                                               const int64_t *pos, const float *b, float *c,
                                                               int64_t ldc, bool load) {
    __m512 lo[kTileRows], hi[kTileRows];
    load_tile(lo, hi, c, ldc, load);
    const float *r[kTileRows];
#pragma GCC unroll 8
    for (int i = 0; i < kTileRows; ++i) r[i] = rows[i];
    for (int64_t p = 0; p < kc; ++p) {
        const int64_t at = pos[p];
        const __m512 b0 = _mm512_loadu_ps(b + p * 32), b1 = _mm512_loadu_ps(b + p * 32 + 16);
#pragma GCC unroll 8
        for (int i = 0; i < kTileRows; ++i) {
            const __m512 x = _mm512_set1_ps(r[i][at]);
            lo[i] = _mm512_fmadd_ps(x, b0, lo[i]);
            hi[i] = _mm512_fmadd_ps(x, b1, hi[i]);
        }
    }
    store_tile(lo, hi, c, ldc);
}

__attribute__((target("avx2,fma"))) void indirect_avx2_6x16(int64_t kc, const float *a, const float *const *b,
                                                           const int64_t *offsets, float *c, int64_t ldc, bool load) {
    constexpr int kRows = 6;
    __m256 lo[kRows], hi[kRows];
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
        lo[i] = load ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
        hi[i] = load ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
    }
    const float *b0 = b[0], *b1 = b[1];
    for (int64_t p = 0; p < kc; ++p) {
        const __m256 x0 = _mm256_loadu_ps(b0 + offsets[p]), x1 = _mm256_loadu_ps(b1 + offsets[p]);
        const float *ap = a + p * kRows;
#pragma GCC unroll 6
        for (int i = 0; i < kRows; ++i) {
            const __m256 x = _mm256_broadcast_ss(ap + i);
            lo[i] = _mm256_fmadd_ps(x, x0, lo[i]);
            hi[i] = _mm256_fmadd_ps(x, x1, hi[i]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
        _mm256_storeu_ps(c + i * ldc, lo[i]);
        _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
    }
}
#endif

void indirect_generic_4x16(int64_t kc, const float *a, const float *const *b, const int64_t *offsets, float *c,
                           int64_t ldc, bool load) {
    constexpr int kRows = 4, kCols = 16;
    float acc[kRows][kCols];
    for (int i = 0; i < kRows; ++i) {
        for (int j = 0; j < kCols; ++j) acc[i][j] = load ? c[i * ldc + j] : 0.0f;
    }
    for (int64_t p = 0; p < kc; ++p) {
        const float *b0 = b[0] + offsets[p], *b1 = b[1] + offsets[p];
        for (int i = 0; i < kRows; ++i) {
            const float x = a[p * kRows + i];
            for (int j = 0; j < kCols / 2; ++j) acc[i][j] += x * b0[j];
            for (int j = 0; j < kCols / 2; ++j) acc[i][kCols / 2 + j] += x * b1[j];
        }
    }
    for (int i = 0; i < kRows; ++i) std::memcpy(c + i * ldc, acc[i], sizeof acc[i]);
}

// The portable kernel: plain loops the compiler vectorises for the baseline
// ISA (multiply, then add: no FMA there).
void kernel_generic_4x16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, bool load) {
    constexpr int kRows = 4, kCols = 16;
    float acc[kRows][kCols];
    for (int i = 0; i < kRows; ++i) {
        for (int j = 0; j < kCols; ++j) acc[i][j] = load ? c[i * ldc + j] : 0.0f;
    }
    for (int64_t p = 0; p < kc; ++p) {
        const float *bp = b + p * kCols;
        for (int i = 0; i < kRows; ++i) {
            const float x = a[p * kRows + i];
            for (int j = 0; j < kCols; ++j) acc[i][j] += x * bp[j];
        }
    }
    for (int i = 0; i < kRows; ++i) std::memcpy(c + i * ldc, acc[i], sizeof acc[i]);
}

// ---- Dot-product tiles (gemm::dot_tile) ---------------------------------
//
// c[i][j] += sum over images and p < k (a multiple of 16) of
// a[image][i][p] * b[image][j][p]. Each
// sum runs in 16 lanes (lane l takes p = l, l + 16, ... of every image in
// turn; one FMA chain each), which are then added pairwise: l + (l + 8), then + 4, + 2, + 1.
// Every ISA below follows exactly that order, so they agree bit for bit
// (the portable one multiplies and adds separately). Rows i >= rows and
// columns j >= cols are computed from row / column 0 and discarded.
// The pairwise sum of 16 lanes: l + (l + 8), then + 4, + 2, + 1.
float sum_lanes(float *lanes) {
    for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    return lanes[0];
}

#if FM_X86_KERNELS
__attribute__((target("avx512f"))) void dot_avx512_4x4(int64_t k, int64_t images, const float *a, int64_t lda,
                                                       int64_t a_image, const float *b, int64_t ldb, int64_t b_image,
                                                       float *c, int64_t ldc, int rows, int cols) {
    const float *ap[4], *bp[4];
    for (int i = 0; i < 4; ++i) ap[i] = a + (i < rows ? i : 0) * lda;
    for (int j = 0; j < 4; ++j) bp[j] = b + (j < cols ? j : 0) * ldb;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
    }
    for (int64_t image = 0; image < images; ++image) {
        for (int64_t p = 0; p < k; p += 16) {
            __m512 av[4], bv[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) av[i] = _mm512_loadu_ps(ap[i] + image * a_image + p);
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) bv[j] = _mm512_loadu_ps(bp[j] + image * b_image + p);
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
                for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(av[i], bv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            alignas(64) float lanes[16];
            _mm512_store_ps(lanes, acc[i][j]);
            c[i * ldc + j] += sum_lanes(lanes);
        }
    }
}

// 16 lanes as two 8-lane halves (lanes 0-7, 8-15), 2 x 2 elements at a time.
__attribute__((target("avx2,fma"))) void dot_avx2_4x4(int64_t k, int64_t images, const float *a, int64_t lda,
                                                     int64_t a_image, const float *b, int64_t ldb, int64_t b_image,
                                                     float *c, int64_t ldc, int rows, int cols) {
    for (int i0 = 0; i0 < rows; i0 += 2) {
        for (int j0 = 0; j0 < cols; j0 += 2) {
            const float *ap[2], *bp[2];
            for (int i = 0; i < 2; ++i) ap[i] = a + (i0 + i < rows ? i0 + i : i0) * lda;
            for (int j = 0; j < 2; ++j) bp[j] = b + (j0 + j < cols ? j0 + j : j0) * ldb;
            __m256 lo[2][2], hi[2][2];
            for (int i = 0; i < 2; ++i) {
                for (int j = 0; j < 2; ++j) lo[i][j] = hi[i][j] = _mm256_setzero_ps();
            }
            for (int64_t q = 0; q < images * k; q += 16) {
                const int64_t image = q / k, p = q % k;
                __m256 al[2], ah[2], bl[2], bh[2];
#pragma GCC unroll 2
                for (int i = 0; i < 2; ++i) {
                    al[i] = _mm256_loadu_ps(ap[i] + image * a_image + p);
                    ah[i] = _mm256_loadu_ps(ap[i] + image * a_image + p + 8);
                }
#pragma GCC unroll 2
                for (int j = 0; j < 2; ++j) {
                    bl[j] = _mm256_loadu_ps(bp[j] + image * b_image + p);
                    bh[j] = _mm256_loadu_ps(bp[j] + image * b_image + p + 8);
                }
#pragma GCC unroll 2
                for (int i = 0; i < 2; ++i) {
#pragma GCC unroll 2
                    for (int j = 0; j < 2; ++j) {
                        lo[i][j] = _mm256_fmadd_ps(al[i], bl[j], lo[i][j]);
                        hi[i][j] = _mm256_fmadd_ps(ah[i], bh[j], hi[i][j]);
                    }
                }
            }
            for (int i = 0; i < 2 && i0 + i < rows; ++i) {
                for (int j = 0; j < 2 && j0 + j < cols; ++j) {
                    alignas(32) float lanes[16];
                    _mm256_store_ps(lanes, lo[i][j]);
                    _mm256_store_ps(lanes + 8, hi[i][j]);
                    c[(i0 + i) * ldc + j0 + j] += sum_lanes(lanes);
                }
            }
        }
    }
}
#endif

void dot_generic_4x4(int64_t k, int64_t images, const float *a, int64_t lda, int64_t a_image, const float *b,
                     int64_t ldb, int64_t b_image, float *c, int64_t ldc, int rows, int cols) {
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            float lanes[16] = {};
            for (int64_t image = 0; image < images; ++image) {
                const float *ai = a + i * lda + image * a_image, *bj = b + j * ldb + image * b_image;
                for (int64_t p = 0; p < k; p += 16) {
                    for (int l = 0; l < 16; ++l) lanes[l] += ai[p + l] * bj[p + l];
                }
            }
            c[i * ldc + j] += sum_lanes(lanes);
        }
    }
}

Isa pick_isa() {
    const Isa generic{"generic", 4, 16, kernel_generic_4x16, indirect_generic_4x16, nullptr, dot_generic_4x4};
#if FM_X86_KERNELS
    const Isa avx512{"avx512",
                     8,
                     32,
                     kernel_avx512_8x32,
                     indirect_avx512_8x32<false>,
                     indirect_avx512_8x32<true>,
                     dot_avx512_4x4};
    const Isa avx2{"avx2", 6, 16, kernel_avx2_6x16, indirect_avx2_6x16, nullptr, dot_avx2_4x4};
    __builtin_cpu_init();
    const bool has_avx512 = __builtin_cpu_supports("avx512f");
    const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *want = std::getenv("FERROMETAL_CPU_ISA");
    const std::string choice = want ? want : "";
    if (choice == "generic") return generic;
    if (choice == "avx2" && has_avx2) return avx2;
    if (has_avx512 && (choice.empty() || choice == "avx512")) return avx512;
    if (has_avx2) return avx2;
#endif
    return generic;
}

const Isa &isa() {
    static const Isa chosen = pick_isa();
    return chosen;
}

// 64-byte aligned scratch that only grows, one per thread.
float *scratch(std::vector<float> &buffer, size_t floats) {
    if (buffer.size() < floats + 16) buffer.resize(floats + 16);
    const auto address = reinterpret_cast<uintptr_t>(buffer.data());
    return buffer.data() + (((64 - address % 64) % 64) / sizeof(float));
}

// One C = op(A) * op(B) of the batch, with op(X)[r][c] = x[r * row + c * col].
struct View {
    const float *data;
    int64_t row, col;
};

// Packs rows [i0, i0 + rows) of op(A) (rows < mr at the edge: zero rows)
// over all k into [k][mr].
void pack_a_panel(const View &a, int64_t i0, int64_t rows, int64_t k, int64_t mr, float *out) {
    if (rows < mr) std::fill(out, out + k * mr, 0.0f);
    if (a.row == 1) {  // transposed storage: mr contiguous values per k
        for (int64_t p = 0; p < k; ++p) {
            const float *src = a.data + i0 + p * a.col;
            std::copy(src, src + rows, out + p * mr);
        }
        return;
    }
    for (int64_t i = 0; i < rows; ++i) {
        const float *src = a.data + (i0 + i) * a.row;
        for (int64_t p = 0; p < k; ++p) out[p * mr + i] = src[p * a.col];
    }
}

// Packs op(B)[p0 .. p0 + kc) x [j0, j0 + cols) into NR-column panels [kc][nr].
// panel[p * nr + j] = rows[j][p] for j < count (<= nr), p < kc; columns
// count .. nr are zero. 16 x 16 blocks in registers where AVX-512 is used.
void transpose_rows(const float *const *rows, int64_t count, int64_t kc, int64_t nr, float *panel) {
    int64_t j = 0;
#if FM_X86_KERNELS
    if (isa().kernel == kernel_avx512_8x32) {
        for (; j + 16 <= count; j += 16) {
            const float *block[16];
            int64_t p = 0;
            for (; p + 16 <= kc; p += 16) {
                for (int r = 0; r < 16; ++r) block[r] = rows[j + r] + p;
                transpose16_avx512(block, panel + p * nr + j, nr);
            }
            for (; p < kc; ++p) {
                for (int r = 0; r < 16; ++r) panel[p * nr + j + r] = rows[j + r][p];
            }
        }
    }
#endif
    for (; j < count; ++j) {
        const float *src = rows[j];
        for (int64_t p = 0; p < kc; ++p) panel[p * nr + j] = src[p];
    }
    if (count < nr) {
        for (int64_t p = 0; p < kc; ++p) std::fill(panel + p * nr + count, panel + (p + 1) * nr, 0.0f);
    }
}

void pack_b(const View &b, int64_t p0, int64_t kc, int64_t j0, int64_t cols, int64_t nr, float *out) {
    for (int64_t jp = 0; jp < cols; jp += nr) {
        const int64_t width = std::min(nr, cols - jp);
        float *panel = out + jp * kc;
        if (b.col == 1) {
            for (int64_t p = 0; p < kc; ++p) {
                const float *src = b.data + (p0 + p) * b.row + j0 + jp;
                float *dst = panel + p * nr;
                std::copy(src, src + width, dst);
                std::fill(dst + width, dst + nr, 0.0f);
            }
        } else if (b.row == 1) {  // transposed storage: each column of op(B) is contiguous in k
            const float *rows[64];
            for (int64_t j = 0; j < width; ++j) rows[j] = b.data + (j0 + jp + j) * b.col + p0;
            transpose_rows(rows, width, kc, nr, panel);
        } else {
            if (width < nr) std::fill(panel, panel + kc * nr, 0.0f);
            for (int64_t j = 0; j < width; ++j) {
                const float *src = b.data + (j0 + jp + j) * b.col + p0 * b.row;
                for (int64_t p = 0; p < kc; ++p) panel[p * nr + j] = src[p * b.row];
            }
        }
    }
}

struct Problem {
    MatmulShape s;
    const float *a, *b;
    float *c;
    const float *packed_a;  // [a batch][m panel][k][mr]
    int64_t a_batches;      // distinct A matrices packed (1 when broadcast)
    int64_t row_block, column_block;
    int64_t row_blocks, column_blocks;
};

View b_view(const Problem &pr, int64_t batch) {
    const MatmulShape &s = pr.s;
    return View{pr.b + batch * s.b_batch_stride, s.transpose_b ? 1 : s.n, s.transpose_b ? s.k : 1};
}

}  // namespace

namespace gemm {

int64_t tile_rows() { return isa().mr; }
int64_t tile_cols() { return isa().nr; }

void dot_tile(int64_t k, int64_t images, const float *a, int64_t lda, int64_t a_image, const float *b, int64_t ldb,
              int64_t b_image, float *c, int64_t ldc, int rows, int cols) {
    isa().dot(k, images, a, lda, a_image, b, ldb, b_image, c, ldc, rows, cols);
}

GatheredAKernel gathered_a_kernel() {
#if FM_X86_KERNELS
    if (isa().kernel == kernel_avx512_8x32) return gathered_a_avx512_8x32;
#endif
    return nullptr;
}

void pack_rows_as_b(const float *const *rows, int64_t count, int64_t kc, float *panel) {
    transpose_rows(rows, count, kc, isa().nr, panel);
}

void pack_gathered_as_b(const float *const *rows, const int64_t *pos, int64_t count, int64_t kc, float *panel) {
    const int64_t nr = isa().nr;
    int64_t p = 0;
#if FM_X86_KERNELS
    if (isa().kernel == kernel_avx512_8x32) {
        for (; p + 16 <= kc; p += 16) {
            // One run of 16 positions, or two of 8 (images 8 wide at stride 1, 16 wide at stride 2).
            const bool one_run = pos[p + 15] == pos[p] + 15;
            if (!one_run && (pos[p + 7] != pos[p] + 7 || pos[p + 15] != pos[p + 8] + 7)) break;  // the general loop below
            int64_t j = 0;
            for (; j + 16 <= count; j += 16) {
                const float *block[16], *second[16];
                for (int r = 0; r < 16; ++r) block[r] = rows[j + r] + pos[p], second[r] = rows[j + r] + pos[p + 8];
                transpose16_avx512(block, panel + p * nr + j, nr, one_run ? nullptr : second);
            }
            for (int64_t q = p; q < p + 16; ++q) {
                for (int64_t jj = j; jj < count; ++jj) panel[q * nr + jj] = rows[jj][pos[q]];
                std::fill(panel + q * nr + count, panel + (q + 1) * nr, 0.0f);
            }
        }
    }
#endif
    for (; p < kc; ++p) {
        for (int64_t j = 0; j < count; ++j) panel[p * nr + j] = rows[j][pos[p]];
        std::fill(panel + p * nr + count, panel + (p + 1) * nr, 0.0f);
    }
}

size_t packed_a_size(int64_t m, int64_t k) { return size_t(round_up(m, isa().mr) * k); }

void pack_a(const float *a, int64_t row_stride, int64_t col_stride, int64_t m, int64_t k, float *out) {
    const int64_t mr = isa().mr;
    const View view{a, row_stride, col_stride};
    int64_t i0 = 0;
#if FM_X86_KERNELS
    // Rows contiguous in k, 8-row panels: two panels at a time, transposed
    // 16 x 16 in registers.
    if (isa().kernel == kernel_avx512_8x32 && col_stride == 1) {
        for (; i0 + 16 <= m; i0 += 16) {
            float *first = out + i0 * k, *second = first + 8 * k;
            int64_t p = 0;
            for (; p + 16 <= k; p += 16) {
                const float *rows[16];
                for (int r = 0; r < 16; ++r) rows[r] = a + (i0 + r) * row_stride + p;
                transpose16_to_panels(rows, first + p * 8, second + p * 8);
            }
            for (; p < k; ++p) {
                for (int r = 0; r < 8; ++r) first[p * 8 + r] = a[(i0 + r) * row_stride + p];
                for (int r = 0; r < 8; ++r) second[p * 8 + r] = a[(i0 + 8 + r) * row_stride + p];
            }
        }
    }
#endif
    for (; i0 < m; i0 += mr) pack_a_panel(view, i0, std::min(mr, m - i0), k, mr, out + i0 * k);
}

void multiply(const float *packed_a, int64_t depth, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
              const PackB &pack_b, float *c, int64_t ldc, bool accumulate) {
    const Isa &k = isa();
    thread_local std::vector<float> b_buffer;
    float *packed_b = scratch(b_buffer, size_t(std::min(kDepthBlock, depth) * round_up(cols, k.nr)));
    alignas(64) float edge[8 * 32];  // one tile, for the tiles that C's edges cut
    for (int64_t p0 = 0; p0 < depth; p0 += kDepthBlock) {
        const int64_t kc = std::min(kDepthBlock, depth - p0);
        const bool load = accumulate || p0 > 0;
        pack_b(p0, kc, j0, cols, packed_b);
        for (int64_t jp = 0; jp < cols; jp += k.nr) {
            const int64_t width = std::min(k.nr, cols - jp);
            const float *b_panel = packed_b + jp * kc;
            for (int64_t ip = 0; ip < rows; ip += k.mr) {
                const int64_t height = std::min(k.mr, rows - ip);
                const float *a_panel = packed_a + (i0 + ip) * depth + p0 * k.mr;
                float *tile = c + (i0 + ip) * ldc + j0 + jp;
                if (width == k.nr && height == k.mr) {
                    k.kernel(kc, a_panel, b_panel, tile, ldc, load);
                    continue;
                }
                if (load) {
                    for (int64_t i = 0; i < height; ++i) std::copy(tile + i * ldc, tile + i * ldc + width, edge + i * k.nr);
                }
                k.kernel(kc, a_panel, b_panel, edge, k.nr, load);
                for (int64_t i = 0; i < height; ++i) std::copy(edge + i * k.nr, edge + i * k.nr + width, tile + i * ldc);
            }
        }
    }
}

int64_t indirect_run(int64_t row_width) {
    const Isa &k = isa();
    if (row_width % (k.nr / 2) == 0) return k.nr / 2;
    if (k.indirect_quarters && row_width % (k.nr / 4) == 0) return k.nr / 4;
    return 0;
}

void multiply_indirect(const float *packed_a, int64_t depth, int64_t rows, const int64_t *offsets,
                       const float *const *bases, int64_t run, int64_t cols, float *c, int64_t ldc) {
    const Isa &k = isa();
    const IndirectKernel indirect = run == k.nr / 2 ? k.indirect : k.indirect_quarters;
    alignas(64) float edge[8 * 32];
    for (int64_t p0 = 0; p0 < depth; p0 += kDepthBlock) {
        const int64_t kc = std::min(kDepthBlock, depth - p0);
        const bool load = p0 > 0;
        for (int64_t jp = 0; jp < cols; jp += k.nr) {
            const float *const *b = bases + jp / run;
            for (int64_t ip = 0; ip < rows; ip += k.mr) {
                const int64_t height = std::min(k.mr, rows - ip);
                const float *a_panel = packed_a + ip * depth + p0 * k.mr;
                float *tile = c + ip * ldc + jp;
                if (height == k.mr) {
                    indirect(kc, a_panel, b, offsets + p0, tile, ldc, load);
                    continue;
                }
                if (load) {
                    for (int64_t i = 0; i < height; ++i) std::copy(tile + i * ldc, tile + i * ldc + k.nr, edge + i * k.nr);
                }
                indirect(kc, a_panel, b, offsets + p0, edge, k.nr, load);
                for (int64_t i = 0; i < height; ++i) std::copy(edge + i * k.nr, edge + i * k.nr + k.nr, tile + i * ldc);
            }
        }
    }
}

}  // namespace gemm

namespace {

// One task of matmul: rows [i0, i0 + rows) x columns [j0, j0 + cols) of C[batch].
void multiply_block(const Problem &pr, int64_t batch, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    const MatmulShape &s = pr.s;
    const int64_t nr = isa().nr;
    const View b = b_view(pr, batch);
    const float *a = pr.packed_a + (pr.a_batches == 1 ? 0 : batch) * int64_t(gemm::packed_a_size(s.m, s.k));
    gemm::multiply(
        a, s.k, i0, rows, j0, cols,
        [&](int64_t p0, int64_t kc, int64_t first, int64_t count, float *out) { pack_b(b, p0, kc, first, count, nr, out); },
        pr.c + batch * s.c_batch_stride, s.n, false);
}

}  // namespace

const char *matmul_isa() { return isa().name; }

bool avx512_kernels() {
    static const bool wide = std::strcmp(isa().name, "avx512") == 0;
    return wide;
}

void matmul(const MatmulShape &s, const float *a, const float *b, float *c) {
    if (s.batch < 0 || s.m < 0 || s.n < 0 || s.k < 0) {
        fail(FM_ERR_INVALID_ARGUMENT, "matmul: negative size (batch ", s.batch, ", m ", s.m, ", n ",
             s.n, ", k ", s.k, ")");
    }
    if (s.batch == 0 || s.m == 0 || s.n == 0) return;
    if (s.k == 0) {
        for (int64_t i = 0; i < s.batch; ++i) std::fill_n(c + i * s.c_batch_stride, s.m * s.n, 0.0f);
        return;
    }
    const Isa &k = isa();
    Problem pr;
    pr.s = s;
    pr.a = a, pr.b = b, pr.c = c;

    // Pack op(A) of every distinct batch, one task per run of micro-panels.
    const int64_t m_panels = ceil_div(s.m, k.mr);
    pr.a_batches = s.a_batch_stride == 0 ? 1 : s.batch;
    thread_local std::vector<float> a_buffer;
    float *packed_a = scratch(a_buffer, size_t(pr.a_batches * m_panels * s.k * k.mr));
    pr.packed_a = packed_a;
    // Items of two micro-panels, which gemm::pack_a transposes together.
    const int64_t panel_floats = s.k * k.mr, pairs = ceil_div(m_panels, 2);
    const size_t pack_grain = size_t(std::max<int64_t>(1, (int64_t(1) << 16) / (2 * panel_floats)));
    ThreadPool::global().parallel_for(size_t(pr.a_batches * pairs), pack_grain, [&](size_t begin, size_t end) {
        for (size_t item = begin; item < end; ++item) {
            const int64_t batch = int64_t(item) / pairs, i0 = int64_t(item) % pairs * 2 * k.mr;
            const float *a_batch = a + batch * s.a_batch_stride;
            gemm::pack_a(s.transpose_a ? a_batch + i0 : a_batch + i0 * s.k, s.transpose_a ? 1 : s.k,
                         s.transpose_a ? s.m : 1, std::min(2 * k.mr, s.m - i0), s.k,
                         packed_a + (batch * m_panels * panel_floats + i0 * s.k));
        }
    });

    // Blocks of C per task, from the sizes only: as large as the caches
    // allow, halved (columns first) while there are too few to share out
    // and each would still be worth a task.
    int64_t row_block = std::min(round_up(s.m, k.mr), round_up(kMaxRowBlock, k.mr));
    int64_t column_block = std::min(round_up(s.n, k.nr), round_up(kMaxColumnBlock, k.nr));
    auto tasks = [&] { return s.batch * ceil_div(s.m, row_block) * ceil_div(s.n, column_block); };
    auto task_flops = [&](int64_t rows, int64_t cols) { return 2.0 * double(rows) * double(cols) * double(s.k); };
    while (tasks() < kMinTasks) {
        if (column_block > k.nr && task_flops(row_block, column_block / 2) >= kMinTaskFlops) {
            column_block = round_up(column_block / 2, k.nr);
        } else if (row_block > k.mr && task_flops(row_block / 2, column_block) >= kMinTaskFlops) {
            row_block = round_up(row_block / 2, k.mr);
        } else {
            break;
        }
    }
    pr.row_block = row_block, pr.column_block = column_block;
    pr.row_blocks = ceil_div(s.m, row_block), pr.column_blocks = ceil_div(s.n, column_block);
    const int64_t per_batch = pr.row_blocks * pr.column_blocks;
    const double flops = task_flops(row_block, column_block);
    const size_t grain = size_t(std::max(1.0, kMinTaskFlops / flops));
    ThreadPool::global().parallel_for(size_t(s.batch * per_batch), grain, [&](size_t begin, size_t end) {
        for (size_t item = begin; item < end; ++item) {
            const int64_t batch = int64_t(item) / per_batch, block = int64_t(item) % per_batch;
            const int64_t i0 = block / pr.column_blocks * row_block, j0 = block % pr.column_blocks * column_block;
            multiply_block(pr, batch, i0, std::min(row_block, s.m - i0), j0, std::min(column_block, s.n - j0));
        }
    });
}

}  // namespace fm::cpu
