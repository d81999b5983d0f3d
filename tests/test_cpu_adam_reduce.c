/* cpu_adam helpers on every ISA the CPU has: casts between f32/f16/bf16 bit-identical to
 * core/half.h (special values: ties, overflow, subnormals, inf, NaN payloads; odd sizes,
 * unaligned), sum of squares against a double reference, inf/nan counts, argument errors. */
#include "cpu_adam/cpu_adam.h"
#include "core/half.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static unsigned long long rng = 777;

/* fp32 bit patterns that stress rounding: random bits, values near 16-bit rounding ties,
 * overflow edges, subnormals, infinities and NaNs with payloads. */
static void fill_f32_bits(uint32_t *x, size_t n) {
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
        0x7fbfffff, 0x477fe000, 0x477ff000, 0x477fefff, 0x47800000, 0x7f7fffff, 0xff7fffff,
        0x38800000, 0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000, 0x00000001,
        0x007fffff, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x3f801000, 0x3f803000,
        0x7f7f8000, 0x7f7f7fff, 0xbf808000, 0x3a001000, 0x3a003000};
    for (size_t i = 0; i < n; i++) {
        unsigned long long r = zoff_test_rand(&rng);
        switch (r % 4) {
        case 0:
            x[i] = special[(r >> 8) % ARRAY_LEN(special)];
            break;
        case 1:
            x[i] = (uint32_t)(r >> 16);
            break; /* any bits */
        case 2:    /* near a 16-bit tie */
            x[i] = ((uint32_t)(r >> 20) & 0xffffe000u) | ((r >> 8) & 1 ? 0x1000u : 0x8000u);
            break;
        default: {
            float f = zoff_test_randf(&rng, -70000.0f, 70000.0f) *
                      (float)ldexp(1.0, (int)((r >> 32) % 40) - 30);
            memcpy(&x[i], &f, 4);
        }
        }
    }
}

static int same_f32(uint32_t a, uint32_t b) {
    /* NaN inputs may come back with the quiet bit set by the hardware (f16 -> f32). */
    if ((a & 0x7fffffffu) > 0x7f800000u && (b & 0x7fffffffu) > 0x7f800000u)
        return (a | 0x00400000u) == (b | 0x00400000u);
    return a == b;
}

