/* The AVX-512 kernels again, for CPUs with AVX512-BF16 (compiled with -mavx512bf16): bf16
 * stores through vcvtneps2bf16 (see adam_avx512.c). Entered only after dispatch.c confirms the
 * feature. */
#define ZOFF_ADAM_AVX512_BF16 1
#include "cpu_adam/adam_avx512.c"
