/* Atomic, self-describing checkpoint folders (see checkpoint_dir.h): the temporary-folder
 * protocol, its recovery after a kill, and the step / run id stamp every file records.
 *
 * Invariant: at every instant DIR is either absent, the whole previous checkpoint, or the
 * whole new one; the only other states a kill can leave are PARENT/.NAME.tmp (an incomplete
 * or an already replaced folder: removed at recovery) and, without RENAME_EXCHANGE, a
 * PARENT/.NAME.old with DIR absent (the previous checkpoint: put back at recovery). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* renameat2, nftw */
#endif
#include "model/checkpoint_dir.h"
#include "core/log.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD           "checkpoint"
#define ST_MAX_HEADER (100u << 20)

static _Thread_local zoff_ckpt_stamp t_stamp;
static _Thread_local bool t_stamp_set;

void zoff_ckpt_stamp_set(const zoff_ckpt_stamp *stamp) {
    t_stamp_set = stamp != NULL;
    if (stamp) t_stamp = *stamp;
}

void zoff_ckpt_stamp_add_json(cJSON *obj) {
    if (!t_stamp_set || !obj) return;
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, t_stamp.step);
    cJSON_AddStringToObject(obj, "zoff_step", text);
    cJSON_AddStringToObject(obj, "zoff_run_id", t_stamp.run_id);
}

int zoff_ckpt_new_run_id(char out[ZOFF_RUN_ID_LEN + 1]) {
    uint64_t r = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, &r, sizeof r) == (ssize_t)sizeof r;
    if (fd >= 0) close(fd);
    if (!ok) { /* no urandom: time and pid still tell runs apart */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec << 20 ^ (uint64_t)getpid();
    }
    snprintf(out, ZOFF_RUN_ID_LEN + 1, "%016" PRIx64, r);
    return 0;
}

/* --- reading a stamp ---------------------------------------------------------------------- */

static int stamp_from_json(const cJSON *obj, const char *path, zoff_ckpt_stamp *out) {
    memset(out, 0, sizeof *out);
    out->step = -1;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(obj, "zoff_step");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "zoff_run_id");
    if (!st && !id) return 0;
    char *end = NULL;
    long long step = cJSON_IsString(st) ? strtoll(st->valuestring, &end, 10) : -1;
    if (!cJSON_IsString(st) || !cJSON_IsString(id) || *end || step < 0 ||
        strlen(id->valuestring) != ZOFF_RUN_ID_LEN)
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: malformed zoff_step / zoff_run_id", path);
    out->step = step;
    snprintf(out->run_id, sizeof out->run_id, "%s", id->valuestring);
    return 0;
}

int zoff_ckpt_stamp_read(const char *path, zoff_ckpt_stamp *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    size_t plen = strlen(path);
    bool json = plen >= 5 && strcmp(path + plen - 5, ".json") == 0;
    char *text = NULL;
    size_t n = 0;
    int rc = 0;
    if (json) {
        if (fseek(f, 0, SEEK_END) == 0) {
            long sz = ftell(f);
            rewind(f);
            if (sz >= 0 && sz <= (16 << 20) && (text = malloc((size_t)sz + 1)))
                n = fread(text, 1, (size_t)sz, f);
        }
    } else {
        uint8_t len8[8];
        if (fread(len8, 1, 8, f) == 8) {
            uint64_t hlen = 0;
            for (int i = 7; i >= 0; i--)
                hlen = hlen << 8 | len8[i];
            if (hlen <= ST_MAX_HEADER && (text = malloc((size_t)hlen + 1)))
                n = fread(text, 1, (size_t)hlen, f);
        }
    }
    fclose(f);
    if (!text) return zoff_fail(ZOFF_EFORMAT, MOD, "%s: truncated or unreadable header", path);
    text[n] = 0;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(doc))
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: %s is not a JSON object", path,
                       json ? "the file" : "the header");
    else
        rc = stamp_from_json(json ? doc : cJSON_GetObjectItemCaseSensitive(doc, "__metadata__"),
                             path, out);
    cJSON_Delete(doc);
    return rc;
}

