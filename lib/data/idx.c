/*
 * IDX files (MNIST, Fashion-MNIST; LeCun's format), raw or gzip.
 *
 * A file is a 4-byte magic {0, 0, type, ndims}, ndims big-endian uint32
 * dimensions, then the elements in row-major order. Images are type 0x08
 * (unsigned byte) with 3 dimensions (N, H, W): magic 0x00000803; labels are
 * type 0x08 with one dimension (N): magic 0x00000801.
 *
 * Both headers are read and checked against each other (and, for raw
 * files, against the file sizes) before any pixel is read.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/data.h"
#include "data/source.h"

#define IDX_TYPE_UBYTE 0x08

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Read and check an IDX header with `ndims` dimensions into dims. `what` is
 * "image" or "label" for the messages. */
static int read_header(elle__src *s, int ndims, const char *what, int64_t *dims)
{
    unsigned char hdr[4 + 4 * 3];
    size_t need = 4 + 4 * (size_t)ndims, got = 0;
    ELLE_TRY(elle__src_read(s, hdr, 4, &got));
    if (got < 4)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: %zu bytes%s, too short for an IDX header",
                  s->path, got, elle__src_size_note(s));
    uint32_t magic = be32(hdr);
    uint32_t want_magic = (uint32_t)IDX_TYPE_UBYTE << 8 | (uint32_t)ndims;
    if (hdr[0] != 0 || hdr[1] != 0)
        ELLE_FAIL(ELLE_EFORMAT,
                  "%s: wrong magic 0x%08x: not an IDX file (an IDX %s file starts with "
                  "0x%08x)",
                  s->path, (unsigned)magic, what, (unsigned)want_magic);
    if (hdr[2] != IDX_TYPE_UBYTE)
        ELLE_FAIL(ELLE_EFORMAT,
                  "%s: IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)",
                  s->path, (unsigned)hdr[2]);
    if (hdr[3] != ndims)
        ELLE_FAIL(ELLE_EFORMAT, "%s: wrong magic 0x%08x: an IDX %s file has %d dimension%s "
                                "(magic 0x%08x), this one has %d",
                  s->path, (unsigned)magic, what, ndims, ndims == 1 ? "" : "s",
                  (unsigned)want_magic, (int)hdr[3]);
    ELLE_TRY(elle__src_read(s, hdr + 4, need - 4, &got));
    if (got < need - 4)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: the IDX header needs %zu bytes, file has %zu%s",
                  s->path, need, 4 + got, elle__src_size_note(s));
    for (int i = 0; i < ndims; i++)
        dims[i] = (int64_t)be32(hdr + 4 + 4 * i);
    return ELLE_OK;
}

/* For a raw file: the size must be header + payload exactly. */
static int check_raw_size(const elle__src *s, int64_t header, int64_t payload,
                          const char *says)
{
    if (elle__src_is_gz(s))
        return ELLE_OK;
    int64_t want = header + payload;
    if (s->size < want)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: header says %s (%lld bytes with the header), "
                                "file has %lld",
                  s->path, says, (long long)want, (long long)s->size);
    if (s->size > want)
        ELLE_FAIL(ELLE_EFORMAT,
                  "%s: %lld bytes of trailing data: header says %s (%lld bytes with the "
                  "header), file has %lld",
                  s->path, (long long)(s->size - want), says, (long long)want,
                  (long long)s->size);
    return ELLE_OK;
}

