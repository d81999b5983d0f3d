/* Streams, events and copies on one backend (argv[1]): in-stream ordering, cross-stream
 * waits through events, CUDA event semantics (query, re-record, wait on the record current
 * at the call, never-recorded events), host functions, async copies of odd sizes and
 * offsets, and destroying streams and events with work pending. Ordering is forced with
 * gates (a stream blocked in a host function), never with timing.
 * Then what the first GPU run would trip on: a launch right after a "not ready" query or a
 * failed call; counter waits whose writers are queued later on other streams, with more
 * streams than CUDA's default 8 hardware queues; a stream that ran a GEMM destroyed while
 * another waits on a counter; every kind of call from a thread that never chose a GPU, and
 * (with two GPUs or more) all of it on the last GPU. Hangs fail with a "deadlock" message. */
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

static void test_in_stream_order(zoff_dev *dev) {
    enum { N = 64, SZ = 4096 };
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    unsigned char *d, *h;
    REQUIRE_OK(zoff_dev_malloc(dev, SZ, (void **)&d));
    REQUIRE_OK(zoff_dev_host_alloc(dev, (size_t)N * SZ, (void **)&h));
    /* Each round overwrites the same device buffer; only in-order execution gives round i's
     * value in host slice i. */
    for (int i = 0; i < N; i++) {
        CHECK_OK(zoff_dev_memset_async(s, d, i + 1, SZ));
        CHECK_OK(zoff_dev_memcpy_async(s, h + (size_t)i * SZ, d, SZ, ZOFF_COPY_D2H));
    }
    CHECK_OK(zoff_dev_stream_synchronize(s));
    int bad = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < SZ; j++)
            bad += h[(size_t)i * SZ + j] != (unsigned char)(i + 1);
    CHECK_EQ_INT(bad, 0);
    CHECK_OK(zoff_dev_free(dev, d));
    CHECK_OK(zoff_dev_host_free(dev, h));
    CHECK_OK(zoff_dev_stream_destroy(s));
}

static void test_cross_stream_wait(zoff_dev *dev) {
    zoff_dev_stream *a, *b;
    zoff_dev_event *e;
    REQUIRE_OK(zoff_dev_stream_create(dev, &a));
    REQUIRE_OK(zoff_dev_stream_create(dev, &b));
    REQUIRE_OK(zoff_dev_event_create(dev, &e));
    int *d, *h_in, *h_out;
    REQUIRE_OK(zoff_dev_malloc(dev, sizeof(int), (void **)&d));
    REQUIRE_OK(zoff_dev_host_alloc(dev, sizeof(int), (void **)&h_in));
    REQUIRE_OK(zoff_dev_host_alloc(dev, sizeof(int), (void **)&h_out));
    *h_in = 7;
    *h_out = -1;
    CHECK_OK(zoff_dev_memset_async(a, d, 0, sizeof(int)));
    CHECK_OK(zoff_dev_stream_synchronize(a));

    zoff_test_gate gate = {0};
    CHECK_OK(zoff_dev_launch_host_fn(a, zoff_test_gate_wait, &gate));
    CHECK_OK(zoff_dev_memcpy_async(a, d, h_in, sizeof(int), ZOFF_COPY_H2D));
    CHECK_OK(zoff_dev_event_record(e, a));
    CHECK_OK(zoff_dev_stream_wait_event(b, e));
    CHECK_OK(zoff_dev_memcpy_async(b, h_out, d, sizeof(int), ZOFF_COPY_D2H));
    zoff_test_gate_await_reached(&gate);
    zoff_test_sleep_ms(20);
    /* a is held at the gate: the event is pending and b has not copied yet. */
    CHECK_EQ_INT(zoff_dev_event_query(e), -EAGAIN);
    CHECK_EQ_INT(*(volatile int *)h_out, -1);
    zoff_test_gate_open(&gate);
    CHECK_OK(zoff_dev_stream_synchronize(b));
    CHECK_EQ_INT(*h_out, 7);
    CHECK_OK(zoff_dev_event_query(e));

    CHECK_OK(zoff_dev_free(dev, d));
    CHECK_OK(zoff_dev_host_free(dev, h_in));
    CHECK_OK(zoff_dev_host_free(dev, h_out));
    CHECK_OK(zoff_dev_event_destroy(e));
    CHECK_OK(zoff_dev_stream_destroy(a));
    CHECK_OK(zoff_dev_stream_destroy(b));
}

