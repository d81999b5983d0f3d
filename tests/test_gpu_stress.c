/* Many streams, events and counter signals on one backend (argv[1]), meant to run clean
 * under TSan.
 * Several host threads each drive a pipeline of S streams over R rounds: stream 0 uploads
 * round r's data, stream k copies stage k-1 into stage k after waiting on stage k-1's
 * "filled" event, and before overwriting its own stage waits on stage k+1's "drained" event
 * from the previous round; the last stream downloads into round r's output. Every output
 * must equal its input: any missing wait shows up as a mismatch (or as a TSan report).
 * Then the same threads each drive a producer and a consumer stream through one staging
 * buffer with two counters (filled, drained), every wait issued before the write it waits
 * for: the engine's pattern, from several threads at once. */
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <pthread.h>
#include <string.h>

enum { THREADS = 4, S = 6, R = 40, SZ = 16384 };

typedef struct pipeline {
    zoff_dev *dev;
    int id;
    int errors;
} pipeline;

static void *run_pipeline(void *arg) {
    pipeline *p = arg;
    zoff_dev *dev = p->dev;
    zoff_dev_stream *st[S];
    zoff_dev_event *filled[S], *drained[S];
    unsigned char *stage[S], *in, *out;
    for (int k = 0; k < S; k++) {
        REQUIRE_OK(zoff_dev_stream_create(dev, &st[k]));
        REQUIRE_OK(zoff_dev_event_create(dev, &filled[k]));
        REQUIRE_OK(zoff_dev_event_create(dev, &drained[k]));
        REQUIRE_OK(zoff_dev_malloc(dev, SZ, (void **)&stage[k]));
    }
    REQUIRE_OK(zoff_dev_host_alloc(dev, (size_t)R * SZ, (void **)&in));
    REQUIRE_OK(zoff_dev_host_alloc(dev, (size_t)R * SZ, (void **)&out));
    unsigned long long rng = 1000 + (unsigned long long)p->id;
    for (size_t i = 0; i < (size_t)R * SZ; i++)
        in[i] = (unsigned char)zoff_test_rand(&rng);
    memset(out, 0, (size_t)R * SZ);

    for (int r = 0; r < R; r++) {
        for (int k = 0; k < S; k++) {
            /* stage k may be overwritten once stage k+1 has consumed last round's data */
            if (k + 1 < S) CHECK_OK(zoff_dev_stream_wait_event(st[k], drained[k + 1]));
            if (k == 0) {
                CHECK_OK(
                    zoff_dev_memcpy_async(st[0], stage[0], in + (size_t)r * SZ, SZ, ZOFF_COPY_H2D));
            } else {
                CHECK_OK(zoff_dev_stream_wait_event(st[k], filled[k - 1]));
                CHECK_OK(zoff_dev_memcpy_async(st[k], stage[k], stage[k - 1], SZ, ZOFF_COPY_D2D));
                CHECK_OK(zoff_dev_event_record(drained[k], st[k])); /* read stage k-1 */
            }
            CHECK_OK(zoff_dev_event_record(filled[k], st[k]));
        }
        CHECK_OK(zoff_dev_memcpy_async(st[S - 1], out + (size_t)r * SZ, stage[S - 1], SZ,
                                       ZOFF_COPY_D2H));
        /* the last stage is "drained" once downloaded; nothing waits on drained[S-1]
         * except through the queue order of its own stream */
    }
    for (int k = 0; k < S; k++)
        CHECK_OK(zoff_dev_stream_synchronize(st[k]));
    if (memcmp(in, out, (size_t)R * SZ) != 0) p->errors++;
    for (int k = 0; k < S; k++) {
        CHECK_OK(zoff_dev_event_destroy(filled[k]));
        CHECK_OK(zoff_dev_event_destroy(drained[k]));
        CHECK_OK(zoff_dev_stream_destroy(st[k]));
        CHECK_OK(zoff_dev_free(dev, stage[k]));
    }
    CHECK_OK(zoff_dev_host_free(dev, in));
    CHECK_OK(zoff_dev_host_free(dev, out));
    return NULL;
}

/* Producer copies round r into the one staging buffer once the consumer has drained round
 * r-1 (counter `drained`); the consumer copies it out once the producer has filled it
 * (counter `filled`). The consumer's round is issued before the producer's. */
static void *run_counters(void *arg) {
    pipeline *p = arg;
    zoff_dev *dev = p->dev;
    zoff_dev_stream *prod, *cons;
    unsigned char *stage, *in, *out;
    uint32_t *ctr; /* [0] filled, [1] drained */
    REQUIRE_OK(zoff_dev_stream_create(dev, &prod));
    REQUIRE_OK(zoff_dev_stream_create(dev, &cons));
    REQUIRE_OK(zoff_dev_malloc(dev, SZ, (void **)&stage));
    REQUIRE_OK(zoff_dev_host_alloc(dev, (size_t)R * SZ, (void **)&in));
    REQUIRE_OK(zoff_dev_host_alloc(dev, (size_t)R * SZ, (void **)&out));
    REQUIRE_OK(zoff_dev_host_alloc(dev, 2 * sizeof(uint32_t), (void **)&ctr));
    ctr[0] = ctr[1] = 0;
    unsigned long long rng = 5000 + (unsigned long long)p->id;
    for (size_t i = 0; i < (size_t)R * SZ; i++)
        in[i] = (unsigned char)zoff_test_rand(&rng);
    memset(out, 0, (size_t)R * SZ);
    for (int r = 0; r < R; r++) {
        CHECK_OK(zoff_dev_stream_wait_value(cons, &ctr[0], (uint32_t)r + 1));
        CHECK_OK(zoff_dev_memcpy_async(cons, out + (size_t)r * SZ, stage, SZ, ZOFF_COPY_D2H));
        CHECK_OK(zoff_dev_stream_write_value(cons, &ctr[1], (uint32_t)r + 1));
        CHECK_OK(zoff_dev_stream_wait_value(prod, &ctr[1], (uint32_t)r));
        CHECK_OK(zoff_dev_memcpy_async(prod, stage, in + (size_t)r * SZ, SZ, ZOFF_COPY_H2D));
        CHECK_OK(zoff_dev_stream_write_value(prod, &ctr[0], (uint32_t)r + 1));
    }
    zoff_test_await_counter(&ctr[1], R, 60, "producer/consumer counters");
    CHECK_OK(zoff_dev_stream_synchronize(prod));
    CHECK_OK(zoff_dev_stream_synchronize(cons));
    if (memcmp(in, out, (size_t)R * SZ) != 0) p->errors++;
    CHECK_OK(zoff_dev_stream_destroy(prod));
    CHECK_OK(zoff_dev_stream_destroy(cons));
    CHECK_OK(zoff_dev_free(dev, stage));
    CHECK_OK(zoff_dev_host_free(dev, in));
    CHECK_OK(zoff_dev_host_free(dev, out));
    CHECK_OK(zoff_dev_host_free(dev, ctr));
    return NULL;
}

static void run_threads(zoff_dev *dev, void *(*fn)(void *)) {
    pthread_t th[THREADS];
    pipeline p[THREADS];
    for (int t = 0; t < THREADS; t++) {
        p[t] = (pipeline){dev, t, 0};
        REQUIRE_OK(-pthread_create(&th[t], NULL, fn, &p[t]));
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        CHECK_EQ_INT(p[t].errors, 0);
    }
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    run_threads(dev, run_pipeline);
    run_threads(dev, run_counters);
    zoff_dev_mem_stats st;
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, 0);
    CHECK_EQ_INT(st.pinned_used, 0);
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_stress");
}