/* --- the folder protocol ------------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) != 0 && errno != ENOENT ? -1 : 0;
}

int zoff_remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -errno;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return zoff_fail(-errno, MOD, "%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

/* PARENT/.NAME.SUFFIX for DIR = PARENT/NAME. */
static int sibling(const char *dir, const char *suffix, char *out, size_t n) {
    char d[PATH_MAX];
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof d)
        return zoff_fail(-ENAMETOOLONG, MOD, "%s: bad checkpoint path", dir);
    memcpy(d, dir, len);
    d[len] = 0;
    char *slash = strrchr(d, '/');
    int w;
    if (slash) {
        *slash = 0;
        w = snprintf(out, n, "%s/.%s.%s", d[0] ? d : "/", slash + 1, suffix);
    } else {
        w = snprintf(out, n, ".%s.%s", d, suffix);
    }
    if (w < 0 || (size_t)w >= n) return zoff_fail(-ENAMETOOLONG, MOD, "%s: path too long", dir);
    return 0;
}

int zoff_mkdirs(const char *dir) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return zoff_fail(-ENAMETOOLONG, MOD, "%s: path too long", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return zoff_fail(-errno, MOD, "%s: cannot create: %s", tmp, strerror(errno));
            *p = '/';
        }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        return zoff_fail(-errno, MOD, "%s: cannot create: %s", tmp, strerror(errno));
    return 0;
}

int zoff_ckpt_dir_begin(const char *dir, char *tmp, size_t tmp_size) {
    int rc = sibling(dir, "tmp", tmp, tmp_size);
    if (!rc) rc = zoff_remove_tree(tmp);
    if (!rc) rc = zoff_mkdirs(tmp);
    return rc;
}

static int fsync_path(const char *path, bool dir) {
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    int rc = fsync(fd) != 0 && errno != EINVAL ? -errno : 0; /* some filesystems refuse dirs */
    close(fd);
    if (rc) return zoff_fail(rc, MOD, "%s: fsync failed: %s", path, strerror(-rc));
    return 0;
}

static void parent_of(const char *path, char *out, size_t n) {
    snprintf(out, n, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, n, ".");
    else if (slash == out)
        out[1] = 0;
    else
        *slash = 0;
}

