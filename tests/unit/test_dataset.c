/*
 * Datasets (include/elle/dataset.h, lib/data): every loader on tiny files
 * written here in the exact on-disk format (pixel values are a known
 * function of (image, channel, row, column), so each value and its position
 * is checked), hostile input (wrong magic, truncation at every byte, bad
 * headers, dimension overflow, labels out of range, count mismatches), the
 * validation split, shuffling, augmentation, batching and parameters.
 *
 * One test reads the real Fashion-MNIST from Debian's dataset-fashion-mnist
 * package and skips when it is not installed.
 *
 * Files live in a fresh directory under $TMPDIR (or /tmp), removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp, nftw */
#endif

#include "elle_test.h"

#include <errno.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <matio.h>
#include <omp.h>
#include <zlib.h>

static char g_dir[512];

/* ---- helpers ------------------------------------------------------------------ */

/* "<g_dir>/<name>" in one of a few rotating buffers. */
static const char *tpath(const char *name)
{
    static char bufs[8][768];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

/* "<g_dir>/<name>" in a buffer of its own that later tpath() calls leave
 * alone (for paths kept across many calls); 32 slots, reused round-robin. */
static const char *tkeep(const char *name)
{
    static char bufs[32][768];
    static int next;
    char *b = bufs[next++ % 32];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void make_dir(const char *name)
{
    int rc = mkdir(tpath(name), 0700);
    assert_true(rc == 0 || errno == EEXIST);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len)
        assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb9");
    assert_non_null(gz);
    if (len)
        assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long size = ftell(fp);
    assert_true(size >= 0);
    assert_int_equal(fseek(fp, 0, SEEK_SET), 0);
    unsigned char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *len = (size_t)size;
    return buf;
}

/* Known pixel value of image n, channel c, row y, column x. */
static uint8_t pix(int64_t n, int64_t c, int64_t y, int64_t x)
{
    return (uint8_t)((n * 37 + c * 101 + y * 7 + x * 13 + 5) & 255);
}

/* A failure must have code `want` (0: ELLE_EFORMAT or ELLE_EIO), leave a
 * message naming `path` (when not NULL) and containing `frag` (when not NULL). */
static void expect_err_at(int rc, int want, const char *path, const char *frag, const char *expr,
                          const char *file, int line)
{
    char msg[1100];
    snprintf(msg, sizeof msg, "%s", elle_error_last()->message);
    int ok_code = want ? rc == want : (rc == ELLE_EFORMAT || rc == ELLE_EIO);
    if (!ok_code) {
        print_error("%s returned %s, expected %s (message: %s)\n", expr, elle_status_name(rc),
                    want ? elle_status_name(want) : "ELLE_EFORMAT or ELLE_EIO", msg);
        _fail(file, line);
    }
    if (msg[0] == '\0') {
        print_error("%s failed without a message\n", expr);
        _fail(file, line);
    }
    if (path && !strstr(msg, path)) {
        print_error("%s: message does not name %s: %s\n", expr, path, msg);
        _fail(file, line);
    }
    if (frag && !strstr(msg, frag)) {
        print_error("%s: message lacks \"%s\": %s\n", expr, frag, msg);
        _fail(file, line);
    }
}
#define expect_err(expr, want, path, frag) \
    expect_err_at((expr), (want), (path), (frag), #expr, __FILE__, __LINE__)

/* Every sample of d: pixel (c, y, x) of sample i equals pix(first + i, ...)
 * / 255 exactly, and its label is labels[i]. */
static void check_samples(const elle_dataset *d, int64_t first, const int32_t *labels)
{
    int64_t c = 0, h = 0, w = 0;
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    float *img = malloc((size_t)(c * h * w) * sizeof *img);
    assert_non_null(img);
    for (int64_t i = 0; i < elle_dataset_size(d); i++) {
        int32_t label = -1;
        assert_elle_ok(elle_dataset_get(d, i, img, &label));
        assert_int_equal(label, labels[i]);
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++) {
                    float want = (float)pix(first + i, ch, y, x) / 255.0f;
                    float got = img[(ch * h + y) * w + x];
                    if (got != want) {
                        print_error("sample %lld (%lld, %lld, %lld): got %.9g, want %.9g\n",
                                    (long long)i, (long long)ch, (long long)y, (long long)x,
                                    (double)got, (double)want);
                        fail();
                    }
                }
    }
    free(img);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX image file bytes: n images of h x w with pix(i, 0, y, x). */
static unsigned char *idx_images(uint32_t n, uint32_t h, uint32_t w, size_t *len)
{
    *len = 16 + (size_t)n * h * w;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    put_be32(b, 0x00000803);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++)
                b[16 + ((size_t)i * h + y) * w + x] = pix(i, 0, y, x);
    return b;
}

static unsigned char *idx_labels(uint32_t n, const int32_t *labels, size_t *len)
{
    *len = 8 + n;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    put_be32(b, 0x00000801);
    put_be32(b + 4, n);
    for (uint32_t i = 0; i < n; i++)
        b[8 + i] = (unsigned char)labels[i];
    return b;
}

/* ---- fixtures ------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/elle_test_dataset_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- IDX ------------------------------------------------------------------------ */

static const int32_t idx_lab[5] = {3, 0, 9, 7, 3};

static void test_idx_raw_and_gzip(void **state)
{
    (void)state;
    size_t il, ll;
    unsigned char *img = idx_images(5, 4, 3, &il);
    unsigned char *lab = idx_labels(5, idx_lab, &ll);
    write_bytes(tpath("i.idx"), img, il);
    write_bytes(tpath("l.idx"), lab, ll);
    /* gzip is recognised by its magic, whatever the name */
    write_gz(tpath("i.idx.raw"), img, il);
    write_gz(tpath("l.gz"), lab, ll);

    const char *pairs[4][2] = {{"i.idx", "l.idx"},
                               {"i.idx.raw", "l.gz"},
                               {"i.idx", "l.gz"},
                               {"i.idx.raw", "l.idx"}};
    for (int k = 0; k < 4; k++) {
        elle_dataset *d = NULL;
        assert_elle_ok(elle_dataset_open_idx(&d, tpath(pairs[k][0]), tpath(pairs[k][1])));
        assert_non_null(d);
        assert_int_equal(elle_dataset_size(d), 5);
        int64_t c = 0, h = 0, w = 0;
        assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
        assert_int_equal(c, 1);
        assert_int_equal(h, 4);
        assert_int_equal(w, 3);
        assert_int_equal(elle_dataset_num_classes(d), 10); /* max label 9 + 1 */
        assert_string_equal(elle_dataset_kind(d), "idx");
        check_samples(d, 0, idx_lab);
        /* stored as one byte per pixel */
        assert_true(elle_dataset_memory_size(d) < 5 * 12 * sizeof(float) + 1024);
        assert_true(elle_dataset_memory_size(d) >= 5 * 12);
        elle_dataset_free(d);
    }

    /* MNIST layout: train gzipped, test raw with the '.' spelling */
    make_dir("mnist");
    write_gz(tpath("mnist/train-images-idx3-ubyte.gz"), img, il);
    write_gz(tpath("mnist/train-labels-idx1-ubyte.gz"), lab, ll);
    write_bytes(tpath("mnist/t10k-images.idx3-ubyte"), img, il);
    write_bytes(tpath("mnist/t10k-labels.idx1-ubyte"), lab, ll);
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_open(&d, "fashion-mnist", tpath("mnist"), ELLE_SPLIT_TRAIN));
    assert_int_equal(elle_dataset_size(d), 5);
    assert_string_equal(elle_dataset_kind(d), "fashion-mnist");
    assert_int_equal(elle_dataset_num_classes(d), 10);
    check_samples(d, 0, idx_lab);
    elle_dataset_free(d);
    d = NULL;
    assert_elle_ok(elle_dataset_open(&d, "mnist", tpath("mnist"), ELLE_SPLIT_TEST));
    assert_string_equal(elle_dataset_kind(d), "mnist");
    check_samples(d, 0, idx_lab);
    elle_dataset_free(d);

    /* a label outside 0..9 is an error for MNIST (not for a generic IDX pair) */
    int32_t bad[5] = {3, 0, 10, 7, 3};
    unsigned char *blab = idx_labels(5, bad, &ll);
    write_bytes(tpath("mnist/t10k-labels.idx1-ubyte"), blab, ll);
    d = NULL;
    expect_err(elle_dataset_open(&d, "mnist", tpath("mnist"), ELLE_SPLIT_TEST), ELLE_EFORMAT,
               "t10k-labels.idx1-ubyte", "label 2 = 10 outside [0, 10)");
    assert_null(d);
    assert_elle_ok(
        elle_dataset_open_idx(&d, tpath("i.idx"), tpath("mnist/t10k-labels.idx1-ubyte")));
    assert_int_equal(elle_dataset_num_classes(d), 11);
    elle_dataset_free(d);

    /* missing files and directories */
    d = NULL;
    expect_err(elle_dataset_open(&d, "mnist", tpath("nowhere"), ELLE_SPLIT_TRAIN), ELLE_EIO,
               "nowhere", NULL);
    make_dir("empty");
    expect_err(elle_dataset_open(&d, "mnist", tpath("empty"), ELLE_SPLIT_TRAIN), ELLE_EIO,
               "empty", "train-images-idx3-ubyte");
    expect_err(elle_dataset_open(&d, "mnist", tpath("i.idx"), ELLE_SPLIT_TRAIN), ELLE_EIO,
               "i.idx", "not a directory");
    expect_err(elle_dataset_open_idx(&d, tpath("missing"), tpath("l.idx")), ELLE_EIO,
               tpath("missing"), NULL);
    expect_err(elle_dataset_open_idx(&d, g_dir, tpath("l.idx")), ELLE_EIO, g_dir,
               "not a regular file");
    assert_null(d);
    free(img);
    free(lab);
    free(blab);
}

/* Each proper prefix of `full` written to `path` must make `open` fail
 * cleanly (`skip_ok` returns 1 for lengths that are valid files). */
typedef int (*open_fn)(elle_dataset **out, const char *path);

