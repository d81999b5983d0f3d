/* Device memory on one backend (argv[1]): the capacity is enforced like a GPU's memory
 * (a clear ZOFF_EDEVICE_OOM, counters updated, existing allocations untouched, memory
 * usable again after a free), used/peak counters, pinned memory counters, and frees of
 * foreign pointers rejected. */
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <string.h>

#define CAP ((size_t)8 << 20)

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
    return zoff_test_finish("test_gpu_memory");
}
