/*
 * CIFAR-10 and CIFAR-100, binary version (raw, or gzip-compressed).
 *
 * A file is a sequence of fixed-size records with no header:
 *   CIFAR-10:  1 label byte (0..9), then 3072 pixel bytes;
 *   CIFAR-100: 1 coarse label byte (0..19), 1 fine label byte (0..99),
 *              then 3072 pixel bytes;
 * the pixels are 1024 red, 1024 green, 1024 blue bytes, each plane row-major
 * 32x32: exactly the (C, H, W) order the store keeps. A file that is not a
 * whole number of records is truncated (or not a CIFAR file); every label
 * byte is range-checked, both of them for CIFAR-100.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/data.h"
#include "data/source.h"

#define CIFAR_C 3
#define CIFAR_HW 32
#define CIFAR_PIXELS (CIFAR_C * CIFAR_HW * CIFAR_HW)

int elle__load_cifar_files(elle__dstore **out, const char *const *paths, int n_paths,
                           int cifar100, int coarse)
{
    const int label_bytes = cifar100 ? 2 : 1;
    const int64_t rec = label_bytes + CIFAR_PIXELS;
    int rc = ELLE_OK;
    elle__src s = {0};
    unsigned char *file = NULL;
    uint8_t *pixels = NULL;
    int32_t *labels = NULL;
    elle__dstore *store = NULL;
    int64_t n = 0;

    for (int f = 0; f < n_paths; f++) {
        const char *path = paths[f];
        ELLE_TRY_GOTO(rc, elle__src_open(&s, path));
        if (!elle__src_is_gz(&s) && (s.size == 0 || s.size % rec != 0)) {
            rc = elle__error_set(ELLE_EFORMAT,
                                 "%s: truncated or not a CIFAR-%d file: %lld bytes is not a "
                                 "whole, non-zero number of %lld-byte records (%s + 3072 pixel "
                                 "bytes)",
                                 path, cifar100 ? 100 : 10, (long long)s.size, (long long)rec,
                                 cifar100 ? "coarse and fine label bytes" : "1 label byte");
            goto cleanup;
        }
        size_t len = 0;
        ELLE_TRY_GOTO(rc, elle__src_read_all(&s, ELLE__DATA_MAX_BYTES, (void **)&file, &len));
        ELLE_TRY_GOTO(rc, elle__src_expect_end(&s, "the records"));
        elle__src_close(&s);
        if (len == 0 || (int64_t)len % rec != 0) {
            rc = elle__error_set(ELLE_EFORMAT,
                                 "%s: truncated or not a CIFAR-%d file: %zu bytes%s is not a "
                                 "whole, non-zero number of %lld-byte records",
                                 path, cifar100 ? 100 : 10, len, " after decompression",
                                 (long long)rec);
            goto cleanup;
        }
        const int64_t m = (int64_t)len / rec;
        int64_t total = 0;
        if (!elle__mul_ok(n + m, CIFAR_PIXELS, &total) || total > ELLE__DATA_MAX_BYTES) {
            rc = elle__error_set(ELLE_EFORMAT, "%s: %lld records in all exceed the %lld-byte "
                                               "limit of one dataset",
                                 path, (long long)(n + m), (long long)ELLE__DATA_MAX_BYTES);
            goto cleanup;
        }
        for (int64_t i = 0; i < m; i++) {
            const unsigned char *r = file + i * rec;
            if (cifar100 && (r[0] >= 20 || r[1] >= 100)) {
                rc = elle__error_set(ELLE_EFORMAT,
                                     "%s: record %lld: label out of range: coarse %d (must be "
                                     "< 20), fine %d (must be < 100)",
                                     path, (long long)i, (int)r[0], (int)r[1]);
                goto cleanup;
            }
            if (!cifar100 && r[0] >= 10) {
                rc = elle__error_set(ELLE_EFORMAT,
                                     "%s: record %lld: label %d outside [0, 10)", path,
                                     (long long)i, (int)r[0]);
                goto cleanup;
            }
        }
        uint8_t *np = realloc(pixels, (size_t)total);
        int32_t *nl = realloc(labels, (size_t)(n + m) * sizeof *labels);
        if (np)
            pixels = np;
        if (nl)
            labels = nl;
        if (!np || !nl) {
            rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory for %lld images", path,
                                 (long long)(n + m));
            goto cleanup;
        }
        for (int64_t i = 0; i < m; i++) {
            const unsigned char *r = file + i * rec;
            labels[n + i] = cifar100 ? (coarse ? r[0] : r[1]) : r[0];
            memcpy(pixels + (n + i) * CIFAR_PIXELS, r + label_bytes, CIFAR_PIXELS);
        }
        n += m;
        free(file);
        file = NULL;
    }
    ELLE_TRY_GOTO(rc, elle__dstore_create(&store, n, CIFAR_C, CIFAR_HW, CIFAR_HW, 0, pixels,
                                          n_paths > 0 ? paths[0] : "cifar"));
    pixels = NULL; /* taken over */
    memcpy(store->labels, labels, (size_t)n * sizeof *labels);
    elle__dstore_scan_labels(store);
    *out = store;
    store = NULL;
cleanup:
    elle__src_close(&s);
    free(file);
    free(pixels);
    free(labels);
    elle__dstore_unref(store);
    return rc;
}

int elle__load_cifar_dir(elle__dstore **out, const char *dir, elle_split split, int cifar100,
                         int coarse)
{
    static const char *const train10[] = {"data_batch_1.bin", "data_batch_2.bin",
                                          "data_batch_3.bin", "data_batch_4.bin",
                                          "data_batch_5.bin"};
    static const char *const test10[] = {"test_batch.bin"};
    static const char *const train100[] = {"train.bin"};
    static const char *const test100[] = {"test.bin"};
    const char *const *names;
    int count;
    if (cifar100) {
        names = split == ELLE_SPLIT_TRAIN ? train100 : test100;
        count = 1;
    } else {
        names = split == ELLE_SPLIT_TRAIN ? train10 : test10;
        count = split == ELLE_SPLIT_TRAIN ? 5 : 1;
    }
    ELLE_TRY(elle__dir_check(dir, "elle_dataset_open"));
    /* the archives unpack into a subfolder; accept either level */
    char base[4096];
    char probe[4096];
    ELLE_TRY(elle__path_join(probe, sizeof probe, dir, names[0]));
    if (elle__file_exists(probe)) {
        ELLE_TRY(elle__path_join(base, sizeof base, dir, ""));
    } else {
        const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
        ELLE_TRY(elle__path_join(base, sizeof base, dir, sub));
        ELLE_TRY(elle__path_join(probe, sizeof probe, base, names[0]));
        if (!elle__file_exists(probe))
            ELLE_FAIL(ELLE_EIO, "%s: no %s here or in %s/", dir, names[0], sub);
    }
    char paths[5][4096];
    const char *ptrs[5];
    for (int i = 0; i < count; i++) {
        ELLE_TRY(elle__path_join(paths[i], sizeof paths[i], base, names[i]));
        if (!elle__file_exists(paths[i]))
            ELLE_FAIL(ELLE_EIO, "%s: missing (the %s split needs %d file%s)", paths[i],
                      split == ELLE_SPLIT_TRAIN ? "train" : "test", count, count > 1 ? "s" : "");
        ptrs[i] = paths[i];
    }
    return elle__load_cifar_files(out, ptrs, count, cifar100, coarse);
}