static void fuzz_prefixes(const unsigned char *full, size_t len, const char *path, open_fn open,
                          int (*valid_len)(size_t))
{
    /* grow one file a byte at a time: rewriting it would free and discard
     * disk blocks thousands of times, which is slow on some filesystems */
    write_bytes(path, full, 0);
    for (size_t cut = 0; cut <= len; cut++) {
        if (cut > 0) {
            FILE *fp = fopen(path, "ab");
            assert_non_null(fp);
            assert_int_equal(fputc(full[cut - 1], fp), full[cut - 1]);
            assert_int_equal(fclose(fp), 0);
        }
        elle_dataset *d = NULL;
        elle_error_clear();
        int rc = open(&d, path);
        if (cut == len || (valid_len && valid_len(cut))) {
            if (rc != ELLE_OK) {
                print_error("length %zu of %zu: %s\n", cut, len, elle_error_last()->message);
                fail();
            }
            assert_non_null(d);
            elle_dataset_free(d);
            continue;
        }
        if (rc != ELLE_EFORMAT && rc != ELLE_EIO) {
            print_error("prefix of %zu of %zu bytes: got %s (%s)\n", cut, len,
                        elle_status_name(rc), elle_error_last()->message);
            fail();
        }
        if (!strstr(elle_error_last()->message, path)) {
            print_error("prefix of %zu bytes: message does not name the file: %s\n", cut,
                        elle_error_last()->message);
            fail();
        }
        assert_null(d);
    }
}

static const char *g_other; /* the partner file for the fuzzed one */

static int open_idx_images(elle_dataset **out, const char *path)
{
    return elle_dataset_open_idx(out, path, g_other);
}

static int open_idx_labels(elle_dataset **out, const char *path)
{
    return elle_dataset_open_idx(out, g_other, path);
}

