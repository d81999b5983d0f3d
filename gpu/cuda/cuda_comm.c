/* Device collectives of the CUDA backend: NCCL, one GPU per rank.
 *
 * A communicator is made collectively: rank 0 makes the ncclUniqueId, the world's host
 * broadcast (gpu/dist.h) hands it to every rank, and each calls ncclCommInitRank on its
 * device's GPU (cuda_ordinal; with one process per GPU that is the local rank). Collectives are
 * launched on the stream's cudaStream_t: stream order comes from CUDA itself, and bf16, f16 and
 * f32 are NCCL's own types (each pairwise 16-bit add is correctly rounded, round(fp32(a) +
 * fp32(b)), as on the host backend). NCCL's in-place conventions are the API's.
 *
 * Timeouts: the communicator is blocking (NCCL's default). A launch returns at once; a
 * collective whose peer died hangs on the GPU, not in a call here, and this file does not
 * watch for it: the stream simply stops there, and whatever waits on that stream on the host
 * (an event or stream synchronize, a counter wait) blocks with it. Bounding that is the
 * engine's job (a host-side deadline that calls zoff_dist_abort()), or NCCL's own (its
 * network transports time out). Destroy waits for the communicator's last collective with the
 * world's timeout, and aborts the communicator (ncclCommAbort, which does not wait for peers)
 * when it did not finish or when an NCCL error was seen; otherwise it finalizes (flushes) and
 * destroys it.
 *
 * Threads: create and destroy on one thread, in the same order on every rank (they use the
 * world's host collectives). One thread issues to a communicator at a time (device.h); `done`
 * is re-recorded after each collective by that thread. `failed` may be set from any call.
 */
#include "core/log.h"
#include "gpu/cuda/cuda_backend.h"
#include "gpu/device_impl.h"
#include "gpu/dist.h"

#include <errno.h>
#include <nccl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "cuda"

typedef struct cuda_comm {
    ncclComm_t nccl;
    cudaEvent_t done; /* recorded after each collective, on its stream */
    int ordinal;
    int rank, size;
    double timeout_s;
    atomic_int failed; /* an NCCL error was seen: destroy aborts instead of finalizing */
} cuda_comm;

/* Every NCCL status goes through here: 0, or ZOFF_ECOMM with NCCL's text (and its last
 * error's detail) and the communicator marked failed. */
static int nccl_check(cuda_comm *c, ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return 0;
    if (c) atomic_store(&c->failed, 1);
    const char *last = ncclGetLastError(c ? c->nccl : NULL);
    return zoff_fail(ZOFF_ECOMM, MOD, "%s: %s%s%s", what, ncclGetErrorString(r),
                     last && *last ? ": " : "", last ? last : "");
}

#define NCK(c, call) nccl_check((c), (call), #call)

int zoff_cuda_comm_create(zoff_dev *dev, zoff_dist *dist, void **out) {
    cuda_device *cd = dev->impl;
    cuda_comm *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->ordinal = cd->ordinal;
    c->rank = zoff_dist_rank(dist);
    c->size = zoff_dist_size(dist);
    c->timeout_s = zoff_dist_timeout_s(dist);
    atomic_init(&c->failed, 0);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int rc = 0;
    /* every rank takes part in the broadcast, even one whose rank 0 failed to make an id:
     * an all-zero id then fails every rank's init instead of leaving them blocked */
    if (c->rank == 0) rc = NCK(NULL, ncclGetUniqueId(&id));
    int brc = zoff_dist_bcast(dist, &id, sizeof id, 0);
    if (rc || (rc = brc)) goto fail;
    static const ncclUniqueId zero;
    if (memcmp(&id, &zero, sizeof id) == 0) {
        rc = zoff_fail(ZOFF_ECOMM, MOD, "rank 0 could not make an NCCL id");
        goto fail;
    }
    if ((rc = zoff_cuda_use_device(c->ordinal))) goto fail;
    if ((rc = zoff_cuda_check(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming),
                              "cudaEventCreateWithFlags")))
        goto fail;
    if ((rc = NCK(NULL, ncclCommInitRank(&c->nccl, c->size, id, c->rank)))) {
        cudaEventDestroy(c->done);
        goto fail;
    }
    zoff_log(ZOFF_LOG_DEBUG, MOD, "NCCL communicator: rank %d of %d on GPU %d", c->rank, c->size,
             c->ordinal);
    *out = c;
    return 0;
