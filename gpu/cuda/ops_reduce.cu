// Reductions: sum of squares and the inf/nan flag of a buffer, the engine's per-bucket
// check before a gradient bucket leaves the GPU. Deterministic: a fixed grid writes one
// partial per block into the stream's scratch, then one block sums the partials in a fixed
// order, so the result does not depend on scheduling. Column sums (the bias and LayerNorm
// parameter gradients) follow the same two-stage pattern, below.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define REDUCE_THREADS 256

__device__ __forceinline__ float block_sum(float v, float *shared) {
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, off);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int off = 16; off > 0; off >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, off);
    __syncthreads();
    return v;
}

__global__ void zoff_sumsq_partial_kernel(const void *x, zoff_dtype t, size_t n, float *partial) {
    __shared__ float shared[32];
    float acc = 0.0f, bad = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = zoff_load_f32(x, t, i);
        if (isfinite(v))
            acc = fmaf(v, v, acc);
        else
            bad = 1.0f;
    }
    acc = block_sum(acc, shared);
    bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc;
        partial[ZOFF_CUDA_REDUCE_BLOCKS + blockIdx.x] = bad;
    }
}

__global__ void zoff_sumsq_final_kernel(const float *partial, unsigned nblocks, float *out) {
    __shared__ float shared[32];
    float acc = 0.0f, bad = 0.0f;
    for (unsigned i = threadIdx.x; i < nblocks; i += blockDim.x) {
        acc += partial[i];
        bad += partial[ZOFF_CUDA_REDUCE_BLOCKS + i];
    }
    acc = block_sum(acc, shared);
    bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
        out[0] = acc;
        out[1] = bad > 0.0f ? 1.0f : 0.0f;
    }
}

extern "C" int zoff_cuda_launch_sumsq_nonfinite(cuda_stream *s, const void *x, zoff_dtype type,
                                                size_t n, float *out) {
    size_t want = (n + REDUCE_THREADS * 8 - 1) / (REDUCE_THREADS * 8);
    unsigned blocks = (unsigned)(want < 1                         ? 1
                                 : want > ZOFF_CUDA_REDUCE_BLOCKS ? ZOFF_CUDA_REDUCE_BLOCKS
                                                                  : want);
    zoff_sumsq_partial_kernel<<<blocks, REDUCE_THREADS, 0, s->stream>>>(x, type, n, s->scratch);
    int rc = zoff_cuda_check(cudaGetLastError(), "sumsq partial kernel launch");
    if (rc) return rc;
    zoff_sumsq_final_kernel<<<1, REDUCE_THREADS, 0, s->stream>>>(s->scratch, blocks, out);
    return zoff_cuda_check(cudaGetLastError(), "sumsq final kernel launch");
}

// Column sums: the bias gradient (g[c] += sum_r dout[r,c]) and LayerNorm's weight and bias
// gradients. A block owns COLSUM_COLS adjacent columns (a warp reads 128 contiguous bytes of a
// fp32 row) and a tile of rows, which its COLSUM_ROWS warps stride; the block sums its warps in
// order and writes one partial per column and tile into the stream's scratch, laid out
// (n_sums, tiles, OC). A second kernel adds each column's partials in tile order, adds the sum
// to the gradient and rounds once. The tiling depends only on (N, OC), so the result is the same
// on every call. Without room in the scratch (or with one tile), the first kernel writes the
// gradient directly.
#define COLSUM_COLS          32
#define COLSUM_ROWS          8
#define COLSUM_TARGET_BLOCKS 2048 // enough to fill any current GPU several times
#define COLSUM_MIN_ROWS      64   // a tile's rows: at least 8 per thread

enum { COLSUM_BIAS = 0, COLSUM_LN = 1 };

