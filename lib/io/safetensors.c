/*
 * safetensors reader and writer; the format and the contract are described
 * in safetensors.h.
 *
 * The header is parsed with jansson. Everything read from the file is
 * treated as hostile: each size and offset is checked before it is used, and
 * multiplications are checked for overflow before they are done.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkstemp, fsync, pread, O_CLOEXEC (also set by the build) */
#endif

#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "core/error.h"

/* The data section is little-endian and is read straight into (or written
 * straight from) host arrays, so the host must be little-endian. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c assumes a little-endian host");
#endif

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static int check_host(const char *fn)
{
    if (!host_is_little_endian())
        ELLE_FAIL(ELLE_EUNSUPPORTED, "%s: safetensors I/O needs a little-endian host", fn);
    return ELLE_OK;
}

/* ---- dtypes ------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[ELLE__ST_DTYPE_COUNT] = {
    [ELLE__ST_F32] = {"F32", 4},         [ELLE__ST_F16] = {"F16", 2},
    [ELLE__ST_BF16] = {"BF16", 2},       [ELLE__ST_F64] = {"F64", 8},
    [ELLE__ST_I64] = {"I64", 8},         [ELLE__ST_I32] = {"I32", 4},
    [ELLE__ST_U8] = {"U8", 1},           [ELLE__ST_I8] = {"I8", 1},
    [ELLE__ST_I16] = {"I16", 2},         [ELLE__ST_U16] = {"U16", 2},
    [ELLE__ST_U32] = {"U32", 4},         [ELLE__ST_U64] = {"U64", 8},
    [ELLE__ST_BOOL] = {"BOOL", 1},       [ELLE__ST_F8_E4M3] = {"F8_E4M3", 1},
    [ELLE__ST_F8_E5M2] = {"F8_E5M2", 1},
};

static int dtype_valid(elle__st_dtype d)
{
    return (int)d >= 0 && (int)d < ELLE__ST_DTYPE_COUNT;
}

const char *elle__st_dtype_name(elle__st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_info[dtype].name : NULL;
}

size_t elle__st_dtype_size(elle__st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_info[dtype].size : 0;
}

static int dtype_from_name(const char *s, elle__st_dtype *out)
{
    for (int d = 0; d < ELLE__ST_DTYPE_COUNT; d++) {
        if (strcmp(s, dtype_info[d].name) == 0) {
            *out = (elle__st_dtype)d;
            return 1;
        }
    }
    return 0;
}

/* numel and numel * elem_size of a shape, or -1 when either would exceed
 * INT64_MAX (the products are checked before they are formed). */
static int shape_bytes(const int64_t *shape, int ndim, size_t elem_size, int64_t *numel,
                       int64_t *nbytes)
{
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) {
        if (shape[k] != 0 && n > INT64_MAX / shape[k])
            return -1;
        n *= shape[k];
    }
    if (n > INT64_MAX / (int64_t)elem_size)
        return -1;
    *numel = n;
    *nbytes = n * (int64_t)elem_size;
    return 0;
}

/* "[64,3,3,3]" into buf (truncated to fit). */
static const char *format_shape(char *buf, size_t size, const int64_t *shape, int ndim)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k <= ndim && used < size; k++) {
        const char *sep = k == 0 ? "[" : ",";
        int w = k < ndim ? snprintf(buf + used, size - used, "%s%lld", sep, (long long)shape[k])
                         : snprintf(buf + used, size - used, "%s]", ndim == 0 ? "[" : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

/* ---- float conversions -------------------------------------------------------- */

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32, exact for every input. */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in binary32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) /* inf or NaN, payload kept */
        return bits_to_float(sign | 0x7f800000u | (mant << 13));
    return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* bfloat16 is the top half of a binary32. */
static float bf16_to_f32(uint16_t b)
{
    return bits_to_float((uint32_t)b << 16);
}

/* double -> float without the undefined behaviour of converting an
 * out-of-range value (C11 6.3.1.5): values that round past FLT_MAX become
 * +-inf, as IEEE round-to-nearest would give. */
static float f64_to_f32(double v)
{
    if (isnan(v) || fabs(v) <= (double)FLT_MAX)
        return (float)v;
    /* between FLT_MAX and the midpoint to 2^128 rounds down to FLT_MAX */
    if (fabs(v) < 0x1.ffffffp127)
        return v > 0 ? FLT_MAX : -FLT_MAX;
    return v > 0 ? INFINITY : -INFINITY;
}

/* ---- open file ---------------------------------------------------------------- */

struct elle__st_file {
    int fd;
    char *path;             /* for messages */
    uint64_t data_start;    /* 8 + header length */
    uint64_t data_len;      /* bytes after the header */
    size_t n;               /* tensors */
    elle__st_entry *entries;     /* header order; names owned */
    elle__st_entry **by_name;    /* sorted by name, for find */
    size_t n_meta;
    char **meta;                 /* n_meta key, value pairs; owned */
};

/* Names from a file are printed at most this long, so that a hostile name
 * cannot push the reason out of the (1 KiB) message. */
#define NAME_FMT "%.160s"

/* Record "<path>: <message>". */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int st_fail(const char *path, int code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return elle__error_set(code, "%.200s: %s", path, msg);
}

static char *dup_string(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d)
        memcpy(d, s, len);
    return d;
}

