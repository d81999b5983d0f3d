/* Helpers for tests that run once per device backend (argv[1] = "host" or "cuda"). */
#ifndef ZOFF_TESTS_DEVICE_TEST_UTIL_H
#define ZOFF_TESTS_DEVICE_TEST_UTIL_H

#include "gpu/device.h"

#include <stdatomic.h>
#include <stdint.h>

/* Opens the backend named by argv[1] with the given capacity (0 = default). Exits 77 with a
 * message when it is cuda and no GPU is usable, and 1 on any other failure. */
zoff_dev *zoff_test_open_device(int argc, char **argv, size_t capacity);
/* The same with more settings: cfg's kind is set from argv[1], the rest is used as given. */
zoff_dev *zoff_test_open_device_cfg(int argc, char **argv, zoff_dev_config *cfg);

/* A gate that a stream can be made to block on: launch zoff_test_gate_wait as a host
 * function and the stream stops there until zoff_test_gate_open(). Deterministic ordering
 * for tests without relying on timing. */
typedef struct zoff_test_gate {
    atomic_int open;
    atomic_int reached;
} zoff_test_gate;

void zoff_test_gate_wait(void *gate);
void zoff_test_gate_open(zoff_test_gate *g);
/* Blocks the calling (host) thread until a stream has reached the gate. */
void zoff_test_gate_await_reached(zoff_test_gate *g);
void zoff_test_sleep_ms(int ms);

/* A deadlock must fail a test with its name, not eat ctest's whole timeout: arms a timer that
 * prints "deadlock: what" and exits 1 unless zoff_test_watchdog_disarm() comes first. */
void zoff_test_watchdog_arm(int seconds, const char *what);
void zoff_test_watchdog_disarm(void);
/* Blocks until the counter reaches value, or fails the process (exit 1) after `seconds`
 * naming `what`: a stream wait that never ends is reported instead of hanging. */
void zoff_test_await_counter(const uint32_t *flag, uint32_t value, int seconds, const char *what);

#endif
