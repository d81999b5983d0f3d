// Causal multi-head attention forward/backward, straightforward kernels (the reference
// shape of llm.c's dev/cuda attention kernels, not yet flash-style): scores and softmax per
// (batch, head, query) thread; the backward first forms the score gradient per query row in
// scratch, then gathers dq per (query, channel) and dk, dv per (key, channel) thread, so
// every output element has one writer and the result is deterministic.
#include "gpu/cuda/cuda_backend.h"

__global__ void zoff_attn_fwd_kernel(float *out, float *att, const float *qkv, int B, int T, int C,
                                     int NH) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * NH * T) return;
    int t = idx % T, h = (idx / T) % NH, b = idx / (T * NH), hs = C / NH, C3 = 3 * C;
    float scale = rsqrtf((float)hs);
    const float *base = qkv + (size_t)b * T * C3;
    const float *q = base + (size_t)t * C3 + h * hs;
    float *row = att + (((size_t)b * NH + h) * T + t) * T;
    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        const float *k = base + (size_t)t2 * C3 + C + h * hs;
        float d = 0.0f;
        for (int i = 0; i < hs; i++)
            d += q[i] * k[i];
        d *= scale;
        row[t2] = d;
        maxv = fmaxf(maxv, d);
    }
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        float e = expf(row[t2] - maxv);
        row[t2] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= t; t2++)
        row[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++)
        row[t2] = 0.0f;
    float *o = out + ((size_t)b * T + t) * C + h * hs;
    for (int i = 0; i < hs; i++) {
        float acc = 0.0f;
        for (int t2 = 0; t2 <= t; t2++)
            acc += row[t2] * base[(size_t)t2 * C3 + 2 * C + h * hs + i];
        o[i] = acc;
    }
}

// dpre[t, t2] = att * (datt - sum(att * datt)) * scale, datt[t2] = dout[t] . v[t2]
__global__ void zoff_attn_bwd_scores_kernel(float *dpre, const float *dout, const float *qkv,
                                            const float *att, int B, int T, int C, int NH) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * NH * T) return;
    int t = idx % T, h = (idx / T) % NH, b = idx / (T * NH), hs = C / NH, C3 = 3 * C;
    float scale = rsqrtf((float)hs);
    const float *base = qkv + (size_t)b * T * C3;
    const float *dy = dout + ((size_t)b * T + t) * C + h * hs;
    const float *a = att + (((size_t)b * NH + h) * T + t) * T;
    float *d = dpre + (((size_t)b * NH + h) * T + t) * T;
    float s = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        const float *v = base + (size_t)t2 * C3 + 2 * C + h * hs;
        float x = 0.0f;
        for (int i = 0; i < hs; i++)
            x += dy[i] * v[i];
        d[t2] = x;
        s += a[t2] * x;
    }
    for (int t2 = 0; t2 <= t; t2++)
        d[t2] = a[t2] * (d[t2] - s) * scale;
    for (int t2 = t + 1; t2 < T; t2++)
        d[t2] = 0.0f;
}

// dq[t, i] += sum_{t2 <= t} dpre[t, t2] k[t2, i]
__global__ void zoff_attn_bwd_dq_kernel(float *dqkv, const float *dpre, const float *qkv, int B,
                                        int T, int C, int NH) {
    int hs = C / NH, C3 = 3 * C;
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * hs) return;
    int i = (int)(idx % hs), t = (int)(idx / hs % T), h = (int)(idx / ((size_t)hs * T) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    const float *base = qkv + (size_t)b * T * C3;
    const float *d = dpre + (((size_t)b * NH + h) * T + t) * T;
    float acc = 0.0f;
    for (int t2 = 0; t2 <= t; t2++)
        acc += d[t2] * base[(size_t)t2 * C3 + C + h * hs + i];
    dqkv[((size_t)b * T + t) * C3 + h * hs + i] += acc;
}

// dk[t2, i] += sum_{t >= t2} dpre[t, t2] q[t, i]; dv[t2, i] += sum_{t >= t2} att[t, t2] dy[t, i]
__global__ void zoff_attn_bwd_dkv_kernel(float *dqkv, const float *dpre, const float *dout,
                                         const float *qkv, const float *att, int B, int T, int C,
                                         int NH) {
    int hs = C / NH, C3 = 3 * C;
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * hs) return;
    int i = (int)(idx % hs), t2 = (int)(idx / hs % T), h = (int)(idx / ((size_t)hs * T) % NH);
    int b = (int)(idx / ((size_t)hs * T * NH));
    const float *base = qkv + (size_t)b * T * C3;
    const float *d = dpre + ((size_t)b * NH + h) * T * T;
    const float *a = att + ((size_t)b * NH + h) * T * T;
    float dk = 0.0f, dv = 0.0f;
    for (int t = t2; t < T; t++) {
        dk += d[(size_t)t * T + t2] * base[(size_t)t * C3 + h * hs + i];
        dv += a[(size_t)t * T + t2] * dout[((size_t)b * T + t) * C + h * hs + i];
    }
    float *g = dqkv + ((size_t)b * T + t2) * C3 + h * hs + i;
    g[C] += dk;
    g[2 * C] += dv;
}

extern "C" int zoff_cuda_launch_attention_fwd(cuda_stream *s, float *out, float *att,
                                              const float *qkv, int B, int T, int C, int NH) {
    int n = B * NH * T;
    zoff_attn_fwd_kernel<<<(n + 127) / 128, 128, 0, s->stream>>>(out, att, qkv, B, T, C, NH);
    return zoff_cuda_check(cudaGetLastError(), "attention_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_attention_bwd(cuda_stream *s, float *dqkv, float *scratch,
                                              const float *dout, const float *qkv, const float *att,
                                              int B, int T, int C, int NH) {
    int n = B * NH * T;
    zoff_attn_bwd_scores_kernel<<<(n + 127) / 128, 128, 0, s->stream>>>(scratch, dout, qkv, att, B,
                                                                        T, C, NH);
    int rc = zoff_cuda_check(cudaGetLastError(), "attention_bwd scores kernel launch");
    if (rc) return rc;
    size_t m = (size_t)B * T * C;
    unsigned blocks = (unsigned)((m + 255) / 256);
    zoff_attn_bwd_dq_kernel<<<blocks, 256, 0, s->stream>>>(dqkv, scratch, qkv, B, T, C, NH);
    if ((rc = zoff_cuda_check(cudaGetLastError(), "attention_bwd dq kernel launch"))) return rc;
    zoff_attn_bwd_dkv_kernel<<<blocks, 256, 0, s->stream>>>(dqkv, scratch, dout, qkv, att, B, T, C,
                                                            NH);
    return zoff_cuda_check(cudaGetLastError(), "attention_bwd dkv kernel launch");
}
