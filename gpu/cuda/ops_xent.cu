// Softmax + cross-entropy over the vocabulary: one block per row (max, then sum of
// exponentials, block reductions in fp32), the loss from the log-sum-exp; backward is
// elementwise (probs - onehot) * dloss. probs may alias logits: the target logit is read
// before the row is overwritten. The fused loss (the models' chunked loss) never stores
// probabilities: one block per row finds the max and the sum of exponentials, the loss comes
// from the log-sum-exp, and the gradient is written in its own type (rounded once), a zero row
// for an ignored target (< 0).
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

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

// dlogits may alias logits (f32): each thread reads x[i] before it writes d[i], and the target
// logit is read before the block's barriers that precede any write.
__global__ void zoff_xent_fused_kernel(float *losses, void *dlogits, zoff_dtype d_type,
                                       const float *logits, const int32_t *targets, float dloss,
                                       int V) {
    __shared__ float shared[32];
    size_t row = blockIdx.x, base = row * (size_t)V;
    const float *x = logits + base;
    int t = targets[row];
    if (t < 0) { // ignored: no loss, a zero gradient row
        if (threadIdx.x == 0) losses[row] = 0.0f;
        if (dlogits)
            for (int i = threadIdx.x; i < V; i += blockDim.x)
                zoff_store_f32(dlogits, d_type, base + i, 0.0f);
        return;
    }
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        m = fmaxf(m, x[i]);
    m = zoff_block_max(m, shared);
    float xt = x[t];
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        sum += expf(x[i] - m);
    sum = zoff_block_sum(sum, shared); // its barriers: every thread has read xt before any write
    if (threadIdx.x == 0) losses[row] = logf(sum) + m - xt;
    if (!dlogits) return;
    float inv = dloss / sum;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        zoff_store_f32(dlogits, d_type, base + i, expf(x[i] - m) * inv - (i == t ? dloss : 0.0f));
}

extern "C" int zoff_cuda_launch_xent_fused(cuda_stream *s, float *losses, void *dlogits,
                                           zoff_dtype d_type, const float *logits,
                                           const int32_t *targets, float dloss, size_t N, int V) {
    if (N > 0x7fffffffu)
        return zoff_cuda_check(cudaErrorInvalidConfiguration, "xent_fused: more than 2^31-1 rows");
    zoff_xent_fused_kernel<<<(unsigned)N, 512, 0, s->stream>>>(losses, dlogits, d_type, logits,
                                                               targets, dloss, V);
    return zoff_cuda_check(cudaGetLastError(), "xent_fused kernel launch");
}
