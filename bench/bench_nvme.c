/* bench_nvme: swap-out (write) and swap-in (read) throughput of the nvme swapper, sequential
 * and strided (every other block), over block sizes and queue depths, checksums off and on;
 * for each point, in the same run and on the same file system, fio with ioengine=io_uring
 * and direct=1 on the same pattern, block size and depth, with the same kind of buffers as the
 * swapper's (slab: zoff's 2 MiB-aligned huge-page slab, fio --iomem=mmaphuge; plain: 4 KiB
 * pages, fio --iomem=malloc) and the same io_uring set-up as the swapper reports for itself
 * (registered buffers: --fixedbufs; registered files: --registerfiles; SQPOLL: --sqthread_poll;
 * O_DIRECT or not), and the ratio per buffer kind. One JSON line per measured point.
 * fio's huge pages come from hugetlbfs (vm.nr_hugepages); where none are reserved fio cannot
 * run that way, and the slab points say so ("fio_error") instead of comparing unlike buffers.
 *
 * The swapper is driven the way fio drives the disk: requests of one block each, queue_depth
 * of them outstanding, buffers from a pool registered with io_uring.
 *
 *   bench_nvme [--dir DIR] [--size BYTES] [--bs 128K,1M,8M] [--qd 1,8,32]
 *              [--patterns seq,strided] [--checksums off,on] [--backend
 * auto|uring|uring-buffered|pthread]
 *              [--buffers slab,plain] [--repeat N] [--no-fio] [--fio-opts ARGS]
 *
 * Defaults: 256 MiB per point, best of 2 interleaved repeats, both buffer kinds.
 * After the points, one summary line per (direction, checksums, buffers): the best point's
 * GB/s against fio's best point in the same run, and the median of the per-point ratios.
 */
#include "nvme/nvme.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXL 16

typedef struct opts {
    const char *dir;
    size_t size;
    size_t bs[MAXL];
    int n_bs;
    unsigned qd[MAXL];
    int n_qd;
    int pat[2], n_pat; /* 0 seq, 1 strided */
    int cs[2], n_cs;
    zoff_nvme_backend backend;
    int repeat;
    int fio;
    const char *fio_opts; /* extra fio arguments, appended (e.g. "--hipri=1") */
    int bufs[2], n_bufs;  /* 0: the pool's default huge-page slab, 1: plain 4 KiB pages */
} opts;

/* "plain" buffers: one posix_memalign per buffer, as fio allocates its own; to compare the
 * engine alone with fio on equal memory. */
static void *plain_alloc(size_t n, void *user) {
    (void)user;
    void *p = NULL;
    return posix_memalign(&p, 4096, n) ? NULL : p;
}

static void plain_free(void *p, size_t n, void *user) {
    (void)n, (void)user;
    free(p);
}

typedef struct best_rec {
    double gbps, fio;
    size_t bs;
    unsigned qd;
    int strided;
} best_rec;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse_sizes(const char *s, size_t *out, int max) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ",")) {
        if (zoff_parse_size(tok, &out[n])) return -1;
        n++;
    }
    return n;
}

/* Runs one direction of one point through the swapper; GB/s or a negative error. */
static double run_swap(const opts *o, int strided, int write, size_t bs, unsigned qd, int cs,
                       zoff_nvme_swap *s, zoff_nvme_region *g, zoff_nvme_pool *pool) {
    size_t n = o->size / bs;
    zoff_nvme_request **reqs = calloc(qd, sizeof *reqs);
    void **bufs = calloc(qd, sizeof *bufs);
    for (unsigned i = 0; i < qd; i++) {
        zoff_nvme_pool_acquire(pool, &bufs[i]);
        if (write) memset(bufs[i], (int)i + 1, bs);
    }
    double t0 = now();
    int err = 0;
    size_t next = 0;
    for (unsigned i = 0; i < qd && next < n; i++, next++) {
        uint64_t off = (uint64_t)next * bs * (strided ? 2 : 1);
        err = write ? zoff_nvme_submit_write(s, g, off, bufs[i], bs, &reqs[i])
                    : zoff_nvme_submit_read(s, g, off, bufs[i], bs, &reqs[i]);
        if (err) break;
    }
    /* refill whichever request finishes first, as fio reaps completions in any order */
    for (size_t done = 0; !err && done < n; done++) {
        int res = 0;
        int i = zoff_nvme_wait_any(reqs, qd, &res);
        if (i < 0) {
            err = i;
            break;
        }
        zoff_nvme_request_free(reqs[i]);
        reqs[i] = NULL;
        if ((err = res)) break;
        if (next < n) {
            uint64_t off = (uint64_t)next * bs * (strided ? 2 : 1);
            err = write ? zoff_nvme_submit_write(s, g, off, bufs[i], bs, &reqs[i])
                        : zoff_nvme_submit_read(s, g, off, bufs[i], bs, &reqs[i]);
            next++;
        }
    }
    double t = now() - t0;
    for (unsigned i = 0; i < qd; i++) {
        if (reqs[i]) zoff_nvme_request_free(reqs[i]);
        zoff_nvme_pool_release(pool, bufs[i]);
    }
    free(reqs);
    free(bufs);
    (void)cs;
    if (err) {
        fprintf(stderr, "bench_nvme: %s failed: %s (%s)\n", write ? "write" : "read",
                zoff_strerror(err), zoff_last_error_detail());
        return -1;
    }
    return (double)(n * bs) / t / 1e9;
}

