/*
 * NumPy .npy files (format 1.0, 2.0, 3.0; numpy/lib/format.py).
 *
 * Layout: the magic "\x93NUMPY", a major and a minor version byte, the
 * header length (little-endian uint16 for 1.0, uint32 for 2.0 and 3.0),
 * then the header: a Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (10, 3, 32, 32), }
 * padded with spaces and a newline, and finally the array data.
 *
 * The header is not JSON, so it is parsed by the small recursive-descent
 * parser below, which accepts exactly what numpy writes and the obvious
 * variations of a hand-written literal (either quote, any whitespace,
 * trailing commas, Python 2 "10L" integers): three keys, each once, the
 * descr a plain little-endian or byte-order-free dtype string, Fortran
 * order rejected. Every size is overflow-checked and compared with the
 * file before data is read.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/data.h"
#include "data/source.h"

#define NPY_MAX_HEADER 65536 /* numpy itself refuses more than 10000 by default */
#define NPY_MAX_DIMS 8

typedef struct npy_header {
    char descr[16];
    int fortran_order;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t data_offset; /* bytes before the array data */
    int64_t count;       /* product of shape */
} npy_header;

/* ---- the header parser ------------------------------------------------------------ */

typedef struct parser {
    const char *s;
    size_t len, pos;
    const char *path;
} parser;

static void skip_ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

/* An ELLE_EFORMAT naming the file, the byte and what was expected, with a
 * printable excerpt of the header from there. */
static int parse_error(const parser *p, const char *expected)
{
    char near[41];
    size_t k = 0;
    for (size_t i = p->pos; i < p->len && k < sizeof near - 1; i++)
        near[k++] = (p->s[i] >= 32 && p->s[i] < 127) ? p->s[i] : '?';
    near[k] = '\0';
    ELLE_FAIL(ELLE_EFORMAT, "%s: bad .npy header at byte %zu of %zu: expected %s, found \"%s\"",
              p->path, p->pos, p->len, expected, k ? near : "(end of header)");
}

static int expect_char(parser *p, char c, const char *what)
{
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != c)
        return parse_error(p, what);
    p->pos++;
    return ELLE_OK;
}

/* A quoted string without escapes into buf (cap bytes with the NUL). */
static int parse_string(parser *p, char *buf, size_t cap, const char *what)
{
    skip_ws(p);
    if (p->pos >= p->len || (p->s[p->pos] != '\'' && p->s[p->pos] != '"'))
        return parse_error(p, what);
    char q = p->s[p->pos++];
    size_t k = 0;
    while (p->pos < p->len && p->s[p->pos] != q) {
        char ch = p->s[p->pos];
        if (ch == '\\' || ch == '\n' || ch == '\0')
            return parse_error(p, "a plain string (no escapes)");
        if (k + 1 >= cap)
            return parse_error(p, "a shorter string");
        buf[k++] = ch;
        p->pos++;
    }
    if (p->pos >= p->len)
        return parse_error(p, "a closing quote");
    p->pos++;
    buf[k] = '\0';
    return ELLE_OK;
}

static int parse_bool(parser *p, int *out)
{
    skip_ws(p);
    if (p->len - p->pos >= 4 && memcmp(p->s + p->pos, "True", 4) == 0) {
        p->pos += 4;
        *out = 1;
    } else if (p->len - p->pos >= 5 && memcmp(p->s + p->pos, "False", 5) == 0) {
        p->pos += 5;
        *out = 0;
    } else {
        return parse_error(p, "True or False for 'fortran_order'");
    }
    return ELLE_OK;
}

static int parse_int(parser *p, int64_t *out)
{
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
        return parse_error(p, "a non-negative integer dimension");
    int64_t v = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        if (v > (INT64_MAX / 4 - 9) / 10) /* far beyond any limit; stops overflow */
            return parse_error(p, "a dimension that fits in 62 bits");
        v = v * 10 + (p->s[p->pos] - '0');
        p->pos++;
    }
    if (p->pos < p->len && p->s[p->pos] == 'L') /* Python 2 long */
        p->pos++;
    *out = v;
    return ELLE_OK;
}