/* A wait refers to the record current at the time of the wait call; a later re-record of
 * the same event must not hold back the waiter. A never-recorded event is complete. */
static void test_event_reuse(zoff_dev *dev) {
    zoff_dev_stream *a, *b;
    zoff_dev_event *e, *fresh;
    REQUIRE_OK(zoff_dev_stream_create(dev, &a));
    REQUIRE_OK(zoff_dev_stream_create(dev, &b));
    REQUIRE_OK(zoff_dev_event_create(dev, &e));
    REQUIRE_OK(zoff_dev_event_create(dev, &fresh));
    CHECK_OK(zoff_dev_event_query(fresh));
    CHECK_OK(zoff_dev_event_synchronize(fresh));
    CHECK_OK(zoff_dev_stream_wait_event(b, fresh));
    CHECK_OK(zoff_dev_stream_synchronize(b));

    CHECK_OK(zoff_dev_event_record(e, a)); /* record 1: nothing before it */
    CHECK_OK(zoff_dev_stream_wait_event(b, e));
    zoff_test_gate gate = {0};
    CHECK_OK(zoff_dev_launch_host_fn(a, zoff_test_gate_wait, &gate));
    CHECK_OK(zoff_dev_event_record(e, a)); /* record 2: behind the closed gate */
    /* b's wait was on record 1, so b drains although record 2 is blocked. */
    CHECK_OK(zoff_dev_stream_synchronize(b));
    zoff_test_gate_await_reached(&gate);
    CHECK_EQ_INT(zoff_dev_event_query(e), -EAGAIN);

    /* Re-recording on another stream re-arms the event there. */
    CHECK_OK(zoff_dev_event_record(e, b));
    CHECK_OK(zoff_dev_event_synchronize(e));
    CHECK_OK(zoff_dev_event_query(e));
    zoff_test_gate_open(&gate);
    CHECK_OK(zoff_dev_stream_synchronize(a));

    /* Timing between two completed records. */
    zoff_dev_event *t0, *t1;
    REQUIRE_OK(zoff_dev_event_create(dev, &t0));
    REQUIRE_OK(zoff_dev_event_create(dev, &t1));
    CHECK_OK(zoff_dev_event_record(t0, a));
    CHECK_OK(zoff_dev_event_record(t1, a));
    CHECK_OK(zoff_dev_event_synchronize(t1));
    float ms = -1.0f;
    CHECK_OK(zoff_dev_event_elapsed_ms(t0, t1, &ms));
    CHECK(ms >= 0.0f);

    CHECK_OK(zoff_dev_event_destroy(t0));
    CHECK_OK(zoff_dev_event_destroy(t1));
    CHECK_OK(zoff_dev_event_destroy(e));
    CHECK_OK(zoff_dev_event_destroy(fresh));
    CHECK_OK(zoff_dev_stream_destroy(a));
    CHECK_OK(zoff_dev_stream_destroy(b));
}

