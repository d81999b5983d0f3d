/* bench_offload --ranks N: data parallelism with ZeRO-2 partitioning through the offload
 * engine, in every rank of an mpirun job (bench_offload re-runs itself under mpirun).
 *
 * First the collectives on their own: one bucket's reduce-scatter + all-gather through the
 * device communicator (what the engine issues per bucket), against plain blocking MPI on the
 * same bytes in host memory, measured in the same run: MPI_Allreduce, and MPI's own
 * MPI_Reduce_scatter_block + MPI_Allgather (fp32 sums, MPI's built-in op); the baseline is the
 * faster of the two (MPI's all-reduce algorithm is not always its best way to move the bytes).
 * All as bus bandwidth (bytes x 2(N-1)/N per second, the nccl-tests convention, so that they
 * compare: reduce-scatter + all-gather move what an all-reduce moves).
 *
 * Then per (target, schedule): --repeats rounds, each of (all ranks: a data-parallel run of
 * --steps steps at --batch rows per rank) and (rank 0 alone: the same run without the other
 * ranks, the same batch, threads and model), so that the ratio step(N ranks x batch b) /
 * step(1 rank x batch b) is read off interleaved measurements. Per rank and step it reports
 * the bytes per parameter on each link: PCIe and CPU passes (counted by the engine), NVMe
 * (the swapper) and the collectives (the engine's count of what this rank sent), with the
 * ZeRO-2 minimum 2(N-1)/N x the 16-bit element size beside it, and the optimizer state this
 * rank holds against one rank alone. */
#include "bench/bench_offload.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ranked_round {
    double step_ms;
    uint64_t pcie, coll, nvme, cpu; /* bytes per step, this rank */
    size_t host_bytes;              /* optimizer state held (CPU memory or NVMe staging) */
    size_t nvme_bytes;
} ranked_round;

/* One engine's run (collective when ec->dist has several ranks): warm-up, then timed steps. */
static void run_engine(zoff_model *m, zoff_dev_stream *s, const opts *o,
                       const zoff_engine_config *ec, int32_t *tok, int32_t *tgt, ranked_round *out) {
    zoff_model_offload *off;
    int rc = zoff_model_offload_create(m, s, ec, NULL, &off);
    if (rc) bench_die("engine create", rc);
    zoff_engine *e = zoff_model_offload_engine(off);
    double *t = malloc(sizeof(double) * (size_t)o->steps);
    uint64_t pcie = 0, coll = 0, nvme = 0, cpu = 0;
    int counted = 0;
    int64_t last = o->warmup - 1;
    for (int i = 0; i <= o->warmup + o->steps; i++) {
        if (i == o->warmup + o->steps && (rc = zoff_engine_flush(e, s))) bench_die("flush", rc);
        zoff_engine_step_report rep;
        if (zoff_engine_last_report(e, &rep) == 0 && rep.step > last) {
            last = rep.step;
            pcie += rep.pcie_d2h_bytes + rep.pcie_h2d_bytes;
            coll += rep.collective_bytes;
            nvme += rep.nvme_read_bytes + rep.nvme_write_bytes;
            cpu += rep.cpu_pass_bytes;
            counted++;
        }
        if (i == o->warmup + o->steps) break;
        zoff_batch b = {.tokens = tok, .targets = tgt, .B = o->batch, .T = o->seq};
        float loss;
        double t0 = bench_now_ms();
        if ((rc = zoff_model_offload_micro_batch(off, &b, &loss))) bench_die("step", rc);
        if (i >= o->warmup) t[i - o->warmup] = bench_now_ms() - t0;
    }
    zoff_engine_memory mem;
    zoff_engine_get_memory(e, &mem);
    zoff_model_offload_destroy(off);
    uint64_t c = counted ? (uint64_t)counted : 1;
    *out = (ranked_round){bench_median(t, o->steps), pcie / c, coll / c, nvme / c, cpu / c,
                          mem.host_bytes, mem.nvme_bytes};
    free(t);
}

/* One bucket's reduce-scatter + all-gather through the device communicator, a plain
 * MPI_Allreduce of the same bytes, and MPI's reduce-scatter + all-gather of them: median ms of
 * each over `iters`. */
