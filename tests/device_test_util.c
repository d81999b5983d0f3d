/* Helpers for per-backend device tests (see device_test_util.h). */
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

zoff_dev *zoff_test_open_device(int argc, char **argv, size_t capacity) {
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.capacity = capacity;
    return zoff_test_open_device_cfg(argc, argv, &cfg);
}

zoff_dev *zoff_test_open_device_cfg(int argc, char **argv, zoff_dev_config *cfg) {
    zoff_test_init();
    const char *name = argc > 1 ? argv[1] : "host";
    if (zoff_dev_kind_parse(name, &cfg->kind) || cfg->kind == ZOFF_DEV_AUTO) {
        fprintf(stderr, "usage: %s host|cuda\n", argv[0]);
        exit(2);
    }
    zoff_dev *dev = NULL;
    int rc = zoff_dev_open(cfg, &dev);
    if (rc == ZOFF_ENODEVICE || rc == ZOFF_ENOBACKEND) {
        printf("skip: %s backend unavailable: %s\n", name, zoff_last_error_detail());
        exit(ZOFF_TEST_SKIP);
    }
    if (rc) {
        fprintf(stderr, "cannot open %s device: %s: %s\n", name, zoff_strerror(rc),
                zoff_last_error_detail());
        exit(1);
    }
    printf("device: %s\n", zoff_dev_name(dev));
    return dev;
}

void zoff_test_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void zoff_test_gate_wait(void *gate) {
    zoff_test_gate *g = gate;
    atomic_store(&g->reached, 1);
    while (!atomic_load(&g->open))
        zoff_test_sleep_ms(1);
}

void zoff_test_gate_open(zoff_test_gate *g) {
    atomic_store(&g->open, 1);
}

void zoff_test_gate_await_reached(zoff_test_gate *g) {
    while (!atomic_load(&g->reached))
        zoff_test_sleep_ms(1);
}

static const char *watchdog_what = "";

static void watchdog_fire(int sig) {
    (void)sig;
    static const char head[] = "deadlock: the test did not finish in time: ";
    ssize_t r = write(2, head, sizeof head - 1);
    r = write(2, watchdog_what, strlen(watchdog_what));
    r = write(2, "\n", 1);
    (void)r;
    _exit(1);
}

void zoff_test_watchdog_arm(int seconds, const char *what) {
    watchdog_what = what;
    signal(SIGALRM, watchdog_fire);
    alarm((unsigned)seconds);
}

void zoff_test_watchdog_disarm(void) {
    alarm(0);
}

void zoff_test_await_counter(const uint32_t *flag, uint32_t value, int seconds, const char *what) {
    for (int waited = 0; (int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) < 0; waited++) {
        if (waited >= seconds * 1000) {
            fprintf(stderr, "deadlock: counter at %u, waited %d s for %u: %s\n",
                    __atomic_load_n(flag, __ATOMIC_ACQUIRE), seconds, value, what);
            fflush(stderr);
            _exit(1); /* streams still wait: no orderly tear-down */
        }
        zoff_test_sleep_ms(1);
    }
}
