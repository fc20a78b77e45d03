/*
 * Internal interface of lib/data: the shared image store behind every
 * elle_dataset, the loaders that fill it, and the limits they enforce.
 *
 * A store holds n images of (c, h, w) pixels, one byte each (8-bit sources)
 * or one float each (float sources), in (n, c, h, w) order, plus n int32
 * labels. It is immutable once built and reference-counted, so the views
 * made by elle_dataset_split share it and may outlive their parent.
 */
#ifndef ELLE_DATA_DATA_H
#define ELLE_DATA_DATA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "elle/dataset.h"

/* Limits. Everything a file header claims is checked against these before
 * any allocation, so a hostile header cannot ask for absurd memory. */
#define ELLE__DATA_MAX_BYTES ((int64_t)1 << 34) /* pixels of one dataset: 16 GiB */
#define ELLE__DATA_MAX_SAMPLES ((int64_t)1 << 31) /* 32-bit Philox draws index samples */
#define ELLE__DATA_MAX_DIM ((int64_t)1 << 16)     /* any one of C, H, W */
#define ELLE__DATA_MAX_CLASSES 100000

typedef struct elle__dstore {
    atomic_long refs;
    int64_t n, c, h, w;
    int is_float;     /* 1: f32 holds the pixels; 0: u8 does */
    uint8_t *u8;      /* (n, c, h, w) bytes, pixel = byte / 255 */
    float *f32;       /* (n, c, h, w) floats in [0, 1] */
    int32_t *labels;  /* n labels, each >= 0 */
    int32_t max_label;
} elle__dstore;

/* Multiply a*b for non-negative operands; 0 and *out untouched on overflow. */
static inline int elle__mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return 0;
    if (a != 0 && b > INT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* A store of n images of (c, h, w) with a label buffer allocated (not
 * initialised) and `pixels` as its pixel buffer (taken over, also on
 * failure; NULL: allocate one, not initialised). Checks the dimensions
 * against the limits above: ELLE_EFORMAT with a message naming `what`
 * (usually the file) when they fail; ELLE_ENOMEM when allocation fails. */
int elle__dstore_create(elle__dstore **out, int64_t n, int64_t c, int64_t h, int64_t w,
                        int is_float, void *pixels, const char *what);

/* Check n, c, h, w against the limits; *bytes_out = n*c*h*w*elem_size.
 * Fails with `code` and a message "<what>: ..." */
int elle__dstore_check_dims(int64_t n, int64_t c, int64_t h, int64_t w, int64_t elem_size,
                            int code, const char *what, int64_t *bytes_out);

/* Drop one reference; frees at zero. NULL accepted. */
void elle__dstore_unref(elle__dstore *s);

/* Recompute s->max_label (after a loader filled the labels). */
void elle__dstore_scan_labels(elle__dstore *s);

/* Wrap a freshly loaded store (its reference is taken over) into a dataset
 * named `kind` (a static string) with `num_classes` classes. On failure the
 * store is released. */
int elle__dataset_wrap(elle_dataset **out, elle__dstore *store, const char *kind,
                       int64_t num_classes);

/* ---- loaders: each returns a store whose labels are range-checked ----------- */

/* IDX pair (raw or gzip). max_classes > 0: labels must be < max_classes;
 * 0: any label below ELLE__DATA_MAX_CLASSES. */
int elle__load_idx(elle__dstore **out, const char *images_path, const char *labels_path,
                   int max_classes);

/* MNIST / Fashion-MNIST directory (the four IDX files, raw or gzip). */
int elle__load_mnist_dir(elle__dstore **out, const char *dir, elle_split split);

/* CIFAR binary directory. cifar100 = 0: data_batch_1..5.bin / test_batch.bin
 * (1 label byte per record); 1: train.bin / test.bin (coarse byte, fine
 * byte), labelled by the coarse byte when `coarse` is 1. */
int elle__load_cifar_dir(elle__dstore **out, const char *dir, elle_split split, int cifar100,
                         int coarse);

/* One CIFAR binary file's records, appended to a growing store (used by the
 * directory loader and the tests). */
int elle__load_cifar_files(elle__dstore **out, const char *const *paths, int n_paths,
                           int cifar100, int coarse);

/* SVHN directory: train_32x32.mat / test_32x32.mat. */
int elle__load_svhn_dir(elle__dstore **out, const char *dir, elle_split split);

/* SVHN MATLAB file (X: H x W x C x N uint8, y: N labels 1..10, 10 -> 0). */
int elle__load_svhn(elle__dstore **out, const char *path);

/* .npy images and labels. */
int elle__load_npy(elle__dstore **out, const char *images_path, const char *labels_path,
                   elle_layout layout);

#endif /* ELLE_DATA_DATA_H */
