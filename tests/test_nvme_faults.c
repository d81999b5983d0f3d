/* nvme swapper under faults: injected short transfers and -EAGAIN (requeued/retried, data
 * intact), an injected -EIO that fails only its request, a byte flipped in the swap file
 * (ZOFF_ECHECKSUM), a full disk (size-limited tmpfs: -ENOSPC at preallocation and, without
 * preallocation, for the request), RLIMIT_FSIZE (-EFBIG for the request), a read-only file
 * system (-EROFS naming the directory), stale files of a crashed run, cancellation, and
 * destroy with requests in flight. Each backend that works here is exercised; the mount
 * cases skip themselves (not the test) when mount is not permitted. */
#include "nvme/nvme.h"
#include "tests/nvme_test_util.h"
#include "tests/test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_root[256];
static int g_uring = 1;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

#define aalloc nvme_test_aligned_alloc

static void fill(uint8_t *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 31 + seed);
}

static zoff_nvme_config one_dir(const char *dir, zoff_nvme_backend be) {
    zoff_nvme_config c = zoff_nvme_config_default();
    c.dirs[0] = dir;
    c.n_dirs = 1;
    c.capacity = 4 << 20;
    c.block_size = 64 << 10;
    c.stripe_size = 256 << 10;
    c.queue_depth = 8;
    c.backend = be;
    return c;
}

static const zoff_nvme_backend k_backends[] = {ZOFF_NVME_BACKEND_URING, ZOFF_NVME_BACKEND_PTHREAD};

static int create_or_skip(zoff_nvme_config *c, zoff_nvme_swap **s) {
    int rc = zoff_nvme_swap_create(c, s);
    if ((rc == -ENOSYS || rc == -EPERM) && c->backend != ZOFF_NVME_BACKEND_PTHREAD) {
        g_uring = 0;
        return 77;
    }
    REQUIRE_OK(rc);
    return 0;
}

static void test_injected(zoff_nvme_backend be) {
    zoff_nvme_config c = one_dir(g_root, be);
    c.debug_short_every = 3;
    c.debug_eagain_every = 5;
    zoff_nvme_swap *s;
    if (create_or_skip(&c, &s)) return;
    zoff_nvme_region *g;
    REQUIRE_OK(zoff_nvme_region_define(s, "r", 1 << 20, &g));
    nvme_test_roundtrip(s, g, 1 << 20, 3);
    zoff_nvme_swap_info info;
    zoff_nvme_swap_get_info(s, &info);
    CHECK(info.short_requeued > 0);
    CHECK(info.retried > 0);
    zoff_nvme_swap_destroy(s);

    /* an injected EIO fails its own request only */
    c = one_dir(g_root, be);
    c.debug_error_every = 4;
    c.debug_error_errno = EIO;
    c.queue_depth = 1;
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s));
    REQUIRE_OK(zoff_nvme_region_define(s, "r", 1 << 20, &g));
    uint8_t *a = aalloc(64 << 10), *b = aalloc(64 << 10);
    fill(a, 64 << 10, 3);
    zoff_nvme_request *q;
    int n_eio = 0, n_ok = 0;
    for (int i = 0; i < 8; i++) { /* one 64 KiB op per request: requests 3 and 7 fail */
        REQUIRE_OK(zoff_nvme_submit_write(s, g, (uint64_t)i << 16, a, 64 << 10, &q));
        int rc = zoff_nvme_wait(q);
        if (rc == -EIO) {
            n_eio++;
            CHECK(strstr(zoff_nvme_request_detail(q), ".dat") != NULL); /* names the file */
        } else {
            CHECK_OK(rc);
            n_ok++;
        }
        zoff_nvme_request_free(q);
    }
    CHECK_EQ_INT(n_eio, 2);
    CHECK_EQ_INT(n_ok, 6);
    /* the failed write's range reads as never written, the others read back fine */
    REQUIRE_OK(zoff_nvme_submit_read(s, g, 3 << 16, b, 64 << 10, &q));
    CHECK_EQ_INT(zoff_nvme_wait(q), ZOFF_ENOTWRITTEN);
    zoff_nvme_request_free(q);
    zoff_nvme_swap_destroy(s);
    free(a);
    free(b);
}