/* pread exactly len bytes at off, retrying short reads and EINTR. */
static int pread_all(const elle__st_file *f, void *dst, size_t len, uint64_t off)
{
    unsigned char *p = dst;
    while (len > 0) {
        if (off > (uint64_t)INT64_MAX)
            return st_fail(f->path, ELLE_EIO, "read offset %llu out of range",
                           (unsigned long long)off);
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t got = pread(f->fd, p, chunk, (off_t)off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return st_fail(f->path, ELLE_EIO, "read of %zu bytes at offset %llu failed: %s",
                           chunk, (unsigned long long)off, strerror(errno));
        }
        if (got == 0)
            return st_fail(f->path, ELLE_EIO,
                           "unexpected end of file at offset %llu (did the file shrink "
                           "after it was opened?)",
                           (unsigned long long)off);
        p += got;
        len -= (size_t)got;
        off += (uint64_t)got;
    }
    return ELLE_OK;
}

void elle__safetensors_close(elle__st_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    if (f->entries) {
        for (size_t i = 0; i < f->n; i++)
            free((char *)f->entries[i].name);
    }
    free(f->entries);
    free(f->by_name);
    if (f->meta) {
        for (size_t i = 0; i < 2 * f->n_meta; i++)
            free(f->meta[i]);
    }
    free(f->meta);
    free(f->path);
    free(f);
}

static int parse_metadata(elle__st_file *f, json_t *obj)
{
    if (!json_is_object(obj))
        return st_fail(f->path, ELLE_EFORMAT, "\"__metadata__\" is not an object");
    size_t count = json_object_size(obj);
    f->meta = calloc(2 * count + 1, sizeof *f->meta);
    if (!f->meta)
        return st_fail(f->path, ELLE_ENOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_string(val))
            return st_fail(f->path, ELLE_EFORMAT,
                           "\"__metadata__\" value of key '" NAME_FMT "' is not a string", key);
        char *k = dup_string(key);
        char *v = dup_string(json_string_value(val));
        f->meta[2 * f->n_meta] = k;
        f->meta[2 * f->n_meta + 1] = v;
        f->n_meta++; /* counted before the check so that close frees both */
        if (!k || !v)
            return st_fail(f->path, ELLE_ENOMEM, "out of memory");
    }
    return ELLE_OK;
}

/* A non-negative JSON integer, or -1. */
static int64_t json_nonneg(const json_t *v)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 ? -1 : (int64_t)x;
}

