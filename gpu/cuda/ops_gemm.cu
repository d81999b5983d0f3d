// GEMM on cuBLAS: fp32, or bf16/fp16 operands with fp32 accumulation and fp32 output
// (cublasGemmEx, CUBLAS_COMPUTE_32F: no TF32, so fp32 results match the host oracle to
// rounding). zoff's matrices are row-major; cuBLAS is column-major, so C = op(A) op(B) is
// issued as C^T = op(B)^T op(A)^T, which reads the same memory without copies. A stream binds
// a cuBLAS handle at its first GEMM and parks it on its device when destroyed; the next stream
// takes a parked one. Each handle has its own workspace from zoff's pool (so cuBLAS allocates
// nothing lazily), and only close destroys handles: cublasDestroy synchronizes the device.
#include "gpu/cuda/cuda_backend.h"
extern "C" {
#include "core/log.h" // C declarations: zoff_fail
}

#include <cublas_v2.h>
#include <errno.h>
#include <stdlib.h>

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

// Binds the handle to s with its workspace; cublasSetStream resets the workspace to
// cuBLAS's own pool, so the workspace is set after it.
static int cublas_bind(cuda_stream *s, cuda_blas *b) {
    cublasHandle_t h = (cublasHandle_t)b->handle;
    int rc = cublas_check(cublasSetStream(h, s->stream), "cublasSetStream");
    if (!rc)
        rc = cublas_check(cublasSetWorkspace(h, b->workspace, b->workspace_bytes),
                          "cublasSetWorkspace");
    if (rc) return rc;
    s->blas = b;
    s->cublas = h;
    return 0;
}

static void cublas_free_record(cuda_device *c, cuda_blas *b) {
    if (b->handle) cublasDestroy((cublasHandle_t)b->handle);
    if (b->workspace) zoff_cuda_pool_free(c, b->workspace);
    free(b);
}

extern "C" int zoff_cuda_cublas_create(cuda_stream *s) {
    cuda_device *c = s->owner;
    int rc = zoff_cuda_use_device(s->ordinal);
    if (rc) return rc;
    pthread_mutex_lock(&c->blas_lock);
    cuda_blas *b = c->blas_free;
    if (b) c->blas_free = b->next;
    pthread_mutex_unlock(&c->blas_lock);
    if (b) {
        b->next = NULL;
        if ((rc = cublas_bind(s, b))) cublas_free_record(c, b);
        return rc;
    }
    b = (cuda_blas *)calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    size_t ws = zoff_cuda_blas_workspace_bytes(c);
    b->workspace_bytes = ws;
    rc = zoff_cuda_pool_alloc(c, ws, &b->workspace);
    if (rc) {
        free(b);
        return zoff_fail(rc, "cuda", "no device memory for a %zu-byte cuBLAS workspace", ws);
    }
    cublasHandle_t h = NULL;
    rc = cublas_check(cublasCreate(&h), "cublasCreate");
    if (!rc) {
        b->handle = h;
        rc = cublas_check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    }
    if (!rc) rc = cublas_bind(s, b);
    if (rc) cublas_free_record(c, b);
    return rc;
}

extern "C" void zoff_cuda_cublas_release(cuda_stream *s) {
    cuda_blas *b = s->blas;
    s->blas = NULL;
    s->cublas = NULL;
    if (!b) return;
    // the stream is idle and about to be destroyed: unbind (the legacy stream is never used)
    cublasSetStream((cublasHandle_t)b->handle, NULL);
    cuda_device *c = s->owner;
    pthread_mutex_lock(&c->blas_lock);
    b->next = c->blas_free;
    c->blas_free = b;
    pthread_mutex_unlock(&c->blas_lock);
}

extern "C" void zoff_cuda_cublas_destroy_all(cuda_device *c) {
    pthread_mutex_lock(&c->blas_lock);
    cuda_blas *b = c->blas_free;
    c->blas_free = NULL;
    pthread_mutex_unlock(&c->blas_lock);
    while (b) {
        cuda_blas *next = b->next;
        cublas_free_record(c, b);
        b = next;
    }
}
