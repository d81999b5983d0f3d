/* Host backend kernels: copies and the elementwise/reduction ops, run on the issuing
 * stream's worker thread. These are the reference the CUDA kernels are checked against.
 * 16-bit conversions use core/half.h (round to nearest even). Also the queueing of every host
 * kernel (host_op_enqueue) with its optional per-family timing: process-wide atomic counters,
 * written by the stream worker threads, read by whoever profiles. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"
#include "core/target_clones.h"
#include "core/log.h"

#include <errno.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <math.h>
#include <string.h>

static atomic_bool prof_on;
static _Atomic uint64_t prof_ns[HOST_OP_FAMILIES], prof_calls[HOST_OP_FAMILIES];

/* The kernel's command, with its function and family in front of its payload. */
typedef struct timed_cmd {
    host_cmd_fn fn;
    host_op_family fam;
    alignas(16) unsigned char payload[];
} timed_cmd;

#define TIMED_MAX 1024 /* the largest payload timed (every host kernel's is far smaller) */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void run_timed(void *p) {
    timed_cmd *t = p;
    uint64_t t0 = mono_ns();
    t->fn(t->payload);
    atomic_fetch_add_explicit(&prof_ns[t->fam], mono_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&prof_calls[t->fam], 1, memory_order_relaxed);
}

int host_op_enqueue(host_stream *s, host_op_family fam, host_cmd_fn fn, const void *payload,
                    size_t size) {
    if (!atomic_load_explicit(&prof_on, memory_order_relaxed) || size > TIMED_MAX)
        return host_stream_enqueue(s, fn, payload, size);
    alignas(16) unsigned char buf[sizeof(timed_cmd) + TIMED_MAX];
    timed_cmd *t = (timed_cmd *)buf;
    t->fn = fn;
    t->fam = fam;
    memcpy(t->payload, payload, size);
    return host_stream_enqueue(s, run_timed, buf, sizeof(timed_cmd) + size);
}

void zoff_dev_host_profile_enable(bool on) {
    atomic_store(&prof_on, on);
}

void zoff_dev_host_profile_read(uint64_t *ns, uint64_t *calls) {
    for (int f = 0; f < HOST_OP_FAMILIES; f++) {
        ns[f] = atomic_load_explicit(&prof_ns[f], memory_order_relaxed);
        calls[f] = atomic_load_explicit(&prof_calls[f], memory_order_relaxed);
    }
}

const char *zoff_dev_host_profile_family_name(host_op_family fam) {
    static const char *const names[HOST_OP_FAMILIES] = {
        "gemm",      "layernorm", "rmsnorm", "gelu", "swiglu",      "rope", "attention", "xent",
        "embedding", "adamw",     "bias",    "add",  "memset_copy", "cast", "grad_norm", "other"};
    return fam >= 0 && fam < HOST_OP_FAMILIES ? names[fam] : "?";
}

typedef struct copy_args {
    void *dst;
    const void *src;
    size_t bytes;
    unsigned delay_us; /* host_debug_copy_delay_us */
} copy_args;

static void debug_delay(const copy_args *a) {
    if (a->delay_us) usleep(a->delay_us);
}

static void run_copy(void *p) {
    copy_args *a = p;
    memmove(a->dst, a->src, a->bytes);
    debug_delay(a);
}

/* A host-to-device copy as a DMA engine makes it: the data goes to the device without
 * passing through the CPU's caches. Non-temporal stores do that here, so a large weight
 * upload neither evicts the CPU Adam's working set from the last-level cache nor reads the
 * destination first (write-allocate), as a plain memcpy of this size does (glibc switches to
 * non-temporal stores only above most of the last-level cache). Regions that overlap, or
 * small ones, take memmove. */
#define NT_COPY_MIN ((size_t)256 << 10)

static void run_copy_nt(void *p) {
    copy_args *a = p;
#if defined(__SSE2__)
    unsigned char *d = a->dst;
    const unsigned char *s = a->src;
    size_t n = a->bytes, head = (16 - ((uintptr_t)d & 15)) & 15;
    memcpy(d, s, head);
    d += head, s += head, n -= head;
    size_t body = n & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
        __m128i x0 = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i x1 = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i x2 = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i x3 = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), x0);
        _mm_stream_si128((__m128i *)(d + i + 16), x1);
        _mm_stream_si128((__m128i *)(d + i + 32), x2);
        _mm_stream_si128((__m128i *)(d + i + 48), x3);
    }
    _mm_sfence(); /* the stores are visible before the stream's next command */
    memcpy(d + body, s + body, n - body);