static int parse_entry(elle__st_file *f, const char *name, json_t *obj, elle__st_entry *e)
{
    const char *path = f->path;
    if (!json_is_object(obj))
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': entry is not a JSON object",
                       name);

    json_t *jd = json_object_get(obj, "dtype");
    if (!jd)
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': no \"dtype\"", name);
    if (!json_is_string(jd))
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': \"dtype\" is not a string",
                       name);
    if (!dtype_from_name(json_string_value(jd), &e->dtype))
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': unknown or unsupported dtype '%.32s'", name,
                       json_string_value(jd));
    size_t esize = dtype_info[e->dtype].size;

    json_t *js = json_object_get(obj, "shape");
    if (!js)
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': no \"shape\"", name);
    if (!json_is_array(js))
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': \"shape\" is not an array",
                       name);
    size_t ndim = json_array_size(js);
    if (ndim > ELLE__ST_MAX_NDIM)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': shape has %zu dimensions, at most %d supported",
                       name, ndim, ELLE__ST_MAX_NDIM);
    e->ndim = (int)ndim;
    for (size_t k = 0; k < ndim; k++) {
        int64_t d = json_nonneg(json_array_get(js, k));
        if (d < 0)
            return st_fail(path, ELLE_EFORMAT,
                           "tensor '" NAME_FMT "': shape[%zu] is not a non-negative integer",
                           name, k);
        e->shape[k] = d;
    }
    char shp[192];
    int64_t nbytes;
    if (shape_bytes(e->shape, e->ndim, esize, &e->numel, &nbytes) < 0)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': shape %s of %s overflows 64-bit sizes", name,
                       format_shape(shp, sizeof shp, e->shape, e->ndim), dtype_info[e->dtype].name);

    json_t *jo = json_object_get(obj, "data_offsets");
    if (!jo)
        return st_fail(path, ELLE_EFORMAT, "tensor '" NAME_FMT "': no \"data_offsets\"", name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': \"data_offsets\" is not an array of 2 integers",
                       name);
    int64_t b = json_nonneg(json_array_get(jo, 0));
    int64_t en = json_nonneg(json_array_get(jo, 1));
    if (b < 0 || en < 0)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': \"data_offsets\" are not non-negative integers",
                       name);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->begin > e->end)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': data_offsets [%llu, %llu] begin after they end",
                       name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_len)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': data_offsets [%llu, %llu] go beyond the %llu-byte "
                       "data section",
                       name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)f->data_len);
    if (e->end - e->begin != (uint64_t)nbytes)
        return st_fail(path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': data_offsets [%llu, %llu] do not match shape %s "
                       "of %s (%lld bytes)",
                       name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       format_shape(shp, sizeof shp, e->shape, e->ndim),
                       dtype_info[e->dtype].name, (long long)nbytes);
    e->name = dup_string(name);
    if (!e->name)
        return st_fail(path, ELLE_ENOMEM, "out of memory");
    return ELLE_OK;
}

static int cmp_by_offset(const void *pa, const void *pb)
{
    const elle__st_entry *a = *(const elle__st_entry *const *)pa;
    const elle__st_entry *b = *(const elle__st_entry *const *)pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return 0;
}

static int cmp_by_name(const void *pa, const void *pb)
{
    const elle__st_entry *a = *(const elle__st_entry *const *)pa;
    const elle__st_entry *b = *(const elle__st_entry *const *)pb;
    return strcmp(a->name, b->name);
}

/* The spec requires the tensors to cover the data section exactly: sorted by
 * offset, each must start where the previous one ended and the last must end
 * at the end of the file. Builds f->by_name on the way (the sort buffer is
 * reused). */
static int check_layout(elle__st_file *f)
{
    f->by_name = malloc((f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name)
        return st_fail(f->path, ELLE_ENOMEM, "out of memory");
    for (size_t i = 0; i < f->n; i++)
        f->by_name[i] = &f->entries[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_by_offset);
    uint64_t cursor = 0;
    const elle__st_entry *prev = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const elle__st_entry *e = f->by_name[i];
        if (e->begin < cursor)
            return st_fail(f->path, ELLE_EFORMAT,
                           "tensor '" NAME_FMT "': data_offsets [%llu, %llu] overlap tensor "
                           "'" NAME_FMT "' [%llu, %llu]",
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           prev->name, (unsigned long long)prev->begin,
                           (unsigned long long)prev->end);
        if (e->begin > cursor)
            return st_fail(f->path, ELLE_EFORMAT,
                           "tensor '" NAME_FMT "': data_offsets [%llu, %llu] leave a hole: "
                           "bytes [%llu, %llu) of the data section belong to no tensor",
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)cursor, (unsigned long long)e->begin);
        cursor = e->end;
        prev = e;
    }
    if (cursor != f->data_len)
        return st_fail(f->path, ELLE_EFORMAT,
                       "the data section is %llu bytes but the tensors cover only the first "
                       "%llu (trailing bytes belong to no tensor)",
                       (unsigned long long)f->data_len, (unsigned long long)cursor);
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_by_name);
    return ELLE_OK;
}

