/* Probe of a swap directory for `zoff info --nvme-path DIR`: does io_uring work here, does
 * O_DIRECT, how much space, which file system, and which backend AUTO would pick. It writes
 * and removes one 8 KiB temporary file; it holds no state and is thread-safe. */
#include "nvme/nvme.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MOD "nvme"

static const char *fs_name(long magic) {
    switch ((unsigned long)magic & 0xffffffffUL) {
    case 0xEF53:
        return "ext4"; /* ext2/3/4 share the magic */
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs";
    case 0x794c7630:
        return "overlay";
    case 0x2FC12FC1:
        return "zfs";
    case 0xF2F52010:
        return "f2fs";
    case 0x6969:
        return "nfs";
    case 0xFF534D42:
        return "cifs";
    case 0x65735546:
        return "fuse";
    case 0x858458f6:
        return "ramfs";
    case 0x5346544e:
        return "ntfs";
    case 0x4d44:
        return "vfat";
    case 0x3153464a:
        return "jfs";
    case 0x52654973:
        return "reiserfs";
    case 0x73717368:
        return "squashfs";
    default:
        return NULL;
    }
}

/* Writes one aligned block through io_uring to fd (or reads it back) and checks cqe->res. */
static int uring_roundtrip(int fd, void *buf, size_t len) {
    struct io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) return rc;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_write(sqe, fd, buf, (unsigned)len, 0);
    rc = io_uring_submit(&ring);
    if (rc == 1) {
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&ring, &cqe);
        if (rc == 0) {
            rc = cqe->res == (int)len ? 0 : (cqe->res < 0 ? cqe->res : -EIO);
            io_uring_cqe_seen(&ring, cqe);
        }
    } else if (rc >= 0) {
        rc = -EIO;
    }
    io_uring_queue_exit(&ring);
    return rc;
}

int zoff_nvme_probe(const char *dir, zoff_nvme_probe_result *out) {
    memset(out, 0, sizeof *out);
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0) return zoff_fail(-errno, MOD, "cannot stat %s", dir);
    out->free_bytes = (uint64_t)vs.f_bavail * vs.f_frsize;
    out->total_bytes = (uint64_t)vs.f_blocks * vs.f_frsize;
    struct statfs fs;
    if (statfs(dir, &fs) == 0) {
        const char *n = fs_name((long)fs.f_type);
        if (n)
            snprintf(out->fs_type, sizeof out->fs_type, "%s", n);
        else
            snprintf(out->fs_type, sizeof out->fs_type, "0x%lx", (unsigned long)fs.f_type);
    } else {
        snprintf(out->fs_type, sizeof out->fs_type, "unknown");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/zoff-probe.%d.tmp", dir, (int)getpid());
    void *buf = NULL;
    size_t len = 2 * ZOFF_NVME_ALIGN;
    if (posix_memalign(&buf, ZOFF_NVME_ALIGN, len) != 0)
        return zoff_fail(-ENOMEM, MOD, "probe buffer");
    memset(buf, 0x5a, len);

    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = pwrite(fd, buf, len, 0);
        ssize_t r = w == (ssize_t)len ? pread(fd, buf, len, 0) : -1;
        out->direct_ok = w == (ssize_t)len && r == (ssize_t)len;
        out->direct_errno = out->direct_ok ? 0 : (w < 0 || r < 0 ? errno : EIO);
    } else {
        out->direct_errno = errno;
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            free(buf);
            return zoff_fail(-e, MOD, "cannot create a file in %s (%s)", dir, path);
        }
    }
    if (!out->direct_ok && out->direct_errno == 0) out->direct_errno = EIO;
    int rc = uring_roundtrip(fd, buf, len);
    out->uring_ok = rc == 0;
    out->uring_errno = rc < 0 ? -rc : 0;
    close(fd);
    unlink(path);
    free(buf);
    snprintf(out->backend, sizeof out->backend, "%s%s", out->uring_ok ? "io_uring" : "pthread",
             out->direct_ok ? "+O_DIRECT" : " buffered");
    return 0;
}
