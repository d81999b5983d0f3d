/* Shared helpers of the nvme tests (see nvme_test_util.h). */
#include "tests/nvme_test_util.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

void *nvme_test_aligned_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, n)) exit(1);
    return p;
}

void nvme_test_roundtrip(zoff_nvme_swap *s, zoff_nvme_region *g, size_t len, unsigned seed) {
    uint8_t *a = nvme_test_aligned_alloc(len), *b = nvme_test_aligned_alloc(len);
    for (size_t i = 0; i < len; i++)
        a[i] = (uint8_t)(i * 31 + seed);
    memset(b, 0, len);
    zoff_nvme_request *q;
    REQUIRE_OK(zoff_nvme_submit_write(s, g, 0, a, len, &q));
    CHECK_OK(zoff_nvme_wait(q));
    zoff_nvme_request_free(q);
    REQUIRE_OK(zoff_nvme_submit_read(s, g, 0, b, len, &q));
    CHECK_OK(zoff_nvme_wait(q));
    zoff_nvme_request_free(q);
    CHECK(memcmp(a, b, len) == 0);
    free(a);
    free(b);
}
