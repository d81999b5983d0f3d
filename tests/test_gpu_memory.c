/* Device memory on one backend (argv[1]): the capacity is enforced like a GPU's memory
 * (a clear ZOFF_EDEVICE_OOM, counters updated, existing allocations untouched, memory
 * usable again after a free), used/peak counters, pinned memory counters, and frees of
 * foreign pointers rejected; a large copy at odd offsets and length. Then a device filled to
 * its default capacity (on a GPU: all free memory less the headroom) must still run its first
 * GEMM and a reduction: what the backend allocates for itself (cuBLAS's workspace, scratch)
 * must not come out of it. */
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define CAP ((size_t)8 << 20)

/* Fills a device opened with the default capacity to the last byte, then runs a stream's
 * first GEMM (cuBLAS creates its handle and workspace there) and a reduction. */
static void test_capacity_sized(int argc, char **argv) {
    enum { M = 64, LEN = M * M };
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    zoff_dev_mem_stats st;
    zoff_dev_mem_stats_get(dev, &st);
    printf("default capacity: %.2f GiB\n", (double)st.capacity / (1u << 30));
    float *a, *c, *stats, *h;
    REQUIRE_OK(zoff_dev_malloc(dev, LEN * sizeof(float), (void **)&a));
    REQUIRE_OK(zoff_dev_malloc(dev, LEN * sizeof(float), (void **)&c));
    REQUIRE_OK(zoff_dev_malloc(dev, 2 * sizeof(float), (void **)&stats));
    REQUIRE_OK(zoff_dev_host_alloc(dev, (2 * LEN + 2) * sizeof(float), (void **)&h));
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));

    /* the rest of the capacity, in blocks of at most 1 GiB, untouched */
    enum { MAX_BLOCKS = 4096 };
    static void *block[MAX_BLOCKS];
    int n = 0;
    for (;;) {
        zoff_dev_mem_stats_get(dev, &st);
        size_t left = (st.capacity - st.used) / 256 * 256;
        if (left == 0 || n == MAX_BLOCKS) break;
        size_t bytes = left < ((size_t)1 << 30) ? left : (size_t)1 << 30;
        int rc = zoff_dev_malloc(dev, bytes, &block[n]);
        if (rc) {
            fprintf(stderr, "filling to capacity: %zu bytes with %zu of %zu used: %s: %s\n", bytes,
                    st.used, st.capacity, zoff_strerror(rc), zoff_last_error_detail());
            CHECK_OK(rc);
            break;
        }
        n++;
    }
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, st.capacity / 256 * 256);
    void *more = NULL;
    CHECK_EQ_INT(zoff_dev_malloc(dev, 256, &more), ZOFF_EDEVICE_OOM);

    for (int i = 0; i < LEN; i++)
        h[i] = (float)(i % 5) - 2.0f;
    CHECK_OK(zoff_dev_memcpy_async(s, a, h, LEN * sizeof(float), ZOFF_COPY_H2D));
    CHECK_OK(zoff_dev_op_gemm(s, true, false, M, M, M, 1.0f, a, M, a, M, ZOFF_F32, 0.0f, c,
                              ZOFF_F32, M));
    CHECK_OK(zoff_dev_op_sumsq_nonfinite(s, c, ZOFF_F32, LEN, stats));
    CHECK_OK(zoff_dev_memcpy_async(s, h + LEN, c, LEN * sizeof(float), ZOFF_COPY_D2H));
    CHECK_OK(zoff_dev_memcpy_async(s, h + 2 * LEN, stats, 2 * sizeof(float), ZOFF_COPY_D2H));
    CHECK_OK(zoff_dev_stream_synchronize(s));
    int bad = 0;
    double sumsq = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) { /* c = a^T a */
            double ref = 0;
            for (int k = 0; k < M; k++)
                ref += (double)h[k * M + i] * h[k * M + j];
            bad += fabs(h[LEN + i * M + j] - ref) > 1e-4 * (1 + fabs(ref));
            sumsq += ref * ref;
        }
    CHECK_EQ_INT(bad, 0);
    CHECK(fabs(h[2 * LEN] - sumsq) <= 1e-4 * sumsq);
    CHECK(h[2 * LEN + 1] == 0.0f);
    printf("capacity-sized: %d blocks, GEMM and reduction ran\n", n);

    for (int i = 0; i < n; i++)
        CHECK_OK(zoff_dev_free(dev, block[i]));
    CHECK_OK(zoff_dev_free(dev, a));
    CHECK_OK(zoff_dev_free(dev, c));
    CHECK_OK(zoff_dev_free(dev, stats));
    CHECK_OK(zoff_dev_host_free(dev, h));
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, CAP);
    zoff_dev_mem_stats st;
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.capacity, CAP);
    CHECK_EQ_INT(st.used, 0);

    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    unsigned char *a, *b, *h;
    REQUIRE_OK(zoff_dev_malloc(dev, 5u << 20, (void **)&a));
    REQUIRE_OK(zoff_dev_host_alloc(dev, 5u << 20, (void **)&h));
    memset(h, 0x5A, 5u << 20);
    CHECK_OK(zoff_dev_memcpy(dev, a, h, 5u << 20, ZOFF_COPY_H2D));

    /* 5 MiB + 4 MiB > 8 MiB: refused, with the bytes named in the detail. */
    b = (unsigned char *)0x1;
    int rc = zoff_dev_malloc(dev, 4u << 20, (void **)&b);
    CHECK_EQ_INT(rc, ZOFF_EDEVICE_OOM);
    CHECK(b == (unsigned char *)0x1);
    CHECK(strstr(zoff_last_error_detail(), "out of memory") != NULL);
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, 5u << 20);
    CHECK_EQ_INT(st.n_oom, 1);
    CHECK_EQ_INT(st.pinned_used, 5u << 20);

    /* The existing allocation is intact. */
    memset(h, 0, 5u << 20);
    CHECK_OK(zoff_dev_memcpy(dev, h, a, 5u << 20, ZOFF_COPY_D2H));
    size_t bad = 0;
    for (size_t i = 0; i < (5u << 20); i++)
        bad += h[i] != 0x5A;
    CHECK_EQ_INT(bad, 0);

    /* A large copy at odd offsets and length (the host backend's uploads use non-temporal
     * stores from 256 KiB on: an unaligned head, the 64-byte body, a tail) arrives whole. */
    const size_t big = (2u << 20) + 61, half = (5u << 20) / 2;
    for (size_t i = 0; i < half; i++)
        h[i] = (unsigned char)(i * 131 + 7);
    memset(h + half, 0, half);
    CHECK_OK(zoff_dev_memcpy(dev, a + 3, h + 7, big, ZOFF_COPY_H2D));
    CHECK_OK(zoff_dev_memcpy(dev, h + half + 5, a + 3, big, ZOFF_COPY_D2H));
    bad = 0;
    for (size_t i = 0; i < big; i++)
        bad += h[half + 5 + i] != h[7 + i];
    CHECK_EQ_INT(bad, 0);
    CHECK(h[half + 4] == 0 && h[half + 5 + big] == 0); /* nothing written around it */

    /* Up to exactly the capacity fits; one byte more does not. */
    CHECK_OK(zoff_dev_malloc(dev, 3u << 20, (void **)&b));
    void *c = NULL;
    CHECK_EQ_INT(zoff_dev_malloc(dev, 1, &c), ZOFF_EDEVICE_OOM);
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, CAP);
    CHECK_EQ_INT(st.peak, CAP);

    /* Freed memory is usable again; the peak stays until reset. */
    CHECK_OK(zoff_dev_free(dev, a));
    CHECK_OK(zoff_dev_free(dev, b));
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, 0);
    CHECK_EQ_INT(st.peak, CAP);
    zoff_dev_mem_reset_peak(dev);
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.peak, 0);
    CHECK_OK(zoff_dev_malloc(dev, 7u << 20, (void **)&a));
    CHECK_OK(zoff_dev_free(dev, a));

    /* Sizes round up to the 256-byte alignment. */
    CHECK_OK(zoff_dev_malloc(dev, 1, (void **)&a));
    CHECK(((uintptr_t)a % 256) == 0);
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.used, 256);
    CHECK_OK(zoff_dev_free(dev, a));

    /* Foreign pointers are rejected, not freed. */
    int local;
    CHECK_EQ_INT(zoff_dev_free(dev, &local), -EINVAL);
    CHECK_EQ_INT(zoff_dev_host_free(dev, &local), -EINVAL);
    CHECK_EQ_INT(zoff_dev_free(dev, h), -EINVAL); /* pinned is not device memory */
    CHECK_OK(zoff_dev_free(dev, NULL));

    CHECK_OK(zoff_dev_host_free(dev, h));
    zoff_dev_mem_stats_get(dev, &st);
    CHECK_EQ_INT(st.pinned_used, 0);
    CHECK_EQ_INT(st.pinned_peak, 5u << 20);
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
    test_capacity_sized(argc, argv);
    return zoff_test_finish("test_gpu_memory");
}