/* H2D, D2D and D2H of odd sizes at odd offsets reproduce the bytes exactly. */
static void test_odd_copies(zoff_dev *dev) {
    static const size_t sizes[] = {1, 3, 7, 255, 4095, 4097, 65537, (1u << 20) + 13};
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    size_t cap = (1u << 20) + 64;
    unsigned char *h_src, *h_dst, *d1, *d2;
    REQUIRE_OK(zoff_dev_host_alloc(dev, cap, (void **)&h_src));
    REQUIRE_OK(zoff_dev_host_alloc(dev, cap, (void **)&h_dst));
    REQUIRE_OK(zoff_dev_malloc(dev, cap, (void **)&d1));
    REQUIRE_OK(zoff_dev_malloc(dev, cap, (void **)&d2));
    unsigned long long rng = 12345;
    for (size_t i = 0; i < cap; i++)
        h_src[i] = (unsigned char)zoff_test_rand(&rng);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k], off = k % 4, off2 = (k * 7) % 5;
        memset(h_dst, 0xEE, cap);
        CHECK_OK(zoff_dev_memcpy_async(s, d1 + off, h_src + off2, n, ZOFF_COPY_H2D));
        CHECK_OK(zoff_dev_memcpy_async(s, d2 + off2, d1 + off, n, ZOFF_COPY_D2D));
        CHECK_OK(zoff_dev_memcpy_async(s, h_dst + off, d2 + off2, n, ZOFF_COPY_D2H));
        CHECK_OK(zoff_dev_stream_synchronize(s));
        CHECK(memcmp(h_dst + off, h_src + off2, n) == 0);
        CHECK(h_dst[off + n] == 0xEE); /* nothing written past the end */
        if (off) CHECK(h_dst[off - 1] == 0xEE);
    }
    /* The synchronous helper too. */
    CHECK_OK(zoff_dev_memcpy(dev, d1, h_src, 999, ZOFF_COPY_H2D));
    CHECK_OK(zoff_dev_memcpy(dev, h_dst, d1, 999, ZOFF_COPY_D2H));
    CHECK(memcmp(h_dst, h_src, 999) == 0);
    CHECK_EQ_INT(zoff_dev_memcpy_async(s, NULL, h_src, 4, ZOFF_COPY_H2D), -EINVAL);
    CHECK_OK(zoff_dev_free(dev, d1));
    CHECK_OK(zoff_dev_free(dev, d2));
    CHECK_OK(zoff_dev_host_free(dev, h_src));
    CHECK_OK(zoff_dev_host_free(dev, h_dst));
    CHECK_OK(zoff_dev_stream_destroy(s));
}

typedef struct counter_arg {
    atomic_int *counter;
    int expect;
    atomic_int *order_errors;
} counter_arg;

static void count_in_order(void *p) {
    counter_arg *c = p;
    int prev = atomic_fetch_add(c->counter, 1);
    if (prev != c->expect) atomic_fetch_add(c->order_errors, 1);
}

/* Destroying a stream or an event with work still queued completes that work first. */
static void test_destroy_pending(zoff_dev *dev) {
    enum { N = 200 };
    zoff_dev_stream *s;
    zoff_dev_event *e;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    REQUIRE_OK(zoff_dev_event_create(dev, &e));
    atomic_int counter = 0, order_errors = 0;
    counter_arg args[N];
    zoff_test_gate gate = {0};
    CHECK_OK(zoff_dev_launch_host_fn(s, zoff_test_gate_wait, &gate));
    for (int i = 0; i < N; i++) {
        args[i] = (counter_arg){&counter, i, &order_errors};
        CHECK_OK(zoff_dev_launch_host_fn(s, count_in_order, &args[i]));
    }
    CHECK_OK(zoff_dev_event_record(e, s));
    zoff_test_gate_await_reached(&gate);
    CHECK_EQ_INT(atomic_load(&counter), 0);
    zoff_test_gate_open(&gate);
    CHECK_OK(zoff_dev_event_destroy(e)); /* waits for the record */
    CHECK_EQ_INT(atomic_load(&counter), N);
    for (int i = 0; i < N; i++) {
        args[i] = (counter_arg){&counter, N + i, &order_errors};
        CHECK_OK(zoff_dev_launch_host_fn(s, count_in_order, &args[i]));
    }
    CHECK_OK(zoff_dev_stream_destroy(s)); /* drains before returning */
    CHECK_EQ_INT(atomic_load(&counter), 2 * N);
    CHECK_EQ_INT(atomic_load(&order_errors), 0);
}

