/*
 * libelle — datasets: loaders for the standard image-classification files,
 * a seeded validation hold-out, and shuffled, augmented mini-batches.
 *
 * A dataset holds n labelled images of shape (C, H, W). Images leave the
 * library as float arrays in [0, 1], row-major (n, C, H, W); labels as int32
 * in [0, num_classes). Inside, images read from 8-bit files stay 8-bit (one
 * byte per pixel) and are converted when a sample or batch is requested.
 *
 * Loaders: elle_dataset_open ("mnist", "fashion-mnist", "cifar10",
 * "cifar100", "svhn"), elle_dataset_open_idx, elle_dataset_open_npy,
 * elle_dataset_from_host(_u8). Every file parser checks each size, magic
 * number and offset before it reads, and fails with ELLE_EFORMAT (malformed,
 * truncated, label out of range, images and labels disagreeing) or ELLE_EIO
 * (cannot open or read) and a message naming the file and the problem.
 *
 * Determinism: shuffling, the validation split and augmentation are pure
 * functions of (seed, epoch, sample position) through the Philox4x32-10
 * generator, so a resumed run, any thread count and any machine see the same
 * batches. docs/datasets.md states the exact rule.
 *
 * Lifetime and threads: elle_dataset_split returns views that share the
 * parent's images; the storage is reference-counted, so parent and views may
 * be freed in any order. A handle must not be used from two threads at once
 * (elle_dataset_batch caches the current epoch's order); distinct handles,
 * views of one parent included, may be used from different threads.
 */
#ifndef ELLE_DATASET_H
#define ELLE_DATASET_H

#include "common.h"

ELLE_BEGIN_DECL

typedef struct elle_dataset elle_dataset;

/** Which part of a dataset to open (stable values). @since v0.1 */
typedef enum elle_split {
    ELLE_SPLIT_TRAIN = 0, /**< the training files */
    ELLE_SPLIT_TEST = 1   /**< the test files */
} elle_split;

/** Memory layout of a 4-D image array in a .npy file (stable values). @since v0.1 */
typedef enum elle_layout {
    ELLE_LAYOUT_AUTO = 0, /**< (N, H, W, C) when the last dimension is 1 or 3 and the
                               second is not; (N, C, H, W) otherwise */
    ELLE_LAYOUT_NCHW = 1, /**< (N, C, H, W) */
    ELLE_LAYOUT_NHWC = 2  /**< (N, H, W, C) */
} elle_layout;

/**
 * Dataset parameters (stable values; appended only). Set with
 * elle_dataset_set_param on an open dataset, or pass them to
 * elle_dataset_open_ex. Each handle has its own values: the views made by
 * elle_dataset_split start from the defaults (NUM_CLASSES and
 * COARSE_LABELS are inherited). @since v0.1
 */
typedef enum elle_dataset_param {
    ELLE_DATASET_PARAM_SHUFFLE = 1,      /**< 1 = a new random order every epoch (0) */
    ELLE_DATASET_PARAM_SEED = 2,         /**< seed of shuffling and augmentation,
                                              0 .. 2^53-1 (0) */
    ELLE_DATASET_PARAM_CROP_PADDING = 3, /**< random crop: pad p zero pixels on each side,
                                              crop back to H x W at a uniform offset;
                                              0 = off, 0 .. 64 (0; CIFAR recipes use 4) */
    ELLE_DATASET_PARAM_FLIP = 4,         /**< 1 = horizontal flip with probability 1/2 (0) */
    ELLE_DATASET_PARAM_DROP_LAST = 5,    /**< 1 = omit the last, incomplete batch (0) */
    ELLE_DATASET_PARAM_NUM_CLASSES = 6,  /**< classes, 1 .. 100000; set by the loader, may be
                                              raised (e.g. for a .npy test split that lacks
                                              the last class), never below max label + 1 */
    ELLE_DATASET_PARAM_COARSE_LABELS = 7 /**< "cifar100" only: 1 = the 20 coarse labels,
                                              0 = the 100 fine labels (0); chosen when
                                              opening (elle_dataset_open_ex), read-only
                                              afterwards */
} elle_dataset_param;

/** Validation images held out of a training set by the paper's recipe. @since v0.1 */
#define ELLE_DATASET_DEFAULT_VAL_SIZE 1024

