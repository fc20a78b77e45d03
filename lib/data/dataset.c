/*
 * elle_dataset: the handle, its parameters, the validation split and the
 * batch loader. File formats live in idx.c, cifar.c, svhn.c and npy.c;
 * random orders and augmentation in augment.c.
 *
 * A dataset is a view of a reference-counted store: `index` maps the view's
 * samples to store images (NULL for the identity), so elle_dataset_split
 * copies no pixels and parent and views may be freed in any order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/params.h"
#include "data/augment.h"
#include "data/data.h"

/* Parameter slots are indexed by the public enum value. */
#define PARAM_SLOTS 8

struct elle_dataset {
    elle__dstore *store;
    const char *kind;      /* static string */
    int64_t n;             /* samples in this view */
    int64_t *index;        /* n store indices, or NULL: sample i is store image i */
    int32_t max_label;     /* over this view's samples; -1 when empty */
    double p[PARAM_SLOTS]; /* parameter values by enum id */
    /* elle_dataset_batch's order for one (seed, epoch), kept between calls
     * so a shuffled epoch costs one permutation, not one per batch */
    int64_t *order;
    int64_t order_epoch;
    double order_seed;
};

static const elle__param_spec dataset_params[] = {
    {ELLE_DATASET_PARAM_SHUFFLE, "shuffle", 0, 1, 1, 0},
    {ELLE_DATASET_PARAM_SEED, "seed", 0, 9007199254740991.0, 1, 0},
    {ELLE_DATASET_PARAM_CROP_PADDING, "crop_padding", 0, 64, 1, 0},
    {ELLE_DATASET_PARAM_FLIP, "flip", 0, 1, 1, 0},
    {ELLE_DATASET_PARAM_DROP_LAST, "drop_last", 0, 1, 1, 0},
    {ELLE_DATASET_PARAM_NUM_CLASSES, "num_classes", 1, ELLE__DATA_MAX_CLASSES, 1, 10},
    {ELLE_DATASET_PARAM_COARSE_LABELS, "coarse_labels", 0, 1, 1, 0},
};
#define N_DATASET_PARAMS (sizeof dataset_params / sizeof dataset_params[0])

/* ---- the store -------------------------------------------------------------------- */

int elle__dstore_check_dims(int64_t n, int64_t c, int64_t h, int64_t w, int64_t elem_size,
                            int code, const char *what, int64_t *bytes_out)
{
    if (n < 1 || c < 1 || h < 1 || w < 1)
        ELLE_FAIL(code, "%s: empty dataset: %lld images of %lldx%lldx%lld", what,
                  (long long)n, (long long)c, (long long)h, (long long)w);
    if (c > ELLE__DATA_MAX_DIM || h > ELLE__DATA_MAX_DIM || w > ELLE__DATA_MAX_DIM)
        ELLE_FAIL(code, "%s: image shape %lldx%lldx%lld has a dimension above %lld", what,
                  (long long)c, (long long)h, (long long)w, (long long)ELLE__DATA_MAX_DIM);
    if (n > ELLE__DATA_MAX_SAMPLES)
        ELLE_FAIL(code, "%s: %lld images exceed the limit of %lld per dataset", what,
                  (long long)n, (long long)ELLE__DATA_MAX_SAMPLES);
    int64_t chw = 0, total = 0, bytes = 0;
    if (!elle__mul_ok(c * h, w, &chw) || !elle__mul_ok(n, chw, &total) ||
        !elle__mul_ok(total, elem_size, &bytes) || bytes > ELLE__DATA_MAX_BYTES)
        ELLE_FAIL(code,
                  "%s: %lld images of %lldx%lldx%lld (%lld-byte pixels) exceed the %lld-byte "
                  "limit of one dataset",
                  what, (long long)n, (long long)c, (long long)h, (long long)w,
                  (long long)elem_size, (long long)ELLE__DATA_MAX_BYTES);
    if (bytes_out)
        *bytes_out = bytes;
    return ELLE_OK;
}