/* Counter signals: a stream waits for a value that a host thread, or another stream behind a
 * gate, writes later; waits already satisfied pass at once; counters may wrap. */
static void test_value_signals(zoff_dev *dev) {
    zoff_dev_stream *a, *b;
    REQUIRE_OK(zoff_dev_stream_create(dev, &a));
    REQUIRE_OK(zoff_dev_stream_create(dev, &b));
    uint32_t *flag;
    int *h_out, *h_in, *d;
    REQUIRE_OK(zoff_dev_host_alloc(dev, 64, (void **)&flag));
    REQUIRE_OK(zoff_dev_host_alloc(dev, sizeof(int), (void **)&h_out));
    REQUIRE_OK(zoff_dev_host_alloc(dev, sizeof(int), (void **)&h_in));
    REQUIRE_OK(zoff_dev_malloc(dev, sizeof(int), (void **)&d));
    *flag = 0xfffffffeu; /* two below the wrap */
    *h_in = 11;
    *h_out = 0;
    CHECK_OK(zoff_dev_memcpy(dev, d, h_in, sizeof(int), ZOFF_COPY_H2D));

    CHECK_OK(zoff_dev_stream_wait_value(a, flag, 0xfffffffeu)); /* already true */
    CHECK_OK(zoff_dev_stream_wait_value(a, flag, 1u));          /* true only after the wrap */
    CHECK_OK(zoff_dev_memcpy_async(a, h_out, d, sizeof(int), ZOFF_COPY_D2H));
    zoff_test_sleep_ms(20);
    CHECK_EQ_INT(*(volatile int *)h_out, 0);
    CHECK_OK(zoff_dev_host_write_value(dev, flag, 0xffffffffu));
    zoff_test_sleep_ms(20);
    CHECK_EQ_INT(*(volatile int *)h_out, 0);
    CHECK_OK(zoff_dev_host_write_value(dev, flag, 1u));
    CHECK_OK(zoff_dev_stream_synchronize(a));
    CHECK_EQ_INT(*h_out, 11);

    /* stream b advances the counter after its gate opens; a waits for it */
    zoff_test_gate gate = {0};
    *h_out = 0;
    CHECK_OK(zoff_dev_launch_host_fn(b, zoff_test_gate_wait, &gate));
    CHECK_OK(zoff_dev_stream_write_value(b, flag, 5u));
    CHECK_OK(zoff_dev_stream_wait_value(a, flag, 5u));
    CHECK_OK(zoff_dev_memcpy_async(a, h_out, d, sizeof(int), ZOFF_COPY_D2H));
    zoff_test_gate_await_reached(&gate);
    zoff_test_sleep_ms(20);
    CHECK_EQ_INT(*(volatile int *)h_out, 0);
    zoff_test_gate_open(&gate);
    CHECK_OK(zoff_dev_stream_synchronize(a));
    CHECK_EQ_INT(*h_out, 11);
    CHECK_EQ_INT(__atomic_load_n(flag, __ATOMIC_ACQUIRE), 5u);
    /* the host waits on a counter a stream advances */
    CHECK_OK(zoff_dev_stream_write_value(b, flag, 9u));
    CHECK_OK(zoff_dev_host_wait_value(dev, flag, 9u));
    CHECK_EQ_INT(__atomic_load_n(flag, __ATOMIC_ACQUIRE), 9u);
    CHECK_EQ_INT(zoff_dev_stream_wait_value(a, (uint32_t *)((char *)flag + 1), 1), -EINVAL);

    CHECK_OK(zoff_dev_free(dev, d));
    CHECK_OK(zoff_dev_host_free(dev, flag));
    CHECK_OK(zoff_dev_host_free(dev, h_out));
    CHECK_OK(zoff_dev_host_free(dev, h_in));
    CHECK_OK(zoff_dev_stream_destroy(a));
    CHECK_OK(zoff_dev_stream_destroy(b));
}

