/* Host rotary position embedding, in place on q or k rows (see zoff_dev_op_rope_fwd). Rows
 * (b, t) are split across threads; each element pair is read and written by one thread. The
 * angle is pos * inv_freq[i] in fp32 and its cosine and sine are taken in fp32, as
 * transformers does (its cos/sin cache is fp32 and computed from the same product). */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <math.h>
#include <stdlib.h>

typedef struct rope_args {
    void *x;
    const int32_t *pos;
    const float *inv_freq;
    size_t row_stride;
    zoff_dtype type;
    int B, T, NH, HS, nt;
    bool backward;
} rope_args;

static void run_rope(void *p) {
    rope_args *a = p;
    int half = a->HS / 2, NH = a->NH;
    size_t rows = (size_t)a->B * a->T;
    float sgn = a->backward ? -1.0f : 1.0f;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 40.0 * rows * NH * half))             \
    schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float posf = (float)(a->pos ? a->pos[r] : (int32_t)(r % (size_t)a->T));
        size_t base = r * a->row_stride;
        for (int i = 0; i < half; i++) {
            float ang = posf * a->inv_freq[i];
            float c = cosf(ang), sn = sgn * sinf(ang);
            for (int h = 0; h < NH; h++) {
                size_t i0 = base + (size_t)h * a->HS + (size_t)i, i1 = i0 + (size_t)half;
                float x0, x1;
                if (a->type == ZOFF_F32) {
                    float *x = a->x;
                    x0 = x[i0];
                    x1 = x[i1];
                    x[i0] = x0 * c - x1 * sn;
                    x[i1] = x1 * c + x0 * sn;
                } else {
                    x0 = zoff_load_as_f32(a->x, a->type, i0);
                    x1 = zoff_load_as_f32(a->x, a->type, i1);
                    zoff_store_from_f32(a->x, a->type, i0, x0 * c - x1 * sn);
                    zoff_store_from_f32(a->x, a->type, i1, x1 * c + x0 * sn);
                }
            }
        }
    }
}

int host_op_rope(void *stream, void *x, zoff_dtype type, size_t row_stride, const int32_t *pos,
                 const float *inv_freq, int B, int T, int NH, int HS, bool backward) {
    rope_args a = {.x = x,
                   .pos = pos,
                   .inv_freq = inv_freq,
                   .row_stride = row_stride,
                   .type = type,
                   .B = B,
                   .T = T,
                   .NH = NH,
                   .HS = HS,
                   .nt = host_stream_threads(stream),
                   .backward = backward};
    return host_op_enqueue(stream, HOST_OP_ROPE, run_rope, &a, sizeof a);
}
