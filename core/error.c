/* zoff_strerror and zoff_version: text for return codes, thread-safe (static strings). */
#include "core/log.h"
#include "zoff_build_config.h"

#include <string.h>

const char *zoff_version(void) {
    return ZOFF_VERSION_STRING;
}

const char *zoff_strerror(int err) {
    switch (err) {
    case 0:
        return "success";
    case ZOFF_EDEVICE_OOM:
        return "device memory capacity exceeded";
    case ZOFF_ENODEVICE:
        return "no CUDA device";
    case ZOFF_ECUDA:
        return "CUDA error";
    case ZOFF_ECUBLAS:
        return "cuBLAS error";
    case ZOFF_ENOBACKEND:
        return "backend not built into this zoff";
    case ZOFF_ECHECKSUM:
        return "checksum mismatch";
    case ZOFF_EFORMAT:
        return "malformed file";
    case ZOFF_ENOTWRITTEN:
        return "range was never written";
    case ZOFF_ECONFIG:
        return "invalid configuration";
    case ZOFF_ESHAPE:
        return "shape mismatch";
    case ZOFF_ECANCELED:
        return "request canceled";
    case ZOFF_EHOST_OOM:
        return "host memory budget exhausted";
    case ZOFF_ECOMM:
        return "collective communication error";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *s = strerrordesc_np(-err); /* static text, unlike strerror() */
        if (s) return s;
    }
    return "unknown zoff error";
}
