/* Host causal multi-head attention, forward and backward, as in llm.c's CPU reference:
 * scores = q k^T / sqrt(hs) over t2 <= t, softmax in fp32, out = att v. Work is split over
 * (batch, head) pairs; every pair reads and writes only its own slices of qkv/dqkv, att and
 * scratch, so threads never share an output element. */
#include "gpu/host/host_parallel.h"

#include <math.h>
#include <string.h>

typedef struct attn_args {
    float *out, *att, *scratch; /* fwd: out, att; bwd: out = dqkv, scratch */
    const float *qkv, *dout, *catt;
    int B, T, C, NH, nt;
} attn_args;

static void run_attn_fwd(void *p) {
    attn_args *a = p;
    int B = a->B, T = a->T, C = a->C, NH = a->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int pairs = B * NH;
    double work = (double)B * NH * T * T * hs * 2;
#pragma omp parallel for num_threads(host_threads_for(a->nt, work)) schedule(static)
    for (int bh = 0; bh < pairs; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *base = a->qkv + (size_t)b * T * C3;
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3 + h * hs;
            float *row = a->att + (((size_t)b * NH + h) * T + t) * T;
            float maxv = -INFINITY;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *k = base + (size_t)t2 * C3 + C + h * hs;
                float dot = 0.0f;
                for (int i = 0; i < hs; i++)
                    dot += q[i] * k[i];
                dot *= scale;
                row[t2] = dot;
                if (dot > maxv) maxv = dot;
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
            float *o = a->out + ((size_t)b * T + t) * C + h * hs;
            for (int i = 0; i < hs; i++)
                o[i] = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                float w = row[t2];
                for (int i = 0; i < hs; i++)
                    o[i] += w * v[i];
            }
        }
    }
}

int host_op_attention_fwd(void *stream, float *out, float *att, const float *qkv, int B, int T,
                          int C, int NH) {
    attn_args a = {.out = out,
                   .att = att,
                   .qkv = qkv,
                   .B = B,
                   .T = T,
                   .C = C,
                   .NH = NH,
                   .nt = host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_ATTENTION, run_attn_fwd, &a, sizeof a);
}

static void run_attn_bwd(void *p) {
    attn_args *a = p;
    int B = a->B, T = a->T, C = a->C, NH = a->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int pairs = B * NH;
    double work = (double)B * NH * T * T * hs * 4;
#pragma omp parallel for num_threads(host_threads_for(a->nt, work)) schedule(static)
    for (int bh = 0; bh < pairs; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *base = a->qkv + (size_t)b * T * C3;
        float *dbase = a->out + (size_t)b * T * C3;
        for (int t = 0; t < T; t++) {
            const float *att = a->catt + (((size_t)b * NH + h) * T + t) * T;
            float *dpre = a->scratch + (((size_t)b * NH + h) * T + t) * T;
            const float *dy = a->dout + ((size_t)b * T + t) * C + h * hs;
            const float *q = base + (size_t)t * C3 + h * hs;
            float *dq = dbase + (size_t)t * C3 + h * hs;
            /* datt[t2] = dy . v[t2]; dv[t2] += att[t2] dy */
            float s = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                float *dv = dbase + (size_t)t2 * C3 + 2 * C + h * hs;
                float d = 0.0f, w = att[t2];
                for (int i = 0; i < hs; i++) {
                    d += dy[i] * v[i];
                    dv[i] += w * dy[i];
                }
                dpre[t2] = d;
                s += w * d;
            }
            /* softmax backward, then through the scaled dot products */
            for (int t2 = 0; t2 <= t; t2++) {
                float g = att[t2] * (dpre[t2] - s) * scale;
                dpre[t2] = g;
                const float *k = base + (size_t)t2 * C3 + C + h * hs;
                float *dk = dbase + (size_t)t2 * C3 + C + h * hs;
                for (int i = 0; i < hs; i++) {
                    dq[i] += g * k[i];
                    dk[i] += g * q[i];
                }
            }
            for (int t2 = t + 1; t2 < T; t2++)
                dpre[t2] = 0.0f;
        }
    }
}

int host_op_attention_bwd(void *stream, float *dqkv, float *scratch, const float *dout,
                          const float *qkv, const float *att, int B, int T, int C, int NH) {
    attn_args a = {.out = dqkv,
                   .scratch = scratch,
                   .qkv = qkv,
                   .dout = dout,
                   .catt = att,
                   .B = B,
                   .T = T,
                   .C = C,
                   .NH = NH,
                   .nt = host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_ATTENTION, run_attn_bwd, &a, sizeof a);
}