int elle__dstore_create(elle__dstore **out, int64_t n, int64_t c, int64_t h, int64_t w,
                        int is_float, void *pixels, const char *what)
{
    int64_t bytes = 0;
    int rc = elle__dstore_check_dims(n, c, h, w, is_float ? 4 : 1, ELLE_EFORMAT, what, &bytes);
    elle__dstore *s = rc < 0 ? NULL : calloc(1, sizeof *s);
    if (!s) {
        free(pixels);
        if (rc < 0)
            return rc;
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory", what);
    }
    atomic_init(&s->refs, 1);
    s->n = n;
    s->c = c;
    s->h = h;
    s->w = w;
    s->is_float = is_float;
    s->max_label = -1;
    if (!pixels)
        pixels = malloc((size_t)bytes);
    if (is_float)
        s->f32 = pixels;
    else
        s->u8 = pixels;
    s->labels = malloc((size_t)n * sizeof *s->labels);
    if ((is_float ? (void *)s->f32 : (void *)s->u8) == NULL || !s->labels) {
        elle__dstore_unref(s);
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory for %lld images (%lld bytes)", what,
                  (long long)n, (long long)bytes);
    }
    *out = s;
    return ELLE_OK;
}

void elle__dstore_unref(elle__dstore *s)
{
    if (!s)
        return;
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    free(s->u8);
    free(s->f32);
    free(s->labels);
    free(s);
}

void elle__dstore_scan_labels(elle__dstore *s)
{
    int32_t mx = -1;
    for (int64_t i = 0; i < s->n; i++)
        if (s->labels[i] > mx)
            mx = s->labels[i];
    s->max_label = mx;
}

static int64_t store_index(const elle_dataset *d, int64_t i)
{
    return d->index ? d->index[i] : i;
}

static int64_t sample_floats(const elle_dataset *d)
{
    return d->store->c * d->store->h * d->store->w;
}

/* A dataset viewing `store` (one reference taken over) through `index`
 * (taken over; NULL = identity over all n store images). */
static int dataset_new(elle_dataset **out, elle__dstore *store, int64_t *index, int64_t n,
                       const char *kind, double num_classes, double coarse)
{
    elle_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        elle__dstore_unref(store);
        free(index);
        ELLE_FAIL(ELLE_ENOMEM, "elle_dataset: out of memory");
    }
    d->store = store;
    d->kind = kind;
    d->n = n;
    d->index = index;
    for (size_t i = 0; i < N_DATASET_PARAMS; i++)
        d->p[dataset_params[i].id] = dataset_params[i].default_value;
    d->p[ELLE_DATASET_PARAM_NUM_CLASSES] = num_classes;
    d->p[ELLE_DATASET_PARAM_COARSE_LABELS] = coarse;
    int32_t mx = -1;
    if (!index) {
        mx = store->max_label;
    } else {
        for (int64_t i = 0; i < n; i++)
            if (store->labels[index[i]] > mx)
                mx = store->labels[index[i]];
    }
    d->max_label = mx;
    d->order_epoch = -1;
    *out = d;
    return ELLE_OK;
}

int elle__dataset_wrap(elle_dataset **out, elle__dstore *store, const char *kind,
                       int64_t num_classes)
{
    if (num_classes <= 0)
        num_classes = (int64_t)store->max_label + 1;
    if (num_classes < 1)
        num_classes = 1;
    if (store->max_label >= num_classes) {
        /* loaders check their labels; this guards the invariant */
        int32_t mx = store->max_label;
        elle__dstore_unref(store);
        ELLE_FAIL(ELLE_ERROR, "elle_dataset: internal error: label %d with %lld classes", (int)mx,
                  (long long)num_classes);
    }
    return dataset_new(out, store, NULL, store->n, kind, (double)num_classes, 0);
}

/* ---- opening ---------------------------------------------------------------------- */

static const char *const kind_names =
    "mnist, fashion-mnist, cifar10, cifar100, svhn";

static int open_kind(elle_dataset **out, const char *kind, const char *path, elle_split split,
                     int coarse)
{
    elle__dstore *store = NULL;
    const char *canon = NULL;
    int64_t classes = 10;
    if (strcmp(kind, "mnist") == 0 || strcmp(kind, "fashion-mnist") == 0 ||
        strcmp(kind, "fashion_mnist") == 0) {
        canon = strcmp(kind, "mnist") == 0 ? "mnist" : "fashion-mnist";
        ELLE_TRY(elle__load_mnist_dir(&store, path, split));
    } else if (strcmp(kind, "cifar10") == 0) {
        canon = "cifar10";
        ELLE_TRY(elle__load_cifar_dir(&store, path, split, 0, 0));
    } else if (strcmp(kind, "cifar100") == 0) {
        canon = "cifar100";
        classes = coarse ? 20 : 100;
        ELLE_TRY(elle__load_cifar_dir(&store, path, split, 1, coarse));
    } else if (strcmp(kind, "svhn") == 0) {
        canon = "svhn";
        ELLE_TRY(elle__load_svhn_dir(&store, path, split));
    } else {
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_open: unknown dataset kind '%s' (%s)", kind,
                  kind_names);
    }
    ELLE_TRY(elle__dataset_wrap(out, store, canon, classes));
    (*out)->p[ELLE_DATASET_PARAM_COARSE_LABELS] = coarse;
    return ELLE_OK;
}

