// Fused causal attention (see zoff_dev_op_flash_attention_fwd in gpu/device.h): nothing of size
// T*T is stored and nothing is allocated; the backward recomputes the probabilities from the
// forward's log-sum-exp, as FlashAttention-2 does, without atomics:
//   forward: one block per (batch, head, tile of FA_ROWS queries); key/value tiles of FA_TILE
//     rows pass through shared memory (as fp32); each warp keeps the online-softmax state (max,
//     sum, output accumulator) of FA_RPW query rows, lane j scoring key j of the tile;
//   backward: delta = rowsum(dout * out) per query row (one warp per row), then dq per tile of
//     query rows (the forward's loop, with dS = P * (dP - delta) in place of P) and dk, dv per
//     tile of key rows (lane i taking query i of a query tile, over every query head of the
//     key/value head's group). Each output element has one owner thread and a fixed summation
//     order, so results are deterministic; each kernel does O(T^2 * HS) work.
// Shared rows have an odd stride (HS | 1), so the lanes of a warp reading 32 different rows at
// the same column hit 32 different banks. A lane owns head dimensions lane + 32 * i, i < DPL;
// DPL (1, 2, 4 or 8) is a template parameter, so head sizes up to 256 are served. Everything is
// computed in fp32; 16-bit outputs are rounded once.
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"
extern "C" {
#include "core/log.h" // zoff_fail
}

#include <errno.h>

#define FA_WARPS   8
#define FA_THREADS (32 * FA_WARPS)
#define FA_RPW     2                   // rows (queries, or keys in dk/dv) per warp
#define FA_ROWS    (FA_WARPS * FA_RPW) // rows per block
#define FA_TILE    32                  // keys (fwd, dq) or queries (dk/dv) per tile: one per lane
#define FA_MAX_HS  256
#define FULL       0xffffffffu

struct fa_params {
    int B, T, NH, NKV, HS, group, ks; // ks: shared row stride
    size_t q_stride, kv_stride;
    float scale;
    const int32_t *doc_start;
};

