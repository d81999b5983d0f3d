/* SIGINT and SIGTERM for `zoff train` (see train_support.h). Schedulers and `timeout` send
 * SIGTERM, a user at a terminal SIGINT: both get the same orderly stop. The handler touches
 * only a sig_atomic_t and, on the second signal, async-signal-safe calls (write, unlink,
 * _exit). */
#include "cli/train_support.h"
#include "nvme/nvme.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop_signal;

static void say(const char *s) {
    ssize_t r = write(STDERR_FILENO, s, strlen(s));
    (void)r;
}

static void on_stop_signal(int sig) {
    if (g_stop_signal) {
        say("\nzoff train: second signal: exiting now (swap files released, no checkpoint)\n");
        zoff_nvme_release_files_now();
        _exit(128 + sig);
    }
    g_stop_signal = sig;
    say(sig == SIGTERM ? "\nzoff train: SIGTERM: finishing the step, then saving a checkpoint "
                         "(signal again to exit at once)\n"
                       : "\nzoff train: interrupted: finishing the step, then saving a "
                         "checkpoint (Ctrl-C again to exit at once)\n");
}

void zoff_train_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* the step in progress goes on undisturbed */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int zoff_train_stop_signal(void) {
    return g_stop_signal;
}
