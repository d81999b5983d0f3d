/* The host backend's host_bind_kernel_cores: the device's stream threads (its kernels and
 * copies) run on the first host_kernel_threads cores only, and a CPU Adam pool reserving that
 * many cores runs on none of them; unbound, a stream thread may run anywhere. Skipped on a
 * machine with a single processing unit. */
#include "cpu_adam/cpu_adam.h"
#include "gpu/device.h"
#include "tests/test_util.h"

#include <sched.h>
#include <stdio.h>

static void record_mask(void *arg) {
    CHECK(sched_getaffinity(0, sizeof(cpu_set_t), arg) == 0);
}

static void record_mask_task(void *arg, int tid, int n_threads) {
    (void)n_threads;
    if (tid == 0) record_mask(arg);
}

/* The CPU mask of a stream thread of a host device with one kernel thread, bound or not. */
static void stream_mask(bool bind, cpu_set_t *mask) {
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    dc.kind = ZOFF_DEV_HOST;
    dc.capacity = (size_t)64 << 20;
    dc.host_kernel_threads = 1;
    dc.host_bind_kernel_cores = bind;
    zoff_dev *dev;
    REQUIRE_OK(zoff_dev_open(&dc, &dev));
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    CPU_ZERO(mask);
    CHECK_OK(zoff_dev_launch_host_fn(s, record_mask, mask));
    CHECK_OK(zoff_dev_stream_synchronize(s));
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
}

int main(void) {
    zoff_test_init();
    cpu_set_t all, bound, unbound, adam, both;
    REQUIRE_OK(sched_getaffinity(0, sizeof all, &all));
    /* the Adam pool that keeps the first core for the kernels (which needs a second core) */
    zoff_adam_pool_config pc = zoff_adam_pool_config_default();
    pc.n_threads = 1;
    pc.reserve_cores = 1;
    zoff_adam_pool *pool;
    if (CPU_COUNT(&all) < 2 || zoff_adam_pool_create(&pc, &pool) != 0) {
        fprintf(stderr, "test_gpu_host_bind: a single core, nothing to separate\n");
        return ZOFF_TEST_SKIP;
    }
    CPU_ZERO(&adam);
    CHECK_OK(zoff_adam_pool_run(pool, record_mask_task, &adam));
    zoff_adam_pool_destroy(pool);

    stream_mask(true, &bound);
    stream_mask(false, &unbound);
    CHECK(CPU_EQUAL(&unbound, &all));
    CHECK(CPU_COUNT(&bound) >= 1);
    CHECK(CPU_COUNT(&bound) < CPU_COUNT(&all));
    CPU_AND(&both, &bound, &all);
    CHECK(CPU_EQUAL(&both, &bound));
    /* ... works on another core */
    CHECK(CPU_COUNT(&adam) >= 1);
    CPU_AND(&both, &bound, &adam);
    CHECK(CPU_COUNT(&both) == 0);
    return zoff_test_finish("test_gpu_host_bind");
}
