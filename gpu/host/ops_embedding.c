/* Host token + position embedding, forward and backward. The backward sorts the positions by
 * token id (and by position id), sums each id's rows in fp32 in position order, and adds the
 * sum to the gradient row once: each gradient row has one owner thread, the order is fixed,
 * and a 16-bit gradient is rounded once, however often its token occurs. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <errno.h>
#include <stdlib.h>

typedef struct emb_args {
    float *out; /* fwd */
    void *dwte, *dwpe;
    const int32_t *tokens, *pos;
    const void *wte, *wpe;
    const float *dout;
    zoff_dtype type;
    uint64_t *keys; /* bwd scratch: (B*T) (id << 32 | position) */
    float *acc;     /* bwd scratch: (nt, C) */
    int B, T, C, nt;
} emb_args;

static inline int pos_at(const emb_args *a, int bt) {
    return a->pos ? a->pos[bt] : bt % a->T;
}

static void run_emb_fwd(void *p) {
    emb_args *a = p;
    int B = a->B, T = a->T, C = a->C;
    zoff_dtype t = a->type;
#pragma omp parallel for num_threads(host_threads_for(a->nt, (double)B *T *C)) schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        size_t e = (size_t)a->tokens[bt] * C, pp = (size_t)pos_at(a, bt) * C;
        float *o = a->out + (size_t)bt * C;
        if (t == ZOFF_F32) {
            const float *we = (const float *)a->wte + e;
            const float *wp = a->wpe ? (const float *)a->wpe + pp : NULL;
            for (int i = 0; i < C; i++)
                o[i] = we[i] + (wp ? wp[i] : 0.0f);
        } else {
            for (int i = 0; i < C; i++)
                o[i] = zoff_load_as_f32(a->wte, t, e + (size_t)i) +
                       (a->wpe ? zoff_load_as_f32(a->wpe, t, pp + (size_t)i) : 0.0f);
        }
    }
}

int host_op_embedding_fwd(void *stream, float *out, const int32_t *tokens, const int32_t *pos,
                          const void *wte, const void *wpe, zoff_dtype w_type, int B, int T,
                          int C) {
    emb_args a = {.out = out,
                  .tokens = tokens,
                  .pos = pos,
                  .wte = wte,
                  .wpe = wpe,
                  .type = w_type,
                  .B = B,
                  .T = T,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_EMBEDDING, run_emb_fwd, &a, sizeof a);
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* grad[id] += sum of dout rows whose id is `id`; ids from tokens (by_pos false) or positions. */
static void scatter_rows(emb_args *a, void *grad, bool by_pos) {
    int BT = a->B * a->T, C = a->C;
    for (int bt = 0; bt < BT; bt++) {
        uint32_t id = by_pos ? (uint32_t)pos_at(a, bt) : (uint32_t)a->tokens[bt];
        a->keys[bt] = (uint64_t)id << 32 | (uint32_t)bt;
    }
    qsort(a->keys, (size_t)BT, sizeof *a->keys, cmp_u64);
    int nt = host_threads_for(a->nt, 2.0 * BT * C);
#pragma omp parallel num_threads(nt)
    {
        float *acc = a->acc + (size_t)host_thread_id() * C;
        /* a run of equal ids belongs to the thread whose chunk holds its first entry */
#pragma omp for schedule(static)
        for (int i = 0; i < BT; i++) {
            uint32_t id = (uint32_t)(a->keys[i] >> 32);
            if (i > 0 && (uint32_t)(a->keys[i - 1] >> 32) == id) continue;
            for (int j = 0; j < C; j++)
                acc[j] = 0.0f;
            for (int k = i; k < BT && (uint32_t)(a->keys[k] >> 32) == id; k++) {
                const float *d = a->dout + (size_t)(uint32_t)a->keys[k] * C;
                for (int j = 0; j < C; j++)
                    acc[j] += d[j];
            }
            size_t row = (size_t)id * C;
            for (int j = 0; j < C; j++)
                zoff_store_from_f32(grad, a->type, row + (size_t)j,
                                    zoff_load_as_f32(grad, a->type, row + (size_t)j) + acc[j]);
        }
    }
}

static void run_emb_bwd(void *p) {
    emb_args *a = p;
    scatter_rows(a, a->dwte, false);
    if (a->dwpe) scatter_rows(a, a->dwpe, true);
    free(a->keys);
    free(a->acc);
}

int host_op_embedding_bwd(void *stream, void *dwte, void *dwpe, zoff_dtype g_type,
                          const float *dout, const int32_t *tokens, const int32_t *pos, int B,
                          int T, int C) {
    emb_args a = {.dwte = dwte,
                  .dwpe = dwpe,
                  .tokens = tokens,
                  .pos = pos,
                  .dout = dout,
                  .type = g_type,
                  .B = B,
                  .T = T,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    a.keys = host_kernel_scratch("embedding_bwd", (size_t)B * T * sizeof *a.keys);
    a.acc = host_kernel_scratch("embedding_bwd", (size_t)a.nt * C * sizeof *a.acc);
    int rc = a.keys && a.acc ? host_op_enqueue(stream, HOST_OP_EMBEDDING, run_emb_bwd, &a, sizeof a) : -ENOMEM;
    if (rc) {
        free(a.keys);
        free(a.acc);
    }
    return rc;
}
