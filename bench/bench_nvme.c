/* bench_nvme: swap-out (write) and swap-in (read) throughput of the nvme swapper against fio
 * on the same file, block size, queue depth and buffers, time-interleaved over several rounds
 * so that the ratio survives a noisy shared disk.
 *
 * For each point (pattern, block size, queue depth) and buffer kind, one swap per checksum
 * setting is created (files preallocated as the engine does, then written once untimed so
 * that every later run overwrites allocated, written blocks); fio then runs on the swap file
 * of the checksums-off swap itself (--filename=<zoff's file>, the same offsets, block size,
 * iodepth, O_DIRECT, numjobs=1), with the same io_uring set-up as the swapper reports
 * (registered buffers: --fixedbufs; registered files: --registerfiles; SQPOLL:
 * --sqthread_poll) and the same kind of buffers (slab: zoff's 2 MiB-aligned huge-page slab,
 * fio --iomem=mmaphuge; plain: 4 KiB pages, the very same ones for both, from one tmpfs file
 * that zoff's pool and fio --iomem=mmapshared map; see shared_pages). Each round runs zoff
 * and fio back to back for each direction, alternating which goes first (write: zoff, fio / read:
 * zoff, fio, then fio first in the next round; zoff's checksums off before on, then on before off),
 * with an untimed syncfs after every run so that none pays for the write-back of the one before; a
 * point's ratio is the median of the per-round ratios (each zoff run over the fio run next to it in
 * time); medians, minima and maxima of both GB/s are printed too.
 *
 * fio's huge pages come from hugetlbfs (vm.nr_hugepages); where too few are free, the slab
 * points say so ("fio_unavailable") instead of comparing unlike buffers, and one warning line
 * says how many to reserve. The swapper's slab uses transparent huge pages (madvise):
 * "zoff_huge_kib" says how much of it the kernel actually backed with huge pages.
 *
 * The swapper is driven the way fio drives the disk: requests of one block each, queue_depth
 * of them outstanding, buffers from a pool registered with io_uring, the next request
 * submitted as soon as any completes; or, with --request BYTES (seq only), as the engine
 * drives it: requests of BYTES each, which the swapper splits into block-size operations,
 * queue_depth operations in flight (fio unchanged: the same bytes, block size and depth).
 * Threads: fio numjobs=1 submits and reaps on one thread; zoff's caller thread submits (and
 * hashes, checksums on) while its io_uring thread submits and reaps, as in training. Each
 * point also prints the CPU time per GiB of both (zoff: the whole process; fio: its job
 * thread) and the load average, since on a shared 2-core machine CPU spent on the I/O path
 * costs throughput.
 *
 *   bench_nvme [--dir DIR] [--size BYTES] [--bs 1M,4M] [--qd 32] [--patterns seq,strided]
 *              [--checksums off,on] [--buffers slab,plain] [--rounds N] [--request BYTES]
 *              [--sqpoll 0|1] [--backend auto|uring|uring-buffered|pthread] [--no-fio]
 *              [--fio-opts ARGS]
 *
 * Defaults (about 75 s): 1 GiB per run (shorter runs scatter far more on a shared virtual
 * disk), seq, 1M and 4M blocks, depth 32, checksums off and on, both buffer kinds, 5 rounds. One
 * JSON line per point, then one summary line per (direction, checksums, buffers) with the median
 * and worst point ratio against the target (0.95 of fio checksums off, 0.9 on).
 */
#include "nvme/nvme.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAXL      16
#define MAXROUNDS 64
#define MAXPOINTS 256

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
    int rounds;
    int sqpoll;
    int fio;
    const char *fio_opts; /* extra fio arguments, appended (e.g. "--hipri=1") */
    int bufs[2], n_bufs;  /* 0: the pool's default huge-page slab, 1: plain 4 KiB pages */
    size_t request;       /* zoff's request length (0: one block), split into block-size ops */
} opts;

