/* AVX2 + FMA + F16C kernels (8 fp32 lanes). Compiled with -mavx2 -mfma -mf16c for this file
 * only; dispatch.c calls it only after __builtin_cpu_supports says the CPU has all three.
 * fp16 conversions use F16C with round-to-nearest-even (bit-identical to core/half.h for every
 * input, NaNs included); bf16 rounding is done in integer lanes, bit-identical to core/half.h. */
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
/* bf16 -> fp32: broadcast the 8 values to both 128-bit halves (a load-port operation) and
 * shuffle each into the high half of a dword: one shuffle, no shift. Zen 2 runs vector shifts and
 * shuffles on few pipes, and they, not the arithmetic, bound the bf16-moment step. */
static inline vf vf_load_bf16(const uint16_t *p) {
    const __m256i ctl = _mm256_setr_epi8(-128, -128, 0, 1, -128, -128, 2, 3, -128, -128, 4, 5, -128,
                                         -128, 6, 7, -128, -128, 8, 9, -128, -128, 10, 11, -128,
                                         -128, 12, 13, -128, -128, 14, 15);
    __m256i h = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(h, ctl));
}

/* fp32 -> bf16 rounding as core/half.h (x + 0x7fff + lsb), result in the high 16 bits of each
 * dword; NaN -> (x >> 16) | 0x40 is the high half of x | 0x400000. (Measured on Zen 2, this
 * form is faster than a shift-free tie test, x + 0x8000 - [low 17 bits == 0x8000].) */
static inline __m256i bf16_round_hi_finite(vf f) {
    __m256i x = _mm256_castps_si256(f);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb);
}
static inline __m256i bf16_round_hi(vf f) {
    __m256i x = _mm256_castps_si256(f);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(bf16_round_hi_finite(f),
                              _mm256_or_si256(x, _mm256_set1_epi32(0x400000)), nan);
}

/* Gathers the high halves of each 128-bit lane's dwords into bytes 0..7 (upper bytes zero). */
static inline __m256i bf16_gather(__m256i r) {
    const __m256i ctl = _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -128, -128, -128, -128, -128,
                                         -128, -128, -128, 2, 3, 6, 7, 10, 11, 14, 15, -128, -128,
                                         -128, -128, -128, -128, -128, -128);
    return _mm256_shuffle_epi8(r, ctl);
}
/* The bf16 halves of ra (8 values) and rb (8 values) as (ra0-7 | rb0-7). */
static inline __m256i bf16_pack(__m256i ra, __m256i rb) {
    __m256i c = _mm256_unpacklo_epi64(bf16_gather(ra), bf16_gather(rb));
    return _mm256_permute4x64_epi64(c, 0xD8); /* (a0-3, b0-3 | a4-7, b4-7) -> (a0-7 | b0-7) */
}

static inline void vf_store_bf16(uint16_t *p, vf f) {
    __m256i r = _mm256_permute4x64_epi64(bf16_gather(bf16_round_hi(f)), 0x08);
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(r));
}

/* The two-vector loop's primitives (see adam_simd_impl.h): one NaN test covers both vectors,
 * and a pair of vectors leaves as one full-width store of 16 contiguous bf16. The NaN-aware
 * rounding (a compare and a blend per vector) runs only where a NaN was found. */
#define ZOFF_SIMD_HAVE_BF16_PAIR 1
static inline int vf_any_nan2(vf a, vf b) {
    return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q)) != 0;
}
typedef __m256i vh; /* 2 * ZOFF_SIMD_W packed 16-bit values */
static inline vh vh_bf16_pair(vf a0, vf a1, int may_nan) {
    return may_nan ? bf16_pack(bf16_round_hi(a0), bf16_round_hi(a1))
                   : bf16_pack(bf16_round_hi_finite(a0), bf16_round_hi_finite(a1));
}
static inline vh vh_zero(void) {
    return _mm256_setzero_si256();
}
static inline void vh_store(uint16_t *p, vh x) {
    _mm256_storeu_si256((__m256i *)p, x);
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