static void test_idx_truncation(void **state)
{
    (void)state;
    size_t il, ll, gl;
    unsigned char *img = idx_images(5, 4, 3, &il);
    unsigned char *lab = idx_labels(5, idx_lab, &ll);
    write_bytes(tpath("ok-i.idx"), img, il);
    write_bytes(tpath("ok-l.idx"), lab, ll);

    g_other = tkeep("ok-l.idx");
    fuzz_prefixes(img, il, tpath("cut-i.idx"), open_idx_images, NULL);
    g_other = tkeep("ok-i.idx");
    fuzz_prefixes(lab, ll, tpath("cut-l.idx"), open_idx_labels, NULL);

    /* gzip: every prefix of the compressed bytes, including those that hold
     * all the data but not the CRC trailer */
    write_gz(tpath("full.gz"), img, il);
    unsigned char *gz = slurp(tpath("full.gz"), &gl);
    g_other = tkeep("ok-l.idx");
    fuzz_prefixes(gz, gl, tpath("cut-i.gz"), open_idx_images, NULL);
    free(gz);
    write_gz(tpath("full.gz"), lab, ll);
    gz = slurp(tpath("full.gz"), &gl);
    g_other = tkeep("ok-i.idx");
    fuzz_prefixes(gz, gl, tpath("cut-l.gz"), open_idx_labels, NULL);
    free(gz);

    /* the documented message for a truncated file */
    write_bytes(tpath("cut-i.idx"), img, 30);
    elle_dataset *d = NULL;
    expect_err(elle_dataset_open_idx(&d, tpath("cut-i.idx"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("cut-i.idx"),
               "truncated: header says 5 images of 4x3 (76 bytes with the header), file has 30");
    write_gz(tpath("cut-i.gz"), img, 30);
    expect_err(elle_dataset_open_idx(&d, tpath("cut-i.gz"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("cut-i.gz"), "file has 30 after decompression");

    /* a byte too many */
    unsigned char *longer = malloc(il + 1);
    assert_non_null(longer);
    memcpy(longer, img, il);
    longer[il] = 0;
    write_bytes(tpath("long.idx"), longer, il + 1);
    expect_err(elle_dataset_open_idx(&d, tpath("long.idx"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("long.idx"), "trailing data");
    write_gz(tpath("long.gz"), longer, il + 1);
    expect_err(elle_dataset_open_idx(&d, tpath("long.gz"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("long.gz"), "trailing data");

    /* corrupt deflate data: flip a byte in the middle of the stream */
    write_gz(tpath("full.gz"), img, il);
    gz = slurp(tpath("full.gz"), &gl);
    gz[gl / 2] ^= 0x5a;
    gz[gl / 2 + 1] ^= 0xa5;
    write_bytes(tpath("bad.gz"), gz, gl);
    expect_err(elle_dataset_open_idx(&d, tpath("bad.gz"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("bad.gz"), NULL);
    /* a wrong CRC only: the data inflate fine, the check fails */
    free(gz);
    write_gz(tpath("full.gz"), img, il);
    gz = slurp(tpath("full.gz"), &gl);
    gz[gl - 8] ^= 1; /* CRC32 of the trailer */
    write_bytes(tpath("crc.gz"), gz, gl);
    expect_err(elle_dataset_open_idx(&d, tpath("crc.gz"), tpath("ok-l.idx")), ELLE_EFORMAT,
               tpath("crc.gz"), NULL);
    assert_null(d);
    free(gz);
    free(longer);
    free(img);
    free(lab);
}

static void test_idx_bad_headers(void **state)
{
    (void)state;
    size_t il, ll;
    unsigned char *img = idx_images(5, 4, 3, &il);
    unsigned char *lab = idx_labels(5, idx_lab, &ll);
    write_bytes(tpath("hl.idx"), lab, ll);
    elle_dataset *d = NULL;
    unsigned char *b = malloc(il);
    assert_non_null(b);

#define BAD_IMAGES(frag)                                                                     \
    do {                                                                                     \
        write_bytes(tpath("h.idx"), b, il);                                                  \
        expect_err(elle_dataset_open_idx(&d, tpath("h.idx"), tpath("hl.idx")), ELLE_EFORMAT, \
                   tpath("h.idx"), frag);                                                    \
        assert_null(d);                                                                      \
        memcpy(b, img, il);                                                                  \
    } while (0)

    memcpy(b, img, il);
    put_be32(b, 0x08030000); /* byte-swapped magic */
    BAD_IMAGES("wrong magic 0x08030000");
    put_be32(b, 0x00000801); /* a label file given as images */
    BAD_IMAGES("wrong magic 0x00000801");
    put_be32(b, 0x00000d03); /* float elements */
    BAD_IMAGES("element type 0x0d");
    put_be32(b + 4, 0xffffffffu); /* dimension overflow: 2^32-1 images of 2^16-1 squared */
    put_be32(b + 8, 0xffff);
    put_be32(b + 12, 0xffff);
    BAD_IMAGES("limit");
    put_be32(b + 8, 0x10000000); /* one huge dimension */
    BAD_IMAGES("dimension above");
    put_be32(b + 4, 0x40000000); /* product overflows no int64 but the cap */
    put_be32(b + 8, 0x8000);
    put_be32(b + 12, 0x8000);
    BAD_IMAGES("limit");
    put_be32(b + 4, 0); /* no images */
    BAD_IMAGES("empty");

    /* the labels file */
    unsigned char *lb = malloc(ll);
    assert_non_null(lb);
    write_bytes(tpath("hi.idx"), img, il);
    memcpy(lb, lab, ll);
    put_be32(lb, 0x00000803);
    write_bytes(tpath("hl2.idx"), lb, ll);
    expect_err(elle_dataset_open_idx(&d, tpath("hi.idx"), tpath("hl2.idx")), ELLE_EFORMAT,
               tpath("hl2.idx"), "wrong magic");
    /* count mismatch: 4 labels for 5 images */
    size_t ll4;
    unsigned char *lab4 = idx_labels(4, idx_lab, &ll4);
    write_bytes(tpath("hl4.idx"), lab4, ll4);
    expect_err(elle_dataset_open_idx(&d, tpath("hi.idx"), tpath("hl4.idx")), ELLE_EFORMAT,
               tpath("hi.idx"), "has 5 images");
    assert_true(strstr(elle_error_last()->message, "has 4 labels") != NULL);
    assert_true(strstr(elle_error_last()->message, "disagree") != NULL);
    assert_null(d);
#undef BAD_IMAGES
    free(lab4);
    free(lb);
    free(b);
    free(img);
    free(lab);
}

/* ---- CIFAR ---------------------------------------------------------------------- */

/* Records for images first .. first+m-1 with the given label bytes. */
static unsigned char *cifar_records(int64_t first, int m, int label_bytes,
                                    const unsigned char *label_of, size_t *len)
{
    size_t rec = (size_t)label_bytes + 3072;
    *len = rec * (size_t)m;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < m; i++) {
        unsigned char *r = b + rec * (size_t)i;
        for (int k = 0; k < label_bytes; k++)
            r[k] = label_of[i * label_bytes + k];
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    r[label_bytes + (c * 32 + y) * 32 + x] = pix(first + i, c, y, x);
    }
    return b;
}

static void test_cifar10(void **state)
{
    (void)state;
    make_dir("c10");
    make_dir("c10/cifar-10-batches-bin");
    int32_t labels[10];
    for (int f = 0; f < 5; f++) {
        unsigned char lb[2] = {(unsigned char)((f * 2 + 3) % 10),
                               (unsigned char)((f * 2 + 4) % 10)};
        labels[2 * f] = lb[0];
        labels[2 * f + 1] = lb[1];
        size_t len;
        unsigned char *r = cifar_records(2 * f, 2, 1, lb, &len);
        char name[64];
        snprintf(name, sizeof name, "c10/cifar-10-batches-bin/data_batch_%d.bin", f + 1);
        if (f == 2)
            write_gz(tpath(name), r, len); /* any file may be gzipped */
        else
            write_bytes(tpath(name), r, len);
        free(r);
    }
    unsigned char tl[3] = {9, 0, 5};
    size_t len;
    unsigned char *r = cifar_records(0, 3, 1, tl, &len);
    write_bytes(tpath("c10/cifar-10-batches-bin/test_batch.bin"), r, len);
    free(r);

    elle_dataset *d = NULL;
    /* the parent folder or the unpacked one both work */
    assert_elle_ok(elle_dataset_open(&d, "cifar10", tpath("c10"), ELLE_SPLIT_TRAIN));
    assert_int_equal(elle_dataset_size(d), 10);
    int64_t c = 0, h = 0, w = 0;
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 32);
    assert_int_equal(w, 32);
    assert_int_equal(elle_dataset_num_classes(d), 10);
    assert_string_equal(elle_dataset_kind(d), "cifar10");
    check_samples(d, 0, labels);
    elle_dataset_free(d);
    d = NULL;
    assert_elle_ok(elle_dataset_open(&d, "cifar10", tpath("c10/cifar-10-batches-bin"),
                                     ELLE_SPLIT_TEST));
    int32_t tl32[3] = {9, 0, 5};
    assert_int_equal(elle_dataset_size(d), 3);
    check_samples(d, 0, tl32);
    elle_dataset_free(d);

    /* a missing batch file */
    d = NULL;
    assert_int_equal(rename(tpath("c10/cifar-10-batches-bin/data_batch_4.bin"),
                            tpath("c10/cifar-10-batches-bin/data_batch_4.old")),
                     0);
    expect_err(elle_dataset_open(&d, "cifar10", tpath("c10"), ELLE_SPLIT_TRAIN), ELLE_EIO,
               "data_batch_4.bin", "missing");
    assert_null(d);
    /* a label byte of 10 */
    unsigned char bad[2] = {4, 10};
    r = cifar_records(0, 2, 1, bad, &len);
    write_bytes(tpath("c10/cifar-10-batches-bin/data_batch_4.bin"), r, len);
    free(r);
    expect_err(elle_dataset_open(&d, "cifar10", tpath("c10"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT,
               "data_batch_4.bin", "record 1: label 10 outside [0, 10)");
    assert_null(d);
}

static void test_cifar100(void **state)
{
    (void)state;
    make_dir("c100");
    enum { M = 6 };
    unsigned char lb[2 * M];
    int32_t fine[M], coarse[M];
    for (int i = 0; i < M; i++) {
        coarse[i] = (i * 7 + 2) % 20;
        fine[i] = (i * 31 + 95) % 100;
        lb[2 * i] = (unsigned char)coarse[i];
        lb[2 * i + 1] = (unsigned char)fine[i];
    }
    size_t len;
    unsigned char *r = cifar_records(0, M, 2, lb, &len);
    write_bytes(tpath("c100/train.bin"), r, len);
    write_bytes(tpath("c100/test.bin"), r, 3 * 3074);

    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_open(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TRAIN));
    assert_int_equal(elle_dataset_size(d), M);
    assert_int_equal(elle_dataset_num_classes(d), 100);
    check_samples(d, 0, fine);
    double v = -1;
    assert_elle_ok(elle_dataset_get_param(d, ELLE_DATASET_PARAM_COARSE_LABELS, &v));
    assert_true(v == 0);
    /* chosen at open time only */
    expect_err(elle_dataset_set_param(d, ELLE_DATASET_PARAM_COARSE_LABELS, 1), ELLE_ESTATE, NULL,
               "coarse_labels");
    elle_dataset_free(d);

    elle_dataset_param p[2] = {ELLE_DATASET_PARAM_COARSE_LABELS, ELLE_DATASET_PARAM_SHUFFLE};
    double vals[2] = {1, 1};
    d = NULL;
    assert_elle_ok(
        elle_dataset_open_ex(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TRAIN, p, vals, 2));
    assert_int_equal(elle_dataset_num_classes(d), 20);
    check_samples(d, 0, coarse);
    assert_elle_ok(elle_dataset_get_param(d, ELLE_DATASET_PARAM_COARSE_LABELS, &v));
    assert_true(v == 1);
    assert_elle_ok(elle_dataset_get_param(d, ELLE_DATASET_PARAM_SHUFFLE, &v));
    assert_true(v == 1);
    elle_dataset_free(d);
    d = NULL;
    assert_elle_ok(elle_dataset_open(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TEST));
    assert_int_equal(elle_dataset_size(d), 3);
    check_samples(d, 0, fine);
    elle_dataset_free(d);

    /* coarse labels are a CIFAR-100 option; bad parameters fail before reading */
    d = NULL;
    expect_err(elle_dataset_open_ex(&d, "cifar10", tpath("c100"), ELLE_SPLIT_TRAIN, p, vals, 1),
               ELLE_EINVAL, NULL, "cifar100 only");
    vals[1] = 2;
    expect_err(elle_dataset_open_ex(&d, "cifar100", tpath("nonexistent"), ELLE_SPLIT_TRAIN, p,
                                    vals, 2),
               ELLE_EINVAL, NULL, "shuffle");
    expect_err(elle_dataset_open_ex(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TRAIN, NULL, NULL,
                                    1),
               ELLE_EINVAL, NULL, NULL);
    assert_null(d);

    /* both label bytes are range-checked */
    lb[2 * 3 + 1] = 100;
    free(r);
    r = cifar_records(0, M, 2, lb, &len);
    write_bytes(tpath("c100/train.bin"), r, len);
    expect_err(elle_dataset_open(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT,
               "train.bin", "record 3: label out of range: coarse 3 (must be < 20), fine 100");
    lb[2 * 3 + 1] = 0;
    lb[2 * 4] = 20;
    free(r);
    r = cifar_records(0, M, 2, lb, &len);
    write_bytes(tpath("c100/train.bin"), r, len);
    expect_err(elle_dataset_open(&d, "cifar100", tpath("c100"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT,
               "train.bin", "coarse 20");
    assert_null(d);
    free(r);
}

static int cifar10_whole_records(size_t len)
{
    return len > 0 && len % 3073 == 0;
}

static int open_cifar_file(elle_dataset **out, const char *path)
{
    /* the directory loader on a folder holding just test_batch.bin */
    (void)path;
    return elle_dataset_open(out, "cifar10", g_other, ELLE_SPLIT_TEST);
}

static int never_valid(size_t len)
{
    (void)len;
    return 0;
}

static void test_cifar_truncation(void **state)
{
    (void)state;
    make_dir("cfz");
    unsigned char lb[2] = {1, 8};
    size_t len, gl;
    unsigned char *r = cifar_records(0, 2, 1, lb, &len);
    g_other = tkeep("cfz");
    /* every prefix: whole records are valid smaller files, anything else fails */
    fuzz_prefixes(r, len, tpath("cfz/test_batch.bin"), open_cifar_file, cifar10_whole_records);
    /* gzip: every proper prefix of the stream fails */
    write_gz(tpath("cfz.gz"), r, len);
    unsigned char *gz = slurp(tpath("cfz.gz"), &gl);
    fuzz_prefixes(gz, gl, tpath("cfz/test_batch.bin"), open_cifar_file, never_valid);
    free(gz);
    /* the message for a partial record */
    write_bytes(tpath("cfz/test_batch.bin"), r, 5000);
    elle_dataset *d = NULL;
    expect_err(elle_dataset_open(&d, "cifar10", tpath("cfz"), ELLE_SPLIT_TEST), ELLE_EFORMAT,
               "test_batch.bin", "5000 bytes is not a whole, non-zero number of 3073-byte records");
    assert_null(d);
    free(r);
}

/* ---- SVHN ----------------------------------------------------------------------- */

/* An SVHN-style MAT 5 file: X (h x w x c x n uint8, column-major, X(r, col,
 * ch, i) = pix(i, ch, r, col)) and y (n labels of class yclass). */
static void write_svhn(const char *path, int64_t h, int64_t w, int64_t c, int64_t n,
                       const double *labels, enum matio_classes yclass, int compress,
                       const char *xname, const char *yname, int64_t ny)
{
    size_t total = (size_t)(h * w * c * n);
    uint8_t *X = malloc(total);
    assert_non_null(X);
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t col = 0; col < w; col++)
                for (int64_t r = 0; r < h; r++)
                    X[r + h * (col + w * (ch + c * i))] = pix(i, ch, r, col);
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    assert_non_null(mat);
    size_t xd[4] = {(size_t)h, (size_t)w, (size_t)c, (size_t)n};
    matvar_t *xv = Mat_VarCreate(xname, MAT_C_UINT8, MAT_T_UINT8, 4, xd, X, 0);
    assert_non_null(xv);
    enum matio_compression comp = compress ? MAT_COMPRESSION_ZLIB : MAT_COMPRESSION_NONE;
    assert_int_equal(Mat_VarWrite(mat, xv, comp), 0);
    Mat_VarFree(xv);
    size_t yd[2] = {(size_t)ny, 1};
    double yd_buf[64];
    uint8_t yu_buf[64];
    assert_true(ny <= 64);
    for (int64_t i = 0; i < ny; i++) {
        yd_buf[i] = labels[i];
        yu_buf[i] = (uint8_t)labels[i];
    }
    matvar_t *yv = yclass == MAT_C_DOUBLE
                       ? Mat_VarCreate(yname, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, yd, yd_buf, 0)
                       : Mat_VarCreate(yname, MAT_C_UINT8, MAT_T_UINT8, 2, yd, yu_buf, 0);
    assert_non_null(yv);
    assert_int_equal(Mat_VarWrite(mat, yv, comp), 0);
    Mat_VarFree(yv);
    assert_int_equal(Mat_Close(mat), 0);
    free(X);
}

static void test_svhn(void **state)
{
    (void)state;
    make_dir("svhn");
    const double y[5] = {10, 1, 5, 9, 10};
    const int32_t want[5] = {0, 1, 5, 9, 0}; /* 10 is the digit 0 */
    write_svhn(tpath("svhn/train_32x32.mat"), 32, 32, 3, 5, y, MAT_C_DOUBLE, 0, "X", "y", 5);
    write_svhn(tpath("svhn/test_32x32.mat"), 32, 32, 3, 5, y, MAT_C_UINT8, 1, "X", "y", 5);
    for (int split = 0; split < 2; split++) {
        elle_dataset *d = NULL;
        assert_elle_ok(elle_dataset_open(&d, "svhn", tpath("svhn"), (elle_split)split));
        assert_int_equal(elle_dataset_size(d), 5);
        int64_t c = 0, h = 0, w = 0;
        assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
        assert_int_equal(c, 3);
        assert_int_equal(h, 32);
        assert_int_equal(w, 32);
        assert_int_equal(elle_dataset_num_classes(d), 10);
        assert_string_equal(elle_dataset_kind(d), "svhn");
        /* pixel (ch, row, col) of image i is X(row, col, ch, i) */
        check_samples(d, 0, want);
        elle_dataset_free(d);
    }

    elle_dataset *d = NULL;
    const char *p = tkeep("svhn/train_32x32.mat");
    double bad[5] = {10, 1, 11, 9, 10};
    write_svhn(p, 32, 32, 3, 5, bad, MAT_C_DOUBLE, 0, "X", "y", 5);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "label y(3) = 11 outside 1..10");
    bad[2] = 0;
    write_svhn(p, 32, 32, 3, 5, bad, MAT_C_DOUBLE, 1, "X", "y", 5);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "y(3) = 0");
    bad[2] = 2.5;
    write_svhn(p, 32, 32, 3, 5, bad, MAT_C_DOUBLE, 0, "X", "y", 5);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "2.5");
    write_svhn(p, 32, 32, 3, 5, y, MAT_C_DOUBLE, 0, "X", "y", 4);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "X has 5 images, y has 4 elements");
    write_svhn(p, 32, 32, 3, 5, y, MAT_C_DOUBLE, 0, "X", "labels", 5);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "'y'");
    write_svhn(p, 32, 32, 3, 5, y, MAT_C_DOUBLE, 0, "images", "y", 5);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               "'X'");
    /* X of the wrong class */
    {
        mat_t *mat = Mat_CreateVer(p, NULL, MAT_FT_MAT5);
        assert_non_null(mat);
        double xd[8] = {0};
        size_t dims[4] = {2, 2, 2, 1};
        matvar_t *xv = Mat_VarCreate("X", MAT_C_DOUBLE, MAT_T_DOUBLE, 4, dims, xd, 0);
        assert_int_equal(Mat_VarWrite(mat, xv, MAT_COMPRESSION_NONE), 0);
        Mat_VarFree(xv);
        Mat_Close(mat);
        expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT,
                   p, "X is a double array, expected real uint8");
    }
    write_bytes(p, "this is not a MATLAB file at all, just text....................", 64);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EFORMAT, p,
               NULL);
    assert_int_equal(unlink(p), 0);
    expect_err(elle_dataset_open(&d, "svhn", tpath("svhn"), ELLE_SPLIT_TRAIN), ELLE_EIO, p, NULL);
    assert_null(d);
}

static int open_svhn_file(elle_dataset **out, const char *path)
{
    (void)path;
    return elle_dataset_open(out, "svhn", g_other, ELLE_SPLIT_TRAIN);
}

/* libmatio parses the container; every truncation of a small file, plain
 * and compressed, must still give a clean error. */
static void test_svhn_truncation(void **state)
{
    (void)state;
    make_dir("svfz");
    const double y[2] = {3, 10};
    for (int compress = 0; compress < 2; compress++) {
        write_svhn(tpath("svfz.mat"), 4, 3, 3, 2, y, MAT_C_DOUBLE, compress, "X", "y", 2);
        size_t len;
        unsigned char *b = slurp(tpath("svfz.mat"), &len);
        g_other = tkeep("svfz");
        fuzz_prefixes(b, len, tpath("svfz/train_32x32.mat"), open_svhn_file, never_valid);
        free(b);
    }
}

/* ---- .npy ----------------------------------------------------------------------- */

/* A .npy file: version `major`, header dict `dict` (padded as numpy does
 * unless pad is 0), then `data`. */
static void write_npy(const char *path, int major, const char *dict, const void *data,
                      size_t data_len, int pad)
{
    size_t dl = strlen(dict);
    size_t pre = major == 1 ? 10 : 12;
    size_t hlen = dl + 1;
    if (pad)
        hlen = ((pre + dl + 1 + 63) / 64) * 64 - pre;
    unsigned char *b = malloc(pre + hlen + data_len + 1);
    assert_non_null(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    if (major == 1) {
        b[8] = (unsigned char)hlen;
        b[9] = (unsigned char)(hlen >> 8);
    } else {
        for (int k = 0; k < 4; k++)
            b[8 + k] = (unsigned char)(hlen >> (8 * k));
    }
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', hlen - dl - 1);
    b[pre + hlen - 1] = '\n';
    if (data_len)
        memcpy(b + pre + hlen, data, data_len);
    write_bytes(path, b, pre + hlen + data_len);
    free(b);
}

/* int64 little-endian labels .npy */
static void write_labels_i64(const char *path, const int32_t *labels, int n)
{
    int64_t v[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        v[i] = labels[i];
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }", n);
    write_npy(path, 1, dict, v, (size_t)n * 8, 1);
}

static void test_npy(void **state)
{
    (void)state;
    enum { N = 3, H = 4, W = 5, C = 3 };
    const int32_t labels[N] = {2, 0, 7};
    elle_dataset *d = NULL;

    /* v1.0 uint8 (N, H, W, C), layout guessed, int64 labels */
    uint8_t nhwc[N * H * W * C];
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++)
                    nhwc[((n * H + y) * W + x) * C + c] = pix(n, c, y, x);
    write_npy(tpath("nhwc.npy"), 1,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5, 3), }", nhwc,
              sizeof nhwc, 1);
    write_labels_i64(tpath("l64.npy"), labels, N);
    assert_elle_ok(
        elle_dataset_open_npy(&d, tpath("nhwc.npy"), tpath("l64.npy"), ELLE_LAYOUT_AUTO));
    int64_t c = 0, h = 0, w = 0;
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 4);
    assert_int_equal(w, 5);
    assert_int_equal(elle_dataset_size(d), N);
    assert_int_equal(elle_dataset_num_classes(d), 8);
    assert_string_equal(elle_dataset_kind(d), "npy");
    check_samples(d, 0, labels);
    elle_dataset_free(d);
    d = NULL;
    /* NHWC named explicitly gives the same */
    assert_elle_ok(
        elle_dataset_open_npy(&d, tpath("nhwc.npy"), tpath("l64.npy"), ELLE_LAYOUT_NHWC));
    check_samples(d, 0, labels);
    elle_dataset_free(d);
    d = NULL;

    /* v2.0 float32 (N, C, H, W), int32 labels, double quotes, no trailing comma */
    float nchw[N * C * H * W];
    for (int n = 0; n < N; n++)
        for (int cc = 0; cc < C; cc++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    nchw[((n * C + cc) * H + y) * W + x] = (float)pix(n, cc, y, x) / 255.0f;
    write_npy(tpath("f32.npy"), 2,
              "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3, 3, 4, 5)}", nchw,
              sizeof nchw, 1);
    int32_t l32[N] = {2, 0, 7};
    write_npy(tpath("l32.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }",
              l32, sizeof l32, 1);
    assert_elle_ok(elle_dataset_open_npy(&d, tpath("f32.npy"), tpath("l32.npy"), ELLE_LAYOUT_AUTO));
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 4);
    assert_int_equal(w, 5);
    check_samples(d, 0, labels);
    /* float sources are kept as floats */
    assert_true(elle_dataset_memory_size(d) >= sizeof nchw);
    elle_dataset_free(d);
    d = NULL;

    /* v3.0 gray (N, H, W) uint8 with uint8 labels; Python 2 longs, odd spacing */
    uint8_t gray[N * H * W];
    for (int n = 0; n < N; n++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                gray[(n * H + y) * W + x] = pix(n, 0, y, x);
    write_npy(tpath("gray.npy"), 3,
              "{ 'shape' :(3L,4L,5L) ,'fortran_order':False,'descr':'|u1' }", gray, sizeof gray, 0);
    uint8_t l8[N] = {2, 0, 7};
    write_npy(tpath("l8.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", l8,
              sizeof l8, 1);
    assert_elle_ok(elle_dataset_open_npy(&d, tpath("gray.npy"), tpath("l8.npy"), ELLE_LAYOUT_NCHW));
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_int_equal(c, 1);
    assert_int_equal(h, 4);
    assert_int_equal(w, 5);
    check_samples(d, 0, labels);
    /* raise num_classes for a split that lacks the top class, never lower it */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_NUM_CLASSES, 10));
    assert_int_equal(elle_dataset_num_classes(d), 10);
    expect_err(elle_dataset_set_param(d, ELLE_DATASET_PARAM_NUM_CLASSES, 7), ELLE_EINVAL, NULL,
               "below max label + 1 = 8");
    elle_dataset_free(d);
    d = NULL;

    /* (N, 1, H, W) stays NCHW under auto; (N, H, W, 1) is read as NHWC */
    write_npy(tpath("n1hw.npy"), 1,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 1, 4, 5), }",
              gray, sizeof gray, 1);
    assert_elle_ok(elle_dataset_open_npy(&d, tpath("n1hw.npy"), tpath("l8.npy"), ELLE_LAYOUT_AUTO));
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_true(c == 1 && h == 4 && w == 5);
    check_samples(d, 0, labels);
    elle_dataset_free(d);
    d = NULL;
    write_npy(tpath("nhw1.npy"), 1,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5, 1), }",
              gray, sizeof gray, 1);
    assert_elle_ok(elle_dataset_open_npy(&d, tpath("nhw1.npy"), tpath("l8.npy"), ELLE_LAYOUT_AUTO));
    assert_elle_ok(elle_dataset_shape(d, &c, &h, &w));
    assert_true(c == 1 && h == 4 && w == 5);
    check_samples(d, 0, labels);
    elle_dataset_free(d);
    d = NULL;

    expect_err(elle_dataset_open_npy(&d, tpath("gray.npy"), tpath("l8.npy"), (elle_layout)7),
               ELLE_EINVAL, NULL, "layout");
    expect_err(elle_dataset_open_npy(&d, NULL, tpath("l8.npy"), ELLE_LAYOUT_AUTO), ELLE_EINVAL,
               NULL, NULL);
    assert_null(d);
}