/* "plain" buffers, 4 KiB pages, that zoff and fio share: one tmpfs file (/dev/shm) that
 * both map MAP_SHARED, zoff's pool through plain_alloc (buffer i at offset i * its size) and
 * fio through --iomem=mmapshared:<file> (its buffer i at offset i * bs), so that the two
 * transfer into the very same physical pages. Which pages an allocation gets decides how
 * many segments a transfer has (on this virtio disk a 1 MiB read into pages that happen to
 * be physically contiguous is far cheaper than one into 256 scattered pages), and that is
 * luck of the kernel's free lists: the same 32 MiB allocated again came out between 3 and
 * 256 contiguous runs per MiB. With separate allocations, zoff's pool (drawn once per point)
 * against fio's (drawn anew every run) differed by 10-15% in either direction for that
 * alone; the same code reading into the same pages did not differ. fio neither truncates a
 * file it maps with mmapshared nor removes one that existed before it (fio's memory.c), so
 * the file outlives every fio run of the point. Where /dev/shm is not usable, plain buffers
 * fall back to one posix_memalign each and fio to --iomem=malloc. */
typedef struct shared_pages {
    char path[96];
    char *base;
    size_t bytes, used;
} shared_pages;

/* The file now in use, removed at exit and on SIGINT/SIGTERM too: never left in /dev/shm. */
static char live_path[96];

static void remove_live_file(void) {
    if (live_path[0]) unlink(live_path);
}

static void on_signal(int sig) {
    remove_live_file();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Maps `bytes` of a new tmpfs file, faulted in now in 4 KiB pages; 0, or -1 if unusable. */
static int shared_pages_create(shared_pages *sp, size_t bytes, int point) {
    memset(sp, 0, sizeof *sp);
    snprintf(sp->path, sizeof sp->path, "/dev/shm/zoff-bench-nvme.%d.%d", (int)getpid(), point);
    int fd = open(sp->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    memcpy(live_path, sp->path, sizeof live_path);
    /* allocated now, not sparse: a small /dev/shm (64 MiB in a default container) fails
     * here, not with SIGBUS on first touch */
    void *p = MAP_FAILED;
    int err = posix_fallocate(fd, 0, (off_t)bytes);
    if (err == 0) {
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) err = errno;
    }
    close(fd);
    if (p == MAP_FAILED) {
        remove_live_file();
        live_path[0] = 0;
        errno = err; /* for the caller's message */
        return -1;
    }
#ifdef MADV_NOHUGEPAGE
    (void)madvise(p, bytes, MADV_NOHUGEPAGE); /* plain pages even where shmem THP is on */
#endif
    memset(p, 0, bytes); /* the file's pages exist from here on, the same for both */
    sp->base = p;
    sp->bytes = bytes;
    return 0;
}

static void shared_pages_destroy(shared_pages *sp) {
    if (!sp->base) return;
    munmap(sp->base, sp->bytes);
    unlink(sp->path);
    live_path[0] = 0;
    sp->base = NULL;
}

/* Physically contiguous runs per MiB of [p, p + bytes) (256: every 4 KiB page apart, 1: one
 * run), from /proc/self/pagemap; -1 where frame numbers are hidden (not root). */
static double phys_runs_per_mib(const void *p, size_t bytes) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    long runs = 0;
    uint64_t prev = 0;
    int seen = 0;
    for (size_t off = 0; off < bytes; off += 4096) {
        uint64_t e = 0;
        if (pread(fd, &e, sizeof e, (off_t)(((uintptr_t)p + off) / 4096 * sizeof e)) != sizeof e)
            break;
        uint64_t pfn = e & ((1ull << 55) - 1);
        if (pfn == 0) { /* not present, or hidden */
            close(fd);
            return -1;
        }
        if (!seen++ || pfn != prev + 1) runs++;
        prev = pfn;
    }
    close(fd);
    return seen ? (double)runs / ((double)seen * 4096 / (1 << 20)) : -1;
}

/* The pool's allocator for plain buffers: carved from the shared pages when there are some
 * (user), else one posix_memalign per buffer. */