static int parse_header(elle__st_file *f, const char *text, size_t len)
{
    json_error_t jerr;
    /* jansson keeps the last of duplicate keys; the spec forbids them, and a
     * silently dropped tensor would be a hole in the data, so reject. Leading
     * and trailing whitespace are accepted, as the Rust reference does;
     * anything else after the object, including NUL bytes, is an error. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(f->path, ELLE_EFORMAT, "invalid JSON header: %s (at byte %d)",
                       jerr.text, jerr.position);
    int rc = ELLE_OK;
    if (!json_is_object(root)) {
        rc = st_fail(f->path, ELLE_EFORMAT, "header is not a JSON object");
        goto cleanup;
    }
    size_t count = json_object_size(root);
    if (json_object_get(root, "__metadata__"))
        count--;
    f->entries = calloc(count ? count : 1, sizeof *f->entries);
    if (!f->entries) {
        rc = st_fail(f->path, ELLE_ENOMEM, "out of memory");
        goto cleanup;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            ELLE_TRY_GOTO(rc, parse_metadata(f, val));
            continue;
        }
        if (f->n >= count) { /* cannot happen: jansson's size is its key count */
            rc = st_fail(f->path, ELLE_ERROR, "internal error: more entries than keys");
            goto cleanup;
        }
        /* counted first so that close frees a half-built entry's name */
        elle__st_entry *e = &f->entries[f->n++];
        ELLE_TRY_GOTO(rc, parse_entry(f, key, val, e));
    }
    ELLE_TRY_GOTO(rc, check_layout(f));
cleanup:
    json_decref(root);
    return rc;
}

int elle__safetensors_open(elle__st_file **out, const char *path)
{
    ELLE_CHECK_ARG(out != NULL);
    *out = NULL;
    ELLE_CHECK_ARG(path != NULL);
    ELLE_TRY(check_host(__func__));
    int rc = ELLE_OK;
    char *header = NULL;
    elle__st_file *f = calloc(1, sizeof *f);
    if (!f)
        return elle__error_set(ELLE_ENOMEM, "%s: out of memory", path);
    f->fd = -1;
    f->path = dup_string(path);
    if (!f->path) {
        rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
     * below); it has no effect on the regular files that are read */
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0) {
        rc = st_fail(path, ELLE_EIO, "cannot open: %s", strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        rc = st_fail(path, ELLE_EIO, "cannot stat: %s", strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = st_fail(path, ELLE_EIO, "not a regular file");
        goto cleanup;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        rc = st_fail(path, ELLE_EFORMAT,
                     "file is %llu bytes, too short for the 8-byte header length",
                     (unsigned long long)size);
        goto cleanup;
    }
    unsigned char len8[8];
    ELLE_TRY_GOTO(rc, pread_all(f, len8, sizeof len8, 0));
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) /* little-endian, independent of the host */
        hlen = (hlen << 8) | len8[i];
    if (hlen == 0) {
        rc = st_fail(path, ELLE_EFORMAT, "header length is 0");
        goto cleanup;
    }
    if (hlen > ELLE__ST_MAX_HEADER) {
        rc = st_fail(path, ELLE_EFORMAT, "header length %llu exceeds the %llu-byte limit",
                     (unsigned long long)hlen, (unsigned long long)ELLE__ST_MAX_HEADER);
        goto cleanup;
    }
    if (hlen > size - 8) {
        rc = st_fail(path, ELLE_EFORMAT,
                     "header length %llu runs past the end of the %llu-byte file (truncated?)",
                     (unsigned long long)hlen, (unsigned long long)size);
        goto cleanup;
    }
    f->data_start = 8 + hlen;
    f->data_len = size - f->data_start;
    header = malloc((size_t)hlen);
    if (!header) {
        rc = st_fail(path, ELLE_ENOMEM, "out of memory for a %llu-byte header",
                     (unsigned long long)hlen);
        goto cleanup;
    }
    ELLE_TRY_GOTO(rc, pread_all(f, header, (size_t)hlen, 8));
    ELLE_TRY_GOTO(rc, parse_header(f, header, (size_t)hlen));
    *out = f;
cleanup:
    free(header);
    if (rc < 0)
        elle__safetensors_close(f);
    return rc;
}