static void test_npy_bad(void **state)
{
    (void)state;
    uint8_t data[3 * 4 * 5] = {0};
    uint8_t l8[3] = {1, 2, 3};
    write_npy(tpath("okl.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }",
              l8, 3, 1);
    elle_dataset *d = NULL;
    const char *p = tkeep("bad.npy");

#define BAD_NPY(dict, len, frag)                                                              \
    do {                                                                                      \
        write_npy(p, 1, (dict), data, (len), 1);                                              \
        expect_err(elle_dataset_open_npy(&d, p, tpath("okl.npy"), ELLE_LAYOUT_AUTO),          \
                   ELLE_EFORMAT, p, (frag));                                                  \
        assert_null(d);                                                                       \
    } while (0)

    BAD_NPY("{'descr': '|u1', 'fortran_order': True, 'shape': (3, 4, 5), }", 60, "fortran_order");
    BAD_NPY("{'descr': '|u1', 'shape': (3, 4, 5), }", 60, "missing key 'fortran_order'");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5), 'x': 1}", 60,
            "unknown key 'x'");
    BAD_NPY("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5)}", 60,
            "repeated key 'descr'");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5), ", 60, "expected");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, x, 5), }", 60,
            "non-negative integer");
    BAD_NPY("{'descr': '|u1', 'fortran_order': false, 'shape': (3, 4, 5), }", 60, "True or False");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5), } junk", 60,
            "only padding");
    BAD_NPY("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4, 5), }", 60,
            "dtype '<f8' is not supported");
    BAD_NPY("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4, 5), }", 60, "big-endian");
    BAD_NPY("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3, 4, 5), }", 60,
            "structured");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 20), }", 60,
            "expected (N, H, W)");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 6), }", 60, "truncated");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 4), }", 60,
            "trailing data");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (4000000000, 4000000000, 5), }",
            60, "elements");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999, 1, 1)}",
            60, "62 bits");
    BAD_NPY("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4, 5), }", 40, "disagree");
    BAD_NPY("{'descr': '|u1\\x', 'fortran_order': False, 'shape': (3, 4, 5), }", 60, "escapes");

    /* preamble problems */
    unsigned char raw[64];
    memcpy(raw, "\x93NUMPZ\x01\x00", 8);
    write_bytes(p, raw, 8);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "wrong magic");
    memcpy(raw, "\x93NUMPY\x04\x00\x10\x00", 10);
    write_bytes(p, raw, 10);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "version 4.0");
    memcpy(raw, "\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12);
    write_bytes(p, raw, 12);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "header length");

    /* float values must be finite and in [0, 1] */
    float f[2 * 2 * 2] = {0, 0.5f, 1, 0.25f, 0, 0, 0, 0};
    write_npy(tpath("okl2.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
              l8, 2, 1);
    f[5] = NAN;
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", f, sizeof f,
              1);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl2.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "image 1, element 1 = nan");
    f[5] = 1.5f;
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", f, sizeof f,
              1);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl2.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "1.5");
    f[5] = INFINITY;
    write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", f, sizeof f,
              1);
    expect_err(elle_dataset_open_npy(&d, p, tpath("okl2.npy"), ELLE_LAYOUT_AUTO), ELLE_EFORMAT, p,
               "inf");

    /* labels: negative, too large, wrong shape, float dtype, count mismatch */
    write_npy(tpath("okimg.npy"), 1,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4, 5), }",
              data, 60, 1);
    const char *lp = tkeep("badl.npy");