static void test_casts(zoff_adam_pool *pool, const char *isa) {
    static const size_t sizes[] = {1, 5, 8, 16, 17, 33, 4099, 2 * ZOFF_ADAM_CHUNK + 13};
    int bad = 0;
    for (size_t si = 0; si < ARRAY_LEN(sizes); si++) {
        size_t n = sizes[si];
        uint32_t *f = malloc((n + 1) * 4);
        uint16_t *h = malloc((n + 1) * 2), *b = malloc((n + 1) * 2), *t = malloc((n + 1) * 2);
        uint32_t *back = malloc((n + 1) * 4);
        uint32_t *src = f + 1; /* unaligned */
        fill_f32_bits(src, n);
        CHECK_OK(zoff_adam_cast(pool, src, ZOFF_F32, h + 1, ZOFF_F16, n));
        CHECK_OK(zoff_adam_cast(pool, src, ZOFF_F32, b + 1, ZOFF_BF16, n));
        for (size_t i = 0; i < n; i++) {
            float x = zoff_bits_f32(src[i]);
            if (h[i + 1] != zoff_f32_to_f16(x) && bad++ < 10)
                fprintf(stderr, "%s f32->f16 %08x: %04x want %04x\n", isa, src[i], h[i + 1],
                        zoff_f32_to_f16(x));
            if (b[i + 1] != zoff_f32_to_bf16(x) && bad++ < 10)
                fprintf(stderr, "%s f32->bf16 %08x: %04x want %04x\n", isa, src[i], b[i + 1],
                        zoff_f32_to_bf16(x));
        }
        /* 16 -> 32 exact; every 16-bit pattern appears via the random bits. */
        for (size_t i = 0; i < n; i++)
            h[i + 1] = (uint16_t)zoff_test_rand(&rng);
        CHECK_OK(zoff_adam_cast(pool, h + 1, ZOFF_F16, back + 1, ZOFF_F32, n));
        for (size_t i = 0; i < n; i++)
            if (!same_f32(back[i + 1], zoff_f32_bits(zoff_f16_to_f32(h[i + 1]))) && bad++ < 10)
                fprintf(stderr, "%s f16->f32 %04x: %08x\n", isa, h[i + 1], back[i + 1]);
        CHECK_OK(zoff_adam_cast(pool, h + 1, ZOFF_BF16, back + 1, ZOFF_F32, n));
        for (size_t i = 0; i < n; i++)
            if (back[i + 1] != zoff_f32_bits(zoff_bf16_to_f32(h[i + 1])) && bad++ < 10)
                fprintf(stderr, "%s bf16->f32 %04x: %08x\n", isa, h[i + 1], back[i + 1]);
        /* 16 <-> 16 through fp32 (NaNs excluded: the quiet bit may differ). */
        for (size_t i = 0; i < n; i++) {
            uint16_t x = (uint16_t)zoff_test_rand(&rng);
            h[i + 1] = (x & 0x7c00) == 0x7c00 ? (uint16_t)(x & 0xfc00) : x;
        }
        CHECK_OK(zoff_adam_cast(pool, h + 1, ZOFF_F16, t + 1, ZOFF_BF16, n));
        for (size_t i = 0; i < n; i++)
            if (t[i + 1] != zoff_f32_to_bf16(zoff_f16_to_f32(h[i + 1])) && bad++ < 10)
                fprintf(stderr, "%s f16->bf16 %04x: %04x\n", isa, h[i + 1], t[i + 1]);
        CHECK_OK(zoff_adam_cast(pool, h + 1, ZOFF_BF16, t + 1, ZOFF_F16, n));
        for (size_t i = 0; i < n; i++)
            if (t[i + 1] != zoff_f32_to_f16(zoff_bf16_to_f32(h[i + 1])) && bad++ < 10)
                fprintf(stderr, "%s bf16->f16 %04x: %04x\n", isa, h[i + 1], t[i + 1]);
        /* same dtype: a copy */
        CHECK_OK(zoff_adam_cast(pool, h + 1, ZOFF_F16, t + 1, ZOFF_F16, n));
        CHECK(memcmp(h + 1, t + 1, n * 2) == 0);
        free(f);
        free(h);
        free(b);
        free(t);
        free(back);
    }
    CHECK(bad == 0);
}

