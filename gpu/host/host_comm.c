/* Device collectives of the host backend: MPI over the "device" memory (the host arena).
 *
 * A communicator is an MPI duplicate of the world (its messages never match another
 * communicator's). A collective is a stream command: the issuing thread queues it, and the
 * stream's worker thread runs it when the stream reaches it (stream order), issuing the MPI
 * non-blocking call and completing it with zoff_dist_wait() (polled, with the world's timeout;
 * past it the job is aborted: peers would stay blocked otherwise). A command cannot return an
 * error to its issuer, and a rank that skipped its part would leave the others blocked, so an
 * MPI error inside a command also aborts the job, after logging MPI's message.
 *
 * 16-bit sums use user MPI_Ops on MPI_UINT16_T: each pairwise reduction widens both operands to
 * fp32, adds and rounds once to nearest even (bf16 or f16), so a 2-rank sum is exactly
 * round(fp32(a) + fp32(b)), as NCCL computes it.
 *
 * Reduce-scatter and all-gather - what the offload engine moves every step - are rings of
 * point-to-point messages, as NCCL runs them: N-1 steps, each sending one block to the right
 * neighbour and receiving one from the left (and, for the reduce-scatter, adding it to the local
 * block), so each rank sends (N-1)/N of the buffer, the minimum. Open MPI's own
 * MPI_Ireduce_scatter_block moves more and progresses slowly (its non-blocking schedule advances
 * only inside test calls), several times slower here.
 *
 * Threads: create and destroy on one thread (collective calls over the world, in the same
 * order on every rank). Collectives on one communicator are issued by one thread to one stream
 * at a time (device.h). `pending` counts commands queued and not finished, under `lock`, so
 * that destroy waits for them; MPI itself is MPI_THREAD_MULTIPLE (gpu/dist.c).
 */
#include "core/half.h"
#include "core/target_clones.h"
#include "core/log.h"
#include "gpu/dist_impl.h"
#include "gpu/host/host_backend.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "host"

typedef struct host_comm {
    zoff_dist *dist;
    MPI_Comm comm;
    MPI_Op sum_bf16, sum_f16;
    int rank, size;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t pending; /* commands queued, not yet finished */
    /* The reduce-scatters' blocks (partial sum, received), kept from one call to the next (a
     * fresh buffer per call cost its page faults every time). The issuing thread grows it; a
     * replaced one is freed by the next command, which runs after every command using it (one
     * stream per communicator, device.h). */
    void *scratch;
    size_t scratch_bytes;
} host_comm;

typedef enum comm_kind { K_ALLREDUCE, K_REDUCE_SCATTER, K_ALLGATHER, K_BROADCAST } comm_kind;

#define RING_TAG 0x2f /* one tag: a communicator's collectives are issued in one order */

typedef struct comm_cmd {
    host_comm *c;
    comm_kind kind;
    zoff_dtype type;
    const void *send;
    void *recv;
    size_t count; /* allreduce/broadcast: elements; reduce_scatter: recv_count; allgather:
                     send_count */
    int root;
    void *scratch;     /* reduce_scatter: the communicator's blocks (partial sum, received) */
    void *free_first;  /* a scratch this command replaced: freed when it runs */
} comm_cmd;

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = zoff_f32_to_bf16(zoff_bf16_to_f32(a[i]) + zoff_bf16_to_f32(b[i]));
}

static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = zoff_f32_to_f16(zoff_f16_to_f32(a[i]) + zoff_f16_to_f32(b[i]));
}

int host_comm_create(zoff_dev *dev, zoff_dist *dist, void **out) {
    (void)dev;
    if (!zoff_dist_uses_mpi(dist))
        return zoff_fail(-EINVAL, MOD, "a communicator of %d ranks needs an MPI world",
                         zoff_dist_size(dist));
    host_comm *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->dist = dist;
    c->rank = zoff_dist_rank(dist);
    c->size = zoff_dist_size(dist);
    int rc = zoff_dist_dup_world(dist, &c->comm);
    if (rc) {
        free(c);
        return rc;
    }
    MPI_Op_create(sum_bf16, 1, &c->sum_bf16);
    MPI_Op_create(sum_f16, 1, &c->sum_f16);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    *out = c;
    return 0;
}