size_t elle__safetensors_count(const elle__st_file *f)
{
    return f ? f->n : 0;
}

const elle__st_entry *elle__safetensors_entry(const elle__st_file *f, size_t i)
{
    return f && i < f->n ? &f->entries[i] : NULL;
}

const elle__st_entry *elle__safetensors_find(const elle__st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->by_name[mid]->name);
        if (c == 0)
            return f->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *elle__safetensors_metadata(const elle__st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->n_meta; i++) {
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    }
    return NULL;
}

/* `e` must be one of f's entries: its offsets were validated against this
 * file only. Compared as integers since pointers into different objects
 * cannot be compared portably. */
static int check_entry(const elle__st_file *f, const elle__st_entry *e, const char *fn)
{
    uintptr_t p = (uintptr_t)e, lo = (uintptr_t)f->entries;
    if (p < lo || p >= lo + f->n * sizeof *f->entries || (p - lo) % sizeof *f->entries != 0)
        return elle__error_set(ELLE_EINVAL, "%s(%.200s): entry does not belong to this file",
                               fn, f->path);
    return ELLE_OK;
}

/* Conversions read the data in chunks of this many bytes (a multiple of 8). */
#define CHUNK_BYTES ((size_t)1 << 16)

int elle__safetensors_read_raw(elle__st_file *f, const elle__st_entry *e, void *dst)
{
    ELLE_CHECK_ARG(f != NULL);
    ELLE_CHECK_ARG(e != NULL);
    ELLE_TRY(check_entry(f, e, __func__));
    ELLE_CHECK_ARG(dst != NULL || e->end == e->begin);
    return pread_all(f, dst, (size_t)(e->end - e->begin), f->data_start + e->begin);
}

int elle__safetensors_read_f32(elle__st_file *f, const elle__st_entry *e, float *dst)
{
    ELLE_CHECK_ARG(f != NULL);
    ELLE_CHECK_ARG(e != NULL);
    ELLE_TRY(check_entry(f, e, __func__));
    ELLE_CHECK_ARG(dst != NULL || e->numel == 0);
    switch (e->dtype) {
    case ELLE__ST_F32:
        return elle__safetensors_read_raw(f, e, dst);
    case ELLE__ST_F16:
    case ELLE__ST_BF16:
    case ELLE__ST_F64:
        break;
    default:
        return st_fail(f->path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': dtype %s cannot be read as float32", e->name,
                       dtype_info[e->dtype].name);
    }
    size_t esize = dtype_info[e->dtype].size;
    unsigned char *buf = malloc(CHUNK_BYTES);
    if (!buf)
        return st_fail(f->path, ELLE_ENOMEM, "out of memory");
    int rc = ELLE_OK;
    size_t total = (size_t)e->numel;
    for (size_t done = 0; done < total;) {
        size_t cnt = total - done < CHUNK_BYTES / esize ? total - done : CHUNK_BYTES / esize;
        ELLE_TRY_GOTO(rc, pread_all(f, buf, cnt * esize, f->data_start + e->begin + done * esize));
        for (size_t i = 0; i < cnt; i++) {
            const unsigned char *p = buf + i * esize;
            if (e->dtype == ELLE__ST_F64) {
                double v;
                memcpy(&v, p, sizeof v);
                dst[done + i] = f64_to_f32(v);
            } else {
                uint16_t h;
                memcpy(&h, p, sizeof h);
                dst[done + i] = e->dtype == ELLE__ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
            }
        }
        done += cnt;
    }
cleanup:
    free(buf);
    return rc;
}