// The first key query t of row b sees: its sample's first position, clamped to [0, t].
__device__ __forceinline__ int fa_first_key(const fa_params &p, int b, int t) {
    if (!p.doc_start) return 0;
    int lo = p.doc_start[(size_t)b * p.T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

// rows [t0, t0 + n) of a (B, T, heads, HS) tensor with row stride `stride`, head `h`, into
// shared rows of stride ks as fp32; rows past T read as zeros (they are masked, and a zero never
// turns a masked product into NaN).
__device__ __forceinline__ void fa_load_rows(float *dst, const void *src, zoff_dtype type,
                                             size_t stride, int b, int h, int t0, int n,
                                             const fa_params &p) {
    for (int e = threadIdx.x; e < n * p.HS; e += FA_THREADS) {
        int r = e / p.HS, d = e - r * p.HS, t = t0 + r;
        dst[r * p.ks + d] =
            t < p.T
                ? zoff_load_f32(src, type, ((size_t)b * p.T + t) * stride + (size_t)h * p.HS + d)
                : 0.0f;
    }
}

__device__ __forceinline__ float fa_dot(const float *x, const float *y, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++)
        s = fmaf(x[d], y[d], s);
    return s;
}

// The lowest first key among queries [t0, t0 + n): where a tile of queries starts reading keys.
__device__ __forceinline__ int fa_block_first_key(const fa_params &p, int b, int t0, int n) {
    int lo = t0;
    for (int r = 0; r < n && t0 + r < p.T; r++) {
        int f = fa_first_key(p, b, t0 + r);
        lo = f < lo ? f : lo;
    }
    return lo / FA_TILE * FA_TILE;
}

// A block's (batch, head, tile of FA_ROWS rows), the heaviest tiles first: under the causal
// mask the late query tiles (late_first) and the early key tiles see the most pairs.
__device__ __forceinline__ void fa_block_coords(const fa_params &p, int heads, bool late_first,
                                                int *b, int *h, int *tile) {
    int tiles = (p.T + FA_ROWS - 1) / FA_ROWS, bid = blockIdx.x;
    *tile = late_first ? tiles - 1 - bid % tiles : bid % tiles;
    *h = bid / tiles % heads;
    *b = bid / tiles / heads;
}

template <int DPL>
__global__ void zoff_flash_fwd_kernel(void *out, float *lse, const void *q, const void *k,
                                      const void *v, zoff_dtype type, fa_params p) {
    extern __shared__ float sm[];
    float *qs = sm, *ks = qs + FA_ROWS * p.ks, *vs = ks + FA_TILE * p.ks;
    int b, h, qt, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    fa_block_coords(p, p.NH, true, &b, &h, &qt);
    int kvh = h / p.group, t0 = qt * FA_ROWS;
    fa_load_rows(qs, q, type, p.q_stride, b, h, t0, FA_ROWS, p);

    float m[FA_RPW], l[FA_RPW], o[FA_RPW][DPL];
    int tq[FA_RPW], lo[FA_RPW];
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        tq[r] = t0 + warp * FA_RPW + r;
        lo[r] = tq[r] < p.T ? fa_first_key(p, b, tq[r]) : 0;
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++)
            o[r][i] = 0.0f;
    }
    int kend = min(p.T, t0 + FA_ROWS);
    for (int j0 = fa_block_first_key(p, b, t0, FA_ROWS); j0 < kend; j0 += FA_TILE) {
        __syncthreads(); // the previous tile is consumed (and, at first, qs is written)
        fa_load_rows(ks, k, type, p.kv_stride, b, kvh, j0, FA_TILE, p);
        fa_load_rows(vs, v, type, p.kv_stride, b, kvh, j0, FA_TILE, p);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < FA_RPW; r++) {
            if (tq[r] >= p.T) continue; // warp-uniform
            int j = j0 + lane;
            float sc = -INFINITY;
            if (j <= tq[r] && j >= lo[r])
                sc = fa_dot(qs + (warp * FA_RPW + r) * p.ks, ks + lane * p.ks, p.HS) * p.scale;
            float mt = zoff_warp_max(sc);
            if (mt == -INFINITY) continue; // no key of this tile is visible to the row
            float mn = fmaxf(m[r], mt), corr = expf(m[r] - mn), pj = expf(sc - mn);
            l[r] = l[r] * corr + zoff_warp_sum(pj);
            m[r] = mn;
#pragma unroll
            for (int i = 0; i < DPL; i++)
                o[r][i] *= corr;
            for (int jj = 0; jj < FA_TILE; jj++) {
                float pjj = __shfl_sync(FULL, pj, jj);
                const float *vrow = vs + jj * p.ks;
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    int d = lane + 32 * i;
                    if (d < p.HS) o[r][i] = fmaf(pjj, vrow[d], o[r][i]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        if (tq[r] >= p.T) continue;
        size_t orow = (((size_t)b * p.T + tq[r]) * p.NH + h) * p.HS;
        float inv = 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < p.HS) zoff_store_f32(out, type, orow + d, o[r][i] * inv);
        }
        if (lane == 0) lse[((size_t)b * p.NH + h) * p.T + tq[r]] = m[r] + logf(l[r]);
    }
}

// delta (B,NH,T) = rowsum(dout * out), one warp per (b, t, h) row of the (B,T,NH,HS) tensors.
__global__ void zoff_flash_delta_kernel(float *delta, const void *dout, const void *out,
                                        zoff_dtype type, fa_params p) {
    size_t row = blockIdx.x * (size_t)FA_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= (size_t)p.B * p.T * p.NH) return;
    size_t base = row * p.HS;
    float s = 0.0f;
    for (int d = lane; d < p.HS; d += 32)
        s = fmaf(zoff_load_f32(dout, type, base + d), zoff_load_f32(out, type, base + d), s);
    s = zoff_warp_sum(s);
    int h = (int)(row % p.NH);
    size_t bt = row / p.NH, b = bt / p.T, t = bt % p.T;
    if (lane == 0) delta[(b * p.NH + h) * p.T + t] = s;
}

