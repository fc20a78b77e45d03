/*
 * SVHN (Street View House Numbers), cropped-digits format: MATLAB files
 * train_32x32.mat / test_32x32.mat, read with libmatio.
 *
 * X is an H x W x C x N uint8 array (32x32x3xN) in MATLAB's column-major
 * order: X(r, c, ch, n) is element r + H (c + W (ch + C n)), r the row and c
 * the column of the image, exactly what scipy.io.loadmat gives torchvision
 * before it transposes to (N, C, H, W). y holds N labels 1..10 (any numeric
 * class; MATLAB saves it as double), and 10 stands for the digit 0.
 *
 * libmatio parses the container. It does not notice every truncation (a
 * compressed variable cut inside its zlib stream can decode "successfully"),
 * so first we walk the top-level elements of a MAT 5 file ourselves: each
 * 8-byte tag's declared size must lie within the file. Then, before asking
 * matio for any data, we check the variables' classes and dimensions (from
 * their headers) and, for uncompressed X, that the file can hold it, so a
 * lying header cannot make matio allocate or read beyond the file. libmatio
 * stays silent unless the application installs a log function (Mat_LogInit).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <matio.h>

#include "core/error.h"
#include "data/data.h"
#include "data/source.h"

static const char *class_name(enum matio_classes c)
{
    switch (c) {
    case MAT_C_EMPTY: return "empty";
    case MAT_C_CELL: return "cell";
    case MAT_C_STRUCT: return "struct";
    case MAT_C_OBJECT: return "object";
    case MAT_C_CHAR: return "char";
    case MAT_C_SPARSE: return "sparse";
    case MAT_C_DOUBLE: return "double";
    case MAT_C_SINGLE: return "single";
    case MAT_C_INT8: return "int8";
    case MAT_C_UINT8: return "uint8";
    case MAT_C_INT16: return "int16";
    case MAT_C_UINT16: return "uint16";
    case MAT_C_INT32: return "int32";
    case MAT_C_UINT32: return "uint32";
    case MAT_C_INT64: return "int64";
    case MAT_C_UINT64: return "uint64";
    default: return "unknown";
    }
}

/* Element i of numeric data of class c as a double; *ok = 0 for a class we
 * do not read. */
static double numeric_at(const void *data, enum matio_classes c, int64_t i, int *ok)
{
    *ok = 1;
    switch (c) {
    case MAT_C_DOUBLE: return ((const double *)data)[i];
    case MAT_C_SINGLE: return ((const float *)data)[i];
    case MAT_C_INT8: return ((const int8_t *)data)[i];
    case MAT_C_UINT8: return ((const uint8_t *)data)[i];
    case MAT_C_INT16: return ((const int16_t *)data)[i];
    case MAT_C_UINT16: return ((const uint16_t *)data)[i];
    case MAT_C_INT32: return ((const int32_t *)data)[i];
    case MAT_C_UINT32: return ((const uint32_t *)data)[i];
    case MAT_C_INT64: return (double)((const int64_t *)data)[i];
    case MAT_C_UINT64: return (double)((const uint64_t *)data)[i];
    default: *ok = 0; return 0;
    }
}

static size_t class_size(enum matio_classes c)
{
    switch (c) {
    case MAT_C_DOUBLE: case MAT_C_INT64: case MAT_C_UINT64: return 8;
    case MAT_C_SINGLE: case MAT_C_INT32: case MAT_C_UINT32: return 4;
    case MAT_C_INT16: case MAT_C_UINT16: return 2;
    case MAT_C_INT8: case MAT_C_UINT8: return 1;
    default: return 0;
    }
}

#define MAT5_HEADER 128