fail:
    free(c);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void zoff_cuda_comm_destroy(zoff_dev *dev, void *impl) {
    (void)dev;
    cuda_comm *c = impl;
    zoff_cuda_use_device(c->ordinal);
    /* wait (polled, bounded) for the last collective issued */
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) {
            zoff_cuda_check(e, "cudaEventQuery (communicator destroy)");
            atomic_store(&c->failed, 1);
            break;
        }
        if (now_s() > deadline) {
            zoff_log(ZOFF_LOG_ERROR, MOD,
                     "the NCCL communicator's last collective did not complete in %g s: "
                     "aborting the communicator",
                     c->timeout_s);
            atomic_store(&c->failed, 1);
            break;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    if (!atomic_load(&c->failed)) {
        if (NCK(c, ncclCommFinalize(c->nccl)) == 0) NCK(c, ncclCommDestroy(c->nccl));
    }
    if (atomic_load(&c->failed)) NCK(NULL, ncclCommAbort(c->nccl));
    zoff_cuda_check(cudaEventDestroy(c->done), "cudaEventDestroy");
    free(c);
}

static ncclDataType_t nccl_type(zoff_dtype t) {
    return t == ZOFF_BF16 ? ncclBfloat16 : t == ZOFF_F16 ? ncclFloat16 : ncclFloat32;
}

/* After a launch: the error the launch returned, then any asynchronous one the communicator
 * has seen, then the marker for destroy. */
static int after_launch(cuda_comm *c, cuda_stream *s, int rc) {
    if (rc) return rc;
    ncclResult_t async = ncclSuccess;
    if ((rc = NCK(c, ncclCommGetAsyncError(c->nccl, &async)))) return rc;
    if ((rc = nccl_check(c, async, "NCCL asynchronous error"))) return rc;
    return zoff_cuda_check(cudaEventRecord(c->done, s->stream), "cudaEventRecord");
}

int zoff_cuda_comm_allreduce(void *stream, void *comm, const void *send, void *recv, size_t count,
                             zoff_dtype type) {
    cuda_stream *s = stream;
    cuda_comm *c = comm;
    int rc = zoff_cuda_use_device(c->ordinal);
    if (!rc)
        rc = NCK(c, ncclAllReduce(send, recv, count, nccl_type(type), ncclSum, c->nccl, s->stream));
    return after_launch(c, s, rc);
}

int zoff_cuda_comm_reduce_scatter(void *stream, void *comm, const void *send, void *recv,
                                  size_t recv_count, zoff_dtype type) {
    cuda_stream *s = stream;
    cuda_comm *c = comm;
    int rc = zoff_cuda_use_device(c->ordinal);
    if (!rc)
        rc = NCK(c, ncclReduceScatter(send, recv, recv_count, nccl_type(type), ncclSum, c->nccl,
                                      s->stream));
    return after_launch(c, s, rc);
}

int zoff_cuda_comm_allgather(void *stream, void *comm, const void *send, void *recv,
                             size_t send_count, zoff_dtype type) {
    cuda_stream *s = stream;
    cuda_comm *c = comm;
    int rc = zoff_cuda_use_device(c->ordinal);
    if (!rc)
        rc = NCK(c, ncclAllGather(send, recv, send_count, nccl_type(type), c->nccl, s->stream));
    return after_launch(c, s, rc);
}

int zoff_cuda_comm_broadcast(void *stream, void *comm, void *buf, size_t count, zoff_dtype type,
                             int root) {
    cuda_stream *s = stream;
    cuda_comm *c = comm;
    int rc = zoff_cuda_use_device(c->ordinal);
    if (!rc) rc = NCK(c, ncclBroadcast(buf, buf, count, nccl_type(type), root, c->nccl, s->stream));
    return after_launch(c, s, rc);
}