static void *plain_alloc(size_t n, void *user) {
    shared_pages *sp = user;
    if (sp && sp->base) {
        if (sp->used + n > sp->bytes) return NULL;
        void *p = sp->base + sp->used;
        sp->used += n;
        return p;
    }
    void *p = NULL;
    return posix_memalign(&p, 4096, n) ? NULL : p;
}

static void plain_free(void *p, size_t n, void *user) {
    (void)n;
    shared_pages *sp = user;
    if (!(sp && sp->base)) free(p);
}

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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double median, min, max;
} stats;

static stats stats_of(const double *v, int n) {
    stats s = {0, 0, 0};
    if (n <= 0) return s;
    double t[MAXPOINTS > MAXROUNDS ? MAXPOINTS : MAXROUNDS];
    if (n > (int)(sizeof t / sizeof t[0])) n = (int)(sizeof t / sizeof t[0]);
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    s.median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    s.min = t[0];
    s.max = t[n - 1];
    return s;
}

/* A field of /proc/meminfo-style text ("HugePages_Free:  12"), or -1. */
static long long proc_field(const char *file, const char *key) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[256];
    long long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = atoll(line + kl + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Bytes of hugetlbfs pages free now (what fio --iomem=mmaphuge allocates from). */
static long long hugetlb_free_bytes(void) {
    long long n = proc_field("/proc/meminfo", "HugePages_Free");
    long long kib = proc_field("/proc/meminfo", "Hugepagesize");
    return n < 0 || kib < 0 ? 0 : n * kib * 1024;
}

/* Incompressible data (xorshift64), as fio writes by default: a constant pattern could be
 * cheaper for a virtual disk that compresses or deduplicates, and flatter zoff. */
static void fill_random(void *buf, size_t bytes, uint64_t *seed) {
    uint64_t x = *seed, *p = buf;
    for (size_t i = 0; i < bytes / sizeof *p; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
    *seed = x;
}

/* CPU seconds this process has used so far, all threads (the swapper's I/O thread too). */
static double cpu_now(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* Untimed, between runs: flushes the file system (and with it the virtual disk's write-back
 * cache on a VM), so that no run pays for the previous run's writes. */
static void settle(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    if (syncfs(fd) != 0) fprintf(stderr, "bench_nvme: syncfs %s: %s\n", dir, strerror(errno));
    close(fd);
}

/* One direction of one point through the swapper: requests of rlen bytes (the swap splits
 * them into block-size operations), nreq of them outstanding; GB/s or -1 on error (printed),
 * and the CPU milliseconds it took per GiB moved in *cpu_ms_gib (may be NULL). */
static double run_swap(const opts *o, int strided, int write, size_t rlen, unsigned nreq,
                       zoff_nvme_swap *s, zoff_nvme_region *g, zoff_nvme_pool *pool,
                       double *cpu_ms_gib) {
    size_t n = o->size / rlen;
    zoff_nvme_request **reqs = calloc(nreq, sizeof *reqs);
    void **bufs = calloc(nreq, sizeof *bufs);
    static uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < nreq; i++) {
        zoff_nvme_pool_acquire(pool, &bufs[i]);
        if (write) fill_random(bufs[i], rlen, &seed);
    }
    double t0 = now(), c0 = cpu_now();
    int err = 0;
    size_t next = 0;
    for (unsigned i = 0; i < nreq && next < n; i++, next++) {
        uint64_t off = (uint64_t)next * rlen * (strided ? 2 : 1);
        err = write ? zoff_nvme_submit_write(s, g, off, bufs[i], rlen, &reqs[i])
                    : zoff_nvme_submit_read(s, g, off, bufs[i], rlen, &reqs[i]);
        if (err) break;
    }
    /* refill whichever request finishes first, as fio reaps completions in any order */
    for (size_t done = 0; !err && done < n; done++) {
        int res = 0;
        int i = zoff_nvme_wait_any(reqs, nreq, &res);
        if (i < 0) {
            err = i;
            break;
        }
        zoff_nvme_request_free(reqs[i]);
        reqs[i] = NULL;
        if ((err = res)) break;
        if (next < n) {
            uint64_t off = (uint64_t)next * rlen * (strided ? 2 : 1);
            err = write ? zoff_nvme_submit_write(s, g, off, bufs[i], rlen, &reqs[i])
                        : zoff_nvme_submit_read(s, g, off, bufs[i], rlen, &reqs[i]);
            next++;
        }
    }
    double t = now() - t0;
    if (cpu_ms_gib) *cpu_ms_gib = (cpu_now() - c0) * 1e3 / ((double)(n * rlen) / (1 << 30));
    for (unsigned i = 0; i < nreq; i++) {
        if (reqs[i]) zoff_nvme_request_free(reqs[i]);
        zoff_nvme_pool_release(pool, bufs[i]);
    }
    free(reqs);
    free(bufs);
    if (err) {
        fprintf(stderr, "bench_nvme: %s failed: %s (%s)\n", write ? "write" : "read",
                zoff_strerror(err), zoff_last_error_detail());
        return -1;
    }
    return (double)(n * rlen) / t / 1e9;
}

/* fio on `file` (zoff's swap file), bytes [0, span), the same pattern, block size, depth,
 * io_uring set-up and kind of buffers; GB/s, or -1 if fio did not run or printed no result,
 * or -(errno) - 1 if fio ran and reported the job's error. *cpu_ms_gib: fio's CPU time
 * (usr + sys over its job's runtime) per GiB moved. */
static double run_fio(const opts *o, const char *file, size_t span, int strided, int write,
                      size_t bs, unsigned qd, const char *iomem, const zoff_nvme_swap_info *zi,
                      double *cpu_ms_gib) {
    char cmd[8192], rw[64];
    if (strided)
        snprintf(rw, sizeof rw, "%s:%zu", write ? "write" : "read", bs);
    else
        snprintf(rw, sizeof rw, "%s", write ? "write" : "read");
    snprintf(cmd, sizeof cmd,
             "fio --name=zoff --filename=%s --offset=0 --size=%zu --allow_file_create=0 "
             "--fallocate=none --bs=%zu --iodepth=%u --numjobs=1 --thread "
             "--ioengine=io_uring --direct=%d --rw=%s --iomem=%s --fixedbufs=%d "
             "--registerfiles=%d --sqthread_poll=%d --output-format=json %s 2>/dev/null",
             file, span, bs, qd, zi->direct, rw, iomem, zi->fixed_buffers, zi->fixed_files,
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
    cJSON *usr = job ? cJSON_GetObjectItem(job, "usr_cpu") : NULL;
    cJSON *sys = job ? cJSON_GetObjectItem(job, "sys_cpu") : NULL;
    cJSON *rt = job ? cJSON_GetObjectItem(job, "job_runtime") : NULL;
    cJSON *io = dir ? cJSON_GetObjectItem(dir, "io_bytes") : NULL;
    *cpu_ms_gib = 0;
    if (cJSON_IsNumber(usr) && cJSON_IsNumber(sys) && cJSON_IsNumber(rt) && cJSON_IsNumber(io) &&
        io->valuedouble > 0)
        *cpu_ms_gib = (usr->valuedouble + sys->valuedouble) / 100 * rt->valuedouble /
                      (io->valuedouble / (1 << 30));
    cJSON_Delete(j);
    free(out);
    return gbs;
}

static void usage(void) {
    fprintf(
        stderr,
        "usage: bench_nvme [--dir DIR] [--size BYTES] [--bs LIST] [--qd LIST] "
        "[--patterns seq,strided] [--checksums off,on] [--buffers slab,plain] [--rounds N] "
        "[--request BYTES] [--sqpoll 0|1] [--backend auto|uring|uring-buffered|pthread] [--no-fio] "
        "[--fio-opts ARGS]\n");
}

/* Per (direction, checksums, buffers): the points' ratios, for the summary. */
typedef struct summary {
    double ratios[MAXPOINTS];
    int n;
    int fio_missing; /* points without a fio baseline */
} summary;

int main(int argc, char **argv) {
    opts o = {.dir = "/tmp",
              .size = (size_t)1 << 30,
              .bs = {1 << 20, 4 << 20},
              .n_bs = 2,
              .qd = {32},
              .n_qd = 1,
              .pat = {0, 1},
              .n_pat = 1,
              .cs = {0, 1},
              .n_cs = 2,
              .backend = ZOFF_NVME_BACKEND_AUTO,
              .rounds = 5,
              .fio = 1,
              .bufs = {0, 1},
              .n_bufs = 2};
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
        } else if (!strcmp(a, "--rounds") || !strcmp(a, "--repeat")) {
            o.rounds = atoi(v) > 0 ? atoi(v) : 1;
            if (o.rounds > MAXROUNDS) o.rounds = MAXROUNDS;
        } else if (!strcmp(a, "--request")) {
            if (zoff_parse_size(v, &o.request)) return usage(), 2;
        } else if (!strcmp(a, "--sqpoll")) {
            o.sqpoll = atoi(v) != 0;
        } else {
            usage();
            return 2;
        }
    }
    if (!o.n_pat || !o.n_cs || !o.n_bufs) return usage(), 2;
    if (o.fio && system("fio --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench_nvme: fio not found; running without the fio baseline\n");
        o.fio = 0;
    }
    zoff_log_set_callback(zoff_log_to_stderr, NULL, ZOFF_LOG_WARN);
    zoff_nvme_probe_result pr;
    if (zoff_nvme_probe(o.dir, &pr) == 0)
        fprintf(stderr, "bench_nvme: %s is %s, auto backend %s\n", o.dir, pr.fs_type, pr.backend);

    static summary sum[2][2][2]; /* [write][checksums][plain] */
    int warned_huge = 0, point = 0;
    atexit(remove_live_file);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t_start = now();

    for (int pi = 0; pi < o.n_pat; pi++)
        for (int bi = 0; bi < o.n_bs; bi++)
            for (int qi = 0; qi < o.n_qd; qi++)
                for (int bu = 0; bu < o.n_bufs; bu++) {
                    int strided = o.pat[pi], plain = o.bufs[bu];
                    size_t bs = o.bs[bi];
                    unsigned qd = o.qd[qi];
                    /* zoff's requests: one block each (as fio's), or --request bytes split
                     * into block-size operations, enough of them outstanding to keep qd
                     * operations in flight (the engine's pattern: a bucket's p, m, v) */
                    size_t rlen = o.request > bs ? o.request / bs * bs : bs;
                    unsigned nreq = rlen == bs ? qd : (unsigned)((qd * bs + rlen - 1) / rlen) + 1;
                    if (o.size < rlen || (strided && rlen != bs)) continue;
                    size_t span = o.size / rlen * rlen * (strided ? 2 : 1);
                    size_t moved = o.size / rlen * rlen;

                    long long huge_before = proc_field("/proc/self/smaps_rollup", "AnonHugePages");
                    zoff_nvme_pool_config pc = zoff_nvme_pool_config_default();
                    pc.buffer_size = rlen;
                    pc.budget = rlen * nreq;
                    /* plain: pages shared with fio; fio maps bs * qd and two pages'
                     * slack for its alignment */
                    shared_pages sp = {0};
                    char iomem[160];
                    double runs_mib = -1;
                    snprintf(iomem, sizeof iomem, "%s", plain ? "malloc" : "mmaphuge");
                    if (plain) {
                        size_t fio_bytes = bs * qd + 8192, zoff_bytes = rlen * nreq;
                        size_t bytes = fio_bytes > zoff_bytes ? fio_bytes : zoff_bytes;
                        if (shared_pages_create(&sp, bytes, point) == 0) {
                            snprintf(iomem, sizeof iomem, "mmapshared:%s", sp.path);
                            runs_mib = phys_runs_per_mib(sp.base, zoff_bytes);
                        } else {
                            fprintf(stderr,
                                    "bench_nvme: no tmpfs file at /dev/shm (%s): zoff and fio "
                                    "get separate plain buffers, whose physical layout differs\n",
                                    strerror(errno));
                        }
                        pc.alloc = plain_alloc;
                        pc.free = plain_free;
                        pc.user = &sp;
                    }
                    point++;
                    zoff_nvme_pool *pool;
                    if (zoff_nvme_pool_create(&pc, &pool)) {
                        fprintf(stderr, "bench_nvme: pool: %s\n", zoff_last_error_detail());
                        return 1;
                    }
                    long long huge_kib =
                        proc_field("/proc/self/smaps_rollup", "AnonHugePages") - huge_before;

                    /* one swap per checksum setting, all alive for the whole point */
                    zoff_nvme_swap *sw[2] = {NULL, NULL};
                    zoff_nvme_region *rg[2] = {NULL, NULL};
                    zoff_nvme_swap_info info[2];
                    for (int ci = 0; ci < o.n_cs; ci++) {
                        int cs = o.cs[ci];
                        zoff_nvme_config c = zoff_nvme_config_default();
                        c.dirs[0] = o.dir;
                        c.n_dirs = 1;
                        c.capacity = span;
                        c.block_size = bs;
                        c.stripe_size = bs > ((size_t)1 << 20) ? bs : (size_t)1 << 20;
                        c.queue_depth = qd;
                        c.checksums = cs;
                        c.checksum_block = bs < ((size_t)64 << 10) ? bs : (size_t)64 << 10;
                        c.backend = o.backend;
                        c.sqpoll = o.sqpoll;
                        c.pool = pool;
                        if (zoff_nvme_swap_create(&c, &sw[cs]) ||
                            zoff_nvme_region_define(sw[cs], "bench", span, &rg[cs])) {
                            fprintf(stderr, "bench_nvme: setup failed: %s\n",
                                    zoff_last_error_detail());
                            return 1;
                        }
                        zoff_nvme_swap_get_info(sw[cs], &info[cs]);
                        /* untimed first write: allocated extents become written ones, the
                         * state every later run (zoff's and fio's) finds */
                        if (run_swap(&o, strided, 1, rlen, nreq, sw[cs], rg[cs], pool, NULL) < 0)
                            return 1;
                        settle(o.dir);
                    }
                    /* fio's file: the checksums-off swap's (fio's data there does not
                     * disturb zoff, which rewrites it before reading it back unhashed) */
                    int fcs = sw[0] ? 0 : 1;
                    const zoff_nvme_swap_info *fi = &info[fcs];
                    const char *fio_file = fi->files[0];
                    const char *fio_unavailable = NULL;
                    char why[256];
                    if (o.fio && !plain) {
                        long long need = (long long)bs * qd + (2 << 20);
                        long long have = hugetlb_free_bytes();
                        if (have < need) {
                            snprintf(why, sizeof why,
                                     "fio --iomem=mmaphuge needs %lld MiB of hugetlbfs pages, "
                                     "%lld MiB free (vm.nr_hugepages)",
                                     need >> 20, have >> 20);
                            fio_unavailable = why;
                            if (!warned_huge++)
                                printf("{\"bench\":\"nvme\",\"warning\":\"no huge pages for fio: "
                                       "%s; slab points have no fio baseline; reserve them with "
                                       "`sysctl vm.nr_hugepages=%lld` (root)\"}\n",
                                       why, (need >> 21) + 16);
                        }
                    }
                    int use_fio = o.fio && !fio_unavailable;

                    double zg[2][2][MAXROUNDS] = {{{0}}}; /* [cs][write][round] */
                    double fg[2][MAXROUNDS] = {{0}};      /* [write][round] */
                    double zc[2][2][MAXROUNDS] = {{{0}}}; /* CPU ms per GiB, as zg */
                    double fc[2][MAXROUNDS] = {{0}};
                    double load1 = 0;
                    FILE *lf = fopen("/proc/loadavg", "r");
                    if (lf) {
                        if (fscanf(lf, "%lf", &load1) != 1) load1 = 0;
                        fclose(lf);
                    }
                    int fio_err = 0, failed = 0;
                    for (int r = 0; r < o.rounds && !failed; r++) {
                        /* fio first on odd rounds, unless fio's file holds checksummed data,
                         * which zoff must rewrite after fio and before reading it */
                        int fio_first = (r % 2) && fcs == 0;
                        for (int w = 1; w >= 0 && !failed; w--) {
                            for (int step = 0; step < 2; step++) {
                                int do_fio = step == 0 ? fio_first : !fio_first;
                                if (fcs == 1) do_fio = step == (w ? 0 : 1);
                                if (do_fio) {
                                    if (!use_fio) continue;
                                    double f = run_fio(&o, fio_file, span, strided, w, bs, qd,
                                                       iomem, fi, &fc[w][r]);
                                    if (f < -1) fio_err = (int)(-f - 1);
                                    fg[w][r] = f > 0 ? f : 0;
                                    settle(o.dir);
                                } else {
                                    /* checksums off first on even rounds, on first on odd */
                                    for (int k = 0; k < o.n_cs; k++) {
                                        int cs = o.cs[(r % 2) ? o.n_cs - 1 - k : k];
                                        double g = run_swap(&o, strided, w, rlen, nreq, sw[cs],
                                                            rg[cs], pool, &zc[cs][w][r]);
                                        if (g < 0) failed = 1;
                                        zg[cs][w][r] = g;
                                        settle(o.dir);
                                    }
                                }
                            }
                        }
                    }
                    for (int w = 1; w >= 0; w--)
                        for (int ci = 0; ci < o.n_cs; ci++) {
                            int cs = o.cs[ci];
                            const zoff_nvme_swap_info *zi = &info[cs];
                            double rat[MAXROUNDS];
                            int nr = 0;
                            for (int r = 0; r < o.rounds; r++)
                                if (fg[w][r] > 0 && zg[cs][w][r] > 0)
                                    rat[nr++] = zg[cs][w][r] / fg[w][r];
                            stats z = stats_of(zg[cs][w], o.rounds), f = stats_of(fg[w], o.rounds),
                                  q = stats_of(rat, nr);
                            summary *sm = &sum[w][cs][plain];
                            printf("{\"bench\":\"nvme\",\"pattern\":\"%s\",\"direction\":\"%s\","
                                   "\"block_size\":%zu,\"queue_depth\":%u,\"checksums\":%s,"
                                   "\"buffers\":\"%s\",\"zoff_huge_kib\":%lld,\"backend\":\"%s\","
                                   "\"direct\":%s,\"fixed_buffers\":%s,\"fixed_files\":%s,"
                                   "\"sqpoll\":%s,\"request_size\":%zu,\"requests_outstanding\":%u,"
                                   "\"bytes\":%zu,\"rounds\":%d,"
                                   "\"gbps_median\":%.4f,\"gbps_min\":%.4f,\"gbps_max\":%.4f",
                                   strided ? "strided" : "seq", w ? "write" : "read", bs, qd,
                                   cs ? "true" : "false", plain ? "plain" : "slab", huge_kib,
                                   zi->backend, zi->direct ? "true" : "false",
                                   zi->fixed_buffers ? "true" : "false",
                                   zi->fixed_files ? "true" : "false",
                                   zi->sqpoll ? "true" : "false", rlen, nreq, moved, o.rounds,
                                   z.median, z.min, z.max);
                            if (plain) {
                                printf(",\"plain_pages\":\"%s\"",
                                       sp.base ? "shared with fio" : "separate from fio's");
                                if (runs_mib >= 0) printf(",\"phys_runs_per_mib\":%.1f", runs_mib);
                            }
                            /* CPU per GiB and the machine's load: on a shared 2-core VM, CPU
                             * spent on the I/O path (hashing above all) costs throughput */
                            printf(",\"zoff_threads\":\"caller + %s\",\"loadavg_1m\":%.2f,"
                                   "\"cpu_ms_per_gib\":%.1f",
                                   strncmp(zi->backend, "io_uring", 8) ? "pthread workers"
                                                                       : "1 io_uring thread",
                                   load1, stats_of(zc[cs][w], o.rounds).median);
                            if (o.fio)
                                printf(
                                    ",\"fio_iomem\":\"%s\",\"fio_file\":\"%s\",\"fio_numjobs\":1",
                                    plain && sp.base ? "mmapshared (zoff's buffers' pages)" : iomem,
                                    fcs == cs ? "zoff's swap file (this swap's)"
                                              : "zoff's swap file (the checksums-off swap's)");
                            if (nr)
                                printf(",\"fio_cpu_ms_per_gib\":%.1f",
                                       stats_of(fc[w], o.rounds).median);
                            if (nr) {
                                double target = cs ? 0.9 : 0.95;
                                printf(",\"fio_gbps_median\":%.4f,\"fio_gbps_min\":%.4f,"
                                       "\"fio_gbps_max\":%.4f,\"ratio\":%.3f,\"ratio_min\":%.3f,"
                                       "\"ratio_max\":%.3f,\"ratio_of_medians\":%.3f,"
                                       "\"target\":%.2f,\"meets_target\":%s}\n",
                                       f.median, f.min, f.max, q.median, q.min, q.max,
                                       f.median > 0 ? z.median / f.median : 0.0, target,
                                       q.median >= target ? "true" : "false");
                                if (sm->n < MAXPOINTS) sm->ratios[sm->n++] = q.median;
                            } else if (o.fio) {
                                sm->fio_missing++;
                                if (fio_unavailable)
                                    printf(",\"fio_unavailable\":\"%s\",\"ratio\":null}\n",
                                           fio_unavailable);
                                else
                                    printf(",\"fio_error\":%d,\"ratio\":null}\n", fio_err);
                            } else {
                                printf(",\"ratio\":null}\n");
                            }
                            fflush(stdout);
                        }
                    for (int ci = 0; ci < o.n_cs; ci++)
                        zoff_nvme_swap_destroy(sw[o.cs[ci]]);
                    zoff_nvme_pool_destroy(pool);
                    shared_pages_destroy(&sp);
                    if (failed) return 1;
                }
    for (int w = 1; w >= 0; w--)
        for (int bu = 0; bu < o.n_bufs; bu++)
            for (int ci = 0; ci < o.n_cs; ci++) {
                int cs = o.cs[ci], plain = o.bufs[bu];
                summary *sm = &sum[w][cs][plain];
                printf("{\"bench\":\"nvme\",\"summary\":\"per-point ratios\",\"direction\":\"%s\","
                       "\"checksums\":%s,\"buffers\":\"%s\",\"rounds\":%d,\"points\":%d",
                       w ? "write" : "read", cs ? "true" : "false", plain ? "plain" : "slab",
                       o.rounds, sm->n);
                if (sm->fio_missing) printf(",\"points_without_fio\":%d", sm->fio_missing);
                if (sm->n) {
                    stats q = stats_of(sm->ratios, sm->n);
                    double target = cs ? 0.9 : 0.95;
                    printf(",\"ratio_median\":%.3f,\"ratio_min\":%.3f,\"ratio_max\":%.3f,"
                           "\"target\":%.2f,\"median_meets_target\":%s,\"all_points_meet\":%s}\n",
                           q.median, q.min, q.max, target, q.median >= target ? "true" : "false",
                           q.min >= target ? "true" : "false");
                } else {
                    printf(",\"ratio_median\":null}\n");
                }
            }
    fflush(stdout);
    fprintf(stderr, "bench_nvme: %.0f s\n", now() - t_start);
    return 0;
}