// dq rows of one (b, h, query tile): dq[t] = sum_j dS[t,j] k[j], dS = P (dP - delta) * scale.
template <int DPL>
__global__ void zoff_flash_dq_kernel(void *dq, const void *dout, const float *lse,
                                     const float *delta, const void *q, const void *k,
                                     const void *v, zoff_dtype type, fa_params p) {
    extern __shared__ float sm[];
    float *qs = sm, *dos = qs + FA_ROWS * p.ks, *ks = dos + FA_ROWS * p.ks;
    float *vs = ks + FA_TILE * p.ks;
    int b, h, qt, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    fa_block_coords(p, p.NH, true, &b, &h, &qt);
    int kvh = h / p.group, t0 = qt * FA_ROWS;
    fa_load_rows(qs, q, type, p.q_stride, b, h, t0, FA_ROWS, p);
    fa_load_rows(dos, dout, type, (size_t)p.NH * p.HS, b, h, t0, FA_ROWS, p);

    float acc[FA_RPW][DPL], lse_r[FA_RPW], delta_r[FA_RPW];
    int tq[FA_RPW], lo[FA_RPW];
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        tq[r] = t0 + warp * FA_RPW + r;
        bool in = tq[r] < p.T;
        size_t hrow = ((size_t)b * p.NH + h) * p.T + tq[r];
        lo[r] = in ? fa_first_key(p, b, tq[r]) : 0;
        lse_r[r] = in ? lse[hrow] : 0.0f;
        delta_r[r] = in ? delta[hrow] : 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++)
            acc[r][i] = 0.0f;
    }
    int kend = min(p.T, t0 + FA_ROWS);
    for (int j0 = fa_block_first_key(p, b, t0, FA_ROWS); j0 < kend; j0 += FA_TILE) {
        __syncthreads();
        fa_load_rows(ks, k, type, p.kv_stride, b, kvh, j0, FA_TILE, p);
        fa_load_rows(vs, v, type, p.kv_stride, b, kvh, j0, FA_TILE, p);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < FA_RPW; r++) {
            int j = j0 + lane;
            bool vis = tq[r] < p.T && j <= tq[r] && j >= lo[r];
            if (!__any_sync(FULL, vis)) continue;
            float ds = 0.0f;
            if (vis) {
                const float *qrow = qs + (warp * FA_RPW + r) * p.ks;
                const float *dorow = dos + (warp * FA_RPW + r) * p.ks;
                float pj = expf(fa_dot(qrow, ks + lane * p.ks, p.HS) * p.scale - lse_r[r]);
                ds = pj * (fa_dot(dorow, vs + lane * p.ks, p.HS) - delta_r[r]) * p.scale;
            }
            for (int jj = 0; jj < FA_TILE; jj++) {
                float dsj = __shfl_sync(FULL, ds, jj);
                const float *krow = ks + jj * p.ks;
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    int d = lane + 32 * i;
                    if (d < p.HS) acc[r][i] = fmaf(dsj, krow[d], acc[r][i]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        if (tq[r] >= p.T) continue;
        size_t qoff = ((size_t)b * p.T + tq[r]) * p.q_stride + (size_t)h * p.HS;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < p.HS) zoff_store_f32(dq, type, qoff + d, acc[r][i]);
        }
    }
}