int zoff_ckpt_dir_commit(const char *tmp, const char *dir) {
    DIR *d = opendir(tmp);
    if (!d) return zoff_fail(-errno, MOD, "%s: cannot open: %s", tmp, strerror(errno));
    int rc = 0;
    for (struct dirent *de; !rc && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", tmp, de->d_name) >= (int)sizeof p) continue;
        rc = fsync_path(p, false);
    }
    closedir(d);
    if (!rc) rc = fsync_path(tmp, true);
    if (rc) return rc;
    char parent[PATH_MAX];
    parent_of(dir, parent, sizeof parent);
    struct stat sb;
    if (stat(dir, &sb) != 0) { /* first save */
        if (rename(tmp, dir) != 0)
            return zoff_fail(-errno, MOD, "%s: rename from %s failed: %s", dir, tmp,
                             strerror(errno));
        return fsync_path(parent, true);
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        rc = fsync_path(parent, true);
        zoff_remove_tree(tmp); /* now the previous checkpoint */
        return rc;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return zoff_fail(-errno, MOD, "%s: swapping in %s failed: %s", dir, tmp, strerror(errno));
    /* no RENAME_EXCHANGE here: the previous folder steps aside as .NAME.old first, and
     * recovery puts it back if a kill comes between the two renames */
    char old[PATH_MAX];
    if ((rc = sibling(dir, "old", old, sizeof old)) || (rc = zoff_remove_tree(old))) return rc;
    if (rename(dir, old) != 0)
        return zoff_fail(-errno, MOD, "%s: rename to %s failed: %s", dir, old, strerror(errno));
    if (rename(tmp, dir) != 0) {
        rc = zoff_fail(-errno, MOD, "%s: rename from %s failed: %s", dir, tmp, strerror(errno));
        rename(old, dir);
        return rc;
    }
    rc = fsync_path(parent, true);
    zoff_remove_tree(old);
    return rc;
}

void zoff_ckpt_dir_abort(const char *tmp) {
    zoff_remove_tree(tmp);
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a > b && strcmp(s + a - b, suf) == 0;
}

/* The files a checkpoint folder holds, and the FILE.tmp a writer renames into each. */
static bool is_checkpoint_file(const char *name) {
    /* zoff sft adds its cursor (sft_state.json, stamped) and the tokenizer's files */
    static const char *files[8] = {"config.json",           "model.safetensors",
                                   "optimizer.safetensors", "model.safetensors.index.json",
                                   "sft_state.json",        "tokenizer.json",
                                   "tokenizer_config.json", "special_tokens_map.json"};
    unsigned a, b;
    int end = 0;
    if (sscanf(name, "model-%5u-of-%5u.safetensors%n", &a, &b, &end) == 2 &&
        (name[end] == 0 || strcmp(name + end, ".tmp") == 0))
        return true; /* a shard of a sharded checkpoint */
    for (int i = 0; i < 8; i++) {
        size_t n = strlen(files[i]);
        if (strncmp(name, files[i], n) == 0 && (name[n] == 0 || strcmp(name + n, ".tmp") == 0))
            return true;
    }
    return false;
}

/* Whether a folder holds nothing but checkpoint files (or nothing): only such folders are
 * ever removed or renamed by recovery, so that an --out shared with other things is safe. */
static bool looks_like_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true;
    for (struct dirent *de; ok && (de = readdir(d));)
        ok = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
             is_checkpoint_file(de->d_name);
    closedir(d);
    return ok;
}

/* Removes FILE.tmp left by an interrupted write inside a checkpoint folder. */
static void clean_files(const char *dir, int *n_fixed) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        if (!has_suffix(de->d_name, ".tmp") || !is_checkpoint_file(de->d_name)) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p) continue;
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(p) == 0) {
            zoff_log(ZOFF_LOG_INFO, MOD, "removed %s, left by an interrupted save", p);
            (*n_fixed)++;
        }
    }
    closedir(d);
}

int zoff_ckpt_dir_recover(const char *parent, int *n_fixed) {
    int fixed = 0, rc = 0;
    DIR *d = opendir(parent);
    if (!d) {
        if (n_fixed) *n_fixed = 0;
        return errno == ENOENT
                   ? 0
                   : zoff_fail(-errno, MOD, "%s: cannot open: %s", parent, strerror(errno));
    }
    /* collect first: the loop renames and removes entries of the folder it reads */
    char(*names)[256] = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            void *nn = realloc(names, cap * sizeof *names);
            if (!nn) {
                rc = -ENOMEM;
                break;
            }
            names = nn;
        }
        snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    }
    closedir(d);
    for (size_t i = 0; !rc && i < n; i++) {
        const char *e = names[i];
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", parent, e) >= (int)sizeof p) continue;
        struct stat sb;
        if (lstat(p, &sb) != 0) continue;
        bool ours = S_ISDIR(sb.st_mode) && e[0] == '.' && looks_like_checkpoint(p);
        bool is_tmp = ours && has_suffix(e, ".tmp");
        bool is_old = ours && has_suffix(e, ".old");
        if (S_ISDIR(sb.st_mode) && is_tmp) {
            if (zoff_remove_tree(p) == 0) {
                zoff_log(ZOFF_LOG_INFO, MOD, "removed %s, left by an interrupted save", p);
                fixed++;
            }
        } else if (S_ISDIR(sb.st_mode) && is_old) {
            char orig[PATH_MAX];
            int w = snprintf(orig, sizeof orig, "%s/%.*s", parent, (int)(strlen(e) - 5), e + 1);
            struct stat ob;
            if (w < (int)sizeof orig && stat(orig, &ob) != 0 && rename(p, orig) == 0) {
                zoff_log(ZOFF_LOG_WARN, MOD,
                         "restored %s from %s: a save was interrupted while replacing it", orig, p);
                fixed++;
            } else if (zoff_remove_tree(p) == 0) {
                zoff_log(ZOFF_LOG_INFO, MOD, "removed %s, left by an interrupted save", p);
                fixed++;
            }
        } else if (S_ISDIR(sb.st_mode) && e[0] != '.') {
            clean_files(p, &fixed);
        }
    }
    free(names);
    if (n_fixed) *n_fixed = fixed;
    return rc;
}