int elle_dataset_open(elle_dataset **out, const char *kind, const char *path, elle_split split)
{
    return elle_dataset_open_ex(out, kind, path, split, NULL, NULL, 0);
}

int elle_dataset_open_ex(elle_dataset **out, const char *kind, const char *path,
                         elle_split split, const elle_dataset_param *params,
                         const double *values, int n_params)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(kind != NULL);
    ELLE_CHECK_ARG(path != NULL);
    ELLE_CHECK_ARG(n_params >= 0);
    ELLE_CHECK_ARG(n_params == 0 || (params != NULL && values != NULL));
    if (split != ELLE_SPLIT_TRAIN && split != ELLE_SPLIT_TEST)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_open: unknown split %d (0 = train, 1 = test)",
                  (int)split);
    /* every parameter is checked before a byte is read */
    int coarse = 0;
    for (int i = 0; i < n_params; i++) {
        ELLE_TRY(elle__param_check(dataset_params, N_DATASET_PARAMS, (int)params[i], values[i],
                                   "elle_dataset_open_ex"));
        if (params[i] == ELLE_DATASET_PARAM_COARSE_LABELS)
            coarse = values[i] != 0;
    }
    if (coarse && strcmp(kind, "cifar100") != 0)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_open_ex: coarse_labels applies to cifar100 only, "
                               "not '%s'",
                  kind);
    elle_dataset *d = NULL;
    ELLE_TRY(open_kind(&d, kind, path, split, coarse));
    for (int i = 0; i < n_params; i++) {
        if (params[i] == ELLE_DATASET_PARAM_COARSE_LABELS)
            continue;
        int rc = elle_dataset_set_param(d, params[i], values[i]);
        if (rc < 0) {
            elle_dataset_free(d);
            return rc;
        }
    }
    *out = d;
    return ELLE_OK;
}

int elle_dataset_open_idx(elle_dataset **out, const char *images_path, const char *labels_path)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(images_path != NULL);
    ELLE_CHECK_ARG(labels_path != NULL);
    elle__dstore *store = NULL;
    ELLE_TRY(elle__load_idx(&store, images_path, labels_path, 0));
    return elle__dataset_wrap(out, store, "idx", 0);
}

int elle_dataset_open_npy(elle_dataset **out, const char *images_path, const char *labels_path,
                          elle_layout layout)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(images_path != NULL);
    ELLE_CHECK_ARG(labels_path != NULL);
    if (layout != ELLE_LAYOUT_AUTO && layout != ELLE_LAYOUT_NCHW && layout != ELLE_LAYOUT_NHWC)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_dataset_open_npy: unknown layout %d (0 = auto, 1 = NCHW, 2 = NHWC)",
                  (int)layout);
    elle__dstore *store = NULL;
    ELLE_TRY(elle__load_npy(&store, images_path, labels_path, layout));
    return elle__dataset_wrap(out, store, "npy", 0);
}

