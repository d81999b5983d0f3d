// Softmax + cross-entropy over the vocabulary: one block per row (max, then sum of
// exponentials, block reductions in fp32), the loss from the log-sum-exp; backward is
// elementwise (probs - onehot) * dloss. probs may alias logits: the target logit is read
// before the row is overwritten.
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"

__global__ void zoff_xent_fwd_kernel(float *probs, float *losses, const float *logits,
                                     const int32_t *targets, int V) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const float *x = logits + row * V;
    float *p = probs + row * V;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        m = fmaxf(m, x[i]);
    m = zoff_block_max(m, shared);
    float xt = targets ? x[targets[row]] : 0.0f;
    __syncthreads(); // every thread has read x before p (maybe x) is written
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float e = expf(x[i] - m);
        p[i] = e;
        s += e;
    }
    s = zoff_block_sum(s, shared);
    float inv = 1.0f / s;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        p[i] *= inv;
    if (targets && threadIdx.x == 0) losses[row] = logf(s) + m - xt;
}

__global__ void zoff_xent_bwd_kernel(float *dlogits, const float *probs, const int32_t *targets,
                                     float dloss, size_t N, int V) {
    size_t n = N * (size_t)V;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / V;
        int col = (int)(i % V);
        float g = probs[i] * dloss;
        if (col == targets[row]) g -= dloss;
        dlogits[i] = g;
    }
}

extern "C" int zoff_cuda_launch_softmax_xent_fwd(cuda_stream *s, float *probs, float *losses,
                                                 const float *logits, const int32_t *targets,
                                                 size_t N, int V) {
    zoff_xent_fwd_kernel<<<(unsigned)N, 256, 0, s->stream>>>(probs, losses, logits, targets, V);
    return zoff_cuda_check(cudaGetLastError(), "softmax_xent_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_softmax_xent_bwd(cuda_stream *s, float *dlogits, const float *probs,
                                                 const int32_t *targets, float dloss, size_t N,
                                                 int V) {
    size_t n = N * (size_t)V;
    zoff_xent_bwd_kernel<<<(unsigned)((n + 255) / 256 > 65535u * 16u ? 65535u * 16u
                                                                     : (n + 255) / 256),
                           256, 0, s->stream>>>(dlogits, probs, targets, dloss, N, V);
    return zoff_cuda_check(cudaGetLastError(), "softmax_xent_bwd kernel launch");
}