static uint32_t get32(const unsigned char *p, int big)
{
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* A MAT 5 file is a 128-byte header (text, subsystem offset, version 0x0100,
 * endian indicator "IM") and a sequence of elements, each an 8-byte tag
 * (type, byte count) and its data.
 * Check that every element lies within the file. Version 7.3 files are
 * HDF5 containers and are left to libmatio. */
static int check_mat5_elements(FILE *fp, const char *path, int64_t size)
{
    unsigned char hdr[MAT5_HEADER];
    if (size < MAT5_HEADER || fread(hdr, 1, MAT5_HEADER, fp) != MAT5_HEADER)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: %lld bytes, shorter than the 128-byte header of "
                                "a MATLAB 5 file",
                  path, (long long)size);
    int big;
    if (hdr[126] == 'I' && hdr[127] == 'M')
        big = 0;
    else if (hdr[126] == 'M' && hdr[127] == 'I')
        big = 1;
    else
        ELLE_FAIL(ELLE_EFORMAT, "%s: wrong magic: not a MATLAB 5 / 7 .mat file (no endian "
                                "indicator at byte 126)",
                  path);
    unsigned version =
        big ? (unsigned)hdr[124] << 8 | hdr[125] : (unsigned)hdr[125] << 8 | hdr[124];
    if (version == 0x0200)
        return ELLE_OK; /* 7.3: HDF5 */
    if (version != 0x0100)
        ELLE_FAIL(ELLE_EFORMAT, "%s: unknown .mat version 0x%04x", path, version);
    int64_t pos = MAT5_HEADER;
    while (pos < size) {
        unsigned char tag[8];
        if (size - pos < 8 || fseek(fp, (long)pos, SEEK_SET) != 0 || fread(tag, 1, 8, fp) != 8)
            ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: %lld stray bytes at byte %lld, too few for "
                                    "an element tag",
                      path, (long long)(size - pos), (long long)pos);
        uint32_t type = get32(tag, big), nbytes = get32(tag + 4, big);
        /* a small element keeps its data inside the tag; otherwise the byte
         * count covers the data (miMATRIX counts its own padding, compressed
         * elements have none), as libmatio and scipy skip them */
        int64_t total = (type >> 16) != 0 ? 8 : 8 + (int64_t)nbytes;
        if (total > size - pos)
            ELLE_FAIL(ELLE_EFORMAT, "%s: truncated: the element at byte %lld declares %lld "
                                    "bytes, the file ends %lld bytes later",
                      path, (long long)pos, (long long)total, (long long)(size - pos));
        pos += total;
    }
    return ELLE_OK;
}

