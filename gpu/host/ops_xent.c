/* Host softmax + cross-entropy over the vocabulary, forward and backward, in fp32 with the
 * max subtracted. The loss is computed from the log-sum-exp (not log of a rounded
 * probability), so it stays finite for confident predictions. Rows split across threads.
 * The fused form (the models' chunked loss) never stores probabilities: loss and gradient
 * come from the row's max and sum of exponentials, with ignored targets (< 0) contributing
 * nothing. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <math.h>

typedef struct xent_args {
    float *probs, *losses;
    const float *logits;
    const int32_t *targets;
    float dloss;
    size_t N;
    int V, nt;
} xent_args;

static void run_xent_fwd(void *p) {
    xent_args *a = p;
    int V = a->V;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 20.0 * a->N * V)) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->logits + r * (size_t)V;
        float *pr = a->probs + r * (size_t)V;
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++)
            maxv = x[i] > maxv ? x[i] : maxv;
        float xt = a->targets ? x[a->targets[r]] : 0.0f; /* before probs may overwrite it */
        float sum = 0.0f;
        for (int i = 0; i < V; i++) {
            float e = expf(x[i] - maxv);
            pr[i] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int i = 0; i < V; i++)
            pr[i] *= inv;
        if (a->targets) a->losses[r] = logf(sum) + maxv - xt;
    }
}

int host_op_softmax_xent_fwd(void *stream, float *probs, float *losses, const float *logits,
                             const int32_t *targets, size_t N, int V) {
    xent_args a = {probs, losses, logits, targets, 0.0f, N, V, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_XENT, run_xent_fwd, &a, sizeof a);
}

static void run_xent_bwd(void *p) {
    xent_args *a = p;
    int V = a->V;
    float dl = a->dloss;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 2.0 * a->N * V)) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *pr = a->logits + r * (size_t)V;
        float *d = a->probs + r * (size_t)V;
        for (int i = 0; i < V; i++)
            d[i] = pr[i] * dl;
        d[a->targets[r]] -= dl;
    }
}

int host_op_softmax_xent_bwd(void *stream, float *dlogits, const float *probs,
                             const int32_t *targets, float dloss, size_t N, int V) {
    xent_args a = {dlogits, NULL, probs, targets, dloss, N, V, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_XENT, run_xent_bwd, &a, sizeof a);
}

typedef struct xent_fused_args {
    float *losses;
    void *dlogits;
    zoff_dtype d_type;
    const float *logits;
    const int32_t *targets;
    float dloss;
    size_t N;
    int V, nt;
} xent_fused_args;

static void run_xent_fused(void *p) {
    xent_fused_args *a = p;
    int V = a->V;
    float dl = a->dloss;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 20.0 * a->N * V)) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->logits + r * (size_t)V;
        int t = a->targets[r];
        size_t row = r * (size_t)V;
        if (t < 0) { /* ignored: no loss, no gradient */
            a->losses[r] = 0.0f;
            if (a->dlogits)
                for (int i = 0; i < V; i++)
                    zoff_store_from_f32(a->dlogits, a->d_type, row + (size_t)i, 0.0f);
            continue;
        }
        float maxv = -INFINITY;
        for (int i = 0; i < V; i++)
            maxv = x[i] > maxv ? x[i] : maxv;
        float xt = x[t]; /* before the gradient may overwrite it */
        float sum = 0.0f;
        if (a->dlogits && a->d_type == ZOFF_F32) {
            /* the exponentials kept in the gradient's row (it may be the logits' own: each
             * element is read before it is written), so each is computed once */
            float *d = (float *)a->dlogits + row;
            for (int i = 0; i < V; i++) {
                float e = expf(x[i] - maxv);
                d[i] = e;
                sum += e;
            }
            a->losses[r] = logf(sum) + maxv - xt;
            float inv = dl / sum;
            for (int i = 0; i < V; i++)
                d[i] *= inv;
            d[t] -= dl;
            continue;
        }
        for (int i = 0; i < V; i++)
            sum += expf(x[i] - maxv);
        a->losses[r] = logf(sum) + maxv - xt;
        if (!a->dlogits) continue;
        float inv = dl / sum; /* a 16-bit gradient: rounded once per element */
        for (int i = 0; i < V; i++)
            zoff_store_from_f32(a->dlogits, a->d_type, row + (size_t)i,
                                expf(x[i] - maxv) * inv - (i == t ? dl : 0.0f));
    }
}

int host_op_xent_fused(void *stream, float *losses, void *dlogits, zoff_dtype d_type,
                       const float *logits, const int32_t *targets, float dloss, size_t N, int V) {
    xent_fused_args a = {losses, dlogits, d_type, logits,
                         targets, dloss,   N,      V,
                         host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_XENT, run_xent_fused, &a, sizeof a);
}
