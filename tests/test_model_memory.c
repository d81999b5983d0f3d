/* Device memory of the model core on one backend (argv[1]: host, or cuda where a GPU exists).
 * A 50M-parameter GPT (16 layers, 512 wide, byte vocabulary) trained in bf16 with the optimizer
 * offloaded to the CPU holds its weights in 2 bytes per parameter, the engine's gradient bucket
 * slots, activations and workspace - no fp32 weights, no full-model gradient buffer, nothing
 * that grows with T*T or B*T*V - and the plan computed before anything is allocated matches the
 * measured peak within 5%. */
#include "model/model_offload.h"
#include "model/model.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <math.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, 0);
    zoff_gpt_config c = {.n_layer = 16, .n_head = 8, .n_embd = 512, .vocab_size = 256,
                         .seq_len = 64};
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 2;
    o.seq_len = 64;
    o.matmul_dtype = ZOFF_BF16;
    zoff_engine_config ec;
    zoff_engine_config_default(&ec);
    ec.target = ZOFF_OFFLOAD_CPU;
    ec.lr = 1e-4f;

    /* the plan, before anything is on the device */
    zoff_device_plan plan;
    REQUIRE_OK(zoff_gpt_plan(&c, &o, &plan));
    zoff_layout lay;
    REQUIRE_OK(zoff_gpt_layout_build(&c, &lay));
    ec.bucket_bytes = zoff_model_offload_auto_bucket(lay.total * 2);
    REQUIRE_OK(zoff_model_offload_plan(&lay, ZOFF_BF16, &ec, &plan));
    size_t n = lay.n_params;
    zoff_layout_free(&lay);
    CHECK(n > 50000000 && n < 51000000);
    char text[512];
    zoff_device_plan_format(&plan, text, sizeof text);
    printf("plan: %s\n", text);

    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    zoff_dev_mem_reset_peak(dev);
    zoff_model *m;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &m));
    const zoff_layout *l = zoff_model_get_layout(m);
    float *master = malloc(l->total * sizeof *master);
    REQUIRE_OK(master ? 0 : -1);
    REQUIRE_OK(zoff_model_init_host(m, 5, master));
    zoff_model_offload *off;
    REQUIRE_OK(zoff_model_offload_create(m, s, &ec, master, &off));
    int BT = o.batch * o.seq_len;
    int32_t *x = malloc((size_t)BT * sizeof *x), *y = malloc((size_t)BT * sizeof *y);
    uint64_t rng = 3;
    for (int i = 0; i < BT; i++) {
        x[i] = (int32_t)(zoff_rng_next(&rng) % 256);
        y[i] = i % 7 == 0 ? -100 : (int32_t)(zoff_rng_next(&rng) % 256);
    }
    float loss = NAN;
    REQUIRE_OK(zoff_model_offload_micro_batch(off, BATCH(x, y, o.batch, o.seq_len), &loss));
    REQUIRE_OK(zoff_engine_flush(zoff_model_offload_engine(off), s));
    CHECK(isfinite(loss) && fabsf(loss - logf(256.0f)) < 0.5f);

    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(dev, &ms);
    zoff_device_plan got;
    zoff_model_memory(m, &got);
    zoff_engine_memory em;
    zoff_engine_get_memory(zoff_model_offload_engine(off), &em);
    got.buckets = em.device_bytes;
    zoff_device_plan_sum(&got);
    double np = (double)n;
    printf("measured: peak %.1f MiB = %.3f B/param; weights %.3f, buckets %.3f, activations %.3f, "
           "workspace %.3f B/param; without activations %.3f B/param\n",
           ms.peak / 1048576.0, ms.peak / np, got.weights / np, got.buckets / np,
           got.activations / np, got.workspace / np, (got.total - got.activations) / np);
    /* only 16-bit weights: 2 bytes per element of the flat layout */
    CHECK_EQ_INT(got.weights, (l->total * 2 + 255) / 256 * 256);
    CHECK(got.weights / np < 2.01);
    CHECK_EQ_INT(got.grads, 0);
    CHECK_EQ_INT(got.master + got.optimizer, 0);
    /* the peak is these terms and nothing else */
    if (ms.peak > got.total)
        fprintf(stderr, "peak %zu exceeds the terms' sum %zu by %zu bytes\n", ms.peak, got.total,
                ms.peak - got.total);
    CHECK(ms.peak <= got.total);
    CHECK((double)(ms.peak - got.activations - got.buckets) / np <= 2.1);
    /* the plan made before allocating agrees with what was allocated and with the peak */
    CHECK_EQ_INT(plan.total, got.total);
    CHECK(fabs((double)plan.total - (double)ms.peak) <= 0.05 * (double)ms.peak);

    REQUIRE_OK(zoff_model_offload_finish(off));
    zoff_model_destroy(m);
    free(master);
    free(x);
    free(y);
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
    return zoff_test_finish("test_model_memory");
}