static int from_host(elle_dataset **out, const void *images, int is_float,
                     const int32_t *labels, int64_t n, int64_t c, int64_t h, int64_t w,
                     int64_t num_classes, const char *who)
{
    const float *images_f = is_float ? images : NULL;
    if (n < 1 || c < 1 || h < 1 || w < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: sizes must be positive: n = %lld, c = %lld, h = %lld, w = %lld",
                  who, (long long)n, (long long)c, (long long)h, (long long)w);
    if (num_classes < 1 || num_classes > ELLE__DATA_MAX_CLASSES)
        ELLE_FAIL(ELLE_EINVAL, "%s: num_classes = %lld outside [1, %d]", who,
                  (long long)num_classes, ELLE__DATA_MAX_CLASSES);
    int64_t bytes = 0;
    /* a caller's sizes are an argument error, not a format error */
    ELLE_TRY(elle__dstore_check_dims(n, c, h, w, is_float ? 4 : 1, ELLE_EINVAL, who, &bytes));
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= num_classes)
            ELLE_FAIL(ELLE_EINVAL, "%s: label %lld = %d outside [0, %lld)", who, (long long)i,
                      (int)labels[i], (long long)num_classes);
    int64_t count = bytes / (is_float ? 4 : 1);
    if (images_f) {
        int64_t chw = count / n;
        for (int64_t i = 0; i < count; i++) {
            float v = images_f[i];
            if (!(v >= 0.0f && v <= 1.0f))
                ELLE_FAIL(ELLE_EINVAL,
                          "%s: image %lld, element %lld = %g is not in [0, 1] (images are "
                          "unnormalised; a model's normalisation layer does that)",
                          who, (long long)(i / chw), (long long)(i % chw), (double)v);
        }
    }
    elle__dstore *s = NULL;
    ELLE_TRY(elle__dstore_create(&s, n, c, h, w, is_float, NULL, who));
    memcpy(is_float ? (void *)s->f32 : (void *)s->u8, images, (size_t)bytes);
    memcpy(s->labels, labels, (size_t)n * sizeof *labels);
    elle__dstore_scan_labels(s);
    return elle__dataset_wrap(out, s, "host", num_classes);
}

int elle_dataset_from_host(elle_dataset **out, const float *images, const int32_t *labels,
                           int64_t n, int64_t c, int64_t h, int64_t w, int64_t num_classes)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(images != NULL);
    ELLE_CHECK_ARG(labels != NULL);
    return from_host(out, images, 1, labels, n, c, h, w, num_classes, "elle_dataset_from_host");
}

int elle_dataset_from_host_u8(elle_dataset **out, const uint8_t *images, const int32_t *labels,
                              int64_t n, int64_t c, int64_t h, int64_t w, int64_t num_classes)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(images != NULL);
    ELLE_CHECK_ARG(labels != NULL);
    return from_host(out, images, 0, labels, n, c, h, w, num_classes,
                     "elle_dataset_from_host_u8");
}

void elle_dataset_free(elle_dataset *d)
{
    if (!d)
        return;
    elle__dstore_unref(d->store);
    free(d->index);
    free(d->order);
    free(d);
}

/* ---- queries ---------------------------------------------------------------------- */

int64_t elle_dataset_size(const elle_dataset *d)
{
    return d ? d->n : -1;
}

int elle_dataset_shape(const elle_dataset *d, int64_t *c, int64_t *h, int64_t *w)
{
    ELLE_CHECK_ARG(d != NULL);
    if (c)
        *c = d->store->c;
    if (h)
        *h = d->store->h;
    if (w)
        *w = d->store->w;
    return ELLE_OK;
}

int64_t elle_dataset_num_classes(const elle_dataset *d)
{
    return d ? (int64_t)d->p[ELLE_DATASET_PARAM_NUM_CLASSES] : -1;
}

const char *elle_dataset_kind(const elle_dataset *d)
{
    return d ? d->kind : NULL;
}

size_t elle_dataset_memory_size(const elle_dataset *d)
{
    if (!d)
        return 0;
    const elle__dstore *s = d->store;
    size_t bytes = sizeof *d + sizeof *s;
    bytes += (size_t)(s->n * sample_floats(d)) * (s->is_float ? sizeof(float) : 1);
    bytes += (size_t)s->n * sizeof(int32_t);
    if (d->index)
        bytes += (size_t)d->n * sizeof(int64_t);
    if (d->order)
        bytes += (size_t)d->n * sizeof(int64_t);
    return bytes;
}

int elle_dataset_get(const elle_dataset *d, int64_t i, float *image_out, int32_t *label_out)
{
    ELLE_CHECK_ARG(d != NULL);
    if (i < 0 || i >= d->n)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_get: index %lld outside [0, %lld)", (long long)i,
                  (long long)d->n);
    int64_t k = store_index(d, i);
    if (image_out)
        elle__sample_to_float(d->store, k, NULL, image_out);
    if (label_out)
        *label_out = d->store->labels[k];
    return ELLE_OK;
}

/* ---- validation split ------------------------------------------------------------- */