/* A launch right after a "not ready" query, and right after a failed call, on the same
 * thread: CUDA keeps a per-thread "last error" that launchers check, so an error left there
 * would fail a kernel that was in fact queued. */
static void test_not_ready_then_launch(zoff_dev *dev) {
    enum { LEN = 256 };
    zoff_dev_stream *a, *b;
    zoff_dev_event *e, *never0, *never1;
    REQUIRE_OK(zoff_dev_stream_create(dev, &a));
    REQUIRE_OK(zoff_dev_stream_create(dev, &b));
    REQUIRE_OK(zoff_dev_event_create(dev, &e));
    REQUIRE_OK(zoff_dev_event_create(dev, &never0));
    REQUIRE_OK(zoff_dev_event_create(dev, &never1));
    float *d, *h;
    REQUIRE_OK(zoff_dev_malloc(dev, (LEN + 1) * sizeof(float), (void **)&d));
    REQUIRE_OK(zoff_dev_host_alloc(dev, LEN * sizeof(float), (void **)&h));
    for (int i = 0; i < LEN; i++)
        h[i] = (float)i;
    CHECK_OK(zoff_dev_memcpy(dev, d, h, LEN * sizeof(float), ZOFF_COPY_H2D));

    zoff_test_gate gate = {0};
    CHECK_OK(zoff_dev_launch_host_fn(a, zoff_test_gate_wait, &gate));
    CHECK_OK(zoff_dev_event_record(e, a));
    zoff_test_gate_await_reached(&gate);
    CHECK_EQ_INT(zoff_dev_event_query(e), -EAGAIN);
    CHECK_OK(zoff_dev_op_scale(b, d, ZOFF_F32, 2.0f, LEN)); /* the launch right after */
    CHECK_EQ_INT(zoff_dev_event_query(e), -EAGAIN);
    CHECK_OK(zoff_dev_memset_async(b, d + LEN, 0, 4)); /* not a kernel of ours too */
    float ms = 0;
    CHECK(zoff_dev_event_elapsed_ms(never0, never1, &ms) != 0); /* fails: never recorded */
    CHECK_OK(zoff_dev_op_scale(b, d, ZOFF_F32, 3.0f, LEN));
    CHECK_OK(zoff_dev_memcpy_async(b, h, d, LEN * sizeof(float), ZOFF_COPY_D2H));
    CHECK_OK(zoff_dev_stream_synchronize(b));
    int bad = 0;
    for (int i = 0; i < LEN; i++)
        bad += h[i] != 6.0f * (float)i;
    CHECK_EQ_INT(bad, 0);
    zoff_test_gate_open(&gate);
    CHECK_OK(zoff_dev_stream_synchronize(a));
    CHECK_OK(zoff_dev_event_query(e));

    CHECK_OK(zoff_dev_free(dev, d));
    CHECK_OK(zoff_dev_host_free(dev, h));
    CHECK_OK(zoff_dev_event_destroy(e));
    CHECK_OK(zoff_dev_event_destroy(never0));
    CHECK_OK(zoff_dev_event_destroy(never1));
    CHECK_OK(zoff_dev_stream_destroy(a));
    CHECK_OK(zoff_dev_stream_destroy(b));
}

/* A chain of NS streams where stream i waits for the counter stream i-1 writes, every wait
 * issued before its writer, over ROUNDS rounds, each stream running a kernel and a copy
 * after each wait; the host starts the chain only after all of it is queued. NS is more
 * than CUDA's default 8 hardware queues: a waiter that shares a queue with a writer queued
 * behind it would hang. While the chain waits, this thread makes a stream, runs a GEMM on
 * it and destroys it, which must not synchronize the device. */
