/* Host token + position embedding, forward and backward. The backward splits the token
 * table's gradient by channel blocks (every thread visits all positions but owns its
 * columns) and the position gradient by position, so there are no write races. */
#include "gpu/host/host_parallel.h"

typedef struct emb_args {
    float *out, *dwpe; /* fwd: out; bwd: out = dwte */
    const int32_t *tokens;
    const float *wte, *wpe, *dout;
    int B, T, C, nt;
} emb_args;

static void run_emb_fwd(void *p) {
    emb_args *a = p;
    int B = a->B, T = a->T, C = a->C;
#pragma omp parallel for num_threads(host_threads_for(a->nt, (double)B *T *C)) schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        const float *e = a->wte + (size_t)a->tokens[bt] * C, *pp = a->wpe + (size_t)t * C;
        float *o = a->out + (size_t)bt * C;
        for (int i = 0; i < C; i++)
            o[i] = e[i] + pp[i];
    }
}

int host_op_embedding_fwd(void *stream, float *out, const int32_t *tokens, const float *wte,
                          const float *wpe, int B, int T, int C) {
    emb_args a = {.out = out,
                  .tokens = tokens,
                  .wte = wte,
                  .wpe = wpe,
                  .B = B,
                  .T = T,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_emb_fwd, &a, sizeof a);
}

static void run_emb_bwd(void *p) {
    emb_args *a = p;
    int B = a->B, T = a->T, C = a->C, nblk = (C + 63) / 64;
    int nt = host_threads_for(a->nt, 2.0 * B * T * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < C ? j0 + 64 : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = a->dout + (size_t)bt * C;
            float *g = a->out + (size_t)a->tokens[bt] * C;
            for (int j = j0; j < j1; j++)
                g[j] += d[j];
        }
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < T; t++) {
        float *g = a->dwpe + (size_t)t * C;
        for (int b = 0; b < B; b++) {
            const float *d = a->dout + ((size_t)b * T + t) * C;
            for (int j = 0; j < C; j++)
                g[j] += d[j];
        }
    }
}

int host_op_embedding_bwd(void *stream, float *dwte, float *dwpe, const float *dout,
                          const int32_t *tokens, int B, int T, int C) {
    emb_args a = {.out = dwte,
                  .dwpe = dwpe,
                  .tokens = tokens,
                  .dout = dout,
                  .B = B,
                  .T = T,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_emb_bwd, &a, sizeof a);
}