template <int KIND>
__global__ void zoff_colsum_partial_kernel(float *partial, void *g0, void *g1, zoff_dtype g_type,
                                           const void *dout, zoff_dtype dout_type, const float *inp,
                                           const float *mean, const float *rstd, size_t N, int OC,
                                           size_t rows_per_tile, bool direct) {
    __shared__ float sh[2][COLSUM_ROWS][COLSUM_COLS];
    int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * COLSUM_COLS + tx;
    size_t r0 = blockIdx.y * rows_per_tile, r1 = r0 + rows_per_tile < N ? r0 + rows_per_tile : N;
    float a0 = 0.0f, a1 = 0.0f;
    if (c < OC)
        for (size_t r = r0 + ty; r < r1; r += COLSUM_ROWS) {
            size_t i = r * (size_t)OC + c;
            float d = zoff_load_f32(dout, dout_type, i);
            if (KIND == COLSUM_LN) {
                a0 += (inp[i] - mean[r]) * rstd[r] * d;
                a1 += d;
            } else {
                a0 += d;
            }
        }
    sh[0][ty][tx] = a0;
    sh[1][ty][tx] = a1;
    __syncthreads();
    if (ty != 0 || c >= OC) return;
    float s0 = 0.0f, s1 = 0.0f;
    for (int y = 0; y < COLSUM_ROWS; y++) {
        s0 += sh[0][y][tx];
        s1 += sh[1][y][tx];
    }
    if (direct) {
        zoff_store_f32(g0, g_type, c, zoff_load_f32(g0, g_type, c) + s0);
        if (KIND == COLSUM_LN) zoff_store_f32(g1, g_type, c, zoff_load_f32(g1, g_type, c) + s1);
        return;
    }
    partial[(size_t)blockIdx.y * OC + c] = s0;
    if (KIND == COLSUM_LN) partial[((size_t)gridDim.y + blockIdx.y) * OC + c] = s1;
}

__global__ void zoff_colsum_final_kernel(void *g0, void *g1, zoff_dtype g_type,
                                         const float *partial, unsigned tiles, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s0 = 0.0f, s1 = 0.0f;
    for (unsigned t = 0; t < tiles; t++)
        s0 += partial[(size_t)t * OC + c];
    zoff_store_f32(g0, g_type, c, zoff_load_f32(g0, g_type, c) + s0);
    if (!g1) return;
    for (unsigned t = 0; t < tiles; t++)
        s1 += partial[((size_t)tiles + t) * OC + c];
    zoff_store_f32(g1, g_type, c, zoff_load_f32(g1, g_type, c) + s1);
}

template <int KIND>
static int colsum(cuda_stream *s, void *g0, void *g1, zoff_dtype g_type, const void *dout,
                  zoff_dtype dout_type, const float *inp, const float *mean, const float *rstd,
                  size_t N, int OC) {
    const int n_sums = KIND == COLSUM_LN ? 2 : 1;
    size_t col_tiles = ((size_t)OC + COLSUM_COLS - 1) / COLSUM_COLS;
    size_t tiles = (COLSUM_TARGET_BLOCKS + col_tiles - 1) / col_tiles;
    size_t fit = ZOFF_CUDA_STREAM_SCRATCH_FLOATS / ((size_t)n_sums * OC);
    size_t by_rows = (N + COLSUM_MIN_ROWS - 1) / COLSUM_MIN_ROWS;
    if (tiles > fit) tiles = fit;
    if (tiles > by_rows) tiles = by_rows;
    if (tiles < 1) tiles = 1;
    size_t rows_per_tile = (N + tiles - 1) / tiles;
    tiles = (N + rows_per_tile - 1) / rows_per_tile; /* no empty tile */
    bool direct = tiles == 1;
    dim3 grid((unsigned)col_tiles, (unsigned)tiles), block(COLSUM_COLS, COLSUM_ROWS);
    zoff_colsum_partial_kernel<KIND><<<grid, block, 0, s->stream>>>(
        s->scratch, g0, g1, g_type, dout, dout_type, inp, mean, rstd, N, OC, rows_per_tile, direct);
    int rc = zoff_cuda_check(cudaGetLastError(), "column sum kernel launch");
    if (rc || direct) return rc;
    zoff_colsum_final_kernel<<<(unsigned)((OC + 255) / 256), 256, 0, s->stream>>>(
        g0, KIND == COLSUM_LN ? g1 : NULL, g_type, s->scratch, (unsigned)tiles, OC);
    return zoff_cuda_check(cudaGetLastError(), "column sum final kernel launch");
}

extern "C" int zoff_cuda_launch_bias_grad(cuda_stream *s, void *dbias, zoff_dtype g_type,
                                          const void *dout, zoff_dtype dout_type, size_t N,
                                          int OC) {
    return colsum<COLSUM_BIAS>(s, dbias, NULL, g_type, dout, dout_type, NULL, NULL, NULL, N, OC);
}

extern "C" int zoff_cuda_launch_colsum_ln(cuda_stream *s, void *dw, void *db, zoff_dtype g_type,
                                          const float *dout, const float *inp, const float *mean,
                                          const float *rstd, size_t N, int C) {
    return colsum<COLSUM_LN>(s, dw, db, g_type, dout, ZOFF_F32, inp, mean, rstd, N, C);
}