/* fio with ioengine=io_uring, direct=1 on the same pattern and kind of buffers (huge: hugetlbfs
 * pages, as zoff's slab; else malloc'd 4 KiB pages); GB/s, or -1 if fio did not run, or -(errno)
 * - 1 if fio ran and reported the job's error (e.g. 12, ENOMEM: no huge pages reserved). */
static double run_fio(const opts *o, int strided, int write, size_t bs, unsigned qd, int huge,
                      const zoff_nvme_swap_info *zi) {
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/zoff-bench-fio.dat", o->dir);
    if (write) unlink(path);
    char rw[64];
    if (strided)
        snprintf(rw, sizeof rw, "%s:%zu", write ? "write" : "read", bs);
    else
        snprintf(rw, sizeof rw, "%s", write ? "write" : "read");
    snprintf(cmd, sizeof cmd,
             "fio --name=zoff --filename=%s --size=%zu --bs=%zu --iodepth=%u "
             "--ioengine=io_uring --direct=%d --rw=%s --iomem=%s --fixedbufs=%d "
             "--registerfiles=%d --sqthread_poll=%d --output-format=json %s 2>/dev/null",
             path, o->size * (strided ? 2 : 1), bs, qd, zi->direct, rw,
             huge ? "mmaphuge" : "malloc", zi->fixed_buffers, !strncmp(zi->backend, "io_uring", 8),
             zi->sqpoll, o->fio_opts ? o->fio_opts : "");
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t r;
    while ((r = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (len + 1 >= cap) out = realloc(out, cap *= 2);
    }
    out[len] = 0;
    pclose(f);
    double gbs = -1;
    /* fio prints a job's error ("fio: pid=..., err=12/...") on stdout ahead of the JSON. */
    const char *js = out[0] == '{' ? out : strstr(out, "\n{");
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    cJSON *jobs = j ? cJSON_GetObjectItem(j, "jobs") : NULL;
    cJSON *job = jobs ? cJSON_GetArrayItem(jobs, 0) : NULL;
    cJSON *dir = job ? cJSON_GetObjectItem(job, write ? "write" : "read") : NULL;
    cJSON *bw = dir ? cJSON_GetObjectItem(dir, "bw_bytes") : NULL;
    cJSON *jerr = job ? cJSON_GetObjectItem(job, "error") : NULL;
    if (jerr && cJSON_IsNumber(jerr) && jerr->valueint != 0)
        gbs = -(double)jerr->valueint - 1;
    else if (bw && cJSON_IsNumber(bw))
        gbs = bw->valuedouble / 1e9;
    cJSON_Delete(j);
    free(out);
    return gbs;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_nvme [--dir DIR] [--size BYTES] [--bs LIST] [--qd LIST] "
                    "[--patterns seq,strided] [--checksums off,on] [--backend "
                    "auto|uring|uring-buffered|pthread] [--buffers slab,plain] [--repeat N] "
                    "[--no-fio] [--fio-opts ARGS]\n");
}