static void test_sumsq(zoff_adam_pool *pool, const char *isa) {
    static const size_t sizes[] = {1, 3, 16, 31, 32, 33, 1000, 5 * ZOFF_ADAM_CHUNK + 7};
    for (size_t si = 0; si < ARRAY_LEN(sizes); si++) {
        size_t n = sizes[si];
        float *f = malloc((n + 1) * 4);
        uint16_t *h = malloc((n + 1) * 2), *b = malloc((n + 1) * 2);
        double ref32 = 0, ref16 = 0, refb = 0;
        for (size_t i = 0; i < n; i++) {
            f[i + 1] = zoff_test_randf(&rng, -100.0f, 100.0f);
            h[i + 1] = zoff_f32_to_f16(f[i + 1]);
            b[i + 1] = zoff_f32_to_bf16(f[i + 1]);
            double x = f[i + 1], y = zoff_f16_to_f32(h[i + 1]), z = zoff_bf16_to_f32(b[i + 1]);
            ref32 += x * x;
            ref16 += y * y;
            refb += z * z;
        }
        double s32, s16, sb;
        CHECK_OK(zoff_adam_sumsq(pool, f + 1, ZOFF_F32, n, &s32));
        CHECK_OK(zoff_adam_sumsq(pool, h + 1, ZOFF_F16, n, &s16));
        CHECK_OK(zoff_adam_sumsq(pool, b + 1, ZOFF_BF16, n, &sb));
        if (fabs(s32 - ref32) > 1e-12 * ref32 || fabs(s16 - ref16) > 1e-12 * ref16 ||
            fabs(sb - refb) > 1e-12 * refb) {
            fprintf(stderr, "%s sumsq n=%zu: %.17g/%.17g %.17g/%.17g %.17g/%.17g\n", isa, n, s32,
                    ref32, s16, ref16, sb, refb);
            zoff_test_failures++;
        }
        /* counts: plant inf/nan at both ends and in the middle */
        size_t count;
        CHECK_OK(zoff_adam_count_nonfinite(pool, f + 1, ZOFF_F32, n, &count));
        CHECK_EQ_INT(count, 0);
        f[1] = INFINITY;
        f[n] = NAN;
        f[n / 2 + 1] = -INFINITY;
        h[1] = 0x7c00;
        h[n] = 0xfe01;
        b[n / 2 + 1] = 0xff80;
        size_t expect32 = n >= 3 ? 3 : n;
        CHECK_OK(zoff_adam_count_nonfinite(pool, f + 1, ZOFF_F32, n, &count));
        CHECK_EQ_INT(count, expect32);
        CHECK_OK(zoff_adam_count_nonfinite(pool, h + 1, ZOFF_F16, n, &count));
        CHECK_EQ_INT(count, n >= 2 ? 2 : 1);
        CHECK_OK(zoff_adam_count_nonfinite(pool, b + 1, ZOFF_BF16, n, &count));
        CHECK_EQ_INT(count, 1);
        CHECK_OK(zoff_adam_sumsq(pool, f + 1, ZOFF_F32, n, &s32));
        CHECK(!isfinite(s32));
        CHECK_OK(zoff_adam_sumsq(pool, b + 1, ZOFF_BF16, n, &sb));
        CHECK(!isfinite(sb));
        free(f);
        free(h);
        free(b);
    }
    /* Largest fp16/fp32 values square without overflow in double. */
    float big[3] = {3.4e38f, -3.4e38f, 65504.0f};
    double s;
    CHECK_OK(zoff_adam_sumsq(pool, big, ZOFF_F32, 3, &s));
    CHECK(isfinite(s) && s > 2e77);
}

static void test_errors(void) {
    double s;
    size_t c;
    float x[4] = {0};
    CHECK(zoff_adam_sumsq(NULL, NULL, ZOFF_F32, 4, &s) == -EINVAL);
    CHECK(zoff_adam_sumsq(NULL, x, (zoff_dtype)9, 4, &s) == -EINVAL);
    CHECK(zoff_adam_count_nonfinite(NULL, x, ZOFF_F32, 4, NULL) == -EINVAL);
    CHECK(zoff_adam_cast(NULL, x, ZOFF_F32, NULL, ZOFF_F16, 4) == -EINVAL);
    CHECK_OK(zoff_adam_sumsq(NULL, x, ZOFF_F32, 0, &s));
    CHECK(s == 0.0);
    CHECK_OK(zoff_adam_count_nonfinite(NULL, x, ZOFF_F32, 4, &c));
    CHECK_EQ_INT(c, 0);
}

int main(void) {
    zoff_test_init();
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR); /* argument errors are expected */
    static const zoff_adam_isa isas[] = {ZOFF_ADAM_ISA_SCALAR, ZOFF_ADAM_ISA_AVX2,
                                         ZOFF_ADAM_ISA_AVX512, ZOFF_ADAM_ISA_AVX512_BF16};
    for (size_t k = 0; k < ARRAY_LEN(isas); k++) {
        if (!zoff_adam_isa_supported(isas[k])) {
            printf("  skipping %s: this CPU lacks it\n", zoff_adam_isa_name(isas[k]));
            continue;
        }
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = 3; /* more than the cores here: odd partitions */
        cfg.pin = 0;
        cfg.isa = isas[k];
        zoff_adam_pool *pool;
        REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
        test_casts(pool, zoff_adam_isa_name(isas[k]));
        test_sumsq(pool, zoff_adam_isa_name(isas[k]));
        zoff_adam_pool_destroy(pool);
        printf("  %s: checked\n", zoff_adam_isa_name(isas[k]));
    }
    test_errors();
    return zoff_test_finish("test_cpu_adam_reduce");
}