/* One element of an integer dtype as int64; -1 for a U64 above INT64_MAX. */
static int int_elem(elle__st_dtype d, const unsigned char *p, int64_t *v)
{
    int8_t i8;
    int16_t i16;
    uint16_t u16;
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    switch (d) {
    case ELLE__ST_U8:
        *v = p[0];
        return 0;
    case ELLE__ST_BOOL: /* PyTorch writes 0/1; read any non-zero byte as true */
        *v = p[0] != 0;
        return 0;
    case ELLE__ST_I8:
        memcpy(&i8, p, sizeof i8);
        *v = i8;
        return 0;
    case ELLE__ST_I16:
        memcpy(&i16, p, sizeof i16);
        *v = i16;
        return 0;
    case ELLE__ST_U16:
        memcpy(&u16, p, sizeof u16);
        *v = u16;
        return 0;
    case ELLE__ST_I32:
        memcpy(&i32, p, sizeof i32);
        *v = i32;
        return 0;
    case ELLE__ST_U32:
        memcpy(&u32, p, sizeof u32);
        *v = u32;
        return 0;
    case ELLE__ST_U64:
        memcpy(&u64, p, sizeof u64);
        if (u64 > (uint64_t)INT64_MAX)
            return -1;
        *v = (int64_t)u64;
        return 0;
    default: /* I64 */
        memcpy(&i64, p, sizeof i64);
        *v = i64;
        return 0;
    }
}

int elle__safetensors_read_i64(elle__st_file *f, const elle__st_entry *e, int64_t *dst)
{
    ELLE_CHECK_ARG(f != NULL);
    ELLE_CHECK_ARG(e != NULL);
    ELLE_TRY(check_entry(f, e, __func__));
    ELLE_CHECK_ARG(dst != NULL || e->numel == 0);
    switch (e->dtype) {
    case ELLE__ST_I64:
        return elle__safetensors_read_raw(f, e, dst);
    case ELLE__ST_I32:
    case ELLE__ST_I16:
    case ELLE__ST_I8:
    case ELLE__ST_U8:
    case ELLE__ST_U16:
    case ELLE__ST_U32:
    case ELLE__ST_U64:
    case ELLE__ST_BOOL:
        break;
    default:
        return st_fail(f->path, ELLE_EFORMAT,
                       "tensor '" NAME_FMT "': dtype %s cannot be read as int64", e->name,
                       dtype_info[e->dtype].name);
    }
    size_t esize = dtype_info[e->dtype].size;
    unsigned char *buf = malloc(CHUNK_BYTES);
    if (!buf)
        return st_fail(f->path, ELLE_ENOMEM, "out of memory");
    int rc = ELLE_OK;
    size_t total = (size_t)e->numel;
    for (size_t done = 0; done < total;) {
        size_t cnt = total - done < CHUNK_BYTES / esize ? total - done : CHUNK_BYTES / esize;
        ELLE_TRY_GOTO(rc, pread_all(f, buf, cnt * esize, f->data_start + e->begin + done * esize));
        for (size_t i = 0; i < cnt; i++) {
            if (int_elem(e->dtype, buf + i * esize, &dst[done + i]) < 0) {
                rc = st_fail(f->path, ELLE_EFORMAT,
                             "tensor '" NAME_FMT "': U64 element %zu does not fit in int64",
                             e->name, done + i);
                goto cleanup;
            }
        }
        done += cnt;
    }
cleanup:
    free(buf);
    return rc;
}

/* ---- writing ------------------------------------------------------------------ */

/* Permission bits for a new file: 0666 & ~umask. mkstemp creates 0600, and
 * umask() cannot be read without setting it (racy in a threaded program),
 * so read it from /proc on Linux; elsewhere assume the common 022. */
static mode_t new_file_mode(void)
{
    unsigned mask = 022;
    FILE *fp = fopen("/proc/self/status", "r");
    if (fp) {
        char line[256];
        while (fgets(line, sizeof line, fp)) {
            unsigned m;
            if (sscanf(line, "Umask: %o", &m) == 1) {
                mask = m;
                break;
            }
        }
        fclose(fp);
    }
    return (mode_t)(0666u & ~mask);
}

/* fsync the directory holding `path` so that the rename is durable. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = dup_string(".");
    else if (slash == path)
        dir = dup_string("/");
    else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
        }
    }
    if (!dir)
        return elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
    int rc = ELLE_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = elle__error_set(ELLE_EIO,
                             "%.200s: written, but cannot open directory '%.200s' to sync it: %s",
                             path, dir, strerror(errno));
    } else {
        /* some file systems cannot sync directories (EINVAL); nothing more
         * can be done there */
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = elle__error_set(ELLE_EIO, "%.200s: written, but syncing directory '%.200s' "
                                           "failed: %s",
                                 path, dir, strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}