int elle_dataset_split(const elle_dataset *d, int64_t val_size, uint64_t seed,
                       elle_dataset **train_out, elle_dataset **val_out)
{
    ELLE_CHECK_ARG(d != NULL);
    ELLE_CHECK_ARG(train_out != NULL);
    ELLE_CHECK_ARG(val_out != NULL);
    ELLE_CHECK_ARG(train_out != val_out);
    if (val_size < 1 || val_size >= d->n)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_dataset_split: val_size = %lld outside [1, %lld) for a dataset of %lld "
                  "samples",
                  (long long)val_size, (long long)d->n, (long long)d->n);
    int rc = ELLE_OK;
    int64_t n = d->n;
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    unsigned char *in_val = calloc((size_t)n, 1);
    int64_t *tr = malloc((size_t)(n - val_size) * sizeof *tr);
    int64_t *va = malloc((size_t)val_size * sizeof *va);
    elle_dataset *dt = NULL, *dv = NULL;
    if (!perm || !in_val || !tr || !va) {
        rc = elle__error_set(ELLE_ENOMEM, "elle_dataset_split: out of memory");
        goto cleanup;
    }
    /* the first val_size entries of a seeded shuffle are the held-out set;
     * both views keep the parent's order */
    elle__shuffle_prefix(perm, n, val_size, seed, 0, ELLE__RNG_DOMAIN_SPLIT);
    for (int64_t i = 0; i < val_size; i++)
        in_val[perm[i]] = 1;
    int64_t nt = 0, nv = 0;
    for (int64_t i = 0; i < n; i++) {
        if (in_val[i])
            va[nv++] = store_index(d, i);
        else
            tr[nt++] = store_index(d, i);
    }
    double classes = d->p[ELLE_DATASET_PARAM_NUM_CLASSES];
    double coarse = d->p[ELLE_DATASET_PARAM_COARSE_LABELS];
    atomic_fetch_add(&d->store->refs, 2);
    rc = dataset_new(&dt, d->store, tr, nt, d->kind, classes, coarse);
    tr = NULL; /* taken over, also on failure */
    if (rc < 0) {
        elle__dstore_unref(d->store);
        goto cleanup;
    }
    rc = dataset_new(&dv, d->store, va, nv, d->kind, classes, coarse);
    va = NULL;
    if (rc < 0)
        goto cleanup;
    *train_out = dt;
    *val_out = dv;
    dt = dv = NULL;
cleanup:
    elle_dataset_free(dt);
    elle_dataset_free(dv);
    free(perm);
    free(in_val);
    free(tr);
    free(va);
    return rc;
}

/* ---- batches ---------------------------------------------------------------------- */

int64_t elle_dataset_num_batches(const elle_dataset *d, int64_t batch_size)
{
    ELLE_CHECK_ARG(d != NULL);
    if (batch_size < 1)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_num_batches: batch_size = %lld must be >= 1",
                  (long long)batch_size);
    if (d->p[ELLE_DATASET_PARAM_DROP_LAST] != 0)
        return d->n / batch_size;
    return d->n / batch_size + (d->n % batch_size != 0);
}

int elle_dataset_batch(elle_dataset *d, int64_t epoch, int64_t batch_index, int64_t batch_size,
                       float *images_out, int32_t *labels_out, int64_t *n_out)
{
    ELLE_CHECK_ARG(d != NULL);
    ELLE_CHECK_ARG(images_out != NULL);
    if (batch_size < 1)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_batch: batch_size = %lld must be >= 1",
                  (long long)batch_size);
    if (epoch < 0 || epoch > (int64_t)UINT32_MAX)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_batch: epoch = %lld outside [0, 2^32)",
                  (long long)epoch);
    int64_t nb = elle_dataset_num_batches(d, batch_size);
    if (batch_index < 0 || batch_index >= nb)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_dataset_batch: batch_index = %lld outside [0, %lld) (%lld samples, "
                  "batch_size %lld%s)",
                  (long long)batch_index, (long long)nb, (long long)d->n, (long long)batch_size,
                  d->p[ELLE_DATASET_PARAM_DROP_LAST] != 0 ? ", drop_last" : "");
    double seed_d = d->p[ELLE_DATASET_PARAM_SEED];
    uint64_t seed = (uint64_t)seed_d;
    const int64_t *order = NULL;
    if (d->p[ELLE_DATASET_PARAM_SHUFFLE] != 0) {
        if (!d->order) {
            d->order = malloc((size_t)d->n * sizeof *d->order);
            if (!d->order)
                ELLE_FAIL(ELLE_ENOMEM, "elle_dataset_batch: out of memory for the order of %lld "
                                       "samples",
                          (long long)d->n);
            d->order_epoch = -1;
        }
        if (d->order_epoch != epoch || d->order_seed != seed_d) {
            elle__shuffle_prefix(d->order, d->n, d->n, seed, (uint32_t)epoch,
                                 ELLE__RNG_DOMAIN_SHUFFLE);
            d->order_epoch = epoch;
            d->order_seed = seed_d;
        }
        order = d->order;
    }
    const int pad = (int)d->p[ELLE_DATASET_PARAM_CROP_PADDING];
    const int flip = d->p[ELLE_DATASET_PARAM_FLIP] != 0;
    const int64_t start = batch_index * batch_size;
    const int64_t count = d->n - start < batch_size ? d->n - start : batch_size;
    const int64_t chw = sample_floats(d);
    const elle__dstore *s = d->store;
    const int64_t *index = d->index;
    /* samples are independent and each one's random numbers depend only on
     * (seed, epoch, sample), so any thread split gives the same batch */
