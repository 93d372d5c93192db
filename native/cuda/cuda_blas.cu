// Matrix products through cuBLAS. cuBLAS is column-major; a row-major
// C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, so every call
// swaps the operands instead of transposing data. TF32 stays off unless the
// executor's handle was set to allow it (FERROMETAL_TF32=1).
#include "cuda_check.h"
#include "cuda_kernels.h"
#include "error.h"

namespace fm {
namespace cuda {

namespace {

void check_blas(cublasStatus_t status, const char *call) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fail(status == CUBLAS_STATUS_ALLOC_FAILED ? FM_ERR_OUT_OF_MEMORY : FM_ERR_BACKEND, call, ": ",
         cublasGetStatusName(status), " (", cublasGetStatusString(status), ")");
}

// The stream and the plan's workspace (cublasSetStream resets the latter).
void bind(const KernelContext &k) {
    check_blas(cublasSetStream(k.blas, k.stream), "cublasSetStream");
    check_blas(cublasSetWorkspace(k.blas, k.blas_workspace, k.blas_workspace_bytes), "cublasSetWorkspace");
}

}  // namespace

void gemm_batched(const KernelContext &k, bool ta, bool tb, int64_t m, int64_t n, int64_t kk, const float *a,
                  int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float *c, int64_t ldc,
                  int64_t stride_c, int64_t batch, float beta) {
    if (m == 0 || n == 0 || batch == 0) return;
    const float alpha = 1.0f;
    bind(k);
    check_blas(cublasSgemmStridedBatched_64(k.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n,
                                            m, kk, &alpha, b, ldb, stride_b, a, lda, stride_a, &beta, c, ldc, stride_c,
                                            batch),
               "cublasSgemmStridedBatched");
}

void matmul(const KernelContext &k, const MatmulShape &s, const float *a, const float *b, float *c, float beta) {
    if (s.m == 0 || s.n == 0 || s.batch == 0) return;
    if (s.k == 0 && beta == 0.0f) {
        fill(k, c, s.batch * s.m * s.n, 0.0f);
        return;
    }
    const float alpha = 1.0f;
    // Column-major view: C^T (n x m, ld n) = op(B)^T (n x k) * op(A)^T (k x m).
    cublasOperation_t op_b = s.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_a = s.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t ldb = s.transpose_b ? s.k : s.n;
    int64_t lda = s.transpose_a ? s.m : s.k;
    bind(k);
    if (s.batch == 1) {
        check_blas(cublasSgemm_64(k.blas, op_b, op_a, s.n, s.m, s.k, &alpha, b, ldb, a, lda, &beta, c, s.n),
                   "cublasSgemm");
        return;
    }
    check_blas(cublasSgemmStridedBatched_64(k.blas, op_b, op_a, s.n, s.m, s.k, &alpha, b, ldb, s.b_batch_stride, a,
                                            lda, s.a_batch_stride, &beta, c, s.n, s.c_batch_stride, s.batch),
               "cublasSgemmStridedBatched");
}

void matmul_step(const KernelContext &k, const Step &step, const float *a, const float *b, float *c) {
    MatmulPlan plan = matmul_plan(step);
    if (!plan.mixed) return matmul(k, plan.shape, a, b, c);
    for (int64_t i = 0; i < plan.outputs; ++i) {
        int64_t a_offset, b_offset;
        matrix_offsets(step, i, &a_offset, &b_offset);
        matmul(k, plan.shape, a + a_offset, b + b_offset, c + i * plan.shape.m * plan.shape.n);
    }
}

}  // namespace cuda
}  // namespace fm