/**
 * Open a standard dataset stored under the directory `path`.
 *
 * `kind` and the files it reads (each may also be gzip-compressed; gzip is
 * recognised by its magic bytes, not by the name):
 *  - "mnist", "fashion-mnist" (alias "fashion_mnist"): IDX files
 *    train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 *    t10k-labels-idx1-ubyte, each also found with a ".gz" suffix or with a
 *    '.' instead of the last '-' (train-images.idx3-ubyte). (1, 28, 28), 10 classes.
 *  - "cifar10": the binary version, data_batch_1.bin .. data_batch_5.bin or
 *    test_batch.bin, directly in `path` or in path/cifar-10-batches-bin.
 *    Records of 1 label byte + 3072 pixel bytes (C, H, W). (3, 32, 32), 10 classes.
 *  - "cifar100": train.bin or test.bin, directly in `path` or in
 *    path/cifar-100-binary. Records of a coarse label byte, a fine label
 *    byte, 3072 pixel bytes. Fine labels (100 classes) unless
 *    ELLE_DATASET_PARAM_COARSE_LABELS is given to elle_dataset_open_ex (20).
 *  - "svhn": train_32x32.mat or test_32x32.mat (MATLAB, read by libmatio):
 *    X is 32x32x3xN uint8, y holds labels 1..10, and 10 becomes 0. (3, 32, 32),
 *    10 classes.
 *
 * Returns ELLE_EINVAL for a NULL argument, an unknown kind or split,
 * ELLE_EIO when a file is missing or unreadable, ELLE_EFORMAT when a file
 * is malformed (the message names the file and what is wrong), ELLE_ENOMEM.
 * `*out` is set only on success. @since v0.1
 */
ELLE_API int elle_dataset_open(elle_dataset **out, const char *kind, const char *path,
                               elle_split split);

/**
 * elle_dataset_open with parameters: `params[i]` is set to `values[i]` for
 * i < n_params (params and values may be NULL when n_params is 0).
 * ELLE_DATASET_PARAM_COARSE_LABELS takes effect while loading; the others
 * are applied to the opened dataset as by elle_dataset_set_param. A bad
 * parameter fails the call with ELLE_EINVAL before any file is read (except
 * a NUM_CLASSES below max label + 1, found after loading), and so does
 * COARSE_LABELS = 1 for a kind other than "cifar100". Nothing is returned
 * on failure. @since v0.1
 */
ELLE_API int elle_dataset_open_ex(elle_dataset **out, const char *kind, const char *path,
                                  elle_split split, const elle_dataset_param *params,
                                  const double *values, int n_params);

/**
 * Open a pair of IDX files (raw or gzip): images of unsigned bytes with
 * shape (N, H, W) (magic 0x00000803) and labels of unsigned bytes with
 * shape (N,) (magic 0x00000801). num_classes is max label + 1.
 * Errors as elle_dataset_open. @since v0.1
 */
ELLE_API int elle_dataset_open_idx(elle_dataset **out, const char *images_path,
                                   const char *labels_path);

/**
 * Open NumPy .npy files (format versions 1.0, 2.0 and 3.0, little-endian,
 * C order; gzip-compressed files are accepted too).
 *
 * images: dtype uint8 (divided by 255) or float32 (used as stored; every
 * value must be finite and in [0, 1]), shape (N, H, W) for one channel or
 * a 4-D array laid out as `layout` says. labels: any integer dtype of 1 to 8
 * bytes (int32, int64, uint8, ...), shape (N,), values in [0, 100000).
 * num_classes is max label + 1 (raise it with ELLE_DATASET_PARAM_NUM_CLASSES).
 * Returns ELLE_EFORMAT for a bad header, an unsupported dtype, Fortran
 * order, a size that disagrees with the file, N differing between the two
 * files, or a bad value. @since v0.1
 */
ELLE_API int elle_dataset_open_npy(elle_dataset **out, const char *images_path,
                                   const char *labels_path, elle_layout layout);

/**
 * Copy n float images (n, c, h, w), every value in [0, 1], and n labels in
 * [0, num_classes) into a new dataset. ELLE_EINVAL for NULL pointers,
 * non-positive sizes, a non-finite or out-of-range pixel, or a label out of
 * range (the message gives the index). @since v0.1
 */
ELLE_API int elle_dataset_from_host(elle_dataset **out, const float *images,
                                    const int32_t *labels, int64_t n, int64_t c, int64_t h,
                                    int64_t w, int64_t num_classes);

/**
 * As elle_dataset_from_host for 8-bit images (n, c, h, w); pixel v reads as
 * v / 255. Stored at one byte per pixel. @since v0.1
 */
ELLE_API int elle_dataset_from_host_u8(elle_dataset **out, const uint8_t *images,
                                       const int32_t *labels, int64_t n, int64_t c, int64_t h,
                                       int64_t w, int64_t num_classes);

/**
 * Free a dataset (NULL accepted). The image storage is released when the
 * last dataset sharing it (parent or view) is freed. @since v0.1
 */
ELLE_API void elle_dataset_free(elle_dataset *d);

/** Number of samples, or -1 when d is NULL. @since v0.1 */
ELLE_API int64_t elle_dataset_size(const elle_dataset *d);

/** Image shape (C, H, W) into the three pointers (any may be NULL). @since v0.1 */
ELLE_API int elle_dataset_shape(const elle_dataset *d, int64_t *c, int64_t *h, int64_t *w);