static int find_dat(const char *dir, char *out, size_t n) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".dat") == 0) {
            snprintf(out, n, "%s/%s", dir, e->d_name);
            found = 1;
        }
    }
    if (d) closedir(d);
    return found;
}

static void test_corruption(zoff_nvme_backend be) {
    zoff_nvme_config c = one_dir(g_root, be);
    zoff_nvme_swap *s;
    if (create_or_skip(&c, &s)) return;
    zoff_nvme_region *g;
    REQUIRE_OK(zoff_nvme_region_define(s, "bucket 0: master", 256 << 10, &g));
    uint8_t *a = aalloc(256 << 10);
    fill(a, 256 << 10, 9);
    zoff_nvme_request *q;
    REQUIRE_OK(zoff_nvme_submit_write(s, g, 0, a, 256 << 10, &q));
    CHECK_OK(zoff_nvme_wait(q));
    zoff_nvme_request_free(q);
    char path[512];
    REQUIRE_OK(find_dat(g_root, path, sizeof path) ? 0 : -ENOENT);
    int fd = open(path, O_RDWR);
    uint8_t byte;
    CHECK(pread(fd, &byte, 1, 100000) == 1);
    byte ^= 0x40;
    CHECK(pwrite(fd, &byte, 1, 100000) == 1);
    fsync(fd);
    close(fd);
    REQUIRE_OK(zoff_nvme_submit_read(s, g, 0, a, 256 << 10, &q));
    CHECK_EQ_INT(zoff_nvme_wait(q), ZOFF_ECHECKSUM);
    CHECK(strstr(zoff_nvme_request_detail(q), "bucket 0: master") != NULL);
    zoff_nvme_request_free(q);
    /* blocks not touched by the flip still verify */
    REQUIRE_OK(zoff_nvme_submit_read(s, g, 128 << 10, a, 128 << 10, &q));
    CHECK_OK(zoff_nvme_wait(q));
    zoff_nvme_request_free(q);
    zoff_nvme_swap_destroy(s);
    free(a);
}

static void test_cancel_and_shutdown(zoff_nvme_backend be) {
    zoff_nvme_config c = one_dir(g_root, be);
    c.queue_depth = 2;
    c.block_size = 16 << 10;
    zoff_nvme_swap *s;
    if (create_or_skip(&c, &s)) return;
    enum { N = 32 };
    zoff_nvme_region *g;
    REQUIRE_OK(zoff_nvme_region_define(s, "r", N * (64 << 10), &g));
    uint8_t *a = aalloc(64 << 10), *b = aalloc(64 << 10);
    fill(a, 64 << 10, 1);
    zoff_nvme_request *q[N];
    for (int i = 0; i < N; i++)
        REQUIRE_OK(zoff_nvme_submit_write(s, g, (uint64_t)i << 16, a, 64 << 10, &q[i]));
    for (int i = N / 2; i < N; i++)
        zoff_nvme_cancel(q[i]);
    int n_canceled = 0;
    for (int i = 0; i < N; i++) {
        int rc = zoff_nvme_wait(q[i]);
        CHECK(rc == 0 || (rc == ZOFF_ECANCELED && i >= N / 2));
        n_canceled += rc == ZOFF_ECANCELED;
        zoff_nvme_request *r; /* into b: later writes from a are still in flight */
        REQUIRE_OK(zoff_nvme_submit_read(s, g, (uint64_t)i << 16, b, 64 << 10, &r));
        CHECK_EQ_INT(zoff_nvme_wait(r), rc == 0 ? 0 : ZOFF_ENOTWRITTEN);
        zoff_nvme_request_free(r);
        zoff_nvme_request_free(q[i]);
    }
    printf("canceled %d of %d\n", n_canceled, N / 2);
    CHECK(n_canceled > 0);
    /* destroy with requests in flight and handles never freed: no hang, no leak */
    for (int i = 0; i < N; i++)
        REQUIRE_OK(zoff_nvme_submit_write(s, g, (uint64_t)i << 16, a, 64 << 10, &q[i]));
    zoff_nvme_swap_destroy(s);
    free(a);
    free(b);
}