static void test_waits_writers_later(zoff_dev *dev) {
    enum { NS = 20, ROUNDS = 3, LEN = 1024 };
    zoff_dev_stream *s[NS];
    float *d[NS], *out, *ones;
    uint32_t *flag;
    REQUIRE_OK(zoff_dev_host_alloc(dev, (NS + 1) * sizeof(uint32_t), (void **)&flag));
    REQUIRE_OK(zoff_dev_host_alloc(dev, NS * ROUNDS * sizeof(float), (void **)&out));
    REQUIRE_OK(zoff_dev_host_alloc(dev, LEN * sizeof(float), (void **)&ones));
    memset(flag, 0, (NS + 1) * sizeof(uint32_t));
    for (int j = 0; j < NS * ROUNDS; j++)
        out[j] = -1.0f;
    for (int j = 0; j < LEN; j++)
        ones[j] = 1.0f;
    for (int i = 0; i < NS; i++) {
        REQUIRE_OK(zoff_dev_stream_create(dev, &s[i]));
        REQUIRE_OK(zoff_dev_malloc(dev, LEN * sizeof(float), (void **)&d[i]));
        CHECK_OK(zoff_dev_memcpy(dev, d[i], ones, LEN * sizeof(float), ZOFF_COPY_H2D));
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int i = NS; i-- > 0;) { /* the waiter first, its writer (stream i-1) after */
            CHECK_OK(zoff_dev_stream_wait_value(s[i], &flag[i], (uint32_t)r + 1));
            CHECK_OK(zoff_dev_op_scale(s[i], d[i], ZOFF_F32, 2.0f, LEN));
            CHECK_OK(
                zoff_dev_memcpy_async(s[i], &out[r * NS + i], d[i], sizeof(float), ZOFF_COPY_D2H));
            CHECK_OK(zoff_dev_stream_write_value(s[i], &flag[i + 1], (uint32_t)r + 1));
        }
    zoff_test_sleep_ms(20);
    CHECK_EQ_INT(__atomic_load_n(&flag[NS], __ATOMIC_ACQUIRE), 0);

    /* While everything waits on this thread's next write: a GEMM stream made and destroyed
     * (its cuBLAS handle and scratch must not synchronize the device). */
    zoff_test_watchdog_arm(60, "a stream with a GEMM destroyed while others wait on a counter");
    enum { M = 8 };
    zoff_dev_stream *g;
    float *A, *C, *hc;
    REQUIRE_OK(zoff_dev_stream_create(dev, &g));
    REQUIRE_OK(zoff_dev_malloc(dev, M * M * sizeof(float), (void **)&A));
    REQUIRE_OK(zoff_dev_malloc(dev, M * M * sizeof(float), (void **)&C));
    REQUIRE_OK(zoff_dev_host_alloc(dev, M * M * sizeof(float), (void **)&hc));
    CHECK_OK(zoff_dev_memcpy_async(g, A, ones, M * M * sizeof(float), ZOFF_COPY_H2D));
    CHECK_OK(zoff_dev_op_gemm(g, false, false, M, M, M, 1.0f, A, M, A, M, ZOFF_F32, 0.0f, C, ZOFF_F32, M));
    CHECK_OK(zoff_dev_memcpy_async(g, hc, C, M * M * sizeof(float), ZOFF_COPY_D2H));
    CHECK_OK(zoff_dev_stream_synchronize(g));
    CHECK_OK(zoff_dev_stream_destroy(g));
    zoff_test_watchdog_disarm();
    CHECK(hc[0] == (float)M && hc[M * M - 1] == (float)M);
    CHECK_EQ_INT(__atomic_load_n(&flag[NS], __ATOMIC_ACQUIRE), 0);

    CHECK_OK(zoff_dev_host_write_value(dev, &flag[0], ROUNDS)); /* starts the whole chain */
    zoff_test_await_counter(&flag[NS], ROUNDS, 60, "a chain of counter waits across streams");
    int bad = 0;
    for (int i = 0; i < NS; i++) {
        CHECK_OK(zoff_dev_stream_synchronize(s[i]));
        for (int r = 0; r < ROUNDS; r++)
            bad += out[r * NS + i] != (float)(2 << r);
    }
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < NS; i++) {
        CHECK_OK(zoff_dev_free(dev, d[i]));
        CHECK_OK(zoff_dev_stream_destroy(s[i]));
    }
    CHECK_OK(zoff_dev_free(dev, A));
    CHECK_OK(zoff_dev_free(dev, C));
    CHECK_OK(zoff_dev_host_free(dev, hc));
    CHECK_OK(zoff_dev_host_free(dev, flag));
    CHECK_OK(zoff_dev_host_free(dev, out));
    CHECK_OK(zoff_dev_host_free(dev, ones));
}

