/* Helpers for tests that run once per device backend (argv[1] = "host" or "cuda"). */
#ifndef ZOFF_TESTS_DEVICE_TEST_UTIL_H
#define ZOFF_TESTS_DEVICE_TEST_UTIL_H

#include "gpu/device.h"

#include <stdatomic.h>

/* Opens the backend named by argv[1] with the given capacity (0 = default). Exits 77 with a
 * message when it is cuda and no GPU is usable, and 1 on any other failure. */
zoff_dev *zoff_test_open_device(int argc, char **argv, size_t capacity);

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

#endif