static void test_stale(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/stale", g_root);
    mkdir(dir, 0700);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* a run that crashed with its swap open: its files, its lock no longer held (no
         * swapper threads here: sanitizers do not support threads after fork) */
        char p[400];
        snprintf(p, sizeof p, "%s/zoff-swap.%d.0.lock", dir, (int)getpid());
        int fd = open(p, O_RDWR | O_CREAT, 0600);
        snprintf(p, sizeof p, "%s/zoff-swap.%d.0.0.dat", dir, (int)getpid());
        int fd2 = open(p, O_RDWR | O_CREAT, 0600);
        _exit(fd >= 0 && fd2 >= 0 && ftruncate(fd2, 1 << 20) == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zoff_nvme_config c = one_dir(dir, ZOFF_NVME_BACKEND_PTHREAD);
    zoff_nvme_swap *s, *s2;
    char p[400];
    snprintf(p, sizeof p, "%s/zoff-swap.%d.0.0.dat", dir, (int)pid);
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s));
    zoff_nvme_swap_info info;
    zoff_nvme_swap_get_info(s, &info);
    CHECK_EQ_INT(info.n_stale_found, 2); /* its .dat and .lock: its PID is gone, so reclaimed */
    CHECK(access(p, F_OK) != 0);
    /* a live swap in the same directory is not stale */
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s2));
    zoff_nvme_swap_get_info(s2, &info);
    CHECK_EQ_INT(info.n_stale_found, 0);
    zoff_nvme_swap_destroy(s2);
    zoff_nvme_swap_destroy(s);

    /* unlocked files whose PID still runs: left in place until remove_stale says otherwise */
    int pipefd[2];
    REQUIRE_OK(pipe(pipefd));
    pid_t live = fork();
    if (live == 0) {
        char b;
        close(pipefd[1]);
        _exit(read(pipefd[0], &b, 1) < 0); /* lives until the parent closes the pipe */
    }
    close(pipefd[0]);
    snprintf(p, sizeof p, "%s/zoff-swap.%d.0.0.dat", dir, (int)live);
    int fd = open(p, O_RDWR | O_CREAT, 0600);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s));
    zoff_nvme_swap_get_info(s, &info);
    CHECK_EQ_INT(info.n_stale_found, 1);
    CHECK(access(p, F_OK) == 0); /* the PID is alive: not reclaimed */
    zoff_nvme_swap_destroy(s);
    c.remove_stale = 1;
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s));
    CHECK(access(p, F_OK) != 0);
    /* the signal-safe release unlinks a live swap's files at once */
    zoff_nvme_release_files_now();
    DIR *d = opendir(dir);
    int left = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        left += strncmp(e->d_name, "zoff-swap.", 10) == 0;
    if (d) closedir(d);
    CHECK_EQ_INT(left, 0);
    zoff_nvme_swap_destroy(s);
    close(pipefd[1]);
    waitpid(live, &st, 0);
}

static void test_efbig(zoff_nvme_backend be) {
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 1 << 20;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        printf("EFBIG case skipped: setrlimit failed\n");
        return;
    }
    zoff_nvme_config c = one_dir(g_root, be);
    c.preallocate = 0;
    zoff_nvme_swap *s;
    if (create_or_skip(&c, &s) == 0) {
        zoff_nvme_region *g;
        REQUIRE_OK(zoff_nvme_region_define(s, "r", 2 << 20, &g));
        uint8_t *a = aalloc(512 << 10);
        fill(a, 512 << 10, 2);
        zoff_nvme_request *q;
        REQUIRE_OK(zoff_nvme_submit_write(s, g, 0, a, 512 << 10, &q));
        CHECK_OK(zoff_nvme_wait(q));
        zoff_nvme_request_free(q);
        REQUIRE_OK(zoff_nvme_submit_write(s, g, 1536 << 10, a, 512 << 10, &q));
        CHECK_EQ_INT(zoff_nvme_wait(q), -EFBIG);
        zoff_nvme_request_free(q);
        zoff_nvme_swap_destroy(s);
        free(a);
    }
    /* with preallocation, the limit shows at creation */
    c.preallocate = 1;
    CHECK_EQ_INT(zoff_nvme_swap_create(&c, &s), -EFBIG);
    setrlimit(RLIMIT_FSIZE, &old);
}

