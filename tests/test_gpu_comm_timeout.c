/* The collective timeout, end to end: runs `mpiexec -np 2 test_gpu_comm host timeout[_host]`
 * (argv[1] = mpiexec, argv[2] = test_gpu_comm), where rank 1 skips a collective that rank 0
 * issues with a 2 s timeout. The job must end on its own, soon (< 15 s: 2 s of timeout plus
 * mpirun's start and tear-down), with a non-zero exit, and rank 0's output must say
 * "[rank 0] collective ... did not complete in 2 s". Both the device collective (run on a
 * stream worker) and the host collective (the calling thread) are drilled. A job that hangs is
 * killed after 60 s and fails the test. */
#include "tests/test_util.h"

#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void drill(const char *mpiexec, const char *exe, const char *mode, const char *name) {
    int fds[2];
    if (pipe(fds)) {
        perror("pipe");
        exit(1);
    }
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        setpgid(0, 0); /* a group of its own, so that a hung job can be killed whole */
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl(mpiexec, mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", "2", exe, "host",
              mode, (char *)NULL);
        perror("execl");
        _exit(127);
    }
    close(fds[1]);
    static char out[1 << 16];
    size_t len = 0;
    bool hung = false;
    for (;;) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fds[0], &rd);
        struct timeval tv = {0, 200000};
        if (now_s() - t0 > 60) {
            hung = true;
            kill(-pid, SIGKILL);
            break;
        }
        if (select(fds[0] + 1, &rd, NULL, NULL, &tv) <= 0) continue;
        ssize_t r = read(fds[0], out + len, sizeof out - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof out - 1) len = 0; /* keep reading; the message comes early anyway */
    }
    out[len] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    double elapsed = now_s() - t0;
    printf("--- %s: %.1f s, %s %d; output:\n%s---\n", name, elapsed,
           WIFEXITED(status) ? "exit" : "signal",
           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), out);
    CHECK(!hung);
    CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK(elapsed < 15.0);
    CHECK(strstr(out, "[rank 0] ") != NULL);
    const char *msg = strstr(out, "did not complete in 2 s: a rank stopped responding or died");
    CHECK(msg != NULL);
    /* the rank prefix is on the line that says so */
    if (msg) {
        const char *line = msg;
        while (line > out && line[-1] != '\n')
            line--;
        CHECK(strstr(line, "[rank 0] ") != NULL && strstr(line, "[rank 0] ") < msg);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MPIEXEC TEST_GPU_COMM\n", argv[0]);
        return 2;
    }
    drill(argv[1], argv[2], "timeout", "device allreduce");
    drill(argv[1], argv[2], "timeout_host", "host allreduce");
    return zoff_test_finish("test_gpu_comm_timeout");
}