/* Write header and data to a temp file next to `path` and rename it over
 * `path`. */
static int write_atomic(const char *path, const char *header, size_t header_len,
                        size_t padded_len, const elle__st_tensor *tensors, const int64_t *nbytes,
                        size_t n)
{
    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof suffix);
    if (!tmp)
        return elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);

    int rc = ELLE_OK;
    FILE *fp = NULL;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: cannot create temporary file: %s", path,
                             strerror(errno));
        free(tmp);
        return rc;
    }
    /* a replaced file keeps its permissions; a new one gets the usual ones */
    struct stat st;
    mode_t mode = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777)
                                                               : new_file_mode();
    if (fchmod(fd, mode) != 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: cannot set permissions of '%.200s': %s", path,
                             tmp, strerror(errno));
        goto cleanup;
    }
    fp = fdopen(fd, "wb");
    if (!fp) {
        rc = elle__error_set(ELLE_EIO, "%.200s: fdopen failed: %s", path, strerror(errno));
        goto cleanup;
    }
    fd = -1; /* owned by fp now */

    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded_len >> (8 * i));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(header, 1, header_len, fp) == header_len;
    for (size_t i = header_len; ok && i < padded_len; i++)
        ok = fputc(' ', fp) != EOF;
    for (size_t i = 0; ok && i < n; i++) {
        size_t len = (size_t)nbytes[i];
        ok = len == 0 || fwrite(tensors[i].data, 1, len, fp) == len;
    }
    if (!ok || fflush(fp) != 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: writing '%.200s' failed: %s", path, tmp,
                             strerror(errno));
        goto cleanup;
    }
    if (fsync(fileno(fp)) != 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: fsync of '%.200s' failed: %s", path, tmp,
                             strerror(errno));
        goto cleanup;
    }
    int closed = fclose(fp);
    fp = NULL;
    if (closed != 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: closing '%.200s' failed: %s", path, tmp,
                             strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        rc = elle__error_set(ELLE_EIO, "%.200s: cannot rename '%.200s' over it: %s", path, tmp,
                             strerror(errno));
        goto cleanup;
    }
    free(tmp);
    /* after the rename the new file is in place: nothing to undo */
    return sync_parent_dir(path);

cleanup:
    if (fp)
        fclose(fp);
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return rc;
}

static int cmp_str_ptr(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The first string that occurs twice in names[0..n), or NULL. Sorts names. */
static const char *find_duplicate(const char **names, size_t n)
{
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0)
            return names[i];
    }
    return NULL;
}

