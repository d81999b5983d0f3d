/* Checksums of swapped blocks: XXH3-64 from libxxhash (fast enough to verify every block on
 * read at NVMe speed, and not reimplemented here). When the library was built with its x86
 * dispatcher, XXH3_64bits_dispatch picks the widest vector unit at run time; it returns the
 * same values as XXH3_64bits, so swap data is portable between the two. Stateless and
 * thread-safe. */
#include "nvme/nvme.h"

#include <xxhash.h>

#ifdef ZOFF_HAVE_XXH3_DISPATCH
/* declared in xxh_x86dispatch.h, which Debian's libxxhash-dev does not install */
XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len);
#endif

uint64_t zoff_nvme_checksum(const void *data, size_t len) {
#ifdef ZOFF_HAVE_XXH3_DISPATCH
    return XXH3_64bits_dispatch(data, len);
#else
    return XXH3_64bits(data, len);
#endif
}
