/* AVX-512 kernels (16 fp32 lanes), needing AVX-512 F and BW (plus F16C/FMA, implied by every
 * AVX-512 CPU). Compiled with AVX-512 flags for this file only; dispatch.c calls it only after
 * __builtin_cpu_supports confirms the features (which also checks the OS saves zmm state).
 * fp16 conversions use vcvtps2ph/vcvtph2ps with round-to-nearest-even. bf16 rounding is done in
 * integer lanes with core/half.h's formula. adam_avx512_bf16.c compiles this file again with
 * ZOFF_ADAM_AVX512_BF16 for CPUs with AVX512-BF16: there a bf16 store goes through
 * vcvtneps2bf16, which rounds to nearest even and quiets NaNs exactly as core/half.h does but
 * treats denormal inputs as zero, so a vector holding one takes the integer rounding instead
 * (denormal moments and weights are rare: the check is two mask tests and a branch). */
#include "cpu_adam/adam_internal.h"

#include <immintrin.h>

#define ZOFF_SIMD_W 16
#ifdef ZOFF_ADAM_AVX512_BF16
#define ZOFF_SIMD_NAME(x) x##_avx512bf16
#else
#define ZOFF_SIMD_NAME(x) x##_avx512
#endif
typedef __m512 vf;
typedef __m512d vd;

static inline vf vf_set1(float x) {
    return _mm512_set1_ps(x);
}
static inline vf vf_add(vf a, vf b) {
    return _mm512_add_ps(a, b);
}
static inline vf vf_mul(vf a, vf b) {
    return _mm512_mul_ps(a, b);
}
static inline vf vf_div(vf a, vf b) {
    return _mm512_div_ps(a, b);
}
static inline vf vf_sqrt(vf a) {
    return _mm512_sqrt_ps(a);
}
static inline vf vf_fmadd(vf a, vf b, vf c) {
    return _mm512_fmadd_ps(a, b, c);
}
static inline vf vf_fnmadd(vf a, vf b, vf c) {
    return _mm512_fnmadd_ps(a, b, c);
}

static inline vf vf_load_f32(const float *p) {
    return _mm512_loadu_ps(p);
}
static inline void vf_store_f32(float *p, vf x) {
    _mm512_storeu_ps(p, x);
}
static inline vf vf_load_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline void vf_store_f16(uint16_t *p, vf x) {
    _mm256_storeu_si256((__m256i *)p,
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vf_load_bf16(const uint16_t *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
/* core/half.h: NaN -> (x >> 16) | 0x40, else (x + 0x7fff + ((x >> 16) & 1)) >> 16. */
static inline void vf_store_bf16_int(uint16_t *p, vf f) {
    __m512i x = _mm512_castps_si512(f);
    __m512i hi = _mm512_srli_epi32(x, 16);
    __m512i abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff));
    __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    __m512i bias =
        _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, bias), 16);
    r = _mm512_mask_blend_epi32(is_nan, r, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r)); /* lanes fit in 16 bits */
}

#ifdef ZOFF_ADAM_AVX512_BF16
static inline void vf_store_bf16(uint16_t *p, vf f) {
    __m512i x = _mm512_castps_si512(f);
    __mmask16 exp0 = _mm512_testn_epi32_mask(x, _mm512_set1_epi32(0x7f800000));
    if (_mm512_mask_test_epi32_mask(exp0, x, _mm512_set1_epi32(0x007fffff))) {
        vf_store_bf16_int(p, f); /* a denormal lane */
        return;
    }
    _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(f));
}
#else
static inline void vf_store_bf16(uint16_t *p, vf f) {
    vf_store_bf16_int(p, f);
}
#endif

static inline vd vd_zero(void) {
    return _mm512_setzero_pd();
}
static inline void vd_acc_sq(vd *lo, vd *hi, vf x) {
    vd a = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    vd b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    *lo = _mm512_fmadd_pd(a, a, *lo);
    *hi = _mm512_fmadd_pd(b, b, *hi);
}
static inline double vd_hsum(vd a, vd b) {
    double l[8];
    _mm512_storeu_pd(l, _mm512_add_pd(a, b));
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#include "cpu_adam/adam_simd_impl.h"

static size_t ZOFF_SIMD_NAME(count_nonfinite)(const void *x, zoff_dtype t, size_t n) {
    size_t count = 0, i = 0;
    if (t == ZOFF_F32) {
        const uint32_t *u = x;
        const __m512i e = _mm512_set1_epi32(0x7f800000);
        for (; i + 16 <= n; i += 16) {
            __m512i w = _mm512_and_si512(_mm512_loadu_si512(u + i), e);
            count += (size_t)__builtin_popcount((unsigned)_mm512_cmpeq_epi32_mask(w, e));
        }
        for (; i < n; i++)
            count += (u[i] & 0x7f800000u) == 0x7f800000u;
        return count;
    }
    const uint16_t *h = x;
    const uint16_t mask = t == ZOFF_F16 ? 0x7c00u : 0x7f80u;
    const __m512i e = _mm512_set1_epi16((short)mask);
    for (; i + 32 <= n; i += 32) {
        __m512i w = _mm512_and_si512(_mm512_loadu_si512(h + i), e);
        count += (size_t)__builtin_popcount((unsigned)_mm512_cmpeq_epi16_mask(w, e));
    }
    for (; i < n; i++)
        count += (h[i] & mask) == mask;
    return count;
}

#ifdef ZOFF_ADAM_AVX512_BF16
const zoff_adam_kernels zoff_adam_kernels_avx512bf16 = {
    .isa = ZOFF_ADAM_ISA_AVX512_BF16,
#else
const zoff_adam_kernels zoff_adam_kernels_avx512 = {
    .isa = ZOFF_ADAM_ISA_AVX512,
#endif
    .step = ZOFF_SIMD_NAME(step),
    .sumsq = ZOFF_SIMD_NAME(sumsq),
    .count_nonfinite = ZOFF_SIMD_NAME(count_nonfinite),
    .cast = ZOFF_SIMD_NAME(cast),
};