#else
    memmove(a->dst, a->src, a->bytes);
#endif
    debug_delay(a);
}

int host_memcpy_async(void *stream, void *dst, const void *src, size_t bytes,
                      zoff_dev_copy_kind kind) {
    copy_args a = {dst, src, bytes, ((host_stream *)stream)->hdev->copy_delay_us};
    const char *d = dst, *s = src;
    bool apart = d + bytes <= s || s + bytes <= d;
    /* one address space: every other direction is a memmove */
    host_cmd_fn fn =
        kind == ZOFF_COPY_H2D && bytes >= NT_COPY_MIN && apart ? run_copy_nt : run_copy;
    return host_op_enqueue(stream, HOST_OP_MEMSET_COPY, fn, &a, sizeof a);
}

typedef struct set_args {
    void *dst;
    int value;
    size_t bytes;
} set_args;

static void run_set(void *p) {
    set_args *a = p;
    memset(a->dst, a->value, a->bytes);
}

int host_memset_async(void *stream, void *dst, int value, size_t bytes) {
    set_args a = {dst, value, bytes};
    return host_op_enqueue(stream, HOST_OP_MEMSET_COPY, run_set, &a, sizeof a);
}

typedef struct cast_args {
    void *dst;
    const void *src;
    zoff_dtype dst_type, src_type;
    size_t n;
    int nt;
} cast_args;

static void run_cast(void *p) {
    cast_args *a = p;
    if (a->dst_type == a->src_type) {
        memmove(a->dst, a->src, a->n * zoff_dtype_size(a->dst_type));
        return;
    }
    size_t n = a->n;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 4.0 * n)) schedule(static)
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(a->dst, a->dst_type, i, zoff_load_as_f32(a->src, a->src_type, i));
}

int host_op_cast(void *stream, void *dst, zoff_dtype dst_type, const void *src, zoff_dtype src_type,
                 size_t n) {
    cast_args a = {dst, src, dst_type, src_type, n, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_CAST, run_cast, &a, sizeof a);
}

typedef struct scale_args {
    void *x;
    zoff_dtype type;
    float alpha;
    size_t n;
} scale_args;

static void run_scale(void *p) {
    scale_args *a = p;
    if (a->type == ZOFF_F32) {
        float *x = a->x;
        for (size_t i = 0; i < a->n; i++)
            x[i] *= a->alpha;
        return;
    }
    for (size_t i = 0; i < a->n; i++)
        zoff_store_from_f32(a->x, a->type, i, zoff_load_as_f32(a->x, a->type, i) * a->alpha);
}

int host_op_scale(void *stream, void *x, zoff_dtype type, float alpha, size_t n) {
    scale_args a = {x, type, alpha, n};
    return host_op_enqueue(stream, HOST_OP_OTHER, run_scale, &a, sizeof a);
}

typedef struct sumsq_args {
    const void *x;
    zoff_dtype type;
    size_t n;
    float *out;
    int nt;
} sumsq_args;

/* Fixed chunking (not per thread) keeps the sum's order, and so its value, independent of
 * the thread count. */
#define SUMSQ_CHUNKS 256

/* The partial sums of sumsq_plain and sumsq_masked, combined in one fixed order. */
static double sumsq_combine(const double p[16], double tail) {
    double t[4];
    for (int j = 0; j < 4; j++)
        t[j] = (p[j] + p[4 + j]) + (p[8 + j] + p[12 + j]);
    return ((t[0] + t[1]) + (t[2] + t[3])) + tail;
}

/* An fp16's value, exactly, for every finite one: its exponent and mantissa put at an fp32's
 * and scaled by 2^112 (a power of two, so exact), which covers subnormals too. Its inf and NaN
 * become finite here: callers catch them by the exponent. */
static inline float f16_finite_value(uint16_t h) {
    uint32_t w = (uint32_t)(h & 0x7fffu) << 13;
    float f;
    memcpy(&f, &w, sizeof f);
    return f * 0x1p112f;
}

