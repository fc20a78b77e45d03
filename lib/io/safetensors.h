/*
 * safetensors reader and writer (internal).
 *
 * The format Hugging Face's safetensors library and PyTorch users exchange
 * state_dicts in:
 *
 *   8 bytes   N, little-endian u64: length of the header
 *   N bytes   UTF-8 JSON object: tensor name -> {"dtype": "F32", "shape": [d0, ...],
 *             "data_offsets": [begin, end]}, plus an optional "__metadata__"
 *             object of string -> string
 *   rest      data section; offsets are relative to its first byte, tensors
 *             are row-major and little-endian, and together they cover the
 *             data section exactly (no holes, no overlap)
 *
 * The reader validates the whole header on open, as the Rust reference
 * implementation does, so that a successful open guarantees every entry's
 * offsets lie inside the file and match its shape and dtype. Tensors are then
 * read one at a time with pread(); the file is never mapped or read whole.
 * Every failure returns ELLE_EFORMAT (malformed file), ELLE_EIO (cannot open,
 * stat or read), ELLE_ENOMEM or ELLE_EINVAL (bad argument), with a message
 * that starts with the path and names the offending tensor.
 *
 * Byte order: the library assumes a little-endian host (as the format and
 * every platform libelle targets); safetensors.c checks it at compile time
 * where the compiler says, at run time otherwise (ELLE_EUNSUPPORTED).
 */
#ifndef ELLE_IO_SAFETENSORS_H
#define ELLE_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* The most dimensions an entry may have (a file with more is ELLE_EFORMAT). */
#define ELLE__ST_MAX_NDIM 8

/* Largest header accepted, the Rust reference's MAX_HEADER_SIZE. */
#define ELLE__ST_MAX_HEADER ((uint64_t)100000000)

/* Element types with a whole number of bytes per element. The safetensors
 * sub-byte types (F4, F6_*) and complex types are not supported: a file that
 * uses them fails to open with ELLE_EFORMAT ("unknown dtype"). */
typedef enum elle__st_dtype {
    ELLE__ST_F32,
    ELLE__ST_F16,
    ELLE__ST_BF16,
    ELLE__ST_F64,
    ELLE__ST_I64,
    ELLE__ST_I32,
    ELLE__ST_U8,
    ELLE__ST_I8,
    ELLE__ST_I16,
    ELLE__ST_U16,
    ELLE__ST_U32,
    ELLE__ST_U64,
    ELLE__ST_BOOL,
    ELLE__ST_F8_E4M3,
    ELLE__ST_F8_E5M2,
    ELLE__ST_DTYPE_COUNT /* not a dtype */
} elle__st_dtype;

/* The dtype's name in the header ("F32", "BF16", ...); NULL if out of range. */
const char *elle__st_dtype_name(elle__st_dtype dtype);

/* Bytes per element; 0 if out of range. */
size_t elle__st_dtype_size(elle__st_dtype dtype);

/* ---- writing ------------------------------------------------------------------ */

/* A tensor handed to the writer. */
typedef struct elle__st_tensor {
    const char *name;                /* unique, non-empty, valid UTF-8, not "__metadata__" */
    elle__st_dtype dtype;
    int ndim;                        /* 0 (scalar) .. ELLE__ST_MAX_NDIM */
    int64_t shape[ELLE__ST_MAX_NDIM]; /* each >= 0; only the first ndim are read */
    const void *data;                /* host memory, little-endian, row-major, numel *
                                        dtype size bytes; may be NULL when numel is 0 */
} elle__st_tensor;

/*
 * Write `n` tensors (n may be 0) to `path`. The header lists them in the
 * given order, padded with spaces to a multiple of 8 bytes (as the Rust
 * reference does), and the data follows contiguously in the same order. The
 * data section therefore starts 8-byte aligned, but a tensor is aligned to
 * its element size only if the tensors before it keep it so (the Rust writer
 * sorts by dtype size for that; this one keeps the caller's order, which
 * readers, including safetensors' own, accept).
 *
 * `metadata` is NULL or a NULL-terminated list of key, value string pairs
 * stored as "__metadata__" (keys unique, both valid UTF-8; a key followed by
 * the terminating NULL is ELLE_EINVAL).
 *
 * Atomic: the file is written to "<path>.tmp.XXXXXX" (mkstemp) in the same
 * directory, flushed and fsync'ed, renamed over `path`, and the directory is
 * fsync'ed. Arguments are validated before anything is created. On any
 * failure before the rename the temporary file is removed and an existing
 * file at `path` is untouched. A new file gets mode 0666 & ~umask; a file
 * replaced keeps its permission bits.
 *
 * Returns ELLE_OK; ELLE_EINVAL for a NULL/empty path, NULL tensors with n > 0,
 * an empty, duplicate, reserved or non-UTF-8 name, a bad dtype, ndim or dim,
 * NULL data for a non-empty tensor, a size that overflows, or bad metadata;
 * ELLE_EIO when the file cannot be created, written, synced or renamed
 * (including a failing directory fsync after the rename, when the new file is
 * already in place but not known to be durable); ELLE_ENOMEM.
 */
