/* Checkpoint folders that are all-or-nothing and say which step and run they hold.
 *
 * A folder DIR (model.safetensors, config.json, optimizer.safetensors) is written into a
 * sibling temporary folder PARENT/.NAME.tmp and swapped into place only once every file is
 * complete and synced (renameat2 RENAME_EXCHANGE, or two renames through PARENT/.NAME.old
 * where the filesystem lacks it); the previous DIR stays whole until then. A process killed
 * at any point leaves DIR either old or new; zoff_ckpt_dir_recover() tidies what the kill
 * left (a stray .NAME.tmp is removed, a .NAME.old whose DIR is missing is put back).
 *
 * Every file of a checkpoint records the same step and run id (the "stamp": safetensors
 * __metadata__ keys zoff_step / zoff_run_id, the same keys in config.json), set with
 * zoff_ckpt_stamp_set() around the savers; zoff_ckpt_dir_verify() refuses a folder whose
 * files are missing or disagree, naming them.
 *
 * Threads: the stamp is per thread (the savers read the calling thread's); the folder
 * functions are not meant to race with another process writing the same folder.
 */
#ifndef ZOFF_MODEL_CHECKPOINT_DIR_H
#define ZOFF_MODEL_CHECKPOINT_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cJSON cJSON;

#define ZOFF_RUN_ID_LEN 16 /* hex digits */

typedef struct zoff_ckpt_stamp {
    int64_t step;                     /* optimizer steps the checkpoint holds */
    char run_id[ZOFF_RUN_ID_LEN + 1]; /* the run that wrote it; "" = unstamped (older zoff) */
} zoff_ckpt_stamp;

/* The stamp the checkpoint savers of this thread record from now on; NULL: none. */
void zoff_ckpt_stamp_set(const zoff_ckpt_stamp *stamp);
/* Adds zoff_step / zoff_run_id (strings) to obj when a stamp is set (used by the savers). */
void zoff_ckpt_stamp_add_json(cJSON *obj);
/* A fresh random run id (16 hex digits). */
int zoff_ckpt_new_run_id(char out[ZOFF_RUN_ID_LEN + 1]);

/* Reads the stamp recorded in a safetensors file's metadata or a config.json; run_id "" when
 * the file has none. Errors name the file. */
int zoff_ckpt_stamp_read(const char *path, zoff_ckpt_stamp *out);

/* Prepares PARENT/.NAME.tmp (removing a stale one) for writing the checkpoint DIR; its path
 * goes to tmp (tmp_size bytes). */
int zoff_ckpt_dir_begin(const char *dir, char *tmp, size_t tmp_size);
/* Syncs tmp's files and puts tmp in DIR's place, then removes the previous DIR. */
int zoff_ckpt_dir_commit(const char *tmp, const char *dir);
/* Removes a temporary folder after a failed save. */
void zoff_ckpt_dir_abort(const char *tmp);
/* Tidies PARENT after a killed save: .NAME.tmp folders removed, .NAME.old restored when
 * NAME is missing (else removed), stray FILE.tmp of checkpoint files inside its folders
 * removed. Only folders holding nothing but checkpoint files are touched, so PARENT may hold
 * other things. *n_fixed (may be NULL) counts what it did; each is logged. A missing PARENT
 * is fine. */
int zoff_ckpt_dir_recover(const char *parent, int *n_fixed);

/* Checks that DIR is a complete checkpoint (config.json, model.safetensors and, when
 * need_optimizer, optimizer.safetensors; zoff sft's sft_state.json when present) whose files
 * record one step and run id; out gets it. Tokenizer files (tokenizer.json,
 * tokenizer_config.json, special_tokens_map.json) may sit beside them, unstamped copies.
 * ZOFF_EFORMAT naming the missing file, or the files that disagree and what each says. */
int zoff_ckpt_dir_verify(const char *dir, bool need_optimizer, zoff_ckpt_stamp *out);

/* Creates a folder and its missing parents (like mkdir -p); errors name the folder. */
int zoff_mkdirs(const char *dir);
/* Removes a file or a folder tree (like rm -rf); a missing path is fine. */
int zoff_remove_tree(const char *path);

#endif
