/* The scalar fp32 <-> fp16/bf16 references (core/half.h) that every vectorized path must
 * match: fp16 checked against the compiler's _Float16 conversion (round to nearest even)
 * for every fp16 value and a million random fp32 values; bf16 against a rounding computed
 * independently in double precision. */
#include "core/half.h"
#include "tests/test_util.h"

#include <math.h>

static uint16_t f16_bits(_Float16 h) {
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}

/* bf16 RNE computed in double: the two neighbours and the tie rule. */
static uint16_t bf16_ref(float f) {
    if (isnan(f)) return 0x7fc0;
    uint32_t x = zoff_f32_bits(f);
    uint16_t lo = (uint16_t)(x >> 16);
    uint16_t hi = (uint16_t)(lo + 1);
    double d = f, dl = zoff_bf16_to_f32(lo), dh = zoff_bf16_to_f32(hi);
    if ((x & 0xffff) == 0) return lo;
    if (isinf(dh)) dh = ldexp(1.0, 128) * (f < 0 ? -1 : 1); /* rounding up overflows */
    double el = fabs(d - dl), eh = fabs(dh - d);
    if (el < eh) return lo;
    if (eh < el) return hi;
    return (lo & 1) ? hi : lo;
}

int main(void) {
    zoff_test_init();
    /* every fp16 value round-trips through fp32 */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = zoff_f16_to_f32((uint16_t)h);
        _Float16 hf;
        memcpy(&hf, &(uint16_t){(uint16_t)h}, 2);
        if (isnan(f)) {
            CHECK(isnan((float)hf));
            CHECK(isnan(zoff_bf16_to_f32(zoff_f32_to_bf16(f))));
            continue;
        }
        CHECK(f == (float)hf);
        CHECK_EQ_INT(zoff_f32_to_f16(f), h);
    }
    unsigned long long rng = 7;
    size_t f16_bad = 0, bf16_bad = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)zoff_test_rand(&rng);
        if (i % 3 == 0)
            bits = (bits & 0x807fffffu) | ((uint32_t)(100 + i % 45) << 23); /* near fp16 range */
        if (i % 7 == 0) bits = (bits & ~0x1fffu) | 0x1000u;                 /* fp16 ties */
        if (i % 11 == 0) bits = (bits & ~0xffffu) | 0x8000u;                /* bf16 ties */
        float f = zoff_bits_f32(bits);
        if (isnan(f)) continue;
        f16_bad += zoff_f32_to_f16(f) != f16_bits((_Float16)f);
        bf16_bad += zoff_f32_to_bf16(f) != bf16_ref(f);
    }
    CHECK_EQ_INT(f16_bad, 0);
    CHECK_EQ_INT(bf16_bad, 0);
    CHECK_EQ_INT(zoff_f32_to_f16(65520.0f), 0x7c00);
    CHECK_EQ_INT(zoff_f32_to_f16(65519.0f), 0x7bff);
    CHECK_EQ_INT(zoff_f32_to_f16(-INFINITY), 0xfc00);
    CHECK(isnan(zoff_f16_to_f32(zoff_f32_to_f16(NAN))));
    CHECK_EQ_INT(zoff_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(zoff_f32_to_bf16(zoff_bits_f32(0x3f808000u)), 0x3f80); /* tie to even */
    CHECK_EQ_INT(zoff_f32_to_bf16(zoff_bits_f32(0x3f818000u)), 0x3f82);
    CHECK_EQ_INT(zoff_f32_to_bf16(zoff_bits_f32(0x7f7fffffu)), 0x7f80); /* overflows to inf */
    return zoff_test_finish("test_core_half");
}
