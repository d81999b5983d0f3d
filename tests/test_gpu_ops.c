/* The device op table on one backend (argv[1]), checked against the scalar references of
 * core/half.h computed here on the host: casts bit-identical for finite values, NaN and inf
 * preserved; scale; sum of squares by normalized error and the inf/nan flag. On cuda this
 * is the CUDA-vs-host parity check for these ops. */
#include "core/half.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <math.h>
#include <string.h>

enum { N = 100003 };

static void test_casts(zoff_dev *dev, zoff_dev_stream *s, const float *src) {
    static const zoff_dtype types[] = {ZOFF_F32, ZOFF_F16, ZOFF_BF16};
    void *d_src, *d_dst, *h_src, *h_dst, *h_ref;
    REQUIRE_OK(zoff_dev_malloc(dev, N * 4, &d_src));
    REQUIRE_OK(zoff_dev_malloc(dev, N * 4, &d_dst));
    REQUIRE_OK(zoff_dev_host_alloc(dev, N * 4, &h_src));
    REQUIRE_OK(zoff_dev_host_alloc(dev, N * 4, &h_dst));
    h_ref = malloc(N * 4);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            zoff_dtype st = types[a], dt = types[b];
            for (size_t i = 0; i < N; i++)
                zoff_store_from_f32(h_src, st, i, src[i]);
            for (size_t i = 0; i < N; i++)
                zoff_store_from_f32(h_ref, dt, i, zoff_load_as_f32(h_src, st, i));
            CHECK_OK(
                zoff_dev_memcpy_async(s, d_src, h_src, N * zoff_dtype_size(st), ZOFF_COPY_H2D));
            CHECK_OK(zoff_dev_op_cast(s, d_dst, dt, d_src, st, N));
            CHECK_OK(
                zoff_dev_memcpy_async(s, h_dst, d_dst, N * zoff_dtype_size(dt), ZOFF_COPY_D2H));
            CHECK_OK(zoff_dev_stream_synchronize(s));
            size_t mismatches = 0;
            for (size_t i = 0; i < N; i++) {
                float x = zoff_load_as_f32(h_dst, dt, i), y = zoff_load_as_f32(h_ref, dt, i);
                if (isnan(y) ? !isnan(x) : memcmp(&x, &y, 4) != 0) mismatches++;
            }
            if (mismatches)
                fprintf(stderr, "cast %s -> %s: %zu mismatches\n", zoff_dtype_name(st),
                        zoff_dtype_name(dt), mismatches);
            CHECK_EQ_INT(mismatches, 0);
        }
    free(h_ref);
    CHECK_OK(zoff_dev_free(dev, d_src));
    CHECK_OK(zoff_dev_free(dev, d_dst));
    CHECK_OK(zoff_dev_host_free(dev, h_src));
    CHECK_OK(zoff_dev_host_free(dev, h_dst));
}

