/* Scalar conversions between fp32 and the 16-bit formats, rounding to nearest even.
 * These are the reference every vectorized path (cpu_adam, host and CUDA casts) must match
 * bit for bit: NaN stays NaN (quiet), overflow goes to infinity, fp16 subnormals are kept. */
#ifndef ZOFF_CORE_HALF_H
#define ZOFF_CORE_HALF_H

#include "zoff/zoff.h"

#include <stdint.h>
#include <string.h>

static inline uint32_t zoff_f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}
static inline float zoff_bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t zoff_f32_to_bf16(float f) {
    uint32_t x = zoff_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}
static inline float zoff_bf16_to_f32(uint16_t h) {
    return zoff_bits_f32((uint32_t)h << 16);
}

static inline uint16_t zoff_f32_to_f16(float f) {
    uint32_t x = zoff_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal */
        if (ax < 0x33000000u) return (uint16_t)sign;          /* <= 2^-25 rounds to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value = m * 2^(e-150), unit 2^-24 */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax - 0x38000000u) >> 13; /* rebias exponent 127 -> 15 */
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline float zoff_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return zoff_bits_f32(sign);
        e = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        return zoff_bits_f32(sign | (e << 23) | ((m & 0x3ffu) << 13));
    }
    if (e == 31) return zoff_bits_f32(sign | 0x7f800000u | (m << 13));
    return zoff_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* Element i of a buffer of dtype t, as fp32; and the store the other way (rounding as above). */
static inline float zoff_load_as_f32(const void *x, zoff_dtype t, size_t i) {
    switch (t) {
    case ZOFF_F16:
        return zoff_f16_to_f32(((const uint16_t *)x)[i]);
    case ZOFF_BF16:
        return zoff_bf16_to_f32(((const uint16_t *)x)[i]);
    default:
        return ((const float *)x)[i];
    }
}

static inline void zoff_store_from_f32(void *x, zoff_dtype t, size_t i, float v) {
    switch (t) {
    case ZOFF_F16:
        ((uint16_t *)x)[i] = zoff_f32_to_f16(v);
        break;
    case ZOFF_BF16:
        ((uint16_t *)x)[i] = zoff_f32_to_bf16(v);
        break;
    default:
        ((float *)x)[i] = v;
        break;
    }
}

#endif
