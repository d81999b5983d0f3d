/* Checksums of swapped blocks: XXH3-64 from libxxhash (fast enough to verify every block on
 * read at NVMe speed, and not reimplemented here). Stateless and thread-safe. */
#include "nvme/nvme.h"

#include <xxhash.h>

uint64_t zoff_nvme_checksum(const void *data, size_t len) {
    return XXH3_64bits(data, len);
}
