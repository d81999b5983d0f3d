/* ZOFF_AVX2_CLONE: compiles a function twice, for AVX2 and for the baseline ISA, and picks one
 * at load time (GCC's target_clones, an IFUNC). For loops whose vector form gives the same bits
 * as the scalar one (no FMA contraction in ISO C), so results do not depend on the machine.
 * Left out under ThreadSanitizer: the IFUNC resolver runs before TSan's runtime is set up and
 * crashes every program at start. */
#ifndef ZOFF_CORE_TARGET_CLONES_H
#define ZOFF_CORE_TARGET_CLONES_H

#if defined(__SANITIZE_THREAD__)
#define ZOFF_AVX2_CLONE
#else
#define ZOFF_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#endif

#endif
