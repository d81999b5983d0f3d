// Token + position embedding forward/backward. The position gradient has one thread per
// (t, c) summing the batch in order; the token-table gradient uses atomicAdd per element
// (tokens repeat across the batch), so its fp32 sums are not bitwise deterministic.
#include "gpu/cuda/cuda_backend.h"

__global__ void zoff_emb_fwd_kernel(float *out, const int32_t *tokens, const float *wte,
                                    const float *wpe, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / C;
        int c = (int)(i % C), t = (int)(bt % T);
        out[i] = wte[(size_t)tokens[bt] * C + c] + wpe[(size_t)t * C + c];
    }
}

__global__ void zoff_emb_bwd_wte_kernel(float *dwte, const float *dout, const int32_t *tokens,
                                        int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / C;
        atomicAdd(&dwte[(size_t)tokens[bt] * C + i % C], dout[i]);
    }
}

__global__ void zoff_emb_bwd_wpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++)
            acc += dout[(size_t)b * T * C + i];
        dwpe[i] += acc;
    }
}

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g > 65535u * 16u ? 65535u * 16u : (g ? g : 1));
}

extern "C" int zoff_cuda_launch_embedding_fwd(cuda_stream *s, float *out, const int32_t *tokens,
                                              const float *wte, const float *wpe, int B, int T,
                                              int C) {
    zoff_emb_fwd_kernel<<<grid_for((size_t)B * T * C), 256, 0, s->stream>>>(out, tokens, wte, wpe,
                                                                            B, T, C);
    return zoff_cuda_check(cudaGetLastError(), "embedding_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_embedding_bwd(cuda_stream *s, float *dwte, float *dwpe,
                                              const float *dout, const int32_t *tokens, int B,
                                              int T, int C) {
    zoff_emb_bwd_wte_kernel<<<grid_for((size_t)B * T * C), 256, 0, s->stream>>>(dwte, dout, tokens,
                                                                                B, T, C);
    int rc = zoff_cuda_check(cudaGetLastError(), "embedding_bwd kernel launch");
    if (rc) return rc;
    zoff_emb_bwd_wpe_kernel<<<grid_for((size_t)T * C), 256, 0, s->stream>>>(dwpe, dout, B, T, C);
    return zoff_cuda_check(cudaGetLastError(), "embedding_bwd wpe kernel launch");
}