/* Check the writer's arguments and build the header JSON (not yet padded). */
static int build_header(const char *path, const elle__st_tensor *tensors, size_t n,
                        const char *const *metadata, int64_t *nbytes, char **out)
{
    int rc = ELLE_OK;
    const char **names = NULL;
    json_t *root = json_object();
    if (!root)
        return elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);

    /* metadata first, as the Rust reference writes it */
    if (metadata && metadata[0]) {
        size_t nm = 0;
        while (metadata[2 * nm]) {
            if (!metadata[2 * nm + 1]) {
                rc = elle__error_set(ELLE_EINVAL, "%.200s: metadata key '%.160s' has no value",
                                     path, metadata[2 * nm]);
                goto cleanup;
            }
            nm++;
        }
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) {
            rc = elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
            goto cleanup;
        }
        for (size_t i = 0; i < nm; i++) {
            const char *k = metadata[2 * i], *v = metadata[2 * i + 1];
            if (json_object_get(meta, k)) {
                rc = elle__error_set(ELLE_EINVAL, "%.200s: duplicate metadata key '%.160s'",
                                     path, k);
                goto cleanup;
            }
            /* json_string validates UTF-8; keys are checked the same way */
            json_t *jk = json_string(k), *jv = json_string(v);
            int bad = !jk || !jv;
            json_decref(jk);
            if (bad) {
                json_decref(jv);
                rc = elle__error_set(ELLE_EINVAL,
                                     "%.200s: metadata key '%.160s' or its value is not valid "
                                     "UTF-8",
                                     path, k);
                goto cleanup;
            }
            if (json_object_set_new(meta, k, jv) != 0) {
                rc = elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
                goto cleanup;
            }
        }
    }

    names = malloc((n ? n : 1) * sizeof *names);
    if (!names) {
        rc = elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
        goto cleanup;
    }
    int64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const elle__st_tensor *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor %zu has %s name", path, i,
                                 !t->name ? "a NULL" : !t->name[0] ? "an empty" : "a reserved");
            goto cleanup;
        }
        if (!dtype_valid(t->dtype)) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor '%.160s': invalid dtype %d", path,
                                 t->name, (int)t->dtype);
            goto cleanup;
        }
        if (t->ndim < 0 || t->ndim > ELLE__ST_MAX_NDIM) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor '%.160s': ndim %d not in [0, %d]",
                                 path, t->name, t->ndim, ELLE__ST_MAX_NDIM);
            goto cleanup;
        }
        for (int k = 0; k < t->ndim; k++) {
            if (t->shape[k] < 0) {
                rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor '%.160s': shape[%d] = %lld",
                                     path, t->name, k, (long long)t->shape[k]);
                goto cleanup;
            }
        }
        int64_t numel;
        if (shape_bytes(t->shape, t->ndim, dtype_info[t->dtype].size, &numel, &nbytes[i]) < 0 ||
            nbytes[i] > INT64_MAX - offset) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor '%.160s': size overflows", path,
                                 t->name);
            goto cleanup;
        }
        if (nbytes[i] > 0 && !t->data) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor '%.160s': data is NULL", path,
                                 t->name);
            goto cleanup;
        }
        names[i] = t->name;

        /* json_string validates UTF-8: a name it refuses cannot be a key */
        json_t *jname = json_string(t->name);
        if (!jname) {
            rc = elle__error_set(ELLE_EINVAL, "%.200s: tensor %zu: name is not valid UTF-8",
                                 path, i);
            goto cleanup;
        }
        json_decref(jname);
        json_t *jshape = json_array();
        int fail = !jshape;
        for (int k = 0; !fail && k < t->ndim; k++)
            fail = json_array_append_new(jshape, json_integer((json_int_t)t->shape[k])) != 0;
        json_t *jt = NULL;
        if (fail)
            json_decref(jshape);
        else /* "o" steals jshape, also on failure; keys keep this order */
            jt = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype_info[t->dtype].name, "shape",
                           jshape, "data_offsets", (json_int_t)offset,
                           (json_int_t)(offset + nbytes[i]));
        /* set_new steals jt, also on failure. A duplicate name replaces the
         * earlier entry here and is reported below. */
        if (!jt || json_object_set_new(root, t->name, jt) != 0) {
            rc = elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
            goto cleanup;
        }
        offset += nbytes[i];
    }
    const char *dup = find_duplicate(names, n);
    if (dup) {
        rc = elle__error_set(ELLE_EINVAL, "%.200s: duplicate tensor name '%.160s'", path, dup);
        goto cleanup;
    }
    *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*out)
        rc = elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
cleanup:
    free(names);
    json_decref(root);
    return rc;
}

int elle__safetensors_write(const char *path, const elle__st_tensor *tensors, size_t n,
                            const char *const *metadata)
{
    ELLE_CHECK_ARG(path != NULL);
    ELLE_CHECK_ARG(path[0] != '\0');
    ELLE_CHECK_ARG(tensors != NULL || n == 0);
    ELLE_CHECK_ARG(n <= SIZE_MAX / sizeof(int64_t));
    ELLE_TRY(check_host(__func__));
    int64_t *nbytes = malloc((n ? n : 1) * sizeof *nbytes);
    if (!nbytes)
        return elle__error_set(ELLE_ENOMEM, "%.200s: out of memory", path);
    char *header = NULL;
    int rc = build_header(path, tensors, n, metadata, nbytes, &header);
    if (rc == ELLE_OK) {
        size_t len = strlen(header);
        size_t padded = (len + 7) & ~(size_t)7;
        rc = write_atomic(path, header, len, padded, tensors, nbytes, n);
    }
    free(header);
    free(nbytes);
    return rc;
}
