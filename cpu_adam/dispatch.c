/* Run-time ISA selection: which kernel table this CPU can run. The library is built for
 * generic x86-64; only adam_avx2.c and adam_avx512.c are compiled with wider ISA flags, and they
 * are entered only after __builtin_cpu_supports (which also checks that the OS saves the
 * vector state) confirms every feature they use. Stateless and thread-safe. */
#include "cpu_adam/adam_internal.h"
#include "core/log.h"

#include <errno.h>
#include <strings.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
/* F16C through cpuid (leaf 1, ecx bit 29): not every compiler's __builtin_cpu_supports knows it.
 * AVX2 being usable (checked by the builtin, including OS support for ymm state) covers the
 * state F16C needs. */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c >> 29) & 1u;
}
#endif

static int cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#else
    return 0;
#endif
}

static int cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

static int cpu_has_avx512_bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

int zoff_adam_isa_supported(zoff_adam_isa isa) {
    switch (isa) {
    case ZOFF_ADAM_ISA_AUTO:
    case ZOFF_ADAM_ISA_SCALAR:
        return 1;
    case ZOFF_ADAM_ISA_AVX2:
        return cpu_has_avx2();
    case ZOFF_ADAM_ISA_AVX512:
        return cpu_has_avx512();
    case ZOFF_ADAM_ISA_AVX512_BF16:
        return cpu_has_avx512_bf16();
    }
    return 0;
}

zoff_adam_isa zoff_adam_isa_best(void) {
    if (cpu_has_avx512_bf16()) return ZOFF_ADAM_ISA_AVX512_BF16;
    if (cpu_has_avx512()) return ZOFF_ADAM_ISA_AVX512;
    if (cpu_has_avx2()) return ZOFF_ADAM_ISA_AVX2;
    return ZOFF_ADAM_ISA_SCALAR;
}

const char *zoff_adam_isa_name(zoff_adam_isa isa) {
    switch (isa) {
    case ZOFF_ADAM_ISA_AUTO:
        return "auto";
    case ZOFF_ADAM_ISA_SCALAR:
        return "scalar";
    case ZOFF_ADAM_ISA_AVX2:
        return "avx2";
    case ZOFF_ADAM_ISA_AVX512:
        return "avx512";
    case ZOFF_ADAM_ISA_AVX512_BF16:
        return "avx512bf16";
    }
    return "?";
}

int zoff_adam_isa_parse(const char *name, zoff_adam_isa *out) {
    static const zoff_adam_isa all[] = {ZOFF_ADAM_ISA_AUTO, ZOFF_ADAM_ISA_SCALAR,
                                        ZOFF_ADAM_ISA_AVX2, ZOFF_ADAM_ISA_AVX512,
                                        ZOFF_ADAM_ISA_AVX512_BF16};
    if (!name || !out) return -EINVAL;
    for (size_t i = 0; i < ZOFF_ARRAY_LEN(all); i++) {
        if (strcasecmp(name, zoff_adam_isa_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return zoff_fail(-EINVAL, "cpu_adam",
                     "unknown ISA '%s' (expected scalar, avx2, avx512, avx512bf16 or auto)", name);
}

/* What a vector ISA needs of the CPU, for the error when it lacks it. */
static const char *isa_needs(zoff_adam_isa isa) {
    switch (isa) {
    case ZOFF_ADAM_ISA_AVX2:
        return "AVX2, FMA or F16C";
    case ZOFF_ADAM_ISA_AVX512:
        return "AVX-512 F/BW";
    case ZOFF_ADAM_ISA_AVX512_BF16:
        return "AVX-512 F/BW or AVX512-BF16";
    default:
        return NULL;
    }
}

int zoff_adam_isa_resolve(zoff_adam_isa isa, zoff_adam_isa *out) {
    if (isa == ZOFF_ADAM_ISA_AUTO) isa = zoff_adam_isa_best();
    if (isa != ZOFF_ADAM_ISA_SCALAR && !isa_needs(isa))
        return zoff_fail(-EINVAL, "cpu_adam", "invalid ISA value %d", (int)isa);
    if (!zoff_adam_isa_supported(isa))
        return zoff_fail(
            ZOFF_ECONFIG, "cpu_adam", "ISA %s requested but this CPU lacks %s (best available: %s)",
            zoff_adam_isa_name(isa), isa_needs(isa), zoff_adam_isa_name(zoff_adam_isa_best()));
    *out = isa;
    return 0;
}

const zoff_adam_kernels *zoff_adam_kernels_for(zoff_adam_isa isa) {
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case ZOFF_ADAM_ISA_AVX512_BF16:
        return &zoff_adam_kernels_avx512bf16;
    case ZOFF_ADAM_ISA_AVX512:
        return &zoff_adam_kernels_avx512;
    case ZOFF_ADAM_ISA_AVX2:
        return &zoff_adam_kernels_avx2;
#endif
    default:
        return &zoff_adam_kernels_scalar;
    }
}