#pragma omp parallel for schedule(static) if (count * chw >= (1 << 18))
    for (int64_t k = 0; k < count; k++) {
        int64_t sample = order ? order[start + k] : start + k;
        int64_t idx = index ? index[sample] : sample;
        elle__aug a = elle__aug_draw(seed, (uint32_t)epoch, sample, pad, flip);
        elle__sample_to_float(s, idx, &a, images_out + k * chw);
        if (labels_out)
            labels_out[k] = s->labels[idx];
    }
    if (n_out)
        *n_out = count;
    return ELLE_OK;
}

/* ---- parameters ------------------------------------------------------------------- */

int elle_dataset_set_param(elle_dataset *d, elle_dataset_param param, double value)
{
    ELLE_CHECK_ARG(d != NULL);
    ELLE_TRY(elle__param_check(dataset_params, N_DATASET_PARAMS, (int)param, value,
                               "elle_dataset_set_param"));
    if (param == ELLE_DATASET_PARAM_COARSE_LABELS) {
        if (value == d->p[param])
            return ELLE_OK;
        ELLE_FAIL(ELLE_ESTATE, "elle_dataset_set_param: coarse_labels is chosen when the "
                               "dataset is opened (elle_dataset_open_ex)");
    }
    if (param == ELLE_DATASET_PARAM_NUM_CLASSES && value < (double)d->max_label + 1)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_dataset_set_param: num_classes = %g is below max label + 1 = %d", value,
                  (int)d->max_label + 1);
    d->p[param] = value;
    return ELLE_OK;
}

int elle_dataset_get_param(const elle_dataset *d, elle_dataset_param param, double *out)
{
    ELLE_CHECK_ARG(d != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(dataset_params, N_DATASET_PARAMS, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_get_param: unknown parameter %d", (int)param);
    *out = d->p[param];
    return ELLE_OK;
}

int elle_dataset_param_bounds(elle_dataset_param param, double *lo, double *hi)
{
    ELLE_CHECK_ARG(lo != NULL);
    ELLE_CHECK_ARG(hi != NULL);
    const elle__param_spec *s = elle__param_find(dataset_params, N_DATASET_PARAMS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_dataset_param_bounds: unknown parameter %d", (int)param);
    *lo = s->lo;
    *hi = s->hi;
    return ELLE_OK;
}

int elle_dataset_param_from_name(const char *name, elle_dataset_param *out)
{
    int id = 0;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(dataset_params, N_DATASET_PARAMS, name, &id,
                                "elle_dataset_param_from_name"));
    *out = (elle_dataset_param)id;
    return ELLE_OK;
}

const char *elle_dataset_param_name(elle_dataset_param param)
{
    const elle__param_spec *s = elle__param_find(dataset_params, N_DATASET_PARAMS, (int)param);
    return s ? s->name : NULL;
}

const char *elle_split_name(elle_split split)
{
    switch (split) {
    case ELLE_SPLIT_TRAIN: return "train";
    case ELLE_SPLIT_TEST: return "test";
    default: return NULL;
    }
}

int elle_split_from_name(const char *name, elle_split *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (strcmp(name, "train") == 0)
        *out = ELLE_SPLIT_TRAIN;
    else if (strcmp(name, "test") == 0)
        *out = ELLE_SPLIT_TEST;
    else
        ELLE_FAIL(ELLE_EINVAL, "elle_split_from_name: unknown split '%s' (train, test)", name);
    return ELLE_OK;
}
