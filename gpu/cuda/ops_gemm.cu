// GEMM on cuBLAS: fp32, or bf16/fp16 operands with fp32 accumulation and fp32 output
// (cublasGemmEx, CUBLAS_COMPUTE_32F: no TF32, so fp32 results match the host oracle to
// rounding). zoff's matrices are row-major; cuBLAS is column-major, so C = op(A) op(B) is
// issued as C^T = op(B)^T op(A)^T, which reads the same memory without copies. Each stream
// owns its cuBLAS handle, bound to it, created at its first GEMM and destroyed with it.
#include "gpu/cuda/cuda_backend.h"
extern "C" {
#include "core/log.h" // C declarations: zoff_fail
}

#include <cublas_v2.h>

static int cublas_check(cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    return zoff_fail(ZOFF_ECUBLAS, "cuda", "%s: cuBLAS status %d (%s)", what, (int)st,
                     cublasGetStatusString(st));
}

static cudaDataType_t cuda_type(zoff_dtype t) {
    return t == ZOFF_BF16 ? CUDA_R_16BF : t == ZOFF_F16 ? CUDA_R_16F : CUDA_R_32F;
}

extern "C" int zoff_cuda_launch_gemm(cuda_stream *s, bool trans_a, bool trans_b, int M, int N,
                                     int K, float alpha, const void *A, int lda, const void *B,
                                     int ldb, zoff_dtype ab_type, float beta, float *C, int ldc) {
    if (!s->cublas) { /* created on a stream's first GEMM: copy-only streams never pay */
        int rc = zoff_cuda_cublas_create(s);
        if (rc) return rc;
    }
    cublasHandle_t h = (cublasHandle_t)s->cublas;
    cudaDataType_t t = cuda_type(ab_type);
    cublasStatus_t st =
        cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                     M, K, &alpha, B, t, ldb, A, t, lda, &beta, C, CUDA_R_32F, ldc,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return cublas_check(st, "gemm: cublasGemmEx");
}

extern "C" int zoff_cuda_cublas_create(cuda_stream *s) {
    cublasHandle_t h;
    int rc = zoff_cuda_check(cudaSetDevice(s->ordinal), "cublasCreate: cudaSetDevice");
    if (rc) return rc;
    rc = cublas_check(cublasCreate(&h), "cublasCreate");
    if (rc) return rc;
    rc = cublas_check(cublasSetStream(h, s->stream), "cublasSetStream");
    if (!rc) rc = cublas_check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (rc) {
        cublasDestroy(h);
        return rc;
    }
    s->cublas = h;
    return 0;
}

extern "C" void zoff_cuda_cublas_destroy(cuda_stream *s) {
    if (s->cublas) cublasDestroy((cublasHandle_t)s->cublas);
    s->cublas = NULL;
}
