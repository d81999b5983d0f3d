/* The whole GPT on one backend (argv[1]) against the host oracle: the same parameters and
 * batch give the same loss, gradients and, after three trainer steps, parameters, by
 * normalized error (fp32; and bf16 GEMM operands, where both backends round the same
 * operands and differ only in accumulation order). On host this checks determinism. */
#include "model/model.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <math.h>
#include <string.h>

static double nerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

typedef struct result {
    float loss, loss3;
    float *grads, *params3;
} result;

static void run_model(zoff_dev *dev, zoff_dtype dt, result *r) {
    zoff_gpt_config c = {.n_layer = 2, .n_head = 4, .n_embd = 64, .vocab_size = 97, .seq_len = 32};
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 3;
    o.seq_len = 32;
    o.matmul_dtype = dt;
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    zoff_model *m;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &m));
    REQUIRE_OK(zoff_model_init_params(m, 11));
    size_t total = zoff_model_get_layout(m)->total;
    int32_t x[96], y[96];
    unsigned long long rng = 5;
    for (int i = 0; i < 96; i++) {
        x[i] = (int32_t)(zoff_test_rand(&rng) % 97);
        y[i] = (int32_t)(zoff_test_rand(&rng) % 97);
    }
    r->grads = malloc(total * 4);
    r->params3 = malloc(total * 4);
    REQUIRE_OK(zoff_model_alloc_grads(m));
    REQUIRE_OK(zoff_model_zero_grads(m, s));
    REQUIRE_OK(zoff_model_forward_backward(m, s, BATCH(x, y, 3, 32), 1.0f, &r->loss));
    REQUIRE_OK(zoff_model_grads_to_host(m, r->grads));
    zoff_trainer *tr;
    REQUIRE_OK(zoff_trainer_create(m, s, NULL, NULL, &tr));
    zoff_step_stats st;
    for (int i = 0; i < 3; i++)
        REQUIRE_OK(zoff_trainer_step(tr, BATCH(x, y, 3, 32), &st));
    r->loss3 = st.loss;
    REQUIRE_OK(zoff_model_params_to_host(m, r->params3));
    zoff_trainer_destroy(tr);
    zoff_model_destroy(m);
    CHECK_OK(zoff_dev_stream_destroy(s));
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    zoff_dev_config hc;
    zoff_dev_config_default(&hc);
    hc.kind = ZOFF_DEV_HOST;
    zoff_dev *host;
    REQUIRE_OK(zoff_dev_open(&hc, &host));
    zoff_dtype types[2] = {ZOFF_F32, ZOFF_BF16};
    for (int k = 0; k < 2; k++) {
        result a, b;
        run_model(dev, types[k], &a);
        run_model(host, types[k], &b);
        zoff_gpt_config c = {2, 4, 64, 97, 32};
        zoff_layout l;
        REQUIRE_OK(zoff_gpt_layout_build(&c, &l));
        double tol = types[k] == ZOFF_F32 ? 1e-4 : 1e-2;
        double el = fabs(a.loss - b.loss) / b.loss, eg = nerr(a.grads, b.grads, l.total);
        double ep = nerr(a.params3, b.params3, l.total);
        printf("%s: loss %.6f vs host %.6f; grads normalized error %.3g; params after 3 steps "
               "%.3g\n",
               zoff_dtype_name(types[k]), a.loss, b.loss, eg, ep);
        CHECK(el <= tol);
        CHECK(eg <= tol * 10);
        CHECK(ep <= tol);
        free(a.grads), free(a.params3), free(b.grads), free(b.params3);
        zoff_layout_free(&l);
    }
    zoff_dev_close(host);
    zoff_dev_close(dev);
    return zoff_test_finish("test_model_parity");
}
