/* zoff_dtype names and sizes. */
#include "core/log.h"

#include <errno.h>
#include <string.h>

size_t zoff_dtype_size(zoff_dtype t) {
    switch (t) {
    case ZOFF_F32:
        return 4;
    case ZOFF_F16:
    case ZOFF_BF16:
        return 2;
    }
    return 0;
}

const char *zoff_dtype_name(zoff_dtype t) {
    switch (t) {
    case ZOFF_F32:
        return "f32";
    case ZOFF_F16:
        return "f16";
    case ZOFF_BF16:
        return "bf16";
    }
    return "?";
}

int zoff_dtype_parse(const char *text, zoff_dtype *out) {
    static const struct {
        const char *name;
        zoff_dtype t;
    } names[] = {
        {"f32", ZOFF_F32},  {"fp32", ZOFF_F32},    {"float32", ZOFF_F32}, {"f16", ZOFF_F16},
        {"fp16", ZOFF_F16}, {"float16", ZOFF_F16}, {"bf16", ZOFF_BF16},   {"bfloat16", ZOFF_BF16},
    };
    for (size_t i = 0; text && i < ZOFF_ARRAY_LEN(names); i++)
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].t;
            return 0;
        }
    return -EINVAL;
}
