/* bench_offload's pieces shared by its two halves: the single-process points
 * (bench_offload.c) and the data-parallel ones of --ranks N (bench_offload_ranks.c). */
#ifndef ZOFF_BENCH_OFFLOAD_H
#define ZOFF_BENCH_OFFLOAD_H

#include "gpu/dist.h"
#include "model/model.h"
#include "model/model_offload.h"

#include <stdint.h>

typedef struct opts {
    const char *device, *nvme_path, *schedules, *targets;
    zoff_gpt_config cfg;
    int batch, seq, steps, warmup;
    zoff_dtype dtype;
    size_t capacity; /* device capacity, 0 = the backend's choice */
    const char *params;
    int prefetch;
    int ckpt; /* activation checkpointing */
    int repeats;
    int kernel_threads, adam_threads; /* 0: the backend's / the pool's default */
    int ranks;                        /* --ranks N: data-parallel points under mpirun */
    const char *trace;                /* --trace FILE: the last round's engine trace */
} opts;

/* median, min and max of n values */
typedef struct spread {
    double med, min, max;
} spread;

double bench_now_ms(void);
/* Prints what failed and exits 1. */
void bench_die(const char *what, int rc);
double bench_median(double *v, int n); /* sorts v */
spread bench_spread(double *v, int n); /* sorts v */
void bench_random_batch(int32_t *x, int n, int vocab, uint64_t *rng);

/* --ranks N, in each rank of the job: the collectives' bus bandwidth against a plain MPI
 * all-reduce of the same bytes, then per (target, schedule) the data-parallel step against
 * one rank alone with the same per-rank batch, interleaved; rank 0 prints the JSON lines. */
void bench_offload_ranks(const opts *o, zoff_dist *d, zoff_model *m, zoff_dev_stream *s);

#endif
