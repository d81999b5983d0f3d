/* Shared helpers of the nvme tests. */
#ifndef ZOFF_TESTS_NVME_TEST_UTIL_H
#define ZOFF_TESTS_NVME_TEST_UTIL_H

#include "nvme/nvme.h"

#include <stddef.h>
#include <stdint.h>

/* 4096-aligned memory for O_DIRECT; exits on failure. */
void *nvme_test_aligned_alloc(size_t n);
/* Writes len bytes of a seeded pattern at offset 0 of region g, reads them back and checks
 * them (CHECK failures counted as usual). */
void nvme_test_roundtrip(zoff_nvme_swap *s, zoff_nvme_region *g, size_t len, unsigned seed);

#endif