static int parse_shape(parser *p, npy_header *h)
{
    ELLE_TRY(expect_char(p, '(', "'(' opening the 'shape' tuple"));
    h->ndim = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ')') {
        p->pos++;
        return ELLE_OK;
    }
    for (;;) {
        if (h->ndim == NPY_MAX_DIMS)
            return parse_error(p, "at most 8 dimensions");
        ELLE_TRY(parse_int(p, &h->shape[h->ndim]));
        h->ndim++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ')') {
            p->pos++;
            return ELLE_OK;
        }
        ELLE_TRY(expect_char(p, ',', "',' or ')' in the 'shape' tuple"));
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ')') {
            p->pos++;
            return ELLE_OK;
        }
    }
}

static int parse_header_dict(parser *p, npy_header *h)
{
    int seen_descr = 0, seen_fortran = 0, seen_shape = 0;
    ELLE_TRY(expect_char(p, '{', "'{' opening the header dict"));
    for (;;) {
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == '}') {
            p->pos++;
            break;
        }
        char key[32];
        ELLE_TRY(parse_string(p, key, sizeof key,
                              "a quoted key ('descr', 'fortran_order' or 'shape') or '}'"));
        ELLE_TRY(expect_char(p, ':', "':' after a key"));
        if (strcmp(key, "descr") == 0 && !seen_descr) {
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == '[')
                return parse_error(p, "a plain dtype string (structured arrays are not "
                                      "supported)");
            ELLE_TRY(parse_string(p, h->descr, sizeof h->descr, "a dtype string for 'descr'"));
            seen_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !seen_fortran) {
            ELLE_TRY(parse_bool(p, &h->fortran_order));
            seen_fortran = 1;
        } else if (strcmp(key, "shape") == 0 && !seen_shape) {
            ELLE_TRY(parse_shape(p, h));
            seen_shape = 1;
        } else {
            ELLE_FAIL(ELLE_EFORMAT, "%s: bad .npy header: %s key '%s' (the header holds "
                                    "'descr', 'fortran_order' and 'shape', once each)",
                      p->path,
                      strcmp(key, "descr") == 0 || strcmp(key, "fortran_order") == 0 ||
                              strcmp(key, "shape") == 0
                          ? "repeated"
                          : "unknown",
                      key);
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        ELLE_TRY(expect_char(p, '}', "',' or '}' after a value"));
        break;
    }
    skip_ws(p);
    if (p->pos != p->len)
        return parse_error(p, "only padding after the header dict");
    if (!seen_descr || !seen_fortran || !seen_shape)
        ELLE_FAIL(ELLE_EFORMAT, "%s: bad .npy header: missing key '%s'", p->path,
                  !seen_descr ? "descr" : !seen_fortran ? "fortran_order" : "shape");
    return ELLE_OK;
}

/* Read the preamble and header of `s` into h and check it (everything but
 * the dtype, which the caller checks for its purpose). */