/* The sum of squares of x[lo, hi) in double over sixteen interleaved partial sums (element
 * lo + i goes to partial sum i % 16, the last (hi - lo) % 16 elements to a seventeenth), combined
 * in a fixed order: the order, and so the value, is the same on every ISA (a float's square is
 * exact in double, so a fused multiply-add rounds as the separate ops do). The sixteen
 * independent sums are what the compiler turns into vector registers; written as one loop per
 * dtype, each vectorizes.
 *
 * Two passes share that order. The plain one sums every element: a float squared cannot
 * overflow a double, nor can 2^31 such squares, so its result is finite exactly when every
 * element is (fp16: it returns inf when an exponent field is all ones). Only then (a step with
 * inf or NaN gradients) does the masked one run, summing the finite elements and flagging the
 * others. Masking every element in the common case cost three times the memory's speed
 * (GPT-2 124M: 125 ms a step, PyTorch 60); a 16-bit gradient went element by element through
 * core/half.h (2.8M bf16 elements: 2.8 ms, now 0.6; bench_offload's default model: its
 * gradient norm 30 ms a step, now 12). */
ZOFF_AVX2_CLONE static double sumsq_plain(const void *x, zoff_dtype type, size_t lo, size_t hi) {
    double p[16] = {0};
    uint32_t exp[16] = {0}; /* fp16: exponent fields plus one; bit 15 set for inf and NaN */
    size_t i = lo, end = lo + (hi - lo) / 16 * 16;
    if (type == ZOFF_F32) {
        const float *f = x;
        for (; i < end; i += 16)
            for (int k = 0; k < 16; k++) {
                double v = f[i + k];
                p[k] += v * v;
            }
    } else if (type == ZOFF_BF16) {
        const uint16_t *h = x;
        for (; i < end; i += 16)
            for (int k = 0; k < 16; k++) {
                double v = zoff_bf16_to_f32(h[i + k]); /* inf and NaN make the sum so */
                p[k] += v * v;
            }
    } else {
        const uint16_t *h = x;
        for (; i < end; i += 16)
            for (int k = 0; k < 16; k++) {
                exp[k] |= (h[i + k] & 0x7c00u) + 0x400u;
                double v = f16_finite_value(h[i + k]);
                p[k] += v * v;
            }
    }
    double tail = 0.0;
    for (; i < hi; i++) {
        double v = zoff_load_as_f32(x, type, i);
        tail += v * v;
    }
    uint32_t special = 0;
    for (int k = 0; k < 16; k++)
        special |= exp[k];
    return special & 0x8000u ? INFINITY : sumsq_combine(p, tail);
}

static double sumsq_masked(const void *x, zoff_dtype type, size_t lo, size_t hi, int *nonfinite) {
    double p[16] = {0}, tail = 0.0;
    size_t i = lo;
    for (; i + 16 <= hi; i += 16)
        for (int k = 0; k < 16; k++) {
            float v = zoff_load_as_f32(x, type, i + k);
            if (isfinite(v))
                p[k] += (double)v * v;
            else
                *nonfinite = 1;
        }
    for (; i < hi; i++) {
        float v = zoff_load_as_f32(x, type, i);
        if (isfinite(v))
            tail += (double)v * v;
        else
            *nonfinite = 1;
    }
    return sumsq_combine(p, tail);
}

static double sumsq_chunk(const void *x, zoff_dtype type, size_t lo, size_t hi, int *nonfinite) {
    double s = sumsq_plain(x, type, lo, hi);
    if (isfinite(s)) return s;
    return sumsq_masked(x, type, lo, hi, nonfinite);
}

static void run_sumsq(void *p) {
    sumsq_args *a = p;
    double part[SUMSQ_CHUNKS];
    int bad[SUMSQ_CHUNKS];
    size_t chunk = (a->n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
    int nt = a->n < 65536 ? 1 : a->nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int c = 0; c < SUMSQ_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < a->n ? lo + chunk : a->n;
        double sum = 0.0;
        int nonfinite = 0;
        if (lo < hi) sum = sumsq_chunk(a->x, a->type, lo, hi, &nonfinite);
        part[c] = sum;
        bad[c] = nonfinite;
    }
    double sum = 0.0;
    int nonfinite = 0;
    for (int c = 0; c < SUMSQ_CHUNKS; c++) {
        sum += part[c];
        nonfinite |= bad[c];
    }
    a->out[0] = (float)sum;
    a->out[1] = nonfinite ? 1.0f : 0.0f;
}

int host_op_sumsq_nonfinite(void *stream, const void *x, zoff_dtype type, size_t n, float *out) {
    sumsq_args a = {x, type, n, out, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_GRAD_NORM, run_sumsq, &a, sizeof a);
}

void *host_kernel_scratch(const char *op, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) zoff_fail(-ENOMEM, "host", "%s: no memory for %zu bytes of kernel scratch", op, bytes);
    return p;
}