/** Number of classes, or -1 when d is NULL. @since v0.1 */
ELLE_API int64_t elle_dataset_num_classes(const elle_dataset *d);

/**
 * What the dataset was loaded from: "mnist", "fashion-mnist", "cifar10",
 * "cifar100", "svhn", "idx", "npy" or "host" (static string; NULL when d
 * is NULL). Views report their parent's kind. @since v0.1
 */
ELLE_API const char *elle_dataset_kind(const elle_dataset *d);

/**
 * Bytes of host memory the dataset's storage occupies (images, labels, its
 * index and order tables). Views sharing a parent's storage each count it.
 * 0 when d is NULL. @since v0.1
 */
ELLE_API size_t elle_dataset_memory_size(const elle_dataset *d);

/**
 * Sample i (0 <= i < size), without augmentation: image_out receives
 * C*H*W floats (C, H, W) in [0, 1], label_out one label. Either output may
 * be NULL. ELLE_EINVAL when d is NULL or i is out of range. @since v0.1
 */
ELLE_API int elle_dataset_get(const elle_dataset *d, int64_t i, float *image_out,
                              int32_t *label_out);

/**
 * Hold out `val_size` samples (1 <= val_size < size; the paper uses
 * ELLE_DATASET_DEFAULT_VAL_SIZE) chosen uniformly at random by `seed`.
 * train_out receives the other samples. Both are views in the parent's
 * order, disjoint, and together cover the parent; the same (size, val_size,
 * seed) always gives the same split. The views share the parent's storage
 * (reference-counted: free them in any order) and start with default
 * parameters. Each out pointer is set only on success. @since v0.1
 */
ELLE_API int elle_dataset_split(const elle_dataset *d, int64_t val_size, uint64_t seed,
                                elle_dataset **train_out, elle_dataset **val_out);

/**
 * Batches per epoch for `batch_size`: ceil(size / batch_size), or
 * floor(size / batch_size) with ELLE_DATASET_PARAM_DROP_LAST. Returns a
 * negative status (ELLE_EINVAL) for a NULL d or batch_size < 1. @since v0.1
 */
ELLE_API int64_t elle_dataset_num_batches(const elle_dataset *d, int64_t batch_size);

/**
 * Batch `batch_index` (0 <= batch_index < num_batches) of epoch `epoch`
 * (0 <= epoch < 2^32). The epoch's order is the identity, or with
 * ELLE_DATASET_PARAM_SHUFFLE a permutation drawn from (seed, epoch); batch b
 * holds positions [b*batch_size, min((b+1)*batch_size, size)) of that order.
 * Each sample is augmented (crop, then flip, when enabled) with random
 * numbers drawn from (seed, epoch, the sample's index in d), so a batch is a
 * pure function of its arguments and the parameters.
 *
 * images_out: room for batch_size * C * H * W floats, written (n, C, H, W)
 * in [0, 1]; labels_out (may be NULL): room for batch_size labels; n_out
 * (may be NULL): the number of samples written (< batch_size only for the
 * last batch). ELLE_EINVAL for NULL d or images_out, batch_size < 1, or an
 * epoch or batch index out of range. Not thread-safe on one handle.
 * @since v0.1
 */
ELLE_API int elle_dataset_batch(elle_dataset *d, int64_t epoch, int64_t batch_index,
                                int64_t batch_size, float *images_out, int32_t *labels_out,
                                int64_t *n_out);

/**
 * Set a parameter. ELLE_EINVAL outside elle_dataset_param_bounds (message
 * names the parameter and the bounds) or for a NUM_CLASSES below max label +
 * 1; ELLE_ESTATE for COARSE_LABELS, which only elle_dataset_open_ex sets.
 * @since v0.1
 */
ELLE_API int elle_dataset_set_param(elle_dataset *d, elle_dataset_param param, double value);

/** Read a parameter into *out. @since v0.1 */
ELLE_API int elle_dataset_get_param(const elle_dataset *d, elle_dataset_param param,
                                    double *out);

/** Inclusive bounds of a parameter. @since v0.1 */
ELLE_API int elle_dataset_param_bounds(elle_dataset_param param, double *lo, double *hi);

/**
 * Parameter by name: "shuffle", "seed", "crop_padding", "flip",
 * "drop_last", "num_classes", "coarse_labels". ELLE_EINVAL if unknown.
 * @since v0.1
 */
ELLE_API int elle_dataset_param_from_name(const char *name, elle_dataset_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_dataset_param_name(elle_dataset_param param);

/** Static name of a split ("train", "test"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_split_name(elle_split split);

/** Split by name ("train", "test"); ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_split_from_name(const char *name, elle_split *out);

ELLE_END_DECL

#endif /* ELLE_DATASET_H */
