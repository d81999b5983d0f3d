/* Human-readable sizes ("2GiB", "512M", "1.5G") for configuration values. */
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>

int zoff_parse_size(const char *text, size_t *out) {
    if (!text || !out) return -EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno || !(v >= 0) || isinf(v)) return -EINVAL;
    while (isspace((unsigned char)*end))
        end++;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        {"", 1.0},
        {"B", 1.0},
        {"K", 1024.0},
        {"KB", 1024.0},
        {"KiB", 1024.0},
        {"M", 1048576.0},
        {"MB", 1048576.0},
        {"MiB", 1048576.0},
        {"G", 1073741824.0},
        {"GB", 1073741824.0},
        {"GiB", 1073741824.0},
        {"T", 1099511627776.0},
        {"TB", 1099511627776.0},
        {"TiB", 1099511627776.0},
    };
    for (size_t i = 0; i < ZOFF_ARRAY_LEN(units); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            double bytes = v * units[i].mult;
            if (bytes > 18446744073709549568.0 || bytes != floor(bytes)) return -EINVAL;
            *out = (size_t)bytes;
            return 0;
        }
    }
    return -EINVAL;
}