#define BAD_LABELS(dict, bytes, len, frag)                                                       \
    do {                                                                                        \
        write_npy(lp, 1, (dict), (bytes), (len), 1);                                            \
        expect_err(elle_dataset_open_npy(&d, tpath("okimg.npy"), lp, ELLE_LAYOUT_AUTO),         \
                   ELLE_EFORMAT, NULL, (frag));                                                 \
        assert_null(d);                                                                         \
    } while (0)
    int32_t li[3] = {1, -1, 2};
    BAD_LABELS("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", li, 12,
               "label 1 = -1 outside");
    int64_t ll[3] = {1, 2, 100000};
    BAD_LABELS("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ll, 24,
               "label 2 = 100000 outside");
    uint64_t lu[3] = {1, 2, UINT64_MAX};
    BAD_LABELS("{'descr': '<u8', 'fortran_order': False, 'shape': (3,), }", lu, 24,
               "18446744073709551615");
    BAD_LABELS("{'descr': '<i4', 'fortran_order': False, 'shape': (3, 1), }", li, 12,
               "expected (N,)");
    BAD_LABELS("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", li, 12,
               "label dtype '<f4'");
    BAD_LABELS("{'descr': '>i4', 'fortran_order': False, 'shape': (3,), }", li, 12, "big-endian");
    BAD_LABELS("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", li, 8,
               "3 images");
    int16_t ls[3] = {4, 5, 6};
    write_npy(lp, 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", ls, 6, 1);
    assert_elle_ok(elle_dataset_open_npy(&d, tpath("okimg.npy"), lp, ELLE_LAYOUT_AUTO));
    assert_int_equal(elle_dataset_num_classes(d), 7);
    elle_dataset_free(d);
#undef BAD_LABELS
#undef BAD_NPY
}

static int open_npy_images(elle_dataset **out, const char *path)
{
    return elle_dataset_open_npy(out, path, g_other, ELLE_LAYOUT_AUTO);
}

static int open_npy_labels(elle_dataset **out, const char *path)
{
    return elle_dataset_open_npy(out, g_other, path, ELLE_LAYOUT_AUTO);
}

static void test_npy_truncation(void **state)
{
    (void)state;
    uint8_t data[2 * 3 * 3];
    for (int i = 0; i < 18; i++)
        data[i] = (uint8_t)(i * 11);
    int64_t l64[2] = {1, 0};
    write_npy(tpath("tz-i.npy"), 1,
              "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3), }",
              data, sizeof data, 1);
    write_npy(tpath("tz-l.npy"), 2, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
              l64, sizeof l64, 1);
    size_t il, ll;
    unsigned char *img = slurp(tpath("tz-i.npy"), &il);
    unsigned char *lab = slurp(tpath("tz-l.npy"), &ll);
    g_other = tkeep("tz-l.npy");
    fuzz_prefixes(img, il, tpath("tz-cut.npy"), open_npy_images, NULL);
    g_other = tkeep("tz-i.npy");
    fuzz_prefixes(lab, ll, tpath("tz-cut.npy"), open_npy_labels, NULL);
    free(img);
    free(lab);
}

/* ---- host arrays ---------------------------------------------------------------- */

static void test_from_host(void **state)
{
    (void)state;
    enum { N = 4, C = 2, H = 3, W = 2 };
    float img[N * C * H * W];
    uint8_t img8[N * C * H * W];
    int32_t labels[N] = {1, 4, 0, 2};
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int k = ((n * C + c) * H + y) * W + x;
                    img8[k] = pix(n, c, y, x);
                    img[k] = (float)img8[k] / 255.0f;
                }
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, img, labels, N, C, H, W, 5));
    assert_int_equal(elle_dataset_size(d), N);
    assert_int_equal(elle_dataset_num_classes(d), 5);
    assert_string_equal(elle_dataset_kind(d), "host");
    check_samples(d, 0, labels);
    /* a copy: changing the caller's array changes nothing */
    img[0] = 0.123f;
    img8[0] = 77;
    check_samples(d, 0, labels);
    float one[C * H * W];
    expect_err(elle_dataset_get(d, N, one, NULL), ELLE_EINVAL, NULL, "index 4 outside [0, 4)");
    expect_err(elle_dataset_get(d, -1, one, NULL), ELLE_EINVAL, NULL, NULL);
    int32_t lab = -1;
    assert_elle_ok(elle_dataset_get(d, 1, NULL, &lab));
    assert_int_equal(lab, 4);
    elle_dataset_free(d);
    d = NULL;
    img[0] = (float)pix(0, 0, 0, 0) / 255.0f;
    img8[0] = pix(0, 0, 0, 0);
    assert_elle_ok(elle_dataset_from_host_u8(&d, img8, labels, N, C, H, W, 5));
    check_samples(d, 0, labels);
    assert_true(elle_dataset_memory_size(d) < sizeof img + 1024);
    elle_dataset_free(d);
    d = NULL;

    expect_err(elle_dataset_from_host(NULL, img, labels, N, C, H, W, 5), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_from_host(&d, NULL, labels, N, C, H, W, 5), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_from_host(&d, img, NULL, N, C, H, W, 5), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_from_host(&d, img, labels, 0, C, H, W, 5), ELLE_EINVAL, NULL,
               "must be positive");
    expect_err(elle_dataset_from_host(&d, img, labels, N, C, H, W, 4), ELLE_EINVAL, NULL,
               "label 1 = 4 outside [0, 4)");
    expect_err(elle_dataset_from_host(&d, img, labels, N, C, H, W, 0), ELLE_EINVAL, NULL,
               "num_classes");
    expect_err(elle_dataset_from_host(&d, img, labels, N, C, 1 << 20, 1 << 20, 5), ELLE_EINVAL,
               NULL, "dimension above");
    img[13] = NAN;
    expect_err(elle_dataset_from_host(&d, img, labels, N, C, H, W, 5), ELLE_EINVAL, NULL,
               "image 1, element 1 = nan");
    img[13] = -0.5f;
    expect_err(elle_dataset_from_host(&d, img, labels, N, C, H, W, 5), ELLE_EINVAL, NULL,
               "-0.5 is not in [0, 1]");
    labels[2] = -3;
    expect_err(elle_dataset_from_host_u8(&d, img8, labels, N, C, H, W, 5), ELLE_EINVAL, NULL,
               "label 2 = -3");
    assert_null(d);

    /* NULL handles */
    assert_int_equal(elle_dataset_size(NULL), -1);
    assert_int_equal(elle_dataset_num_classes(NULL), -1);
    assert_null(elle_dataset_kind(NULL));
    assert_int_equal(elle_dataset_memory_size(NULL), 0);
    expect_err(elle_dataset_shape(NULL, NULL, NULL, NULL), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_get(NULL, 0, one, NULL), ELLE_EINVAL, NULL, NULL);
    elle_dataset_free(NULL);
}