void host_comm_destroy(zoff_dev *dev, void *impl) {
    (void)dev;
    host_comm *c = impl;
    pthread_mutex_lock(&c->lock);
    while (c->pending)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    MPI_Op_free(&c->sum_bf16);
    MPI_Op_free(&c->sum_f16);
    MPI_Comm_free(&c->comm);
    free(c->scratch);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static const char *kind_name(comm_kind k) {
    static const char *names[] = {"allreduce", "reduce_scatter", "allgather", "broadcast"};
    return names[k];
}

/* dst[i] = a[i] + b[i] in `type`, 16-bit sums through fp32 rounded once to nearest even
 * (dst may be a). The bf16 rounding is zoff_f32_to_bf16's, written without a branch so that the
 * loop vectorizes (AVX2 clone: a quarter of the scalar time); f16 goes through the scalar
 * conversions. */
ZOFF_AVX2_CLONE static void
add_blocks(void *dst, const void *a, const void *b, size_t n, zoff_dtype type) {
    if (type == ZOFF_F32) {
        float *d = dst;
        const float *x = a, *y = b;
        for (size_t i = 0; i < n; i++)
            d[i] = x[i] + y[i];
        return;
    }
    uint16_t *d = dst;
    const uint16_t *x = a, *y = b;
    if (type == ZOFF_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint32_t s = zoff_f32_bits(zoff_bf16_to_f32(x[i]) + zoff_bf16_to_f32(y[i]));
            uint32_t rounded = (s + 0x7fffu + ((s >> 16) & 1u)) >> 16, quiet = (s >> 16) | 0x40u;
            d[i] = (uint16_t)((s & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = zoff_f32_to_f16(zoff_f16_to_f32(x[i]) + zoff_f16_to_f32(y[i]));
}

/* An MPI call failed inside a command: nobody can be told, and peers wait for this rank. */
static void command_failed(host_comm *c, comm_kind k, int mrc) {
    char what[64];
    snprintf(what, sizeof what, "device %s", kind_name(k));
    zoff_dist_mpi_fail(mrc, what);
    zoff_dist_abort(c->dist, 1, zoff_last_error_detail());
}

/* Completes the request an MPI call (status mrc) started; aborts the job on an error. */
static void finish(host_comm *c, comm_kind k, int mrc, MPI_Request *req, size_t bytes) {
    if (mrc != MPI_SUCCESS) command_failed(c, k, mrc);
    if (zoff_dist_wait(c->dist, req, 1, kind_name(k), bytes))
        zoff_dist_abort(c->dist, 1, zoff_last_error_detail());
}

/* One ring step: send `out` to the right neighbour, receive into `in` from the left. */
static void ring_exchange(host_comm *c, comm_kind k, const void *out, void *in, int n,
                          MPI_Datatype dt, size_t bytes) {
    int right = (c->rank + 1) % c->size, left = (c->rank + c->size - 1) % c->size;
    MPI_Request req[2];
    int mrc = MPI_Irecv(in, n, dt, left, RING_TAG, c->comm, &req[0]);
    if (mrc == MPI_SUCCESS) mrc = MPI_Isend(out, n, dt, right, RING_TAG, c->comm, &req[1]);
    if (mrc != MPI_SUCCESS) command_failed(c, k, mrc);
    if (zoff_dist_wait(c->dist, req, 2, kind_name(k), bytes))
        zoff_dist_abort(c->dist, 1, zoff_last_error_detail());
}

/* Ring reduce-scatter: at step s this rank sends its partial sum of block (rank-s-1) and
 * receives the left neighbour's partial of block (rank-s-2), adding its own contribution; the
 * last step's block is its own, summed into recv. send is only read (recv may lie inside it). */
static void ring_reduce_scatter(host_comm *c, comm_cmd *m, size_t elem, MPI_Datatype dt) {
    int N = c->size, r = c->rank, n = (int)m->count;
    size_t bytes = m->count * elem;
    const char *send = m->send;
    char *in = m->scratch, *acc = in + bytes; /* acc: only with more than two ranks */
    for (int s = 0; s < N - 1; s++) {
        int out_idx = ((r - s - 1) % N + N) % N, in_idx = ((r - s - 2) % N + N) % N;
        const void *out = s == 0 ? send + (size_t)out_idx * bytes : acc;
        ring_exchange(c, K_REDUCE_SCATTER, out, in, n, dt, bytes);
        void *dst = s == N - 2 ? m->recv : acc; /* in_idx == r at the last step */
        add_blocks(dst, send + (size_t)in_idx * bytes, in, m->count, m->type);
    }
}

/* Ring all-gather: at step s this rank passes on block (rank-s) and receives block (rank-s-1),
 * each straight into its place in recv. */
static void ring_allgather(host_comm *c, comm_cmd *m, size_t elem, MPI_Datatype dt) {
    int N = c->size, r = c->rank, n = (int)m->count;
    size_t bytes = m->count * elem;
    char *recv = m->recv;
    if ((const char *)m->send != recv + (size_t)r * bytes)
        memcpy(recv + (size_t)r * bytes, m->send, bytes);
    for (int s = 0; s < N - 1; s++) {
        int out_idx = ((r - s) % N + N) % N, in_idx = ((r - s - 1) % N + N) % N;
        ring_exchange(c, K_ALLGATHER, recv + (size_t)out_idx * bytes,
                      recv + (size_t)in_idx * bytes, n, dt, bytes);
    }
}

static void run_comm(void *payload) {
    comm_cmd *m = payload;
    host_comm *c = m->c;
    free(m->free_first); /* the commands that used it ran before this one */
    size_t elem = zoff_dtype_size(m->type);
    MPI_Datatype dt = m->type == ZOFF_F32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_Op sum = m->type == ZOFF_F32 ? MPI_SUM : m->type == ZOFF_BF16 ? c->sum_bf16 : c->sum_f16;
    MPI_Request req;
    size_t chunk = ZOFF_DIST_CHUNK_BYTES / elem;
    switch (m->kind) {
    case K_ALLREDUCE:
        for (size_t off = 0; off < m->count; off += chunk) {
            int n = (int)(m->count - off < chunk ? m->count - off : chunk);
            const void *src =
                m->send == m->recv ? MPI_IN_PLACE : (const char *)m->send + off * elem;
            int mrc = MPI_Iallreduce(src, (char *)m->recv + off * elem, n, dt, sum, c->comm, &req);
            finish(c, m->kind, mrc, &req, (size_t)n * elem);
        }
        break;
    case K_BROADCAST:
        for (size_t off = 0; off < m->count; off += chunk) {
            int n = (int)(m->count - off < chunk ? m->count - off : chunk);
            int mrc = MPI_Ibcast((char *)m->recv + off * elem, n, dt, m->root, c->comm, &req);
            finish(c, m->kind, mrc, &req, (size_t)n * elem);
        }
        break;
    case K_REDUCE_SCATTER:
        ring_reduce_scatter(c, m, elem, dt);
        break;
    case K_ALLGATHER:
        ring_allgather(c, m, elem, dt);
        break;
    }
    pthread_mutex_lock(&c->lock);
    c->pending--;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int enqueue(void *stream, comm_cmd *m) {
    host_comm *c = m->c;
    pthread_mutex_lock(&c->lock);
    c->pending++;
    pthread_mutex_unlock(&c->lock);
    int rc = host_stream_enqueue(stream, run_comm, m, sizeof *m);
    if (rc) {
        pthread_mutex_lock(&c->lock);
        c->pending--;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    return rc;
}

/* MPI counts are int: reduce_scatter and allgather take at most INT_MAX elements per rank
 * (4 GiB of 16-bit values per rank block; buckets are far smaller). */
static int check_int_count(const char *op, size_t count) {
    if (count > INT_MAX)
        return zoff_fail(-EOVERFLOW, MOD,
                         "%s: %zu elements per rank exceed the host backend's "
                         "limit of INT_MAX",
                         op, count);
    return 0;
}

int host_comm_allreduce(void *stream, void *comm, const void *send, void *recv, size_t count,
                        zoff_dtype type) {
    comm_cmd m = {
        .c = comm, .kind = K_ALLREDUCE, .type = type, .send = send, .recv = recv, .count = count};
    return enqueue(stream, &m);
}

int host_comm_reduce_scatter(void *stream, void *comm, const void *send, void *recv,
                             size_t recv_count, zoff_dtype type) {
    host_comm *c = comm;
    int rc = check_int_count("reduce_scatter", recv_count);
    if (rc) return rc;
    size_t bytes = recv_count * zoff_dtype_size(type);
    comm_cmd m = {.c = c,
                  .kind = K_REDUCE_SCATTER,
                  .type = type,
                  .send = send,
                  .recv = recv,
                  .count = recv_count};
    size_t need = (c->size > 2 ? 2 : 1) * bytes;
    void *grown = NULL;
    if (need > c->scratch_bytes) {
        if (!(grown = host_kernel_scratch("reduce_scatter", need))) return -ENOMEM;
        m.free_first = c->scratch;
    }
    m.scratch = grown ? grown : c->scratch;
    rc = enqueue(stream, &m);
    if (rc) { /* queued commands may still use the old one: it stays */
        free(grown);
        return rc;
    }
    if (grown) {
        c->scratch = grown;
        c->scratch_bytes = need;
    }
    return 0;
}

int host_comm_allgather(void *stream, void *comm, const void *send, void *recv, size_t send_count,
                        zoff_dtype type) {
    int rc = check_int_count("allgather", send_count);
    if (rc) return rc;
    comm_cmd m = {.c = comm,
                  .kind = K_ALLGATHER,
                  .type = type,
                  .send = send,
                  .recv = recv,
                  .count = send_count};
    return enqueue(stream, &m);
}

int host_comm_broadcast(void *stream, void *comm, void *buf, size_t count, zoff_dtype type,
                        int root) {
    comm_cmd m = {.c = comm,
                  .kind = K_BROADCAST,
                  .type = type,
                  .send = buf,
                  .recv = buf,
                  .count = count,
                  .root = root};
    return enqueue(stream, &m);
}