int elle__load_idx(elle__dstore **out, const char *images_path, const char *labels_path,
                   int max_classes)
{
    int rc = ELLE_OK;
    elle__src si = {0}, sl = {0};
    void *pixels = NULL;
    unsigned char *lab = NULL;
    elle__dstore *store = NULL;
    int64_t idims[3] = {0, 0, 0}, ldims[1] = {0};
    char says[160];

    ELLE_TRY_GOTO(rc, elle__src_open(&si, images_path));
    ELLE_TRY_GOTO(rc, elle__src_open(&sl, labels_path));
    ELLE_TRY_GOTO(rc, read_header(&si, 3, "image", idims));
    ELLE_TRY_GOTO(rc, read_header(&sl, 1, "label", ldims));
    const int64_t n = idims[0], h = idims[1], w = idims[2];
    int64_t bytes = 0;
    ELLE_TRY_GOTO(rc, elle__dstore_check_dims(n, 1, h, w, 1, ELLE_EFORMAT, images_path, &bytes));
    if (ldims[0] != n) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: images and labels disagree: %s has %lld images, %s has %lld "
                             "labels",
                             images_path, images_path, (long long)n, labels_path,
                             (long long)ldims[0]);
        goto cleanup;
    }
    snprintf(says, sizeof says, "%lld images of %lldx%lld", (long long)n, (long long)h,
             (long long)w);
    ELLE_TRY_GOTO(rc, check_raw_size(&si, 16, bytes, says));
    snprintf(says, sizeof says, "%lld labels", (long long)n);
    ELLE_TRY_GOTO(rc, check_raw_size(&sl, 8, n, says));

    size_t got = 0;
    ELLE_TRY_GOTO(rc, elle__src_read_alloc(&si, (size_t)bytes, &pixels, &got));
    if ((int64_t)got < bytes) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: truncated: header says %lld images of %lldx%lld (%lld bytes "
                             "with the header), file has %lld%s",
                             images_path, (long long)n, (long long)h, (long long)w,
                             (long long)(16 + bytes), (long long)(16 + got),
                             elle__src_size_note(&si));
        goto cleanup;
    }
    ELLE_TRY_GOTO(rc, elle__src_expect_end(&si, "the images"));
    ELLE_TRY_GOTO(rc, elle__src_read_alloc(&sl, (size_t)n, (void **)&lab, &got));
    if ((int64_t)got < n) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: truncated: header says %lld labels (%lld bytes with the "
                             "header), file has %lld%s",
                             labels_path, (long long)n, (long long)(8 + n), (long long)(8 + got),
                             elle__src_size_note(&sl));
        goto cleanup;
    }
    ELLE_TRY_GOTO(rc, elle__src_expect_end(&sl, "the labels"));

    const int limit = max_classes > 0 ? max_classes : ELLE__DATA_MAX_CLASSES;
    for (int64_t i = 0; i < n; i++) {
        if (lab[i] >= limit) {
            rc = elle__error_set(ELLE_EFORMAT, "%s: label %lld = %d outside [0, %d)",
                                 labels_path, (long long)i, (int)lab[i], limit);
            goto cleanup;
        }
    }
    ELLE_TRY_GOTO(rc, elle__dstore_create(&store, n, 1, h, w, 0, pixels, images_path));
    pixels = NULL; /* taken over */
    for (int64_t i = 0; i < n; i++)
        store->labels[i] = lab[i];
    elle__dstore_scan_labels(store);
    *out = store;
    store = NULL;
cleanup:
    elle__src_close(&si);
    elle__src_close(&sl);
    free(pixels);
    free(lab);
    elle__dstore_unref(store);
    return rc;
}

int elle__load_mnist_dir(elle__dstore **out, const char *dir, elle_split split)
{
    static const char *const image_names[] = {"-images-idx3-ubyte", "-images-idx3-ubyte.gz",
                                              "-images.idx3-ubyte", "-images.idx3-ubyte.gz",
                                              NULL};
    static const char *const label_names[] = {"-labels-idx1-ubyte", "-labels-idx1-ubyte.gz",
                                              "-labels.idx1-ubyte", "-labels.idx1-ubyte.gz",
                                              NULL};
    char images[4096], labels[4096];
    const char *prefix = split == ELLE_SPLIT_TRAIN ? "train" : "t10k";
    ELLE_TRY(elle__dir_check(dir, "elle_dataset_open"));
    ELLE_TRY(elle__find_file(images, sizeof images, dir, prefix, image_names));
    ELLE_TRY(elle__find_file(labels, sizeof labels, dir, prefix, label_names));
    return elle__load_idx(out, images, labels, 10);
}
