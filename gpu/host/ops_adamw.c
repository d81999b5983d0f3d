/* Host AdamW on fp32 parameters and state: the reference trainer's optimizer step when the
 * offload engine does not take the step over. Elementwise, split across threads. */
#include "gpu/host/host_parallel.h"

#include <math.h>

typedef struct adamw_run {
    float *param, *m, *v;
    const float *grad;
    size_t n;
    zoff_dev_adamw_args args;
    int nt;
} adamw_run;

static void run_adamw(void *p) {
    adamw_run *a = p;
    const zoff_dev_adamw_args *h = &a->args;
    float b1 = h->beta1, b2 = h->beta2, lr = h->lr, eps = h->eps, wd = h->weight_decay;
    float gs = h->grad_scale;
    float c1 = 1.0f - powf(b1, (float)h->step), c2 = 1.0f - powf(b2, (float)h->step);
    float *param = a->param, *m = a->m, *v = a->v;
    const float *grad = a->grad;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 12.0 * a->n)) schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float g = grad[i] * gs;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mh = mi / c1, vh = vi / c2;
        param[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * param[i]);
    }
}

int host_op_adamw(void *stream, float *param, const float *grad, float *m, float *v, size_t n,
                  const zoff_dev_adamw_args *args) {
    adamw_run a = {param, m, v, grad, n, *args, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_ADAMW, run_adamw, &a, sizeof a);
}
