/* Host GEMM: OpenBLAS sgemm, row-major. 16-bit inputs are widened to fp32 copies first (exact),
 * so a bf16 GEMM here equals bf16-rounded operands with fp32 accumulation, the contract the
 * CUDA backend's cuBLAS calls follow. A 16-bit C is computed in an fp32 image and rounded once. The widened copies live in a per-stream scratch that the
 * issuing thread grows (so that an allocation failure is reported to the caller); a stream's
 * GEMMs run one at a time, so they share it, and a replaced scratch is freed by a command
 * queued behind the GEMMs that still use it. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"
#include "core/log.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>

typedef struct gemm_args {
    bool ta, tb;
    int M, N, K;
    float alpha, beta;
    const void *A, *B;
    int lda, ldb, ldc;
    zoff_dtype type, c_type;
    void *C;
    float *wa, *wb; /* widened copies for 16-bit inputs (the stream's scratch), or NULL */
    float *wc;      /* 16-bit C: its fp32 image (M,N), rounded back once at the end */
    int nt;
} gemm_args;

static void widen(float *dst, const uint16_t *src, size_t n, zoff_dtype t, int nt) {
    if (t == ZOFF_BF16) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++)
            dst[i] = zoff_bf16_to_f32(src[i]);
    } else {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++)
            dst[i] = zoff_f16_to_f32(src[i]);
    }
}

static size_t stored_elems(bool trans, int rows, int cols, int ld) {
    /* op(X) is (rows, cols); stored (rows, ld) or, transposed, (cols, ld) */
    int r = trans ? cols : rows;
    return r ? (size_t)(r - 1) * (size_t)ld + (size_t)(trans ? rows : cols) : 0;
}

static void run_gemm(void *p) {
    gemm_args *a = p;
    const float *A = a->A, *B = a->B;
    float *C = a->C;
    int ldc = a->ldc;
    if (a->c_type != ZOFF_F32) {
        C = a->wc;
        ldc = a->N;
        for (int i = 0; i < a->M; i++)
            for (int j = 0; j < a->N; j++)
                C[(size_t)i * ldc + j] =
                    a->beta == 0.0f ? 0.0f
                                    : zoff_load_as_f32(a->C, a->c_type, (size_t)i * a->ldc + j);
    }
    if (a->type != ZOFF_F32) {
        size_t na = stored_elems(a->ta, a->M, a->K, a->lda);
        size_t nb = stored_elems(a->tb, a->K, a->N, a->ldb);
        widen(a->wa, a->A, na, a->type, host_threads_for(a->nt, (double)na));
        widen(a->wb, a->B, nb, a->type, host_threads_for(a->nt, (double)nb));
        A = a->wa;
        B = a->wb;
    }
    if (a->K == 0) {
        /* BLAS leaves C alone for K == 0 only when beta == 1: apply beta ourselves */
        for (int i = 0; i < a->M; i++)
            for (int j = 0; j < a->N; j++) {
                float *c = &C[(size_t)i * ldc + j];
                *c = a->beta == 0.0f ? 0.0f : *c * a->beta;
            }
    } else {
        /* One OpenMP team splits the larger of M and N into slabs, each a single-threaded
         * sgemm (OpenBLAS's own threads are off: two thread pools on the same cores thrash). */
        double work = 2.0 * a->M * a->N * a->K;
        int nt = work < 2e6 ? 1 : a->nt;
        bool split_m = a->M >= a->N;
        int dim = split_m ? a->M : a->N;
        if (nt > dim) nt = dim;
        enum CBLAS_TRANSPOSE ta = a->ta ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tb = a->tb ? CblasTrans : CblasNoTrans;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int c = 0; c < nt; c++) {
            int lo = (int)((long long)dim * c / nt), hi = (int)((long long)dim * (c + 1) / nt);
            if (hi <= lo) continue;
            if (split_m) {
                const float *Ac = a->ta ? A + lo : A + (size_t)lo * a->lda;
                cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, a->N, a->K, a->alpha, Ac, a->lda, B,
                            a->ldb, a->beta, C + (size_t)lo * ldc, ldc);
            } else {
                const float *Bc = a->tb ? B + (size_t)lo * a->ldb : B + lo;
                cblas_sgemm(CblasRowMajor, ta, tb, a->M, hi - lo, a->K, a->alpha, A, a->lda, Bc,
                            a->ldb, a->beta, C + lo, ldc);
            }
        }
    }
    if (a->c_type != ZOFF_F32)
        for (int i = 0; i < a->M; i++)
            for (int j = 0; j < a->N; j++)
                zoff_store_from_f32(a->C, a->c_type, (size_t)i * a->ldc + j,
                                    C[(size_t)i * ldc + j]);
}

static void run_free(void *p) {
    free(*(void **)p);
}

int host_op_gemm(void *stream, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const void *A, int lda, const void *B, int ldb, zoff_dtype ab_type, float beta,
                 void *C, zoff_dtype c_type, int ldc) {
    gemm_args a = {.ta = trans_a,
                   .tb = trans_b,
                   .M = M,
                   .N = N,
                   .K = K,
                   .alpha = alpha,
                   .beta = beta,
                   .A = A,
                   .B = B,
                   .lda = lda,
                   .ldb = ldb,
                   .ldc = ldc,
                   .type = ab_type,
                   .c_type = c_type,
                   .C = C,
                   .nt = host_stream_threads(stream)};
    if (ab_type != ZOFF_F32 || c_type != ZOFF_F32) {
        host_stream *hs = stream;
        size_t na = 0, nb = 0, nc = c_type != ZOFF_F32 ? (size_t)M * N : 0;
        if (ab_type != ZOFF_F32) {
            na = stored_elems(trans_a, M, K, lda);
            nb = stored_elems(trans_b, K, N, ldb);
        }
        size_t need = na + nb + nc + 1;
        if (need > hs->gemm_scratch_floats) {
            float *fresh = malloc(need * sizeof(float));
            if (!fresh)
                return zoff_fail(-ENOMEM, "host", "gemm: no memory to widen %s operands (%zu B)",
                                 zoff_dtype_name(ab_type), need * sizeof(float));
            if (hs->gemm_scratch) {
                int rc = host_stream_enqueue(stream, run_free, &hs->gemm_scratch,
                                             sizeof hs->gemm_scratch);
                if (rc) {
                    free(fresh);
                    return rc;
                }
            }
            hs->gemm_scratch = fresh;
            hs->gemm_scratch_floats = need;
        }
        a.wa = hs->gemm_scratch;
        a.wb = hs->gemm_scratch + na;
        a.wc = hs->gemm_scratch + na + nb;
    }
    return host_op_enqueue(stream, HOST_OP_GEMM, run_gemm, &a, sizeof a);
}