static void test_scale_sumsq(zoff_dev *dev, zoff_dev_stream *s, const float *src) {
    static const zoff_dtype types[] = {ZOFF_F32, ZOFF_F16, ZOFF_BF16};
    void *d_x, *h_x;
    float *d_out, *h_out;
    REQUIRE_OK(zoff_dev_malloc(dev, N * 4, &d_x));
    REQUIRE_OK(zoff_dev_malloc(dev, 2 * sizeof(float), (void **)&d_out));
    REQUIRE_OK(zoff_dev_host_alloc(dev, N * 4, &h_x));
    REQUIRE_OK(zoff_dev_host_alloc(dev, 2 * sizeof(float), (void **)&h_out));
    for (int a = 0; a < 3; a++) {
        zoff_dtype t = types[a];
        size_t es = zoff_dtype_size(t);
        for (size_t i = 0; i < N; i++)
            zoff_store_from_f32(h_x, t, i, src[i]);
        double ref = 0;
        for (size_t i = 0; i < N; i++) {
            double v = zoff_load_as_f32(h_x, t, i) * 0.5f;
            ref += v * v;
        }
        CHECK_OK(zoff_dev_memcpy_async(s, d_x, h_x, N * es, ZOFF_COPY_H2D));
        CHECK_OK(zoff_dev_op_scale(s, d_x, t, 0.5f, N));
        CHECK_OK(zoff_dev_op_sumsq_nonfinite(s, d_x, t, N, d_out));
        CHECK_OK(zoff_dev_memcpy_async(s, h_out, d_out, 2 * sizeof(float), ZOFF_COPY_D2H));
        CHECK_OK(zoff_dev_stream_synchronize(s));
        double rel = fabs(h_out[0] - ref) / ref;
        if (rel > 1e-5) fprintf(stderr, "sumsq %s: %g vs %g\n", zoff_dtype_name(t), h_out[0], ref);
        CHECK(rel <= 1e-5);
        CHECK(h_out[1] == 0.0f);

        /* one inf, then one NaN: flagged, and excluded from the sum; at an element a kernel
         * may take in a vector's lanes (400) and at one it may take alone (777: the host's
         * chunks are 391 elements, and a chunk's last 391 % 16 go one by one) */
        static const size_t at[] = {400, 777};
        for (int w = 0; w < 2; w++)
            for (int bad = 0; bad < 3; bad++) {
                char one[4];
                if (bad < 2) /* the last round puts the element back */
                    zoff_store_from_f32(one, t, 0, bad ? NAN : INFINITY);
                else
                    memcpy(one, (char *)h_x + at[w] * es, es);
                CHECK_OK(
                    zoff_dev_memcpy_async(s, (char *)d_x + at[w] * es, one, es, ZOFF_COPY_H2D));
                if (bad == 2) { /* (the copy reads `one` before it goes out of scope) */
                    CHECK_OK(zoff_dev_op_scale(s, (char *)d_x + at[w] * es, t, 0.5f, 1));
                    CHECK_OK(zoff_dev_stream_synchronize(s));
                    continue;
                }
                CHECK_OK(zoff_dev_op_sumsq_nonfinite(s, d_x, t, N, d_out));
                CHECK_OK(zoff_dev_memcpy_async(s, h_out, d_out, 2 * sizeof(float), ZOFF_COPY_D2H));
                CHECK_OK(zoff_dev_stream_synchronize(s));
                CHECK(h_out[1] == 1.0f);
                CHECK(isfinite(h_out[0]));
                CHECK(h_out[0] <= ref * (1 + 1e-5));
            }
    }
    /* an empty buffer: zero sum, no flag */
    CHECK_OK(zoff_dev_op_sumsq_nonfinite(s, d_x, ZOFF_F32, 0, d_out));
    CHECK_OK(zoff_dev_memcpy_async(s, h_out, d_out, 2 * sizeof(float), ZOFF_COPY_D2H));
    CHECK_OK(zoff_dev_stream_synchronize(s));
    CHECK(h_out[0] == 0.0f && h_out[1] == 0.0f);
    CHECK_OK(zoff_dev_free(dev, d_x));
    CHECK_OK(zoff_dev_free(dev, d_out));
    CHECK_OK(zoff_dev_host_free(dev, h_x));
    CHECK_OK(zoff_dev_host_free(dev, h_out));
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    float *src = malloc(N * sizeof(float));
    unsigned long long rng = 42;
    for (size_t i = 0; i < N; i++) {
        /* magnitudes from 2^-30 to 2^20: fp16 subnormals, overflow to inf, ties */
        float m = ldexpf(zoff_test_randf(&rng, 1.0f, 2.0f), (int)(zoff_test_rand(&rng) % 50) - 30);
        src[i] = (zoff_test_rand(&rng) & 1) ? -m : m;
    }
    src[0] = 0.0f;
    src[1] = -0.0f;
    src[2] = 65504.0f;
    src[3] = 65520.0f;
    test_casts(dev, s, src);
    for (size_t i = 0; i < N; i++)
        src[i] = fmaxf(fminf(src[i], 1000.0f), -1000.0f);
    test_scale_sumsq(dev, s, src);
    free(src);
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_ops");
}