/* Every kind of call from a thread that never chose a GPU (CUDA's default is GPU 0):
 * memory, a stream, events, copies, kernels (cuBLAS included), counter signals. */
typedef struct thread_job {
    zoff_dev *dev;
    int failures;
} thread_job;

#define JOB_CHECK(job, expr)                                                                       \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) {                                                                                 \
            fprintf(stderr, "%s:%d: %s returned %d (%s: %s)\n", __FILE__, __LINE__, #expr, rc_,    \
                    zoff_strerror(rc_), zoff_last_error_detail());                                 \
            (job)->failures++;                                                                     \
        }                                                                                          \
    } while (0)

static void *calls_from_new_thread(void *arg) {
    thread_job *job = arg;
    zoff_dev *dev = job->dev;
    enum { M = 16, LEN = M * M };
    zoff_dev_stream *s, *t;
    zoff_dev_event *e;
    float *a, *c, *stats, *h;
    uint32_t *flag;
    if (zoff_dev_stream_create(dev, &s) || zoff_dev_stream_create(dev, &t) ||
        zoff_dev_event_create(dev, &e) || zoff_dev_malloc(dev, LEN * sizeof(float), (void **)&a) ||
        zoff_dev_malloc(dev, LEN * sizeof(float), (void **)&c) ||
        zoff_dev_malloc(dev, 2 * sizeof(float), (void **)&stats) ||
        zoff_dev_host_alloc(dev, (2 * LEN + 2) * sizeof(float), (void **)&h) ||
        zoff_dev_host_alloc(dev, sizeof(uint32_t), (void **)&flag)) {
        fprintf(stderr, "set-up on a new thread failed: %s\n", zoff_last_error_detail());
        job->failures++;
        return NULL;
    }
    *flag = 0;
    for (int i = 0; i < LEN; i++)
        h[i] = (float)(i % 7) - 3.0f;
    JOB_CHECK(job, zoff_dev_memcpy_async(s, a, h, LEN * sizeof(float), ZOFF_COPY_H2D));
    JOB_CHECK(job, zoff_dev_op_gemm(s, false, true, M, M, M, 1.0f, a, M, a, M, ZOFF_F32, 0.0f, c,
                                    ZOFF_F32, M)); /* c = a a^T */
    JOB_CHECK(job, zoff_dev_op_sumsq_nonfinite(s, a, ZOFF_F32, LEN, stats));
    JOB_CHECK(job, zoff_dev_event_record(e, s));
    JOB_CHECK(job, zoff_dev_stream_wait_event(t, e));
    JOB_CHECK(job, zoff_dev_stream_write_value(s, flag, 1));
    JOB_CHECK(job, zoff_dev_stream_wait_value(t, flag, 1));
    JOB_CHECK(job, zoff_dev_memcpy_async(t, h + LEN, c, LEN * sizeof(float), ZOFF_COPY_D2H));
    JOB_CHECK(job, zoff_dev_memcpy_async(t, h + 2 * LEN, stats, 2 * sizeof(float), ZOFF_COPY_D2H));
    JOB_CHECK(job, zoff_dev_stream_synchronize(t));
    JOB_CHECK(job, zoff_dev_event_synchronize(e));
    JOB_CHECK(job, zoff_dev_event_query(e));
    int bad = 0;
    double sumsq = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) {
            double ref = 0;
            for (int k = 0; k < M; k++)
                ref += (double)h[i * M + k] * h[j * M + k];
            bad += fabs(h[LEN + i * M + j] - ref) > 1e-4 * (1 + fabs(ref));
        }
    for (int i = 0; i < LEN; i++)
        sumsq += (double)h[i] * h[i];
    bad += fabs(h[2 * LEN] - sumsq) > 1e-4 * sumsq || h[2 * LEN + 1] != 0.0f;
    if (bad) {
        fprintf(stderr, "results computed from a new thread are wrong (%d)\n", bad);
        job->failures++;
    }
    JOB_CHECK(job, zoff_dev_free(dev, a));
    JOB_CHECK(job, zoff_dev_free(dev, c));
    JOB_CHECK(job, zoff_dev_free(dev, stats));
    JOB_CHECK(job, zoff_dev_host_free(dev, h));
    JOB_CHECK(job, zoff_dev_host_free(dev, flag));
    JOB_CHECK(job, zoff_dev_event_destroy(e));
    JOB_CHECK(job, zoff_dev_stream_destroy(s));
    JOB_CHECK(job, zoff_dev_stream_destroy(t));
    return NULL;
}

