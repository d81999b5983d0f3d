/* nvme buffer pool: fixed budget allocated up front through the default allocator or a
 * caller's callback, acquire waits for a release instead of allocating, try/timeout
 * variants, high-water mark, alignment, and rejection of foreign buffers. */
#include "nvme/nvme.h"
#include "tests/test_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int g_allocs, g_frees;

static void *my_alloc(size_t n, void *user) {
    (void)user;
    void *p = NULL;
    if (posix_memalign(&p, 4096, n)) return NULL;
    atomic_fetch_add(&g_allocs, 1);
    return p;
}

static void my_free(void *p, size_t n, void *user) {
    (void)n, (void)user;
    atomic_fetch_add(&g_frees, 1);
    free(p);
}

static void *null_alloc(size_t n, void *user) {
    (void)n, (void)user;
    return NULL;
}

typedef struct {
    zoff_nvme_pool *pool;
    void *buf;
    atomic_int got;
} waiter;

static void *wait_thread(void *arg) {
    waiter *w = arg;
    if (zoff_nvme_pool_acquire(w->pool, &w->buf) == 0) atomic_store(&w->got, 1);
    return NULL;
}

/* In a child without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at 64 KiB (as for an ordinary
 * user), mlock fails: the pool still works, unpinned, and says so. No threads here (fork). */
static int memlock_child(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) return 77;
    d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    if (syscall(SYS_capset, &h, d) != 0) return 77;
    struct rlimit r = {64 << 10, 64 << 10};
    if (setrlimit(RLIMIT_MEMLOCK, &r) != 0) return 77;
    zoff_nvme_pool_config c = zoff_nvme_pool_config_default();
    c.budget = 4 << 20;
    c.buffer_size = 1 << 20;
    zoff_nvme_pool *p;
    if (zoff_nvme_pool_create(&c, &p) != 0) return 1;
    zoff_nvme_pool_stats st;
    zoff_nvme_pool_get_stats(p, &st);
    void *b;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    st.locked = 0; /* the sanitizers' mlock interceptor pretends to succeed */
#endif
    int ok = st.locked == 0 && st.n_buffers == 4 && zoff_nvme_pool_acquire(p, &b) == 0;
    if (ok) memset(b, 1, 1 << 20);
    zoff_nvme_pool_destroy(p);
    return ok ? 0 : 1;
}

int main(void) {
    zoff_test_init();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(memlock_child());
    int wst = 0;
    waitpid(pid, &wst, 0);
    int crc = WIFEXITED(wst) ? WEXITSTATUS(wst) : 1;
    if (crc == 77)
        printf("RLIMIT_MEMLOCK case skipped: cannot drop CAP_IPC_LOCK\n");
    else
        CHECK_EQ_INT(crc, 0);
    zoff_nvme_pool_config c = zoff_nvme_pool_config_default();
    c.budget = 3 * (256 << 10) + 1000; /* not a multiple: rounds down to 3 buffers */
    c.buffer_size = 256 << 10;
    zoff_nvme_pool *p;
    REQUIRE_OK(zoff_nvme_pool_create(&c, &p));
    zoff_nvme_pool_stats st;
    zoff_nvme_pool_get_stats(p, &st);
    CHECK_EQ_INT(st.n_buffers, 3);
    CHECK_EQ_INT(st.budget, 3 * (256 << 10));
    printf("default allocator: mlock %s\n", st.locked ? "succeeded" : "failed (not pinned)");
    void *b[3], *extra = NULL;
    for (int i = 0; i < 3; i++) {
        REQUIRE_OK(zoff_nvme_pool_acquire(p, &b[i]));
        CHECK((uintptr_t)b[i] % 4096 == 0);
    }
    CHECK_EQ_INT(zoff_nvme_pool_try_acquire(p, &extra), -EAGAIN);
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    CHECK_EQ_INT(zoff_nvme_pool_acquire_timeout(p, 20, &extra), ZOFF_EHOST_OOM);
    int x;
    CHECK_EQ_INT(zoff_nvme_pool_release(p, &x), -EINVAL);
    zoff_test_init();
    zoff_nvme_pool_get_stats(p, &st);
    CHECK_EQ_INT(st.in_use, 3);
    CHECK_EQ_INT(st.high_water, 3);

    /* a blocked acquire is served by a release, not by allocating */
    waiter w = {p, NULL, 0};
    pthread_t t;
    pthread_create(&t, NULL, wait_thread, &w);
    usleep(20000);
    CHECK_EQ_INT(atomic_load(&w.got), 0);
    CHECK_OK(zoff_nvme_pool_release(p, b[1]));
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&w.got), 1);
    CHECK(w.buf == b[1]);
    CHECK_OK(zoff_nvme_pool_release(p, b[0]));
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    CHECK_EQ_INT(zoff_nvme_pool_release(p, b[0]), -EINVAL); /* double release */
    zoff_test_init();
    CHECK_OK(zoff_nvme_pool_acquire_timeout(p, 20, &extra));
    CHECK_OK(zoff_nvme_pool_release(p, extra));
    CHECK_OK(zoff_nvme_pool_release(p, b[2]));
    CHECK_OK(zoff_nvme_pool_release(p, w.buf));
    zoff_nvme_pool_get_stats(p, &st);
    CHECK_EQ_INT(st.in_use, 0);
    CHECK_EQ_INT(st.high_water_bytes, 3 * (256 << 10));
    zoff_nvme_pool_destroy(p);

    /* the caller's allocator (the engine passes CUDA pinned memory) */
    c.alloc = my_alloc;
    c.free = my_free;
    c.budget = 4 << 20;
    c.buffer_size = 1 << 20;
    REQUIRE_OK(zoff_nvme_pool_create(&c, &p));
    CHECK_EQ_INT(atomic_load(&g_allocs), 4);
    zoff_nvme_pool_destroy(p);
    CHECK_EQ_INT(atomic_load(&g_frees), 4);

    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    c.alloc = null_alloc;
    CHECK_EQ_INT(zoff_nvme_pool_create(&c, &p), ZOFF_EHOST_OOM);
    c.alloc = NULL;
    c.buffer_size = 1000;
    CHECK_EQ_INT(zoff_nvme_pool_create(&c, &p), ZOFF_ECONFIG);
    c.buffer_size = 1 << 20;
    c.budget = 4096;
    CHECK_EQ_INT(zoff_nvme_pool_create(&c, &p), ZOFF_ECONFIG);
    zoff_test_init();
    /* a budget above RLIMIT_MEMLOCK still works, unpinned, with one warning */
    c.budget = 64 << 20;
    c.buffer_size = 8 << 20;
    REQUIRE_OK(zoff_nvme_pool_create(&c, &p));
    zoff_nvme_pool_get_stats(p, &st);
    CHECK_EQ_INT(st.n_buffers, 8);
    zoff_nvme_pool_destroy(p);
    return zoff_test_finish("test_nvme_pool");
}
