/* libFuzzer target for the safetensors parser: any byte string must yield 0 or an error
 * code, never a crash, an out-of-bounds read or a leak. Built with clang only
 * (-DZOFF_FUZZ=ON); run: ./fuzz_safetensors -max_len=65536 corpus/ */
#include "model/model.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static zoff_layout layout;
    static float *params;
    if (!params) {
        zoff_gpt_config c = {.n_layer = 1, .n_head = 1, .n_embd = 4, .vocab_size = 5, .seq_len = 3};
        if (zoff_gpt_layout_build(&c, &layout)) abort();
        params = malloc(layout.total * sizeof *params);
        if (!params) abort();
    }
    (void)zoff_safetensors_parse(data, size, "fuzz", &layout, params);
    return 0;
}