static void test_calls_from_new_thread(zoff_dev *dev) {
    thread_job job = {dev, 0};
    pthread_t th;
    REQUIRE_OK(-pthread_create(&th, NULL, calls_from_new_thread, &job));
    pthread_join(th, NULL);
    CHECK_EQ_INT(job.failures, 0);
}

/* With two GPUs or more, the tests that issue from several threads run on the last GPU,
 * whose ordinal no thread has by default; an ordinal past the last is refused. */
static void test_other_gpu(const char *backend) {
    int count = 0;
    if (strcmp(backend, "cuda") != 0 || zoff_dev_cuda_gpu_count(&count) || count < 2) {
        printf("ordinal checks: skipped (%s backend, %d GPUs)\n", backend, count);
        return;
    }
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_CUDA;
    cfg.cuda_ordinal = count;
    zoff_dev *dev = NULL;
    CHECK_EQ_INT(zoff_dev_open(&cfg, &dev), ZOFF_ENODEVICE);
    cfg.cuda_ordinal = count - 1;
    cfg.capacity = (size_t)256 << 20;
    REQUIRE_OK(zoff_dev_open(&cfg, &dev));
    printf("ordinal checks on %s\n", zoff_dev_name(dev));
    test_calls_from_new_thread(dev);
    test_not_ready_then_launch(dev);
    test_waits_writers_later(dev);
    zoff_dev_close(dev);
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    test_in_stream_order(dev);
    test_cross_stream_wait(dev);
    test_event_reuse(dev);
    test_odd_copies(dev);
    test_destroy_pending(dev);
    test_value_signals(dev);
    test_not_ready_then_launch(dev);
    test_waits_writers_later(dev);
    test_calls_from_new_thread(dev);
    /* Close with a stream, an event and memory still live: reclaimed, no crash. */
    zoff_dev_stream *s;
    zoff_dev_event *e;
    void *p;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    REQUIRE_OK(zoff_dev_event_create(dev, &e));
    REQUIRE_OK(zoff_dev_malloc(dev, 100, &p));
    CHECK_OK(zoff_dev_event_record(e, s));
    zoff_dev_close(dev);
    test_other_gpu(argc > 1 ? argv[1] : "host");
    return zoff_test_finish("test_gpu_streams");
}