/* ---- a dataset whose pixels spell each sample's index --------------------------- */

/* n samples of (1, 1, 2): pixel 0 = i % 251, pixel 1 = i / 251; label i % 10. */
static elle_dataset *index_dataset(int64_t n)
{
    uint8_t *img = malloc((size_t)n * 2);
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    assert_non_null(img);
    assert_non_null(lab);
    for (int64_t i = 0; i < n; i++) {
        img[2 * i] = (uint8_t)(i % 251);
        img[2 * i + 1] = (uint8_t)(i / 251);
        lab[i] = (int32_t)(i % 10);
    }
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host_u8(&d, img, lab, n, 1, 1, 2, 10));
    free(img);
    free(lab);
    return d;
}

static int64_t decode_index(const float *px)
{
    long a = lrintf(px[0] * 255.0f), b = lrintf(px[1] * 255.0f);
    return (int64_t)b * 251 + a;
}

/* The original indices of d's samples, in d's order. */
static int64_t *sample_ids(const elle_dataset *d)
{
    int64_t n = elle_dataset_size(d);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    assert_non_null(ids);
    for (int64_t i = 0; i < n; i++) {
        float px[2];
        int32_t lab = -1;
        assert_elle_ok(elle_dataset_get(d, i, px, &lab));
        ids[i] = decode_index(px);
        assert_int_equal(lab, ids[i] % 10);
    }
    return ids;
}

static void test_split(void **state)
{
    (void)state;
    enum { N = 300, V = 37 };
    elle_dataset *d = index_dataset(N);
    elle_dataset *tr = NULL, *va = NULL;
    assert_elle_ok(elle_dataset_split(d, V, 42, &tr, &va));
    assert_int_equal(elle_dataset_size(tr), N - V);
    assert_int_equal(elle_dataset_size(va), V);
    assert_int_equal(elle_dataset_num_classes(va), 10);
    assert_string_equal(elle_dataset_kind(va), "host");
    int64_t c = 0, h = 0, w = 0;
    assert_elle_ok(elle_dataset_shape(va, &c, &h, &w));
    assert_true(c == 1 && h == 1 && w == 2);

    int64_t *ti = sample_ids(tr), *vi = sample_ids(va);
    int seen[N] = {0};
    for (int i = 0; i < N - V; i++) {
        assert_true(ti[i] >= 0 && ti[i] < N);
        seen[ti[i]]++;
        if (i)
            assert_true(ti[i] > ti[i - 1]); /* the parent's order */
    }
    for (int i = 0; i < V; i++) {
        assert_true(vi[i] >= 0 && vi[i] < N);
        seen[vi[i]]++;
        if (i)
            assert_true(vi[i] > vi[i - 1]);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1); /* disjoint and covering */
    /* not simply the first or last V samples */
    assert_true(vi[0] != 0 || vi[V - 1] != V - 1);
    assert_true(vi[0] != N - V);

    /* reproducible: same seed, same split, also from another handle */
    elle_dataset *d2 = index_dataset(N);
    elle_dataset *tr2 = NULL, *va2 = NULL;
    assert_elle_ok(elle_dataset_split(d2, V, 42, &tr2, &va2));
    int64_t *vi2 = sample_ids(va2);
    assert_memory_equal(vi, vi2, V * sizeof *vi);
    free(vi2);
    elle_dataset_free(tr2);
    elle_dataset_free(va2);
    /* another seed differs */
    assert_elle_ok(elle_dataset_split(d2, V, 43, &tr2, &va2));
    vi2 = sample_ids(va2);
    assert_true(memcmp(vi, vi2, V * sizeof *vi) != 0);
    free(vi2);
    elle_dataset_free(tr2);
    elle_dataset_free(va2);
    elle_dataset_free(d2);

    /* views share the storage: free the parent first, the views still work */
    elle_dataset_free(d);
    int64_t *ti_again = sample_ids(tr);
    assert_memory_equal(ti, ti_again, (N - V) * sizeof *ti);
    free(ti_again);

    /* a split of a view maps back to the original samples */
    elle_dataset *tt = NULL, *tv = NULL;
    assert_elle_ok(elle_dataset_split(tr, 10, 7, &tt, &tv));
    int64_t *tvi = sample_ids(tv);
    for (int i = 0; i < 10; i++) {
        int found = 0;
        for (int k = 0; k < N - V; k++)
            found |= ti[k] == tvi[i];
        assert_true(found);
    }
    free(tvi);
    elle_dataset_free(tr); /* any order */
    elle_dataset_free(tv);
    elle_dataset_free(tt);

    /* errors */
    elle_dataset *a = NULL, *b = NULL;
    expect_err(elle_dataset_split(va, 0, 1, &a, &b), ELLE_EINVAL, NULL, "val_size = 0");
    expect_err(elle_dataset_split(va, V, 1, &a, &b), ELLE_EINVAL, NULL, "outside [1, 37)");
    expect_err(elle_dataset_split(va, 1, 1, NULL, &b), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_split(NULL, 1, 1, &a, &b), ELLE_EINVAL, NULL, NULL);
    assert_null(a);
    assert_null(b);
    assert_int_equal(ELLE_DATASET_DEFAULT_VAL_SIZE, 1024);
    free(ti);
    free(vi);
    elle_dataset_free(va);
}

/* The sample ids of every batch of an epoch, concatenated; *count how many. */
static int64_t *epoch_ids(elle_dataset *d, int64_t epoch, int64_t bs, int64_t *count)
{
    int64_t n = elle_dataset_size(d);
    int64_t nb = elle_dataset_num_batches(d, bs);
    assert_true(nb >= 0);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    float *img = malloc((size_t)bs * 2 * sizeof *img);
    int32_t *lab = malloc((size_t)bs * sizeof *lab);
    assert_non_null(ids);
    assert_non_null(img);
    assert_non_null(lab);
    int64_t k = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t got = -1;
        assert_elle_ok(elle_dataset_batch(d, epoch, b, bs, img, lab, &got));
        assert_true(got >= 1 && got <= bs);
        if (b < nb - 1)
            assert_int_equal(got, bs);
        for (int64_t i = 0; i < got; i++) {
            ids[k] = decode_index(img + 2 * i);
            assert_int_equal(lab[i], ids[k] % 10);
            k++;
        }
    }
    free(img);
    free(lab);
    *count = k;
    return ids;
}

static void assert_permutation(const int64_t *ids, int64_t count, int64_t n)
{
    assert_int_equal(count, n);
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    for (int64_t i = 0; i < count; i++) {
        assert_true(ids[i] >= 0 && ids[i] < n);
        assert_int_equal(seen[ids[i]], 0);
        seen[ids[i]] = 1;
    }
    free(seen);
}

static void test_shuffle_and_batches(void **state)
{
    (void)state;
    enum { N = 503, BS = 32 };
    elle_dataset *d = index_dataset(N);
    int64_t count = 0;

    /* no shuffling: the identity, last batch partial */
    assert_int_equal(elle_dataset_num_batches(d, BS), 16);
    int64_t *ids = epoch_ids(d, 0, BS, &count);
    assert_int_equal(count, N);
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(ids[i], i);
    free(ids);

    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SHUFFLE, 1));
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SEED, 1234));
    int64_t *e0 = epoch_ids(d, 0, BS, &count);
    assert_permutation(e0, count, N);
    int64_t fixed = 0;
    for (int64_t i = 0; i < N; i++)
        fixed += e0[i] == i;
    assert_true(fixed < 20); /* a real shuffle, not (nearly) the identity */
    int64_t *e1 = epoch_ids(d, 1, BS, &count);
    assert_permutation(e1, count, N);
    assert_true(memcmp(e0, e1, N * sizeof *e0) != 0); /* a new order each epoch */
    int64_t *e0b = epoch_ids(d, 0, BS, &count);       /* after epoch 1: the same again */
    assert_memory_equal(e0, e0b, N * sizeof *e0);
    free(e0b);
    /* batches may be asked for in any order */
    float img[BS * 2];
    int64_t got = 0;
    assert_elle_ok(elle_dataset_batch(d, 1, 3, BS, img, NULL, &got));
    assert_int_equal(got, BS);
    assert_elle_ok(elle_dataset_batch(d, 0, 5, BS, img, NULL, &got));
    for (int i = 0; i < BS; i++)
        assert_int_equal(decode_index(img + 2 * i), e0[5 * BS + i]);

    /* another handle with the same seed: identical; another seed: different */
    elle_dataset *d2 = index_dataset(N);
    assert_elle_ok(elle_dataset_set_param(d2, ELLE_DATASET_PARAM_SHUFFLE, 1));
    assert_elle_ok(elle_dataset_set_param(d2, ELLE_DATASET_PARAM_SEED, 1234));
    e0b = epoch_ids(d2, 0, BS, &count);
    assert_memory_equal(e0, e0b, N * sizeof *e0);
    free(e0b);
    /* the order does not depend on the batch size */
    e0b = epoch_ids(d2, 0, 7, &count);
    assert_memory_equal(e0, e0b, N * sizeof *e0);
    free(e0b);
    assert_elle_ok(elle_dataset_set_param(d2, ELLE_DATASET_PARAM_SEED, 1235));
    e0b = epoch_ids(d2, 0, BS, &count);
    assert_permutation(e0b, count, N);
    assert_true(memcmp(e0, e0b, N * sizeof *e0) != 0);
    free(e0b);
    elle_dataset_free(d2);

    /* drop_last: 15 full batches, each sample at most once, 480 in all */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_DROP_LAST, 1));
    assert_int_equal(elle_dataset_num_batches(d, BS), 15);
    int64_t *dl = epoch_ids(d, 0, BS, &count);
    assert_int_equal(count, 15 * BS);
    assert_memory_equal(dl, e0, 15 * BS * sizeof *dl); /* the same order, cut */
    char seen[N] = {0};
    for (int64_t i = 0; i < count; i++) {
        assert_int_equal(seen[dl[i]], 0);
        seen[dl[i]] = 1;
    }
    free(dl);
    expect_err(elle_dataset_batch(d, 0, 15, BS, img, NULL, NULL), ELLE_EINVAL, NULL,
               "batch_index = 15 outside [0, 15)");
    /* a batch larger than the dataset: no batch with drop_last, one without */
    assert_int_equal(elle_dataset_num_batches(d, N + 1), 0);
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_DROP_LAST, 0));
    assert_int_equal(elle_dataset_num_batches(d, N + 1), 1);
    assert_int_equal(elle_dataset_num_batches(d, 1), N);

    /* argument errors */
    expect_err(elle_dataset_batch(d, -1, 0, BS, img, NULL, NULL), ELLE_EINVAL, NULL, "epoch");
    expect_err(elle_dataset_batch(d, (int64_t)1 << 32, 0, BS, img, NULL, NULL), ELLE_EINVAL, NULL,
               "epoch");
    expect_err(elle_dataset_batch(d, 0, 0, 0, img, NULL, NULL), ELLE_EINVAL, NULL, "batch_size");
    expect_err(elle_dataset_batch(d, 0, 0, BS, NULL, NULL, NULL), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_batch(NULL, 0, 0, BS, img, NULL, NULL), ELLE_EINVAL, NULL, NULL);
    assert_true(elle_dataset_num_batches(d, 0) == ELLE_EINVAL);
    assert_true(elle_dataset_num_batches(NULL, 4) == ELLE_EINVAL);

    /* a shuffled view of a split covers the view exactly once per epoch */
    elle_dataset *tr = NULL, *va = NULL;
    assert_elle_ok(elle_dataset_split(d, 100, 9, &tr, &va));
    assert_elle_ok(elle_dataset_set_param(tr, ELLE_DATASET_PARAM_SHUFFLE, 1));
    int64_t *vid = sample_ids(tr);
    int64_t *tid = epoch_ids(tr, 2, 50, &count);
    assert_int_equal(count, N - 100);
    char in_tr[N] = {0};
    for (int64_t i = 0; i < N - 100; i++)
        in_tr[vid[i]] = 1;
    char hit[N] = {0};
    for (int64_t i = 0; i < count; i++) {
        assert_true(in_tr[tid[i]]);
        assert_int_equal(hit[tid[i]], 0);
        hit[tid[i]] = 1;
    }
    free(vid);
    free(tid);
    elle_dataset_free(tr);
    elle_dataset_free(va);
    free(e0);
    free(e1);
    elle_dataset_free(d);
}

