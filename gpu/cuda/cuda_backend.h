/* Internals of the CUDA backend: the stream object and the kernel launchers that the .cu
 * files export with C linkage. Each launcher enqueues on the given stream and returns 0 or
 * ZOFF_ECUDA (the launch error's text in the error detail). */
#ifndef ZOFF_GPU_CUDA_BACKEND_H
#define ZOFF_GPU_CUDA_BACKEND_H

#include "gpu/device.h"
#include "zoff/zoff.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Partial sums of a reduction need scratch space; each stream owns its own so that
 * reductions on different streams never share it. */
#define ZOFF_CUDA_REDUCE_BLOCKS 512

typedef struct cuda_stream {
    cudaStream_t stream;
    float *scratch; /* (2, ZOFF_CUDA_REDUCE_BLOCKS) device floats: sumsq, nonfinite */
    int ordinal;
    void *cublas; /* cublasHandle_t bound to this stream, made at its first GEMM (ops_gemm.cu) */
} cuda_stream;

/* Turns a CUDA error into ZOFF_ECUDA with "what: message" as detail (0 if err == success). */
int zoff_cuda_check(cudaError_t err, const char *what);

int zoff_cuda_launch_cast(cuda_stream *s, void *dst, zoff_dtype dst_type, const void *src,
                          zoff_dtype src_type, size_t n);
int zoff_cuda_launch_scale(cuda_stream *s, void *x, zoff_dtype type, float alpha, size_t n);
int zoff_cuda_launch_wait_value(cuda_stream *s, const uint32_t *flag, uint32_t value);
int zoff_cuda_launch_write_value(cuda_stream *s, uint32_t *flag, uint32_t value);
int zoff_cuda_launch_sumsq_nonfinite(cuda_stream *s, const void *x, zoff_dtype type, size_t n,
                                     float *out);

/* the model kernels, one .cu file per family */
int zoff_cuda_cublas_create(cuda_stream *s);
void zoff_cuda_cublas_destroy(cuda_stream *s);
int zoff_cuda_launch_gemm(cuda_stream *s, bool trans_a, bool trans_b, int M, int N, int K,
                          float alpha, const void *A, int lda, const void *B, int ldb,
                          zoff_dtype ab_type, float beta, float *C, int ldc);
int zoff_cuda_launch_add(cuda_stream *s, float *out, const float *a, const float *b, size_t n);
int zoff_cuda_launch_bias_add(cuda_stream *s, float *out, const float *bias, size_t N, int OC);
int zoff_cuda_launch_bias_grad(cuda_stream *s, float *dbias, const float *dout, size_t N, int OC);
int zoff_cuda_launch_gelu_fwd(cuda_stream *s, float *out, const float *inp, size_t n);
int zoff_cuda_launch_gelu_bwd(cuda_stream *s, float *dinp, const float *inp, const float *dout,
                              size_t n);
int zoff_cuda_launch_layernorm_fwd(cuda_stream *s, float *out, float *mean, float *rstd,
                                   const float *inp, const float *weight, const float *bias,
                                   size_t N, int C);
int zoff_cuda_launch_layernorm_bwd(cuda_stream *s, float *dinp, float *dweight, float *dbias,
                                   const float *dout, const float *inp, const float *weight,
                                   const float *mean, const float *rstd, size_t N, int C);
int zoff_cuda_launch_attention_fwd(cuda_stream *s, float *out, float *att, const float *qkv, int B,
                                   int T, int C, int NH);
int zoff_cuda_launch_attention_bwd(cuda_stream *s, float *dqkv, float *scratch, const float *dout,
                                   const float *qkv, const float *att, int B, int T, int C, int NH);
int zoff_cuda_launch_softmax_xent_fwd(cuda_stream *s, float *probs, float *losses,
                                      const float *logits, const int32_t *targets, size_t N, int V);
int zoff_cuda_launch_softmax_xent_bwd(cuda_stream *s, float *dlogits, const float *probs,
                                      const int32_t *targets, float dloss, size_t N, int V);
int zoff_cuda_launch_embedding_fwd(cuda_stream *s, float *out, const int32_t *tokens,
                                   const float *wte, const float *wpe, int B, int T, int C);
int zoff_cuda_launch_embedding_bwd(cuda_stream *s, float *dwte, float *dwpe, const float *dout,
                                   const int32_t *tokens, int B, int T, int C);
/* Llama-family kernels (ops_rmsnorm.cu, ops_rope.cu, ops_swiglu.cu) */
int zoff_cuda_launch_rmsnorm_fwd(cuda_stream *s, void *out, zoff_dtype out_type, float *rstd,
                                 const float *inp, const void *weight, zoff_dtype w_type, size_t N,
                                 int C, float eps);
int zoff_cuda_launch_rmsnorm_bwd(cuda_stream *s, float *dinp, void *dweight, zoff_dtype g_type,
                                 const float *dout, const float *inp, const void *weight,
                                 zoff_dtype w_type, const float *rstd, size_t N, int C);
int zoff_cuda_launch_rope(cuda_stream *s, void *x, zoff_dtype type, size_t row_stride,
                          const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS,
                          bool backward);
int zoff_cuda_launch_swiglu_fwd(cuda_stream *s, void *out, const void *gate, const void *up,
                                zoff_dtype type, size_t n);
int zoff_cuda_launch_swiglu_bwd(cuda_stream *s, void *dgate, void *dup, const void *dout,
                                const void *gate, const void *up, zoff_dtype type, size_t n);
int zoff_cuda_launch_adamw(cuda_stream *s, float *param, const float *grad, float *m, float *v,
                           size_t n, const zoff_dev_adamw_args *args);

#ifdef __cplusplus
}
#endif
#endif
