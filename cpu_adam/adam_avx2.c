/* AVX2 + FMA + F16C kernels (8 fp32 lanes). Compiled with -mavx2 -mfma -mf16c for this file
 * only; dispatch.c calls it only after __builtin_cpu_supports says the CPU has all three.
 * fp16 conversions use F16C with round-to-nearest-even (bit-identical to core/half.h for every
 * input, NaNs included); bf16 rounding is done in integer lanes with core/half.h's formula. */
#include "cpu_adam/adam_internal.h"

#include <immintrin.h>

#define ZOFF_SIMD_W       8
#define ZOFF_SIMD_NAME(x) x##_avx2
typedef __m256 vf;
typedef __m256d vd;

static inline vf vf_set1(float x) {
    return _mm256_set1_ps(x);
}
static inline vf vf_add(vf a, vf b) {
    return _mm256_add_ps(a, b);
}
static inline vf vf_mul(vf a, vf b) {
    return _mm256_mul_ps(a, b);
}
static inline vf vf_div(vf a, vf b) {
    return _mm256_div_ps(a, b);
}
static inline vf vf_sqrt(vf a) {
    return _mm256_sqrt_ps(a);
}
static inline vf vf_fmadd(vf a, vf b, vf c) {
    return _mm256_fmadd_ps(a, b, c);
}
static inline vf vf_fnmadd(vf a, vf b, vf c) {
    return _mm256_fnmadd_ps(a, b, c);
}

static inline vf vf_load_f32(const float *p) {
    return _mm256_loadu_ps(p);
}
static inline void vf_store_f32(float *p, vf x) {
    _mm256_storeu_ps(p, x);
}
static inline vf vf_load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline void vf_store_f16(uint16_t *p, vf x) {
    _mm_storeu_si128((__m128i *)p,
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vf_load_bf16(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
/* core/half.h: NaN -> (x >> 16) | 0x40, else (x + 0x7fff + ((x >> 16) & 1)) >> 16. */
static inline void vf_store_bf16(uint16_t *p, vf f) {
    __m256i x = _mm256_castps_si256(f);
    __m256i hi = _mm256_srli_epi32(x, 16);
    __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
    __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    __m256i bias =
        _mm256_add_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7fff));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), is_nan);
    /* Lanes hold 0..0xffff, so the unsigned saturating pack is exact; it packs per 128-bit
     * half, so take 64-bit words 0 and 2. */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(packed));
}

static inline vd vd_zero(void) {
    return _mm256_setzero_pd();
}
static inline void vd_acc_sq(vd *lo, vd *hi, vf x) {
    vd a = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    vd b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    *lo = _mm256_fmadd_pd(a, a, *lo);
    *hi = _mm256_fmadd_pd(b, b, *hi);
}
static inline double vd_hsum(vd a, vd b) {
    double l[4];
    _mm256_storeu_pd(l, _mm256_add_pd(a, b));
    return (l[0] + l[1]) + (l[2] + l[3]);
}

#include "cpu_adam/adam_simd_impl.h"

static size_t count_nonfinite_avx2(const void *x, zoff_dtype t, size_t n) {
    size_t count = 0, i = 0;
    if (t == ZOFF_F32) {
        const uint32_t *u = x;
        const __m256i e = _mm256_set1_epi32(0x7f800000);
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(u + i)), e);
            count += (size_t)__builtin_popcount(
                (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(w, e))));
        }
        for (; i < n; i++)
            count += (u[i] & 0x7f800000u) == 0x7f800000u;
        return count;
    }
    const uint16_t *h = x;
    const uint16_t mask = t == ZOFF_F16 ? 0x7c00u : 0x7f80u;
    const __m256i e = _mm256_set1_epi16((short)mask);
    for (; i + 16 <= n; i += 16) {
        __m256i w = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(h + i)), e);
        count +=
            (size_t)__builtin_popcount((unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi16(w, e))) /
            2;
    }
    for (; i < n; i++)
        count += (h[i] & mask) == mask;
    return count;
}

const zoff_adam_kernels zoff_adam_kernels_avx2 = {
    .isa = ZOFF_ADAM_ISA_AVX2,
    .step = step_avx2,
    .sumsq = sumsq_avx2,
    .count_nonfinite = count_nonfinite_avx2,
    .cast = cast_avx2,
};