// dk, dv rows of one (b, kv head, key tile), over the group's query heads and every query that
// can see the keys: dv[j] = sum_t P[t,j] dout[t], dk[j] = sum_t dS[t,j] q[t].
template <int DPL>
__global__ void zoff_flash_dkv_kernel(void *dk, void *dv, const void *dout, const float *lse,
                                      const float *delta, const void *q, const void *k,
                                      const void *v, zoff_dtype type, fa_params p) {
    extern __shared__ float sm[];
    float *ks = sm, *vs = ks + FA_ROWS * p.ks, *qs = vs + FA_ROWS * p.ks;
    float *dos = qs + FA_TILE * p.ks, *lse_s = dos + FA_TILE * p.ks, *delta_s = lse_s + FA_TILE;
    int *lo_s = (int *)(delta_s + FA_TILE);
    int b, kvh, kt, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    fa_block_coords(p, p.NKV, false, &b, &kvh, &kt);
    int j0 = kt * FA_ROWS;
    fa_load_rows(ks, k, type, p.kv_stride, b, kvh, j0, FA_ROWS, p);
    fa_load_rows(vs, v, type, p.kv_stride, b, kvh, j0, FA_ROWS, p);

    float gk[FA_RPW][DPL], gv[FA_RPW][DPL];
    int jk[FA_RPW];
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        jk[r] = j0 + warp * FA_RPW + r;
#pragma unroll
        for (int i = 0; i < DPL; i++)
            gk[r][i] = gv[r][i] = 0.0f;
    }
    for (int h = kvh * p.group; h < (kvh + 1) * p.group; h++)
        for (int i0 = j0 / FA_TILE * FA_TILE; i0 < p.T; i0 += FA_TILE) {
            __syncthreads(); // the previous query tile is consumed (and, at first, ks, vs written)
            fa_load_rows(qs, q, type, p.q_stride, b, h, i0, FA_TILE, p);
            fa_load_rows(dos, dout, type, (size_t)p.NH * p.HS, b, h, i0, FA_TILE, p);
            if (threadIdx.x < FA_TILE) {
                int t = i0 + threadIdx.x;
                size_t hrow = ((size_t)b * p.NH + h) * p.T + t;
                bool in = t < p.T;
                lse_s[threadIdx.x] = in ? lse[hrow] : 0.0f;
                delta_s[threadIdx.x] = in ? delta[hrow] : 0.0f;
                lo_s[threadIdx.x] = in ? fa_first_key(p, b, t) : p.T; // past T: sees nothing
            }
            __syncthreads();
            int t = i0 + lane;
#pragma unroll
            for (int r = 0; r < FA_RPW; r++) {
                int j = jk[r];
                bool vis = j < p.T && t < p.T && t >= j && j >= lo_s[lane];
                if (!__any_sync(FULL, vis)) continue;
                float pt = 0.0f, ds = 0.0f;
                if (vis) {
                    const float *krow = ks + (warp * FA_RPW + r) * p.ks;
                    const float *vrow = vs + (warp * FA_RPW + r) * p.ks;
                    pt = expf(fa_dot(qs + lane * p.ks, krow, p.HS) * p.scale - lse_s[lane]);
                    ds = pt * (fa_dot(dos + lane * p.ks, vrow, p.HS) - delta_s[lane]) * p.scale;
                }
                for (int ii = 0; ii < FA_TILE; ii++) {
                    float pi = __shfl_sync(FULL, pt, ii), dsi = __shfl_sync(FULL, ds, ii);
                    const float *qrow = qs + ii * p.ks, *dorow = dos + ii * p.ks;
#pragma unroll
                    for (int i = 0; i < DPL; i++) {
                        int d = lane + 32 * i;
                        if (d < p.HS) {
                            gv[r][i] = fmaf(pi, dorow[d], gv[r][i]);
                            gk[r][i] = fmaf(dsi, qrow[d], gk[r][i]);
                        }
                    }
                }
            }
        }
#pragma unroll
    for (int r = 0; r < FA_RPW; r++) {
        if (jk[r] >= p.T) continue;
        size_t off = ((size_t)b * p.T + jk[r]) * p.kv_stride + (size_t)kvh * p.HS;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < p.HS) {
                zoff_store_f32(dk, type, off + d, gk[r][i]);
                zoff_store_f32(dv, type, off + d, gv[r][i]);
            }
        }
    }
}

static int fa_params_from(const zoff_dev_attn_shape *sh, const int32_t *doc_start, fa_params *p) {
    if (sh->HS > FA_MAX_HS)
        return zoff_fail(-ENOTSUP, "cuda",
                         "flash attention: head size %d is above the %d this backend serves",
                         sh->HS, FA_MAX_HS);
    p->B = sh->B;
    p->T = sh->T;
    p->NH = sh->NH;
    p->NKV = sh->NKV;
    p->HS = sh->HS;
    p->group = sh->NH / sh->NKV;
    p->ks = sh->HS | 1;
    p->q_stride = sh->q_stride;
    p->kv_stride = sh->kv_stride;
    p->scale = sh->scale;
    p->doc_start = doc_start;
    return 0;
}

static int fa_dpl(int HS) {
    return HS <= 32 ? 1 : HS <= 64 ? 2 : HS <= 128 ? 4 : 8;
}

