/* nvme fallbacks: with io_uring refused (a seccomp filter makes io_uring_setup fail with
 * EPERM, as in restricted containers), AUTO picks the pthread backend with one warning and
 * still reads back what it wrote, forcing io_uring fails cleanly, and the probe says so.
 * Also the probe of a normal directory. Skips (77) if seccomp cannot be installed. */
#include "nvme/nvme.h"
#include "tests/nvme_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int deny_io_uring(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return -errno;
    return 0;
}

static void print_probe(const char *what, const zoff_nvme_probe_result *p) {
    printf("%s: io_uring %s (errno %d), O_DIRECT %s (errno %d), fs %s, %llu of %llu bytes free, "
           "auto backend: %s\n",
           what, p->uring_ok ? "ok" : "refused", p->uring_errno, p->direct_ok ? "ok" : "refused",
           p->direct_errno, p->fs_type, (unsigned long long)p->free_bytes,
           (unsigned long long)p->total_bytes, p->backend);
}

static int child(const char *dir) {
    if (deny_io_uring() != 0) return 77;
    zoff_nvme_probe_result pr;
    CHECK_OK(zoff_nvme_probe(dir, &pr));
    print_probe("with io_uring denied", &pr);
    CHECK_EQ_INT(pr.uring_ok, 0);
    CHECK_EQ_INT(pr.uring_errno, EPERM);
    CHECK(strncmp(pr.backend, "pthread", 7) == 0);

    zoff_nvme_config c = zoff_nvme_config_default();
    c.dirs[0] = dir;
    c.n_dirs = 1;
    c.capacity = 2 << 20;
    c.backend = ZOFF_NVME_BACKEND_URING;
    zoff_nvme_swap *s = NULL;
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    CHECK_EQ_INT(zoff_nvme_swap_create(&c, &s), -EPERM); /* forced: no silent fallback */
    zoff_test_init();
    c.backend = ZOFF_NVME_BACKEND_AUTO;
    REQUIRE_OK(zoff_nvme_swap_create(&c, &s));
    zoff_nvme_swap_info info;
    zoff_nvme_swap_get_info(s, &info);
    CHECK(strncmp(info.backend, "pthread", 7) == 0);
    zoff_nvme_region *g;
    REQUIRE_OK(zoff_nvme_region_define(s, "r", 1 << 20, &g));
    nvme_test_roundtrip(s, g, 1 << 20, 13);
    zoff_nvme_swap_destroy(s);
    return zoff_test_finish("test_nvme_fallback (child)");
}

int main(void) {
    zoff_test_init();
    const char *tmp = getenv("TMPDIR");
    char dir[256];
    snprintf(dir, sizeof dir, "%s/zoff-test-nvme-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return 1;
    zoff_nvme_probe_result pr;
    CHECK_OK(zoff_nvme_probe(dir, &pr));
    print_probe(dir, &pr);
    CHECK(pr.total_bytes > 0 && pr.free_bytes <= pr.total_bytes);
    CHECK(pr.fs_type[0] != 0 && pr.backend[0] != 0);
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    CHECK(zoff_nvme_probe("/nonexistent/zoff", &pr) == -ENOENT);
    zoff_test_init();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int r = child(dir);
        fflush(stdout);
        _exit(r);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    rmdir(dir);
    int crc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    if (crc == 77) {
        printf("skip: cannot install a seccomp filter to deny io_uring\n");
        return 77;
    }
    CHECK_EQ_INT(crc, 0);
    return zoff_test_finish("test_nvme_fallback");
}