int elle__load_svhn(elle__dstore **out, const char *path)
{
    int rc = ELLE_OK;
    mat_t *mat = NULL;
    matvar_t *xi = NULL, *yi = NULL, *x = NULL, *y = NULL;
    uint8_t *pixels = NULL;
    elle__dstore *store = NULL;

    /* matio says only "cannot open"; tell a missing file from a bad one */
    FILE *fp = fopen(path, "rb");
    if (!fp)
        ELLE_FAIL(ELLE_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        ELLE_FAIL(ELLE_EIO, "%s: not a regular file", path);
    }
    rc = check_mat5_elements(fp, path, (int64_t)st.st_size);
    fclose(fp);
    ELLE_TRY(rc);

    mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!mat)
        ELLE_FAIL(ELLE_EFORMAT, "%s: not a MATLAB .mat file that libmatio can read (wrong magic "
                                "or damaged header)",
                  path);
    xi = Mat_VarReadInfo(mat, "X");
    if (!xi) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: no readable variable 'X' (an SVHN file holds X, "
                                           "32x32x3xN uint8, and y, N labels)",
                             path);
        goto cleanup;
    }
    if (xi->class_type != MAT_C_UINT8 || xi->isComplex || xi->isLogical) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: X is a%s %s array, expected real uint8", path,
                             xi->isComplex ? " complex" : "", class_name(xi->class_type));
        goto cleanup;
    }
    /* MATLAB drops trailing singleton dimensions: 32x32x3 is one image */
    if ((xi->rank != 4 && xi->rank != 3) || !xi->dims) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: X has %d dimensions, expected 4 (H x W x C x N)", path,
                             xi->rank);
        goto cleanup;
    }
    for (int i = 0; i < xi->rank; i++) {
        if (xi->dims[i] > (size_t)ELLE__DATA_MAX_SAMPLES) {
            rc = elle__error_set(ELLE_EFORMAT, "%s: X dimension %d = %zu is too large", path,
                                 i + 1, xi->dims[i]);
            goto cleanup;
        }
    }
    const int64_t h = (int64_t)xi->dims[0], w = (int64_t)xi->dims[1], c = (int64_t)xi->dims[2];
    const int64_t n = xi->rank == 4 ? (int64_t)xi->dims[3] : 1;
    int64_t bytes = 0;
    ELLE_TRY_GOTO(rc, elle__dstore_check_dims(n, c, h, w, 1, ELLE_EFORMAT, path, &bytes));
    if (xi->compression == MAT_COMPRESSION_NONE && bytes > (int64_t)st.st_size) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: truncated: X is %lldx%lldx%lldx%lld uint8 (%lld bytes), file "
                             "has %lld",
                             path, (long long)h, (long long)w, (long long)c, (long long)n,
                             (long long)bytes, (long long)st.st_size);
        goto cleanup;
    }

    yi = Mat_VarReadInfo(mat, "y");
    if (!yi) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: no readable variable 'y' (the labels)", path);
        goto cleanup;
    }
    if (class_size(yi->class_type) == 0 || yi->isComplex) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: y is a%s %s array, expected real numbers", path,
                             yi->isComplex ? " complex" : "", class_name(yi->class_type));
        goto cleanup;
    }
    int64_t ny = 1;
    int non_unit = 0;
    for (int i = 0; i < yi->rank && yi->dims; i++) {
        if (yi->dims[i] > (size_t)ELLE__DATA_MAX_SAMPLES ||
            !elle__mul_ok(ny, (int64_t)yi->dims[i], &ny)) {
            rc = elle__error_set(ELLE_EFORMAT, "%s: y is too large", path);
            goto cleanup;
        }
        non_unit += yi->dims[i] != 1;
    }
    if (!yi->dims || yi->rank < 1 || non_unit > 1 || ny != n) {
        rc = elle__error_set(ELLE_EFORMAT,
                             "%s: images and labels disagree: X has %lld images, y has %lld "
                             "elements%s",
                             path, (long long)n, (long long)ny,
                             non_unit > 1 ? " and is not a vector" : "");
        goto cleanup;
    }

    x = Mat_VarRead(mat, "X");
    if (!x || !x->data || x->class_type != MAT_C_UINT8 || x->data_size != 1 ||
        x->nbytes != (size_t)bytes) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: cannot read the data of X (%lld bytes expected): "
                                           "truncated or damaged",
                             path, (long long)bytes);
        goto cleanup;
    }
    y = Mat_VarRead(mat, "y");
    if (!y || !y->data || y->class_type != yi->class_type ||
        (size_t)y->data_size != class_size(y->class_type) ||
        y->nbytes != (size_t)n * class_size(y->class_type)) {
        rc = elle__error_set(ELLE_EFORMAT, "%s: cannot read the data of y: truncated or damaged",
                             path);
        goto cleanup;
    }

    pixels = malloc((size_t)bytes);
    if (!pixels) {
        rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory for %lld bytes", path,
                             (long long)bytes);
        goto cleanup;
    }
    /* column-major H x W x C x N to (N, C, H, W) row-major: the source is
     * read in order, the destination written with stride W */
    const uint8_t *src = x->data;
    const int64_t hw = h * w;
    for (int64_t img = 0; img < n * c; img++) {
        const uint8_t *plane = src + img * hw;
        uint8_t *dst = pixels + img * hw;
        for (int64_t col = 0; col < w; col++)
            for (int64_t row = 0; row < h; row++)
                dst[row * w + col] = plane[col * h + row];
    }
    ELLE_TRY_GOTO(rc, elle__dstore_create(&store, n, c, h, w, 0, pixels, path));
    pixels = NULL; /* taken over */
    for (int64_t i = 0; i < n; i++) {
        int ok = 0;
        double v = numeric_at(y->data, y->class_type, i, &ok);
        if (!ok || !(v >= 1 && v <= 10) || v != floor(v)) {
            rc = elle__error_set(ELLE_EFORMAT, "%s: label y(%lld) = %g outside 1..10", path,
                                 (long long)i + 1, v);
            goto cleanup;
        }
        store->labels[i] = v == 10 ? 0 : (int32_t)v; /* SVHN writes the digit 0 as 10 */
    }
    elle__dstore_scan_labels(store);
    *out = store;
    store = NULL;
cleanup:
    Mat_VarFree(xi);
    Mat_VarFree(yi);
    Mat_VarFree(x);
    Mat_VarFree(y);
    if (mat)
        Mat_Close(mat);
    free(pixels);
    elle__dstore_unref(store);
    return rc;
}

int elle__load_svhn_dir(elle__dstore **out, const char *dir, elle_split split)
{
    char path[4096];
    ELLE_TRY(elle__dir_check(dir, "elle_dataset_open"));
    ELLE_TRY(elle__path_join(path, sizeof path, dir,
                             split == ELLE_SPLIT_TRAIN ? "train_32x32.mat" : "test_32x32.mat"));
    return elle__load_svhn(out, path);
}