// Launches kernel<<<blocks, FA_THREADS, smem>>>, first raising the kernel's dynamic shared
// memory limit when it needs more than the default 48 KiB (head sizes above ~150).
template <typename K, typename... Args>
static int fa_launch(cuda_stream *s, K kernel, unsigned blocks, size_t smem, const char *what,
                     Args... args) {
    if (smem > 48 * 1024) {
        int rc = zoff_cuda_check(cudaFuncSetAttribute((const void *)kernel,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      (int)smem),
                                 what);
        if (rc) return rc;
    }
    kernel<<<blocks, FA_THREADS, smem, s->stream>>>(args...);
    return zoff_cuda_check(cudaGetLastError(), what);
}

static unsigned fa_blocks(const fa_params &p, int heads) {
    return (unsigned)((size_t)p.B * heads * ((p.T + FA_ROWS - 1) / FA_ROWS));
}

template <int DPL>
static int fa_fwd(cuda_stream *s, void *out, float *lse, const void *q, const void *k,
                  const void *v, zoff_dtype type, const fa_params &p) {
    size_t smem = (size_t)(FA_ROWS + 2 * FA_TILE) * p.ks * sizeof(float);
    return fa_launch(s, zoff_flash_fwd_kernel<DPL>, fa_blocks(p, p.NH), smem,
                     "flash_attention_fwd kernel launch", out, lse, q, k, v, type, p);
}

template <int DPL>
static int fa_bwd(cuda_stream *s, void *dq, void *dk, void *dv, const float *delta,
                  const void *dout, const float *lse, const void *q, const void *k, const void *v,
                  zoff_dtype type, const fa_params &p) {
    size_t smem = (size_t)(2 * FA_ROWS + 2 * FA_TILE) * p.ks * sizeof(float);
    int rc =
        fa_launch(s, zoff_flash_dq_kernel<DPL>, fa_blocks(p, p.NH), smem,
                  "flash_attention_bwd dq kernel launch", dq, dout, lse, delta, q, k, v, type, p);
    if (rc) return rc;
    return fa_launch(s, zoff_flash_dkv_kernel<DPL>, fa_blocks(p, p.NKV),
                     smem + 3 * FA_TILE * sizeof(float), "flash_attention_bwd dkv kernel launch",
                     dk, dv, dout, lse, delta, q, k, v, type, p);
}

extern "C" int zoff_cuda_launch_flash_attention_fwd(cuda_stream *s, void *out, float *lse,
                                                    const void *q, const void *k, const void *v,
                                                    zoff_dtype type, const int32_t *doc_start,
                                                    const zoff_dev_attn_shape *shape) {
    fa_params p;
    int rc = fa_params_from(shape, doc_start, &p);
    if (rc) return rc;
    switch (fa_dpl(p.HS)) {
    case 1:
        return fa_fwd<1>(s, out, lse, q, k, v, type, p);
    case 2:
        return fa_fwd<2>(s, out, lse, q, k, v, type, p);
    case 4:
        return fa_fwd<4>(s, out, lse, q, k, v, type, p);
    default:
        return fa_fwd<8>(s, out, lse, q, k, v, type, p);
    }
}

extern "C" int zoff_cuda_launch_flash_attention_bwd(cuda_stream *s, void *dq, void *dk, void *dv,
                                                    float *delta, const void *dout, const void *out,
                                                    const float *lse, const void *q, const void *k,
                                                    const void *v, zoff_dtype type,
                                                    const int32_t *doc_start,
                                                    const zoff_dev_attn_shape *shape) {
    fa_params p;
    int rc = fa_params_from(shape, doc_start, &p);
    if (rc) return rc;
    size_t rows = (size_t)p.B * p.T * p.NH;
    zoff_flash_delta_kernel<<<(unsigned)((rows + FA_WARPS - 1) / FA_WARPS), FA_THREADS, 0,
                              s->stream>>>(delta, dout, out, type, p);
    if ((rc = zoff_cuda_check(cudaGetLastError(), "flash_attention_bwd delta kernel launch")))
        return rc;
    switch (fa_dpl(p.HS)) {
    case 1:
        return fa_bwd<1>(s, dq, dk, dv, delta, dout, lse, q, k, v, type, p);
    case 2:
        return fa_bwd<2>(s, dq, dk, dv, delta, dout, lse, q, k, v, type, p);
    case 4:
        return fa_bwd<4>(s, dq, dk, dv, delta, dout, lse, q, k, v, type, p);
    default:
        return fa_bwd<8>(s, dq, dk, dv, delta, dout, lse, q, k, v, type, p);
    }
}