/* An io_uring ring drops its registered files asynchronously after it is closed, so an
 * unmount right after destroy may see EBUSY for a moment: retry, then detach lazily. */
static void unmount(const char *mnt) {
    for (int i = 0; i < 100; i++) {
        if (umount(mnt) == 0) return;
        if (errno != EBUSY) break;
        usleep(10000);
    }
    if (umount2(mnt, MNT_DETACH) != 0) {
        fprintf(stderr, "cannot unmount %s: %s\n", mnt, strerror(errno));
        zoff_test_failures++;
    }
}

/* Full disk and read-only file system on small tmpfs mounts (root only). */
static void test_mounts(zoff_nvme_backend be) {
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/small", g_root);
    mkdir(mnt, 0700);
    if (mount("zoff-test", mnt, "tmpfs", 0, "size=4m") != 0) {
        printf("full-disk and EROFS cases skipped: cannot mount tmpfs (%s)\n", strerror(errno));
        return;
    }
    zoff_nvme_config c = one_dir(mnt, be);
    c.capacity = 8 << 20;
    zoff_nvme_swap *s;
    CHECK_EQ_INT(zoff_nvme_swap_create(&c, &s), -ENOSPC); /* shows at start-up */
    c.preallocate = 0;
    if (create_or_skip(&c, &s) == 0) {
        zoff_nvme_region *g;
        REQUIRE_OK(zoff_nvme_region_define(s, "r", 8 << 20, &g));
        uint8_t *a = aalloc(1 << 20);
        fill(a, 1 << 20, 5);
        int n_nospc = 0;
        for (int i = 0; i < 8; i++) {
            zoff_nvme_request *q;
            REQUIRE_OK(zoff_nvme_submit_write(s, g, (uint64_t)i << 20, a, 1 << 20, &q));
            int rc = zoff_nvme_wait(q);
            CHECK(rc == 0 || rc == -ENOSPC);
            n_nospc += rc == -ENOSPC;
            zoff_nvme_request_free(q);
        }
        CHECK(n_nospc >= 4);
        zoff_nvme_swap_destroy(s);
        free(a);
    }
    unmount(mnt);
    if (mount("zoff-test", mnt, "tmpfs", MS_RDONLY, "size=1m") == 0) {
        c = one_dir(mnt, be);
        CHECK_EQ_INT(zoff_nvme_swap_create(&c, &s), -EROFS);
        CHECK(strstr(zoff_last_error_detail(), mnt) != NULL);
        unmount(mnt);
    }
    /* ramfs refuses O_DIRECT (EINVAL; tmpfs accepts it since Linux 6.6): buffered, one
     * warning, same results */
    if (mount("zoff-test", mnt, "ramfs", 0, NULL) == 0) {
        c = one_dir(mnt, be);
        c.capacity = 1 << 20;
        if (create_or_skip(&c, &s) == 0) {
            zoff_nvme_swap_info info;
            zoff_nvme_swap_get_info(s, &info);
            CHECK_EQ_INT(info.direct, 0);
            printf("on ramfs: backend %s\n", info.backend);
            zoff_nvme_region *g;
            REQUIRE_OK(zoff_nvme_region_define(s, "r", 1 << 20, &g));
            nvme_test_roundtrip(s, g, 1 << 20, 11);
            zoff_nvme_swap_destroy(s);
        }
        unmount(mnt);
    }
}

int main(void) {
    zoff_test_init();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/zoff-test-nvme-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    for (size_t i = 0; i < sizeof k_backends / sizeof k_backends[0]; i++) {
        test_injected(k_backends[i]);
        test_corruption(k_backends[i]);
        test_cancel_and_shutdown(k_backends[i]);
        test_efbig(k_backends[i]);
        test_mounts(k_backends[i]);
    }
    test_stale();
    nftw(g_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    int rc = zoff_test_finish("test_nvme_faults");
    if (rc == 0 && !g_uring) {
        printf("io_uring cases skipped: io_uring is refused on this machine\n");
        return 77;
    }
    return rc;
}