static int read_header(elle__src *s, npy_header *h)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    unsigned char pre[12];
    size_t got = 0;
    memset(h, 0, sizeof *h);
    ELLE_TRY(elle__src_read(s, pre, 10, &got));
    if (memcmp(pre, magic, got < 6 ? got : 6) != 0)
        ELLE_FAIL(ELLE_EFORMAT, "%s: wrong magic: not a .npy file (it must start with "
                                "\\x93NUMPY)",
                  s->path);
    if (got < 10)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: %zu bytes%s, too short for a .npy preamble",
                  s->path, got, elle__src_size_note(s));
    int major = pre[6], minor = pre[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        ELLE_FAIL(ELLE_EFORMAT, "%s: unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 "
                                "are read)",
                  s->path, major, minor);
    size_t pre_len = major == 1 ? 10 : 12;
    if (pre_len == 12) {
        size_t more = 0;
        ELLE_TRY(elle__src_read(s, pre + 10, 2, &more));
        if (more < 2)
            ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: %zu bytes%s, too short for a .npy "
                                    "version %d preamble",
                      s->path, 10 + more, elle__src_size_note(s), major);
    }
    uint32_t hlen = major == 1 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8
                               : (uint32_t)pre[8] | (uint32_t)pre[9] << 8 |
                                     (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    if (hlen > NPY_MAX_HEADER)
        ELLE_FAIL(ELLE_EFORMAT, "%s: .npy header length %u exceeds the %d-byte limit", s->path,
                  (unsigned)hlen, NPY_MAX_HEADER);
    char *text = malloc((size_t)hlen + 1);
    if (!text)
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory", s->path);
    int rc = elle__src_read(s, text, hlen, &got);
    if (rc == ELLE_OK && got < hlen)
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: truncated: the .npy header says %u bytes, file has %zu after "
                             "the preamble%s",
                             s->path, (unsigned)hlen, got, elle__src_size_note(s));
    if (rc == ELLE_OK) {
        text[hlen] = '\0';
        parser p = {text, hlen, 0, s->path};
        rc = parse_header_dict(&p, h);
    }
    free(text);
    ELLE_TRY(rc);
    if (h->fortran_order)
        ELLE_FAIL(ELLE_EFORMAT, "%s: fortran_order is True: Fortran-ordered arrays are not "
                                "supported (save a C-ordered array: np.ascontiguousarray)",
                  s->path);
    h->data_offset = (int64_t)pre_len + hlen;
    h->count = 1;
    for (int i = 0; i < h->ndim; i++)
        if (!elle__mul_ok(h->count, h->shape[i], &h->count) || h->count > ELLE__DATA_MAX_BYTES)
            ELLE_FAIL(ELLE_EFORMAT, "%s: .npy shape has more than %lld elements", s->path,
                      (long long)ELLE__DATA_MAX_BYTES);
    return ELLE_OK;
}

static void shape_str(const npy_header *h, char *buf, size_t cap)
{
    size_t used = 0;
    int w = snprintf(buf, cap, "(");
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < h->ndim && used < cap; i++) {
        w = snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)h->shape[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    if (used < cap)
        snprintf(buf + used, cap - used, h->ndim == 1 ? ",)" : ")");
}

/* Element size and signedness of an integer dtype string, or 0. */
static int int_dtype(const char *d, int *is_signed)
{
    char order = d[0];
    if (order != '<' && order != '|')
        return 0;
    if ((d[1] != 'i' && d[1] != 'u') || d[2] < '1' || d[2] > '8' || d[3] != '\0')
        return 0;
    int size = d[2] - '0';
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return 0;
    if (order == '|' && size != 1)
        return 0;
    *is_signed = d[1] == 'i';
    return size;
}

static int big_endian_error(const elle__src *s, const npy_header *h)
{
    ELLE_FAIL(ELLE_EFORMAT, "%s: big-endian dtype '%s' is not supported (save with '<' byte "
                            "order: arr.astype(arr.dtype.newbyteorder('<')))",
              s->path, h->descr);
}

/* For raw files: offset + payload must be the file size. */
static int check_raw_size(const elle__src *s, const npy_header *h, int64_t payload)
{
    if (elle__src_is_gz(s))
        return ELLE_OK;
    char shp[128];
    shape_str(h, shp, sizeof shp);
    int64_t want = h->data_offset + payload;
    if (s->size < want)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: header says %s '%s' (%lld bytes with the "
                                "header), file has %lld",
                  s->path, shp, h->descr, (long long)want, (long long)s->size);
    if (s->size > want)
        ELLE_FAIL(ELLE_EFORMAT, "%s: %lld bytes of trailing data: header says %s '%s' (%lld "
                                "bytes with the header), file has %lld",
                  s->path, (long long)(s->size - want), shp, h->descr, (long long)want,
                  (long long)s->size);
    return ELLE_OK;
}

