// Token + position embedding forward/backward with typed tables (w_type / g_type) and optional
// position ids (pos NULL: the position of token (b, t) is t) and position table.
//
// The backward is deterministic and rounds each gradient row once, however often its id
// occurs, without atomics and without scratch: one block per position (and per tile of
// channels) first checks whether an earlier position holds the same id; if not, it owns that
// id's gradient row: it gathers the positions with the id in increasing order, sums their dout
// rows in fp32 in that order (the host oracle's order too) and adds the sum to the row once.
// The id scans cost O((B*T)^2 / 256) integer compares over ids that sit in L2, which is small
// next to the rest of a training step for the B*T of one micro-batch.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define EMB_THREADS    256
#define EMB_PER_THREAD 8 // channels per thread: a block covers 2048 channels of a row

__global__ void zoff_emb_fwd_kernel(float *out, const int32_t *tokens, const int32_t *pos,
                                    const void *wte, const void *wpe, zoff_dtype t, int B, int T,
                                    int C) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / C, c = i % C;
        float v = zoff_load_f32(wte, t, (size_t)tokens[bt] * C + c);
        if (wpe) {
            size_t p = pos ? (size_t)pos[bt] : bt % (size_t)T;
            v += zoff_load_f32(wpe, t, p * C + c);
        }
        out[i] = v;
    }
}

// The id of position bt: a token id, a position id, or (ids NULL) the time t = bt % T.
__device__ __forceinline__ int emb_id(const int32_t *ids, int T, int bt) {
    return ids ? ids[bt] : bt % T;
}

// grad (rows of C, g_type) += for each id, the sum of dout rows (B*T, C) at positions with it.
__global__ void __launch_bounds__(EMB_THREADS)
    zoff_emb_bwd_kernel(void *grad, zoff_dtype g_type, const float *dout, const int32_t *ids,
                        int BT, int T, int C) {
    __shared__ int match[EMB_THREADS];
    __shared__ int warp_count[EMB_THREADS / 32];
    int i = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int id = emb_id(ids, T, i);
    // Is i the first position with this id? (__syncthreads_or makes `seen` block-uniform.)
    int seen = 0;
    for (int j0 = 0; j0 < i && !seen; j0 += EMB_THREADS) {
        int j = j0 + tid;
        seen = __syncthreads_or(j < i && emb_id(ids, T, j) == id);
    }
    if (seen) return;
    int c0 = blockIdx.y * (EMB_THREADS * EMB_PER_THREAD);
    float acc[EMB_PER_THREAD];
#pragma unroll
    for (int e = 0; e < EMB_PER_THREAD; e++)
        acc[e] = 0.0f;
    for (int j0 = i; j0 < BT; j0 += EMB_THREADS) {
        // the positions of this chunk holding the id, compacted in increasing order
        int j = j0 + tid;
        bool hit = j < BT && emb_id(ids, T, j) == id;
        unsigned ballot = __ballot_sync(0xffffffffu, hit);
        if (lane == 0) warp_count[warp] = __popc(ballot);
        __syncthreads();
        int off = 0, n = 0;
        for (int w = 0; w < EMB_THREADS / 32; w++) {
            off += w < warp ? warp_count[w] : 0;
            n += warp_count[w];
        }
        if (hit) match[off + __popc(ballot & ((1u << lane) - 1u))] = j;
        __syncthreads();
        for (int k = 0; k < n; k++) {
            const float *d = dout + (size_t)match[k] * C;
#pragma unroll
            for (int e = 0; e < EMB_PER_THREAD; e++) {
                int c = c0 + e * EMB_THREADS + tid;
                if (c < C) acc[e] += d[c];
            }
        }
        __syncthreads(); // match and warp_count are rewritten by the next chunk
    }
    size_t row = (size_t)id * C;
#pragma unroll
    for (int e = 0; e < EMB_PER_THREAD; e++) {
        int c = c0 + e * EMB_THREADS + tid;
        if (c < C)
            zoff_store_f32(grad, g_type, row + c, zoff_load_f32(grad, g_type, row + c) + acc[e]);
    }
}

extern "C" int zoff_cuda_launch_embedding_fwd(cuda_stream *s, float *out, const int32_t *tokens,
                                              const int32_t *pos, const void *wte, const void *wpe,
                                              zoff_dtype w_type, int B, int T, int C) {
    const unsigned block = 256;
    zoff_emb_fwd_kernel<<<zoff_cuda_grid((size_t)B * T * C, block), block, 0, s->stream>>>(
        out, tokens, pos, wte, wpe, w_type, B, T, C);
    return zoff_cuda_check(cudaGetLastError(), "embedding_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_embedding_bwd(cuda_stream *s, void *dwte, void *dwpe,
                                              zoff_dtype g_type, const float *dout,
                                              const int32_t *tokens, const int32_t *pos, int B,
                                              int T, int C) {
    int BT = B * T;
    dim3 grid((unsigned)BT,
              (unsigned)((C + EMB_THREADS * EMB_PER_THREAD - 1) / (EMB_THREADS * EMB_PER_THREAD)));
    zoff_emb_bwd_kernel<<<grid, EMB_THREADS, 0, s->stream>>>(dwte, g_type, dout, tokens, BT, T, C);
    int rc = zoff_cuda_check(cudaGetLastError(), "embedding_bwd wte kernel launch");
    if (rc || !dwpe) return rc;
    zoff_emb_bwd_kernel<<<grid, EMB_THREADS, 0, s->stream>>>(dwpe, g_type, dout, pos, BT, T, C);
    return zoff_cuda_check(cudaGetLastError(), "embedding_bwd wpe kernel launch");
}