int elle__safetensors_write(const char *path, const elle__st_tensor *tensors, size_t n,
                            const char *const *metadata);

/* ---- reading ------------------------------------------------------------------ */

/* An open file: header parsed and validated, file descriptor kept open. */
typedef struct elle__st_file elle__st_file;

/* One tensor of an open file. Owned by the file; valid until close. */
typedef struct elle__st_entry {
    const char *name;
    elle__st_dtype dtype;
    int ndim;                         /* 0 for a scalar */
    int64_t shape[ELLE__ST_MAX_NDIM]; /* shape[ndim..] are 0 */
    int64_t numel;                    /* product of the dims; 1 for a scalar */
    uint64_t begin, end;              /* byte range in the data section; end - begin
                                         == numel * dtype size */
} elle__st_entry;

/*
 * Open `path` and validate its header: the length prefix (non-zero, at most
 * ELLE__ST_MAX_HEADER, inside the file), the JSON (an object, whitespace around
 * it allowed, no duplicate keys), every entry (dtype known; shape an array of at most
 * ELLE__ST_MAX_NDIM non-negative integers whose byte size does not overflow;
 * data_offsets two non-negative integers, begin <= end <= data size, end -
 * begin == numel * dtype size), that the entries tile the data section
 * exactly, and that "__metadata__" is an object of strings.
 *
 * On success *out is the file (close it with elle__safetensors_close); on
 * failure *out is NULL and the status is ELLE_EFORMAT, ELLE_EIO, ELLE_ENOMEM
 * or ELLE_EINVAL (NULL argument).
 */
int elle__safetensors_open(elle__st_file **out, const char *path);

/* The accessors below do not modify the file, and the read functions use
 * pread() only, so one open file may be read from several threads at once. */

/* Close the file and free everything it owns; NULL is a no-op. */
void elle__safetensors_close(elle__st_file *f);

/* Number of tensors (not counting "__metadata__"); 0 for NULL. */
size_t elle__safetensors_count(const elle__st_file *f);

/* Entry `i` in header order (0 <= i < count); NULL when out of range or f is NULL. */
const elle__st_entry *elle__safetensors_entry(const elle__st_file *f, size_t i);

/* The entry named `name` (O(log n)); NULL if absent or an argument is NULL. */
const elle__st_entry *elle__safetensors_find(const elle__st_file *f, const char *name);

/* The "__metadata__" value for `key`; NULL if absent or an argument is NULL. */
const char *elle__safetensors_metadata(const elle__st_file *f, const char *key);

/*
 * Read entry `e` (which must come from `f`) converted to float32 into `dst`
 * (e->numel floats). Converts from F32 (exact), F16 and BF16 (exact, including
 * subnormals, infinities and NaN) and F64 (rounded to nearest; out of range
 * gives +-inf). Other dtypes: ELLE_EFORMAT. ELLE_EIO if the read fails or the
 * file shrank since it was opened.
 */
int elle__safetensors_read_f32(elle__st_file *f, const elle__st_entry *e, float *dst);

/*
 * Read entry `e` converted to int64 into `dst` (e->numel values). Converts
 * from I64, I32, I16, I8, U8, U16, U32, BOOL, and U64 (a value above INT64_MAX
 * is ELLE_EFORMAT). Float dtypes: ELLE_EFORMAT.
 */
int elle__safetensors_read_i64(elle__st_file *f, const elle__st_entry *e, int64_t *dst);

/* Read entry `e`'s bytes as stored (e->end - e->begin bytes) into `dst`. */
int elle__safetensors_read_raw(elle__st_file *f, const elle__st_entry *e, void *dst);

#endif /* ELLE_IO_SAFETENSORS_H */