/* ---- augmentation --------------------------------------------------------------- */

enum { AC = 2, AH = 8, AW = 9, AN = 400 };

/* Every pixel distinct and non-zero: value (1 + ch*72 + y*9 + x) / 255. */
static float apix(int ch, int y, int x)
{
    return (float)(1 + ch * AH * AW + y * AW + x) / 255.0f;
}

static elle_dataset *pattern_dataset(void)
{
    uint8_t *img = malloc((size_t)AN * AC * AH * AW);
    int32_t *lab = calloc(AN, sizeof *lab);
    assert_non_null(img);
    assert_non_null(lab);
    for (int n = 0; n < AN; n++)
        for (int c = 0; c < AC; c++)
            for (int y = 0; y < AH; y++)
                for (int x = 0; x < AW; x++)
                    img[((n * AC + c) * AH + y) * AW + x] = (uint8_t)(1 + c * AH * AW + y * AW + x);
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host_u8(&d, img, lab, AN, AC, AH, AW, 2));
    free(img);
    free(lab);
    return d;
}

/* Does `out` equal the pattern shifted by (dy, dx), flipped if `flip`, with
 * zeros outside? */
static int matches(const float *out, int dy, int dx, int flip)
{
    for (int c = 0; c < AC; c++)
        for (int y = 0; y < AH; y++)
            for (int x = 0; x < AW; x++) {
                int sy = y + dy, sx = (flip ? AW - 1 - x : x) + dx;
                float want = (sy < 0 || sy >= AH || sx < 0 || sx >= AW) ? 0.0f : apix(c, sy, sx);
                if (out[(c * AH + y) * AW + x] != want)
                    return 0;
            }
    return 1;
}

/* The (dy, dx, flip) that explains `out`; fails unless exactly one does. */
static void explain(const float *out, int pad, int *dy, int *dx, int *flip)
{
    int found = 0;
    for (int f = 0; f < 2; f++)
        for (int a = -pad; a <= pad; a++)
            for (int b = -pad; b <= pad; b++)
                if (matches(out, a, b, f)) {
                    found++;
                    *dy = a;
                    *dx = b;
                    *flip = f;
                }
    if (found != 1) {
        print_error("%d (dy, dx, flip) explain the output (want exactly 1)\n", found);
        fail();
    }
}

static float *aug_epoch(elle_dataset *d, int64_t epoch, int64_t bs)
{
    float *all = malloc((size_t)AN * AC * AH * AW * sizeof *all);
    assert_non_null(all);
    int64_t nb = elle_dataset_num_batches(d, bs);
    for (int64_t b = 0; b < nb; b++) {
        int64_t got = 0;
        float *dst = all + b * bs * AC * AH * AW;
        assert_elle_ok(elle_dataset_batch(d, epoch, b, bs, dst, NULL, &got));
    }
    return all;
}

static void test_augmentation(void **state)
{
    (void)state;
    const int64_t S = AC * AH * AW;
    elle_dataset *d = pattern_dataset();

    /* off by default: batches equal the samples */
    float *plain = aug_epoch(d, 0, 64);
    for (int n = 0; n < AN; n++)
        assert_true(matches(plain + n * S, 0, 0, 0));
    free(plain);

    /* crop with padding 2: content shifted by at most 2, zero fill */
    const int pad = 2;
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_CROP_PADDING, pad));
    float *e0 = aug_epoch(d, 0, 64);
    int hist[5][5] = {{0}};
    int zero_rows = 0;
    for (int n = 0; n < AN; n++) {
        int dy = 9, dx = 9, f = 9;
        const float *o = e0 + n * S;
        for (int64_t i = 0; i < S; i++)
            assert_true(o[i] >= 0.0f && o[i] <= 1.0f);
        explain(o, pad, &dy, &dx, &f);
        assert_int_equal(f, 0);
        assert_true(dy >= -pad && dy <= pad && dx >= -pad && dx <= pad);
        hist[dy + pad][dx + pad]++;
        zero_rows += dy != 0;
    }
    /* each of the 25 offsets is drawn (400 draws: 16 expected each) */
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            assert_true(hist[a][b] >= 3 && hist[a][b] <= 35);
    assert_true(zero_rows > 0);

    /* deterministic per (seed, epoch, sample): again, and with another batch size */
    float *again = aug_epoch(d, 0, 7);
    assert_memory_equal(e0, again, (size_t)AN * S * sizeof *e0);
    free(again);
    /* another epoch differs */
    float *e1 = aug_epoch(d, 1, 64);
    assert_true(memcmp(e0, e1, (size_t)AN * S * sizeof *e0) != 0);
    free(e1);
    /* another seed differs */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SEED, 99));
    float *s99 = aug_epoch(d, 0, 64);
    assert_true(memcmp(e0, s99, (size_t)AN * S * sizeof *e0) != 0);
    free(s99);
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SEED, 0));

    /* flip alone: mirror or not, about half the time */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_CROP_PADDING, 0));
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_FLIP, 1));
    float *fl = aug_epoch(d, 0, 64);
    int flips = 0;
    for (int n = 0; n < AN; n++) {
        int dy = 9, dx = 9, f = 9;
        explain(fl + n * S, 0, &dy, &dx, &f);
        assert_true(dy == 0 && dx == 0);
        flips += f;
        if (f) /* spot-check the mirror directly */
            assert_true(fl[n * S + 0] == apix(0, 0, AW - 1));
    }
    assert_true(flips > 150 && flips < 250); /* Binomial(400, 1/2): 200 +- 5 sigma */
    free(fl);

    /* both: crop then flip, and the flip decisions are the same as without
     * the crop (lanes of one Philox block) */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_CROP_PADDING, pad));
    float *both = aug_epoch(d, 0, 64);
    fl = NULL;
    elle_dataset *d_flip = pattern_dataset();
    assert_elle_ok(elle_dataset_set_param(d_flip, ELLE_DATASET_PARAM_FLIP, 1));
    fl = aug_epoch(d_flip, 0, 64);
    int at_edge[2] = {0, 0}, flipped_at_edge[2] = {0, 0};
    for (int n = 0; n < AN; n++) {
        int dy = 9, dx = 9, f = 9, dy0 = 9, dx0 = 9, f0 = 9, dyf = 9, dxf = 9, ff = 9;
        explain(both + n * S, pad, &dy, &dx, &f);
        explain(e0 + n * S, pad, &dy0, &dx0, &f0);
        explain(fl + n * S, 0, &dyf, &dxf, &ff);
        assert_int_equal(dy, dy0);
        assert_int_equal(dx, dx0);
        assert_int_equal(f, ff);
        if (dy == -pad || dy == pad) {
            at_edge[dy > 0]++;
            flipped_at_edge[dy > 0] += f;
        }
    }
    /* the flip is independent of the offsets (about half at either extreme) */
    for (int k = 0; k < 2; k++) {
        assert_true(at_edge[k] >= 40);
        assert_true(flipped_at_edge[k] > at_edge[k] / 5 && flipped_at_edge[k] < at_edge[k] * 4 / 5);
    }
    free(fl);
    elle_dataset_free(d_flip);

    /* shuffling moves samples, not their augmentation: position k of the
     * shuffled epoch is sample order[k], augmented as that sample always is */
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SHUFFLE, 1));
    float *sh = aug_epoch(d, 0, 64);
    elle_dataset *ix = index_dataset(AN);
    assert_elle_ok(elle_dataset_set_param(ix, ELLE_DATASET_PARAM_SHUFFLE, 1));
    int64_t count = 0;
    int64_t *order = epoch_ids(ix, 0, 64, &count);
    assert_int_equal(count, AN);
    int moved = 0;
    for (int k = 0; k < AN; k++) {
        assert_memory_equal(sh + k * S, both + order[k] * S, (size_t)S * sizeof *sh);
        moved += order[k] != k;
    }
    assert_true(moved > AN / 2);
    free(order);
    elle_dataset_free(ix);
    free(sh);
    free(both);
    free(e0);
    elle_dataset_free(d);
}

