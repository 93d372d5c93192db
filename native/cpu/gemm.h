// The building blocks of the packed GEMM (matmul.cpp), for kernels that
// feed it their own operands without materialising them: convolution packs
// its im2col matrix straight from the image, a KC x NB slice at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace fm::cpu::gemm {

// KC: the depth of the op(B) slices that multiply packs at a time.
constexpr int64_t kDepthBlock = 256;

// The micro-tile of the micro-kernel chosen for this CPU (MR rows x NR columns).
int64_t tile_rows();
int64_t tile_cols();

// Floats that pack_a needs for m x k.
size_t packed_a_size(int64_t m, int64_t k);
// Packs op(A) (m x k, op(A)[i][p] = a[i * row_stride + p * col_stride]) into
// MR-row micro-panels [panel][k][MR], zero-padded; single-threaded.
void pack_a(const float *a, int64_t row_stride, int64_t col_stride, int64_t m, int64_t k, float *out);

// Fills op(B)[p0, p0 + kc) x [j0, j0 + cols) as NR-column panels: column j
// of panel q goes to out[q * kc * NR + (p - p0) * NR + j - q * NR - j0],
// zero beyond `cols`.
using PackB = std::function<void(int64_t p0, int64_t kc, int64_t j0, int64_t cols, float *out)>;

// One NR-column panel of op(B) from `count` (<= NR) columns each stored
// contiguously in k: panel[p * NR + j] = rows[j][p] for p < kc, zero for
// j >= count. A transpose, done in registers where the ISA allows.
void pack_rows_as_b(const float *const *rows, int64_t count, int64_t kc, float *panel);
// The same with element p of column j at rows[j][pos[p]] (runs of 16
// consecutive positions are transposed in registers).
void pack_gathered_as_b(const float *const *rows, const int64_t *pos, int64_t count, int64_t kc, float *panel);

// C[i0 .. i0 + rows) x [j0 .. j0 + cols) (row stride ldc; i0, j0 relative
// to C's first element) = (accumulate ? C : 0) + op(A) op(B), op(A) given
// packed (all its m rows, depth k), op(B) through `pack_b`. Each element is
// one FMA chain over p in increasing order (see matmul.cpp). Single-threaded:
// callers split C (or k, with a fixed reduction) into tasks themselves.
void multiply(const float *packed_a, int64_t k, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
              const PackB &pack_b, float *c, int64_t ldc, bool accumulate);

// A GEMM whose B is read in place through row offsets, for a stride-1
// convolution straight from its (padded) image: column j of B, row p, is
// bases[j / run][offsets[p] + j % run], for cols a multiple of
// tile_cols(). `run` comes from indirect_run. C (rows x cols, row stride
// ldc) = op(A) B; the same arithmetic, so the same bits, as multiply.
void multiply_indirect(const float *packed_a, int64_t k, int64_t rows, const int64_t *offsets,
                       const float *const *bases, int64_t run, int64_t cols, float *c, int64_t ldc);
// The columns per base that multiply_indirect can take for an image whose
// rows are `row_width` wide (half a micro-tile, or a quarter where the
// kernels have it), or 0 if none divides it.
int64_t indirect_run(int64_t row_width);

// A micro-kernel whose A is read in place: C (tile_rows() x tile_cols(),
// row stride ldc) = (load ? C : 0) + A B over depth kc, with A[i][p] =
// rows[i][pos[p]] and B packed as one NR-column panel [kc][NR] (as
// pack_rows_as_b writes it). The same products in the same order as
// multiply's, so the same bits. Null where the ISA has none (AVX-512 only).
using GatheredAKernel = void (*)(int64_t kc, const float *const *rows, const int64_t *pos, const float *b, float *c,
                                 int64_t ldc, bool load);
GatheredAKernel gathered_a_kernel();

// For two operands whose rows are both contiguous in k (C = A B^T, as in a
// convolution's weight gradient), no packing is needed: c[i * ldc + j] +=
// sum over images < `images` and p < k of a[image * a_image + i * lda + p] *
// b[image * b_image + j * ldb + p], for i < rows <= 4 and j < cols <= 4; k
// must be a multiple of 16 (pad with zeros). Each sum is 16 FMA chains
// (p mod 16, images in order) added pairwise at the end: the same bits with
// AVX-512 and AVX2 (matmul.cpp).
constexpr int64_t kDotTile = 4, kDotLanes = 16;
void dot_tile(int64_t k, int64_t images, const float *a, int64_t lda, int64_t a_image, const float *b, int64_t ldb,
              int64_t b_image, float *c, int64_t ldc, int rows, int cols);

}  // namespace fm::cpu::gemm
