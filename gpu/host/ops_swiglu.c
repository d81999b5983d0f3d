/* Host SwiGLU (Llama's MLP gate): out = silu(gate) * up, and its backward. Elementwise, split
 * across threads; fp32 arithmetic, one rounding per 16-bit store. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <math.h>
#include <stdlib.h>

typedef struct swiglu_args {
    void *out, *dup; /* fwd: out; bwd: out = dgate, dup */
    const void *gate, *up, *dout;
    zoff_dtype type;
    size_t n;
    int nt;
} swiglu_args;

static inline float sigmoid(float g) {
    return 1.0f / (1.0f + expf(-g));
}

static void run_swiglu_fwd(void *p) {
    swiglu_args *a = p;
    zoff_dtype t = a->type;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 20.0 * a->n)) schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float g = zoff_load_as_f32(a->gate, t, i), u = zoff_load_as_f32(a->up, t, i);
        zoff_store_from_f32(a->out, t, i, g * sigmoid(g) * u);
    }
}

int host_op_swiglu_fwd(void *stream, void *out, const void *gate, const void *up, zoff_dtype type,
                       size_t n) {
    swiglu_args a = {.out = out,
                     .gate = gate,
                     .up = up,
                     .type = type,
                     .n = n,
                     .nt = host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_SWIGLU, run_swiglu_fwd, &a, sizeof a);
}

/* silu'(g) = s + g s (1 - s), s = sigmoid(g). */
static void run_swiglu_bwd(void *p) {
    swiglu_args *a = p;
    zoff_dtype t = a->type;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 30.0 * a->n)) schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float g = zoff_load_as_f32(a->gate, t, i), u = zoff_load_as_f32(a->up, t, i);
        float dy = zoff_load_as_f32(a->dout, t, i), s = sigmoid(g);
        zoff_store_from_f32(a->out, t, i, dy * u * (s + g * s * (1.0f - s)));
        zoff_store_from_f32(a->dup, t, i, dy * g * s);
    }
}

int host_op_swiglu_bwd(void *stream, void *dgate, void *dup, const void *dout, const void *gate,
                       const void *up, zoff_dtype type, size_t n) {
    swiglu_args a = {.out = dgate,
                     .dup = dup,
                     .gate = gate,
                     .up = up,
                     .dout = dout,
                     .type = type,
                     .n = n,
                     .nt = host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_SWIGLU, run_swiglu_bwd, &a, sizeof a);
}