/* The batch is the same whatever the number of OpenMP threads. */
static void test_threads(void **state)
{
    (void)state;
    enum { N = 160, C = 3, H = 32, W = 32 };
    uint8_t *img = malloc((size_t)N * C * H * W);
    int32_t lab[N];
    assert_non_null(img);
    for (int i = 0; i < N * C * H * W; i++)
        img[i] = (uint8_t)(i * 2654435761u >> 24);
    for (int i = 0; i < N; i++)
        lab[i] = i % 10;
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host_u8(&d, img, lab, N, C, H, W, 10));
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_SHUFFLE, 1));
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_CROP_PADDING, 4));
    assert_elle_ok(elle_dataset_set_param(d, ELLE_DATASET_PARAM_FLIP, 1));
    float *a = malloc((size_t)N * C * H * W * sizeof *a);
    float *b = malloc((size_t)N * C * H * W * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_elle_ok(elle_dataset_batch(d, 3, 0, N, a, NULL, NULL));
    omp_set_num_threads(4);
    assert_elle_ok(elle_dataset_batch(d, 3, 0, N, b, NULL, NULL));
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, (size_t)N * C * H * W * sizeof *a);
    free(a);
    free(b);
    free(img);
    elle_dataset_free(d);
}

/* ---- parameters ----------------------------------------------------------------- */

static void test_params(void **state)
{
    (void)state;
    static const struct {
        elle_dataset_param p;
        const char *name;
        double lo, hi, def;
    } rows[] = {
        {ELLE_DATASET_PARAM_SHUFFLE, "shuffle", 0, 1, 0},
        {ELLE_DATASET_PARAM_SEED, "seed", 0, 9007199254740991.0, 0},
        {ELLE_DATASET_PARAM_CROP_PADDING, "crop_padding", 0, 64, 0},
        {ELLE_DATASET_PARAM_FLIP, "flip", 0, 1, 0},
        {ELLE_DATASET_PARAM_DROP_LAST, "drop_last", 0, 1, 0},
        {ELLE_DATASET_PARAM_NUM_CLASSES, "num_classes", 1, 100000, 10},
        {ELLE_DATASET_PARAM_COARSE_LABELS, "coarse_labels", 0, 1, 0},
    };
    /* the enum values are ABI */
    assert_int_equal(ELLE_DATASET_PARAM_SHUFFLE, 1);
    assert_int_equal(ELLE_DATASET_PARAM_COARSE_LABELS, 7);
    assert_int_equal(ELLE_SPLIT_TRAIN, 0);
    assert_int_equal(ELLE_SPLIT_TEST, 1);
    assert_int_equal(ELLE_LAYOUT_AUTO, 0);
    assert_int_equal(ELLE_LAYOUT_NCHW, 1);
    assert_int_equal(ELLE_LAYOUT_NHWC, 2);

    elle_dataset *d = index_dataset(20);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        double lo = -1, hi = -1, v = -1;
        assert_elle_ok(elle_dataset_param_bounds(rows[i].p, &lo, &hi));
        assert_true(lo == rows[i].lo && hi == rows[i].hi);
        assert_string_equal(elle_dataset_param_name(rows[i].p), rows[i].name);
        elle_dataset_param back = (elle_dataset_param)0;
        assert_elle_ok(elle_dataset_param_from_name(rows[i].name, &back));
        assert_int_equal(back, rows[i].p);
        assert_elle_ok(elle_dataset_get_param(d, rows[i].p, &v));
        assert_true(v == rows[i].def);
        if (rows[i].p == ELLE_DATASET_PARAM_COARSE_LABELS)
            continue;
        /* out of bounds, NaN, not an integer: EINVAL naming the parameter */
        expect_err(elle_dataset_set_param(d, rows[i].p, rows[i].hi + 1), ELLE_EINVAL, NULL,
                   rows[i].name);
        expect_err(elle_dataset_set_param(d, rows[i].p, rows[i].lo - 1), ELLE_EINVAL, NULL,
                   rows[i].name);
        expect_err(elle_dataset_set_param(d, rows[i].p, NAN), ELLE_EINVAL, NULL, "NaN");
        expect_err(elle_dataset_set_param(d, rows[i].p, rows[i].lo + 0.5), ELLE_EINVAL, NULL,
                   "integer");
        assert_elle_ok(elle_dataset_set_param(d, rows[i].p, rows[i].hi));
        assert_elle_ok(elle_dataset_get_param(d, rows[i].p, &v));
        assert_true(v == rows[i].hi);
    }
    expect_err(elle_dataset_set_param(d, (elle_dataset_param)99, 1), ELLE_EINVAL, NULL,
               "unknown parameter 99");
    double v;
    expect_err(elle_dataset_get_param(d, (elle_dataset_param)0, &v), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_get_param(d, ELLE_DATASET_PARAM_SEED, NULL), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_param_bounds((elle_dataset_param)8, &v, &v), ELLE_EINVAL, NULL, NULL);
    elle_dataset_param p;
    expect_err(elle_dataset_param_from_name("padding", &p), ELLE_EINVAL, NULL, "'padding'");
    expect_err(elle_dataset_param_from_name(NULL, &p), ELLE_EINVAL, NULL, NULL);
    assert_null(elle_dataset_param_name((elle_dataset_param)42));
    expect_err(elle_dataset_set_param(NULL, ELLE_DATASET_PARAM_SEED, 1), ELLE_EINVAL, NULL, NULL);

    /* splits by name */
    elle_split s = ELLE_SPLIT_TEST;
    assert_elle_ok(elle_split_from_name("train", &s));
    assert_int_equal(s, ELLE_SPLIT_TRAIN);
    assert_string_equal(elle_split_name(ELLE_SPLIT_TEST), "test");
    assert_null(elle_split_name((elle_split)5));
    expect_err(elle_split_from_name("validation", &s), ELLE_EINVAL, NULL, "'validation'");

    /* opening: bad kind, split, NULLs */
    elle_dataset *o = NULL;
    expect_err(elle_dataset_open(&o, "imagenet", g_dir, ELLE_SPLIT_TRAIN), ELLE_EINVAL, NULL,
               "unknown dataset kind 'imagenet'");
    expect_err(elle_dataset_open(&o, "mnist", g_dir, (elle_split)2), ELLE_EINVAL, NULL, "split");
    expect_err(elle_dataset_open(&o, NULL, g_dir, ELLE_SPLIT_TRAIN), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_open(&o, "mnist", NULL, ELLE_SPLIT_TRAIN), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_open(NULL, "mnist", g_dir, ELLE_SPLIT_TRAIN), ELLE_EINVAL, NULL, NULL);
    expect_err(elle_dataset_open_idx(&o, NULL, "x"), ELLE_EINVAL, NULL, NULL);
    assert_null(o);
    elle_dataset_free(d);
}

/* ---- the real Fashion-MNIST ----------------------------------------------------- */

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static void test_fashion_mnist_real(void **state)
{
    (void)state;
    struct stat st;
    if (stat(FASHION_DIR, &st) != 0 || !S_ISDIR(st.st_mode)) {
        print_message("%s absent (apt-get install dataset-fashion-mnist): skipped\n", FASHION_DIR);
        skip();
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    elle_dataset *tr = NULL;
    assert_elle_ok(elle_dataset_open(&tr, "fashion-mnist", FASHION_DIR, ELLE_SPLIT_TRAIN));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    print_message("Fashion-MNIST train loaded in %.3f s (%zu bytes in memory)\n", secs,
                  elle_dataset_memory_size(tr));
    assert_int_equal(elle_dataset_size(tr), 60000);
    int64_t c = 0, h = 0, w = 0;
    assert_elle_ok(elle_dataset_shape(tr, &c, &h, &w));
    assert_true(c == 1 && h == 28 && w == 28);
    assert_int_equal(elle_dataset_num_classes(tr), 10);
    int counts[10] = {0};
    for (int64_t i = 0; i < 60000; i++) {
        int32_t lab = -1;
        assert_elle_ok(elle_dataset_get(tr, i, NULL, &lab));
        assert_true(lab >= 0 && lab < 10);
        counts[lab]++;
    }
    for (int k = 0; k < 10; k++)
        assert_int_equal(counts[k], 6000); /* Fashion-MNIST is balanced */
    elle_dataset *te = NULL;
    assert_elle_ok(elle_dataset_open(&te, "fashion-mnist", FASHION_DIR, ELLE_SPLIT_TEST));
    assert_int_equal(elle_dataset_size(te), 10000);
    float img[28 * 28];
    float mx = 0;
    for (int64_t i = 0; i < 100; i++) {
        int32_t lab = -1;
        assert_elle_ok(elle_dataset_get(te, i, img, &lab));
        assert_true(lab >= 0 && lab < 10);
        for (int k = 0; k < 28 * 28; k++) {
            assert_true(img[k] >= 0 && img[k] <= 1);
            mx = img[k] > mx ? img[k] : mx;
        }
    }
    assert_true(mx == 1.0f); /* real images use the full range */
    elle_dataset_free(tr);
    elle_dataset_free(te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_raw_and_gzip),
        cmocka_unit_test(test_idx_truncation),
        cmocka_unit_test(test_idx_bad_headers),
        cmocka_unit_test(test_cifar10),
        cmocka_unit_test(test_cifar100),
        cmocka_unit_test(test_cifar_truncation),
        cmocka_unit_test(test_svhn),
        cmocka_unit_test(test_svhn_truncation),
        cmocka_unit_test(test_npy),
        cmocka_unit_test(test_npy_bad),
        cmocka_unit_test(test_npy_truncation),
        cmocka_unit_test(test_from_host),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_shuffle_and_batches),
        cmocka_unit_test(test_augmentation),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_fashion_mnist_real),
    };
    return cmocka_run_group_tests_name("dataset", tests, group_setup, group_teardown);
}