static void collective_bandwidth(zoff_dist *d, zoff_dev *dev, zoff_dev_stream *s, size_t bytes,
                                 zoff_dtype dt, int iters, double *zoff_ms, double *mpi_ms,
                                 double *mpi_rs_ag_ms) {
    int n = zoff_dist_size(d), rank = zoff_dist_rank(d);
    size_t es = zoff_dtype_size(dt), count = bytes / es / (size_t)n; /* per rank */
    bytes = count * (size_t)n * es;
    zoff_dev_comm *c;
    void *buf;
    int rc = zoff_dev_comm_create(dev, d, &c);
    if (!rc) rc = zoff_dev_malloc(dev, bytes, &buf);
    if (!rc) rc = zoff_dev_memset_async(s, buf, 0, bytes);
    if (rc) bench_die("collective buffers", rc);
    float *host = calloc(bytes / 4 + 1, 4);
    double *tz = malloc(sizeof(double) * 3 * (size_t)iters), *tm = tz + iters, *tr = tm + iters;
    int fcount = (int)(bytes / 4 / (size_t)n); /* floats per rank */
    char *own = (char *)buf + (size_t)rank * count * es;
    for (int i = -2; i < iters; i++) { /* two warm-ups, then interleaved */
        zoff_dist_barrier(d);
        double t0 = bench_now_ms();
        rc = zoff_dev_reduce_scatter(s, c, buf, own, count, dt);
        if (!rc) rc = zoff_dev_allgather(s, c, own, buf, count, dt);
        if (!rc) rc = zoff_dev_stream_synchronize(s);
        if (rc) bench_die("reduce-scatter + all-gather", rc);
        double t1 = bench_now_ms();
        zoff_dist_barrier(d);
        double t2 = bench_now_ms();
        MPI_Allreduce(MPI_IN_PLACE, host, (int)(bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double t3 = bench_now_ms();
        zoff_dist_barrier(d);
        double t4 = bench_now_ms();
        MPI_Reduce_scatter_block(MPI_IN_PLACE, host, fcount, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allgather(MPI_IN_PLACE, fcount, MPI_FLOAT, host, fcount, MPI_FLOAT, MPI_COMM_WORLD);
        double t5 = bench_now_ms();
        if (i >= 0) {
            tz[i] = t1 - t0;
            tm[i] = t3 - t2;
            tr[i] = t5 - t4;
        }
    }
    *zoff_ms = bench_median(tz, iters);
    *mpi_ms = bench_median(tm, iters);
    *mpi_rs_ag_ms = bench_median(tr, iters);
    free(tz), free(host);
    zoff_dev_free(dev, buf);
    zoff_dev_comm_destroy(c);
}

void bench_offload_ranks(const opts *o, zoff_dist *d, zoff_model *m, zoff_dev_stream *s) {
    int N = zoff_dist_size(d), rank = zoff_dist_rank(d);
    zoff_dev *dev = zoff_model_get_dev(m);
    const zoff_layout *L = zoff_model_get_layout(m);
    double n = (double)L->total;
    size_t es = zoff_dtype_size(o->dtype);
    size_t bucket = zoff_model_offload_auto_bucket(L->total * es);
    /* each rank its own data */
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)o->batch * o->seq);
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)o->batch * o->seq);
    uint64_t rng = 7 + (uint64_t)rank;
    bench_random_batch(tok, o->batch * o->seq, o->cfg.vocab_size, &rng);
    bench_random_batch(tgt, o->batch * o->seq, o->cfg.vocab_size, &rng);

    double zms, mms, rms;
    collective_bandwidth(d, dev, s, bucket, o->dtype, 10, &zms, &mms, &rms);
    double algo = 2.0 * (N - 1) / N * (double)bucket; /* bus bytes of each */
    double best = mms < rms ? mms : rms;
    if (rank == 0)
        printf("{\"bench\":\"offload_collectives\",\"device\":\"%s\",\"ranks\":%d,\"bytes\":%zu,"
               "\"dtype\":\"%s\",\"reduce_scatter_allgather_ms\":%.3f,\"mpi_allreduce_ms\":%.3f,"
               "\"mpi_reduce_scatter_allgather_ms\":%.3f,\"busbw_gbps\":%.3f,"
               "\"mpi_allreduce_busbw_gbps\":%.3f,\"mpi_reduce_scatter_allgather_busbw_gbps\":%.3f,"
               "\"baseline\":\"%s\",\"ratio\":%.3f,\"ratio_to_allreduce\":%.3f,"
               "\"target_ratio\":0.8}\n",
               zoff_dev_name(dev), N, bucket, zoff_dtype_name(o->dtype), zms, mms, rms,
               algo / zms / 1e6, algo / mms / 1e6, algo / rms / 1e6,
               mms < rms ? "mpi_allreduce" : "mpi_reduce_scatter_allgather", best / zms, mms / zms);
    fflush(stdout);

    static const zoff_offload_target targets[] = {ZOFF_OFFLOAD_CPU, ZOFF_OFFLOAD_NVME};
    char nvme_dir[4096];
    snprintf(nvme_dir, sizeof nvme_dir, "%s/rank%d", o->nvme_path, rank);
    for (int ti = 0; ti < 2; ti++) {
        if (!strstr(o->targets, zoff_offload_target_name(targets[ti]))) continue;
        for (int si = 0; si <= ZOFF_SCHEDULE_DPU; si++) {
            zoff_schedule sched = (zoff_schedule)si;
            if (!strstr(o->schedules, zoff_schedule_name(sched))) continue;
            zoff_engine_config ec;
            zoff_engine_config_default(&ec);
            ec.target = targets[ti];
            ec.schedule = sched;
            ec.dtype = o->dtype;
            ec.lr = 1e-4f;
            ec.cpu_threads = o->adam_threads;
            ec.reserve_cores = o->kernel_threads;
            ec.bucket_bytes = bucket;
            if (sched == ZOFF_SCHEDULE_OVERLAP) ec.clip_norm = 0;
            if (targets[ti] == ZOFF_OFFLOAD_NVME) {
                mkdir(nvme_dir, 0755);
                ec.nvme_dirs[0] = nvme_dir;
                ec.n_nvme_dirs = 1;
            }
            int R = o->repeats;
            double *dp = malloc(sizeof(double) * 3 * (size_t)R), *one = dp + R, *ratio = one + R;
            ranked_round rr = {0}, r1 = {0};
            for (int r = 0; r < R; r++) {
                zoff_engine_config dc = ec;
                dc.dist = d;
                zoff_dist_barrier(d);
                run_engine(m, s, o, &dc, tok, tgt, &rr);
                zoff_dist_barrier(d);
                if (rank == 0) run_engine(m, s, o, &ec, tok, tgt, &r1);
                zoff_dist_barrier(d);
                dp[r] = rr.step_ms;
                one[r] = r1.step_ms;
                ratio[r] = rr.step_ms / r1.step_ms;
            }
            spread sd = bench_spread(dp, R), s1 = bench_spread(one, R), sr = bench_spread(ratio, R);
            if (rank == 0)
                printf("{\"bench\":\"offload_ranks\",\"device\":\"%s\",\"ranks\":%d,"
                       "\"params\":%.0f,\"batch_per_rank\":%d,\"seq\":%d,\"target\":\"%s\","
                       "\"schedule\":\"%s\",\"dtype\":\"%s\",\"steps\":%d,\"repeats\":%d,"
                       "\"step_ms\":%.3f,\"step_ms_min\":%.3f,\"step_ms_max\":%.3f,"
                       "\"one_rank_step_ms\":%.3f,\"one_rank_step_ms_min\":%.3f,"
                       "\"one_rank_step_ms_max\":%.3f,\"step_ratio\":%.3f,\"step_ratio_min\":%.3f,"
                       "\"step_ratio_max\":%.3f,\"target_step_ratio\":1.15,"
                       "\"per_rank_bytes_per_param\":{\"pcie\":%.3f,\"collective\":%.3f,"
                       "\"collective_zero2_minimum\":%.3f,\"nvme\":%.3f,\"cpu_dram\":%.3f},"
                       "\"one_rank_bytes_per_param\":{\"pcie\":%.3f,\"nvme\":%.3f,"
                       "\"cpu_dram\":%.3f},\"optimizer_host_bytes\":%zu,"
                       "\"one_rank_optimizer_host_bytes\":%zu,\"optimizer_nvme_bytes\":%zu,"
                       "\"one_rank_optimizer_nvme_bytes\":%zu}\n",
                       zoff_dev_name(dev), N, n, o->batch, o->seq,
                       zoff_offload_target_name(ec.target), zoff_schedule_name(sched),
                       zoff_dtype_name(o->dtype), o->steps, R, sd.med, sd.min, sd.max, s1.med,
                       s1.min, s1.max, sr.med, sr.min, sr.max, rr.pcie / n, rr.coll / n,
                       2.0 * (N - 1) / N * (double)es, rr.nvme / n, rr.cpu / n, r1.pcie / n,
                       r1.nvme / n, r1.cpu / n, rr.host_bytes, r1.host_bytes, rr.nvme_bytes,
                       r1.nvme_bytes);
            fflush(stdout);
            free(dp);
        }
    }
    free(tok);
    free(tgt);
}