/* Read exactly `payload` bytes of array data into a new buffer. */
static int read_payload(elle__src *s, const npy_header *h, int64_t payload, void **out)
{
    size_t got = 0;
    ELLE_TRY(elle__src_read_alloc(s, (size_t)payload, out, &got));
    if ((int64_t)got < payload) {
        char shp[128];
        shape_str(h, shp, sizeof shp);
        free(*out);
        *out = NULL;
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: header says %s '%s' (%lld bytes with the "
                                "header), file has %lld%s",
                  s->path, shp, h->descr, (long long)(h->data_offset + payload),
                  (long long)(h->data_offset + (int64_t)got), elle__src_size_note(s));
    }
    int rc = elle__src_expect_end(s, "the array data");
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- the loader ------------------------------------------------------------------- */

int elle__load_npy(elle__dstore **out, const char *images_path, const char *labels_path,
                   elle_layout layout)
{
    int rc = ELLE_OK;
    elle__src si = {0}, sl = {0};
    npy_header hi, hl;
    void *raw = NULL, *lab = NULL, *pix = NULL;
    int32_t *labels = NULL;
    elle__dstore *store = NULL;
    char shp[128];

    ELLE_TRY_GOTO(rc, elle__src_open(&si, images_path));
    ELLE_TRY_GOTO(rc, elle__src_open(&sl, labels_path));
    ELLE_TRY_GOTO(rc, read_header(&si, &hi));
    ELLE_TRY_GOTO(rc, read_header(&sl, &hl));

    /* images: dtype and shape */
    int is_float;
    if (strcmp(hi.descr, "|u1") == 0 || strcmp(hi.descr, "<u1") == 0) {
        is_float = 0;
    } else if (strcmp(hi.descr, "<f4") == 0) {
        is_float = 1;
    } else if (hi.descr[0] == '>') {
        rc = big_endian_error(&si, &hi);
        goto cleanup;
    } else {
        rc = elle__error_set(ELLE_EFORMAT, "%s: image dtype '%s' is not supported (uint8 '|u1' "
                                           "or float32 '<f4')",
                             images_path, hi.descr);
        goto cleanup;
    }
    int64_t n, c, h, w;
    int nhwc = 0;
    if (hi.ndim == 3) {
        n = hi.shape[0], c = 1, h = hi.shape[1], w = hi.shape[2];
    } else if (hi.ndim == 4) {
        if (layout == ELLE_LAYOUT_NHWC)
            nhwc = 1;
        else if (layout == ELLE_LAYOUT_AUTO)
            nhwc = (hi.shape[3] == 1 || hi.shape[3] == 3) && hi.shape[1] != 1 && hi.shape[1] != 3;
        n = hi.shape[0];
        c = nhwc ? hi.shape[3] : hi.shape[1];
        h = nhwc ? hi.shape[1] : hi.shape[2];
        w = nhwc ? hi.shape[2] : hi.shape[3];
    } else {
        shape_str(&hi, shp, sizeof shp);
        rc = elle__error_set(ELLE_EFORMAT, "%s: images have shape %s; expected (N, H, W), "
                                           "(N, C, H, W) or (N, H, W, C)",
                             images_path, shp);
        goto cleanup;
    }
    int64_t bytes = 0;
    ELLE_TRY_GOTO(rc, elle__dstore_check_dims(n, c, h, w, is_float ? 4 : 1, ELLE_EFORMAT,
                                              images_path, &bytes));

    /* labels: dtype and shape */
    int lab_signed = 0;
    int lab_size = int_dtype(hl.descr, &lab_signed);
    if (!lab_size) {
        if (hl.descr[0] == '>') {
            rc = big_endian_error(&sl, &hl);
            goto cleanup;
        }
        rc = elle__error_set(ELLE_EFORMAT, "%s: label dtype '%s' is not supported (an integer "
                                           "type: '<i4', '<i8', '|u1', ...)",
                             labels_path, hl.descr);
        goto cleanup;
    }
    if (hl.ndim != 1) {
        shape_str(&hl, shp, sizeof shp);
        rc = elle__error_set(ELLE_EFORMAT, "%s: labels have shape %s; expected (N,)", labels_path,
                             shp);
        goto cleanup;
    }
    if (hl.shape[0] != n) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: images and labels disagree: %s has %lld images, %s has %lld "
                             "labels",
                             images_path, images_path, (long long)n, labels_path,
                             (long long)hl.shape[0]);
        goto cleanup;
    }
    ELLE_TRY_GOTO(rc, check_raw_size(&si, &hi, bytes));
    ELLE_TRY_GOTO(rc, check_raw_size(&sl, &hl, n * lab_size));

    /* labels first: small, and a bad one fails before the big read */
    ELLE_TRY_GOTO(rc, read_payload(&sl, &hl, n * lab_size, &lab));
    labels = malloc((size_t)n * sizeof *labels);
    if (!labels) {
        rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory", labels_path);
        goto cleanup;
    }
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *b = (const unsigned char *)lab + i * lab_size;
        uint64_t u = 0;
        for (int k = 0; k < lab_size; k++)
            u |= (uint64_t)b[k] << (8 * k);
        if (lab_signed && lab_size < 8 && ((u >> (8 * lab_size - 1)) & 1))
            u |= ~(uint64_t)0 << (8 * lab_size); /* sign-extend */
        int negative = lab_signed && (u >> 63);
        if (negative || u >= ELLE__DATA_MAX_CLASSES) {
            if (negative)
                rc = elle__error_set(ELLE_EFORMAT, "%s: label %lld = %lld outside [0, %d)",
                                     labels_path, (long long)i, (long long)(int64_t)u,
                                     ELLE__DATA_MAX_CLASSES);
            else
                rc = elle__error_set(ELLE_EFORMAT, "%s: label %lld = %llu outside [0, %d)",
                                     labels_path, (long long)i, (unsigned long long)u,
                                     ELLE__DATA_MAX_CLASSES);
            goto cleanup;
        }
        labels[i] = (int32_t)u;
    }
    free(lab);
    lab = NULL;

    ELLE_TRY_GOTO(rc, read_payload(&si, &hi, bytes, &raw));
    if (is_float) {
        const float *f = raw;
        const int64_t chw = c * h * w;
        for (int64_t i = 0; i < bytes / 4; i++) {
            if (!(f[i] >= 0.0f && f[i] <= 1.0f)) {
                rc = elle__error_set(ELLE_EFORMAT,
                                     "%s: image %lld, element %lld = %g: float images must be "
                                     "finite and in [0, 1] (unnormalised)",
                                     images_path, (long long)(i / chw), (long long)(i % chw),
                                     (double)f[i]);
                goto cleanup;
            }
        }
    }
    if (nhwc) {
        /* (N, H, W, C) -> (N, C, H, W) */
        const size_t es = is_float ? 4 : 1;
        pix = malloc((size_t)bytes);
        if (!pix) {
            rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory for %lld bytes", images_path,
                                 (long long)bytes);
            goto cleanup;
        }
        const int64_t hw = h * w;
        for (int64_t img = 0; img < n; img++) {
            const unsigned char *src = (const unsigned char *)raw + (size_t)(img * hw * c) * es;
            unsigned char *dst = (unsigned char *)pix + (size_t)(img * hw * c) * es;
            for (int64_t p = 0; p < hw; p++)
                for (int64_t ch = 0; ch < c; ch++)
                    memcpy(dst + (size_t)(ch * hw + p) * es, src + (size_t)(p * c + ch) * es, es);
        }
        free(raw);
        raw = pix;
        pix = NULL;
    }
    rc = elle__dstore_create(&store, n, c, h, w, is_float, raw, images_path);
    raw = NULL; /* taken over */
    if (rc < 0)
        goto cleanup;
    memcpy(store->labels, labels, (size_t)n * sizeof *labels);
    elle__dstore_scan_labels(store);
    *out = store;
    store = NULL;
cleanup:
    elle__src_close(&si);
    elle__src_close(&sl);
    free(raw);
    free(lab);
    free(pix);
    free(labels);
    elle__dstore_unref(store);
    return rc;
}