/* --- verification --------------------------------------------------------------------------- */

int zoff_ckpt_dir_verify(const char *dir, bool need_optimizer, zoff_ckpt_stamp *out) {
    const char *files[4] = {"config.json", "model.safetensors", "optimizer.safetensors"};
    int n = need_optimizer ? 3 : 2;
    struct stat sb;
    /* zoff sft's cursor, when there is one, must be of the same save */
    char sft_state[PATH_MAX];
    snprintf(sft_state, sizeof sft_state, "%s/sft_state.json", dir);
    bool has_sft = stat(sft_state, &sb) == 0;
    /* a sharded checkpoint: its first shard stands for the weights (each shard is stamped) */
    char first_shard[64], probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/model.safetensors", dir);
    if (stat(probe, &sb) != 0) {
        DIR *d = opendir(dir);
        for (struct dirent *de; d && (de = readdir(d));) {
            unsigned a, b;
            if (sscanf(de->d_name, "model-%5u-of-%5u.safetensors", &a, &b) == 2 && a == 1 &&
                has_suffix(de->d_name, ".safetensors") && strlen(de->d_name) < sizeof first_shard) {
                snprintf(first_shard, sizeof first_shard, "%s", de->d_name);
                files[1] = first_shard;
                break;
            }
        }
        if (d) closedir(d);
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return zoff_fail(stat(dir, &sb) != 0 ? -errno : -ENOTDIR, MOD,
                         "%s: not a checkpoint folder (%s)", dir,
                         stat(dir, &sb) != 0 ? strerror(errno) : "not a directory");
    char missing[128] = "";
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (stat(p, &sb) != 0) {
            size_t k = strlen(missing);
            snprintf(missing + k, sizeof missing - k, "%s%s", k ? ", " : "", files[i]);
        }
    }
    if (missing[0])
        return zoff_fail(ZOFF_EFORMAT, MOD,
                         "%s: incomplete checkpoint: %s missing (a checkpoint folder holds "
                         "config.json, model.safetensors%s)",
                         dir, missing, need_optimizer ? " and optimizer.safetensors" : "");
    if (has_sft) {
        files[n] = "sft_state.json";
        n++;
    }
    zoff_ckpt_stamp st[4];
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        int rc = zoff_ckpt_stamp_read(p, &st[i]);
        if (rc) return rc;
    }
    bool agree = true;
    for (int i = 1; i < n; i++)
        agree = agree && st[i].step == st[0].step && strcmp(st[i].run_id, st[0].run_id) == 0;
    if (!agree) {
        char what[512] = "";
        for (int i = 0; i < n; i++) {
            size_t k = strlen(what);
            if (st[i].run_id[0])
                snprintf(what + k, sizeof what - k, "%s%s is step %" PRId64 " of run %s",
                         i ? ", " : "", files[i], st[i].step, st[i].run_id);
            else
                snprintf(what + k, sizeof what - k, "%s%s has no step or run id", i ? ", " : "",
                         files[i]);
        }
        return zoff_fail(ZOFF_EFORMAT, MOD,
                         "%s: the files of this checkpoint disagree: %s; they were not written "
                         "by one save",
                         dir, what);
    }
    if (!st[0].run_id[0])
        zoff_log(ZOFF_LOG_WARN, MOD,
                 "%s: its files record no step or run id (written by an older zoff): they "
                 "cannot be checked against each other",
                 dir);
    if (out) *out = st[0];
    return 0;
}
