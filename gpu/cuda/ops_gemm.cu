// GEMM on cuBLAS: fp32, or bf16/fp16 operands with fp32 accumulation and fp32 output
// (cublasGemmEx, CUBLAS_COMPUTE_32F: no TF32, so fp32 results match the host oracle to
// rounding). zoff's matrices are row-major; cuBLAS is column-major, so C = op(A) op(B) is
// issued as C^T = op(B)^T op(A)^T, which reads the same memory without copies. Each stream
// makes its cuBLAS handle at its first GEMM, bound to it, with a workspace from zoff's pool;
// the handle lives as long as the CUDA stream (parked streams keep theirs, see cuda_backend.h).
#include "gpu/cuda/cuda_backend.h"
extern "C" {
#include "core/log.h" // C declarations: zoff_fail
}

#include <cublas_v2.h>

static int cublas_check(cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    // cuBLAS may leave its runtime error as this thread's last error: consume it
    (void)cudaGetLastError();
    // out of device memory is an OOM like any other, not a cuBLAS defect
    int code = st == CUBLAS_STATUS_ALLOC_FAILED ? ZOFF_EDEVICE_OOM : ZOFF_ECUBLAS;
    return zoff_fail(code, "cuda", "%s: cuBLAS status %d (%s)", what, (int)st,
                     cublasGetStatusString(st));
}

static cudaDataType_t cuda_type(zoff_dtype t) {
    return t == ZOFF_BF16 ? CUDA_R_16BF : t == ZOFF_F16 ? CUDA_R_16F : CUDA_R_32F;
}

#include "gpu/cuda/dtype_access.cuh"

// C may also be 16-bit: of the operands' type, cublasGemmEx reads it, combines it with alpha and
// beta in fp32 and rounds once (CUBLAS_COMPUTE_32F, fp32 scale type). The (ab_type, c_type) pairs
// cublasGemmEx does not take with CUBLAS_COMPUTE_32F (fp32 operands into a 16-bit C, or bf16
// operands into an f16 C and the reverse) run on this plain tiled kernel: fp32 accumulation, C
// read, combined and rounded once, as the host oracle does.
#define GEMM_TILE 16

__global__ void zoff_gemm_tiled_kernel(bool ta, bool tb, int M, int N, int K, float alpha,
                                       const void *A, int lda, const void *B, int ldb,
                                       zoff_dtype ab_type, float beta, void *C, zoff_dtype c_type,
                                       int ldc) {
    __shared__ float as[GEMM_TILE][GEMM_TILE + 1], bs[GEMM_TILE][GEMM_TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * GEMM_TILE + tx;
    int mtiles = (M + GEMM_TILE - 1) / GEMM_TILE;
    for (int mt = blockIdx.y; mt < mtiles; mt += gridDim.y) {
        int i = mt * GEMM_TILE + ty;
        float acc = 0.0f;
        for (int k0 = 0; k0 < K; k0 += GEMM_TILE) {
            int ia = mt * GEMM_TILE + ty, ka = k0 + tx; // as[ty][tx] = op(A)[ia][ka]
            as[ty][tx] =
                ia < M && ka < K
                    ? zoff_load_f32(A, ab_type, ta ? (size_t)ka * lda + ia : (size_t)ia * lda + ka)
                    : 0.0f;
            int kb = k0 + ty; // bs[ty][tx] = op(B)[kb][j]
            bs[ty][tx] =
                kb < K && j < N
                    ? zoff_load_f32(B, ab_type, tb ? (size_t)j * ldb + kb : (size_t)kb * ldb + j)
                    : 0.0f;
            __syncthreads();
            for (int k = 0; k < GEMM_TILE; k++)
                acc = fmaf(as[ty][k], bs[k][tx], acc);
            __syncthreads();
        }
        if (i < M && j < N) {
            size_t ci = (size_t)i * ldc + j;
            float c = alpha * acc;
            if (beta != 0.0f) c += beta * zoff_load_f32(C, c_type, ci);
            zoff_store_f32(C, c_type, ci, c);
        }
    }
}

extern "C" int zoff_cuda_launch_gemm(cuda_stream *s, bool trans_a, bool trans_b, int M, int N,
                                     int K, float alpha, const void *A, int lda, const void *B,
                                     int ldb, zoff_dtype ab_type, float beta, void *C,
                                     zoff_dtype c_type, int ldc) {
    if (c_type != ab_type && c_type != ZOFF_F32) {
        dim3 block(GEMM_TILE, GEMM_TILE);
        unsigned mtiles = (unsigned)((M + GEMM_TILE - 1) / GEMM_TILE);
        dim3 grid((unsigned)((N + GEMM_TILE - 1) / GEMM_TILE), mtiles > 65535u ? 65535u : mtiles);
        zoff_gemm_tiled_kernel<<<grid, block, 0, s->stream>>>(
            trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, ab_type, beta, C, c_type, ldc);
        return zoff_cuda_check(cudaGetLastError(), "gemm: tiled kernel launch");
    }
    if (!s->cublas) { /* created on a stream's first GEMM: copy-only streams never pay */
        int rc = zoff_cuda_cublas_create(s);
        if (rc) return rc;
    }
    cublasHandle_t h = (cublasHandle_t)s->cublas;
    cublasStatus_t st =
        cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                     M, K, &alpha, B, cuda_type(ab_type), ldb, A, cuda_type(ab_type), lda, &beta, C,
                     cuda_type(c_type), ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return cublas_check(st, "gemm: cublasGemmEx");
}

extern "C" int zoff_cuda_cublas_create(cuda_stream *s) {
    int rc = zoff_cuda_use_device(s->ordinal);
    if (rc) return rc;
    size_t ws = zoff_cuda_blas_workspace_bytes(s->owner);
    void *workspace = NULL;
    rc = zoff_cuda_pool_alloc(s->owner, ws, &workspace);
    if (rc) return zoff_fail(rc, "cuda", "no device memory for a %zu-byte cuBLAS workspace", ws);
    cublasHandle_t h = NULL;
    rc = cublas_check(cublasCreate(&h), "cublasCreate");
    // cublasSetStream resets the workspace to cuBLAS's own pool: the workspace comes after it
    if (!rc) rc = cublas_check(cublasSetStream(h, s->stream), "cublasSetStream");
    if (!rc) rc = cublas_check(cublasSetWorkspace(h, workspace, ws), "cublasSetWorkspace");
    if (!rc) rc = cublas_check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (rc) { // a failure path only: cublasDestroy synchronizes the device
        if (h) cublasDestroy(h);
        zoff_cuda_pool_free(s->owner, workspace);
        return rc;
    }
    s->cublas = h;
    s->cublas_workspace = workspace;
    return 0;
}

extern "C" void zoff_cuda_cublas_destroy(cuda_stream *s) {
    if (s->cublas) cublasDestroy((cublasHandle_t)s->cublas);
    if (s->cublas_workspace) zoff_cuda_pool_free(s->owner, s->cublas_workspace);
    s->cublas = NULL;
    s->cublas_workspace = NULL;
}