int main(int argc, char **argv) {
    opts o = {.dir = "/tmp",
              .size = (size_t)256 << 20,
              .bs = {128 << 10, 1 << 20, 8 << 20},
              .n_bs = 3,
              .qd = {1, 8, 32},
              .n_qd = 3,
              .pat = {0, 1},
              .n_pat = 2,
              .cs = {0, 1},
              .n_cs = 2,
              .backend = ZOFF_NVME_BACKEND_AUTO,
              .repeat = 2,
              .fio = 1,
              .bufs = {0, 1},
              .n_bufs = 2};
    best_rec best_all[2][2][2] = {{{{0}}}}; /* [write][checksums][plain] */
    /* per-point ratios, for the median: a shared disk makes single points noisy */
    double ratios[2][2][2][256];
    int n_ratios[2][2][2] = {{{0}}};
    double fio_best[2][2] = {{0}}; /* [write][plain] */
    int fio_err[2] = {0, 0};       /* [plain]: fio's job error for that buffer kind, if any */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-fio")) {
            o.fio = 0;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--dir")) {
            o.dir = v;
        } else if (!strcmp(a, "--size")) {
            if (zoff_parse_size(v, &o.size)) return usage(), 2;
        } else if (!strcmp(a, "--bs")) {
            if ((o.n_bs = parse_sizes(v, o.bs, MAXL)) <= 0) return usage(), 2;
        } else if (!strcmp(a, "--qd")) {
            size_t q[MAXL];
            if ((o.n_qd = parse_sizes(v, q, MAXL)) <= 0) return usage(), 2;
            for (int k = 0; k < o.n_qd; k++)
                o.qd[k] = (unsigned)q[k];
        } else if (!strcmp(a, "--patterns")) {
            o.n_pat = 0;
            if (strstr(v, "seq")) o.pat[o.n_pat++] = 0;
            if (strstr(v, "strided")) o.pat[o.n_pat++] = 1;
        } else if (!strcmp(a, "--checksums")) {
            o.n_cs = 0;
            if (strstr(v, "off")) o.cs[o.n_cs++] = 0;
            if (strstr(v, "on")) o.cs[o.n_cs++] = 1;
        } else if (!strcmp(a, "--backend")) {
            if (zoff_nvme_backend_parse(v, &o.backend)) return usage(), 2;
        } else if (!strcmp(a, "--buffers")) {
            o.n_bufs = 0;
            if (strstr(v, "slab")) o.bufs[o.n_bufs++] = 0;
            if (strstr(v, "plain")) o.bufs[o.n_bufs++] = 1;
        } else if (!strcmp(a, "--fio-opts")) {
            o.fio_opts = v;
        } else if (!strcmp(a, "--repeat")) {
            o.repeat = atoi(v) > 0 ? atoi(v) : 1;
        } else {
            usage();
            return 2;
        }
    }
    if (o.fio && system("fio --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench_nvme: fio not found; running without the fio baseline\n");
        o.fio = 0;
    }
    zoff_log_set_callback(zoff_log_to_stderr, NULL, ZOFF_LOG_WARN);
    zoff_nvme_probe_result pr;
    if (zoff_nvme_probe(o.dir, &pr) == 0)
        fprintf(stderr, "bench_nvme: %s is %s, auto backend %s\n", o.dir, pr.fs_type, pr.backend);

    for (int pi = 0; pi < o.n_pat; pi++)
        for (int bi = 0; bi < o.n_bs; bi++)
            for (int qi = 0; qi < o.n_qd; qi++) {
                int strided = o.pat[pi];
                size_t bs = o.bs[bi];
                unsigned qd = o.qd[qi];
                if (o.size < bs) continue;
                /* best of `repeat` for each measured configuration, interleaved with fio */
                double best[2][2][2] = {{{0}}}, fbest[2][2] = {{0}}; /* [plain][cs][write] */
                const char *bname = "?";
                zoff_nvme_swap_info binfo[2] = {{.backend = "?"}, {.backend = "?"}}; /* [plain] */
                for (int rep = 0; rep < o.repeat; rep++) {
                    for (int bu = 0; bu < o.n_bufs; bu++) {
                        int plain = o.bufs[bu];
                        zoff_nvme_pool_config pc = zoff_nvme_pool_config_default();
                        pc.buffer_size = bs;
                        pc.budget = bs * qd;
                        if (plain) {
                            pc.alloc = plain_alloc;
                            pc.free = plain_free;
                        }
                        zoff_nvme_pool *pool;
                        if (zoff_nvme_pool_create(&pc, &pool)) return 1;
                        for (int ci = 0; ci < o.n_cs; ci++) {
                            int cs = o.cs[ci];
                            zoff_nvme_config c = zoff_nvme_config_default();
                            c.dirs[0] = o.dir;
                            c.n_dirs = 1;
                            size_t span = o.size / bs * bs * (strided ? 2 : 1);
                            c.capacity = span;
                            c.block_size = bs;
                            c.stripe_size = bs > ((size_t)1 << 20) ? bs : (size_t)1 << 20;
                            c.queue_depth = qd;
                            c.checksums = cs;
                            c.checksum_block = bs < ((size_t)64 << 10) ? bs : (size_t)64 << 10;
                            c.backend = o.backend;
                            c.pool = pool;
                            zoff_nvme_swap *s;
                            zoff_nvme_region *g;
                            if (zoff_nvme_swap_create(&c, &s) ||
                                zoff_nvme_region_define(s, "bench", span, &g)) {
                                fprintf(stderr, "bench_nvme: setup failed: %s\n",
                                        zoff_last_error_detail());
                                return 1;
                            }
                            zoff_nvme_swap_info info;
                            zoff_nvme_swap_get_info(s, &info);
                            bname = info.backend;
                            binfo[plain] = info;
                            for (int w = 1; w >= 0; w--) {
                                double gbs = run_swap(&o, strided, w, bs, qd, cs, s, g, pool);
                                if (gbs > best[plain][cs][w]) best[plain][cs][w] = gbs;
                            }
                            zoff_nvme_swap_destroy(s);
                        }
                        zoff_nvme_pool_destroy(pool);
                    }
                    if (o.fio)
                        for (int bu = 0; bu < o.n_bufs; bu++)
                            for (int w = 1; w >= 0; w--) {
                                int plain = o.bufs[bu];
                                double f = run_fio(&o, strided, w, bs, qd, !plain, &binfo[plain]);
                                if (f < -1) fio_err[plain] = (int)(-f - 1);
                                if (f > fbest[plain][w]) fbest[plain][w] = f;
                            }
                }
                for (int w = 1; w >= 0; w--)
                    for (int bu = 0; bu < o.n_bufs; bu++) {
                        int plain = o.bufs[bu];
                        double fb = fbest[plain][w];
                        if (fb > fio_best[w][plain]) fio_best[w][plain] = fb;
                        for (int ci = 0; ci < o.n_cs; ci++) {
                            int cs = o.cs[ci];
                            double gb = best[plain][cs][w];
                            best_rec *br = &best_all[w][cs][plain];
                            if (gb > br->gbps) *br = (best_rec){gb, fb, bs, qd, strided};
                            if (fb > 0 && n_ratios[w][cs][plain] < 256)
                                ratios[w][cs][plain][n_ratios[w][cs][plain]++] = gb / fb;
                            printf("{\"bench\":\"nvme\",\"pattern\":\"%s\",\"direction\":\"%s\","
                                   "\"block_size\":%zu,\"queue_depth\":%u,\"checksums\":%s,"
                                   "\"buffers\":\"%s\",\"backend\":\"%s\",\"bytes\":%zu,"
                                   "\"gbps\":%.4f",
                                   strided ? "strided" : "seq", w ? "write" : "read", bs, qd,
                                   cs ? "true" : "false", plain ? "plain" : "slab", bname,
                                   o.size / bs * bs, gb);
                            printf(",\"fio_iomem\":\"%s\"", plain ? "malloc" : "mmaphuge");
                            if (o.fio && fb > 0)
                                printf(",\"fio_gbps\":%.4f,\"ratio\":%.3f}\n", fb, gb / fb);
                            else if (o.fio && fio_err[plain])
                                printf(",\"fio_error\":%d,\"fio_gbps\":null,\"ratio\":null}\n",
                                       fio_err[plain]);
                            else
                                printf(",\"fio_gbps\":null,\"ratio\":null}\n");
                            fflush(stdout);
                        }
                    }
            }
    for (int w = 1; w >= 0; w--)
        for (int bu = 0; bu < o.n_bufs; bu++)
            for (int ci = 0; ci < o.n_cs; ci++) {
                int cs = o.cs[ci], plain = o.bufs[bu];
                best_rec *br = &best_all[w][cs][plain];
                printf("{\"bench\":\"nvme\",\"summary\":\"best point\",\"direction\":\"%s\","
                       "\"checksums\":%s,\"buffers\":\"%s\",\"pattern\":\"%s\","
                       "\"block_size\":%zu,\"queue_depth\":%u,\"gbps\":%.4f",
                       w ? "write" : "read", cs ? "true" : "false", plain ? "plain" : "slab",
                       br->strided ? "strided" : "seq", br->bs, br->qd, br->gbps);
                int nr = n_ratios[w][cs][plain];
                qsort(ratios[w][cs][plain], (size_t)nr, sizeof(double), cmp_double);
                printf(",\"fio_iomem\":\"%s\"", plain ? "malloc" : "mmaphuge");
                if (o.fio && fio_best[w][plain] > 0)
                    printf(",\"fio_best_gbps\":%.4f,\"ratio\":%.3f,\"median_point_ratio\":%.3f}\n",
                           fio_best[w][plain], br->gbps / fio_best[w][plain],
                           nr ? ratios[w][cs][plain][nr / 2] : 0.0);
                else if (o.fio && fio_err[plain])
                    printf(",\"fio_error\":%d,\"fio_best_gbps\":null,\"ratio\":null}\n",
                           fio_err[plain]);
                else
                    printf(",\"fio_best_gbps\":null,\"ratio\":null}\n");
            }
    if (o.fio) {
        char path[4096];
        snprintf(path, sizeof path, "%s/zoff-bench-fio.dat", o.dir);
        unlink(path);
    }
    return 0;
}
