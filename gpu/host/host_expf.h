/* e^x for the host kernels' inner loops, written without calls or branches so that those loops
 * vectorize (a call to libm's expf per element kept them scalar: the GELU was a fifth of the
 * demo model's step, the fused attention's exponentials half of its forward; bench_train
 * --profile). x is clamped to [-87.3, 88] (e^x stays a normal float: below, a weight of about
 * 1e-38 stands for 0; the GELU's tanh saturates there all the same); x = n ln2 + r with |r| <=
 * ln2/2 (n rounded to nearest by the 1.5 * 2^23 shift, ln2 in two parts so that r is exact), e^r
 * by Cephes' expf polynomial (about 1 ulp), and 2^n put in the exponent bits. */
#ifndef ZOFF_GPU_HOST_EXPF_H
#define ZOFF_GPU_HOST_EXPF_H

#include <stdint.h>
#include <string.h>

static inline float host_expf(float x) {
    x = x > 88.0f ? 88.0f : x; /* two unconditional selects (nested ones stayed branches) */
    x = x < -87.3f ? -87.3f : x;
    const float shift = 12582912.0f; /* 1.5 * 2^23: k's low mantissa bits hold n */
    float k = x * 1.44269504088896341f + shift, n = k - shift;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t kb, sb = 0x4b400000; /* the bits of shift */
    memcpy(&kb, &k, sizeof kb);
    uint32_t bits = (kb - sb + 127) << 23; /* 2^n, without a float-to-int conversion (a NaN x
                                            * gives NaN through p; unsigned: no overflow) */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
