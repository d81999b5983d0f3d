/* cpu_adam ISA dispatch: names and parsing round-trip, the best ISA is supported, forcing an ISA
 * the CPU lacks fails with a clear error (pool creation included), and ZOFF_ISA (read here, never
 * by the library) selects the pool's ISA. */
#include "cpu_adam/cpu_adam.h"
#include "tests/test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    zoff_test_init();
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR);
    static const zoff_adam_isa all[] = {ZOFF_ADAM_ISA_AUTO, ZOFF_ADAM_ISA_SCALAR,
                                        ZOFF_ADAM_ISA_AVX2, ZOFF_ADAM_ISA_AVX512,
                                        ZOFF_ADAM_ISA_AVX512_BF16};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        zoff_adam_isa got;
        CHECK_OK(zoff_adam_isa_parse(zoff_adam_isa_name(all[i]), &got));
        CHECK_EQ_INT(got, all[i]);
    }
    zoff_adam_isa got;
    CHECK_OK(zoff_adam_isa_parse("AVX2", &got));
    CHECK_EQ_INT(got, ZOFF_ADAM_ISA_AVX2);
    CHECK(zoff_adam_isa_parse("sse9", &got) == -EINVAL);
    CHECK(strstr(zoff_last_error_detail(), "sse9") != NULL);
    CHECK(strcmp(zoff_adam_isa_name((zoff_adam_isa)42), "?") == 0);

    zoff_adam_isa best = zoff_adam_isa_best();
    CHECK(best != ZOFF_ADAM_ISA_AUTO);
    CHECK(zoff_adam_isa_supported(best));
    CHECK(zoff_adam_isa_supported(ZOFF_ADAM_ISA_SCALAR));
    CHECK_OK(zoff_adam_isa_resolve(ZOFF_ADAM_ISA_AUTO, &got));
    CHECK_EQ_INT(got, best);
    CHECK(zoff_adam_isa_resolve((zoff_adam_isa)42, &got) == -EINVAL);
    printf("  best ISA: %s (avx2 %s, avx512 %s, avx512bf16 %s)\n", zoff_adam_isa_name(best),
           zoff_adam_isa_supported(ZOFF_ADAM_ISA_AVX2) ? "yes" : "no",
           zoff_adam_isa_supported(ZOFF_ADAM_ISA_AVX512) ? "yes" : "no",
           zoff_adam_isa_supported(ZOFF_ADAM_ISA_AVX512_BF16) ? "yes" : "no");

    /* Forcing each ISA: works where supported, clear error where not. */
    for (size_t i = 1; i < sizeof(all) / sizeof(all[0]); i++) {
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = 1;
        cfg.isa = all[i];
        zoff_adam_pool *pool = NULL;
        int rc = zoff_adam_pool_create(&cfg, &pool);
        if (zoff_adam_isa_supported(all[i])) {
            CHECK_OK(rc);
            CHECK_EQ_INT(zoff_adam_pool_isa(pool), all[i]);
        } else {
            CHECK(rc == ZOFF_ECONFIG && pool == NULL);
            CHECK(strstr(zoff_last_error_detail(), zoff_adam_isa_name(all[i])) != NULL);
            printf("  forcing %s: %s (%s), as expected\n", zoff_adam_isa_name(all[i]),
                   zoff_strerror(rc), zoff_last_error_detail());
        }
        zoff_adam_pool_destroy(pool);
    }

    const char *env = getenv("ZOFF_ISA");
    if (env) {
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = 1;
        CHECK_OK(zoff_adam_isa_parse(env, &cfg.isa));
        zoff_adam_pool *pool = NULL;
        int rc = zoff_adam_pool_create(&cfg, &pool);
        printf("  ZOFF_ISA=%s: %s\n", env,
               rc ? zoff_last_error_detail() : zoff_adam_isa_name(zoff_adam_pool_isa(pool)));
        CHECK(rc == 0 || !zoff_adam_isa_supported(cfg.isa));
        zoff_adam_pool_destroy(pool);
    }
    return zoff_test_finish("test_cpu_adam_isa");
}
