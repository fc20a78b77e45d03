/*
 * safetensors reader/writer (lib/io/safetensors.h): round trips, a file
 * assembled by hand as PyTorch's safetensors would write it, dtype
 * conversions, and hostile input: every truncation, one corrupted header per
 * validation rule, random byte flips, and atomic-write failures.
 *
 * Files live in a fresh directory under $TMPDIR (or /tmp), removed at the end.
 */
#include "elle_test.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"

static char g_dir[512];

/* ---- helpers ------------------------------------------------------------------ */

/* "<g_dir>/<name>" in one of a few rotating buffers. */
static const char *tpath(const char *name)
{
    static char bufs[4][768];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len)
        assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Whole file into a malloc'd buffer; *len its size. */
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

static void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Assemble a file: header length `hlen` (the JSON's length when hlen is
 * UINT64_MAX), the JSON, then `data_len` bytes of `data` (zeros if NULL). */
static void make_file_len(const char *path, uint64_t hlen, const char *json, const void *data,
                          size_t data_len)
{
    size_t jlen = strlen(json);
    unsigned char *buf = calloc(1, 8 + jlen + data_len + 1);
    assert_non_null(buf);
    put_u64le(buf, hlen == UINT64_MAX ? (uint64_t)jlen : hlen);
    memcpy(buf + 8, json, jlen);
    if (data && data_len)
        memcpy(buf + 8 + jlen, data, data_len);
    write_bytes(path, buf, 8 + jlen + data_len);
    free(buf);
}

static void make_file(const char *path, const char *json, const void *data, size_t data_len)
{
    make_file_len(path, UINT64_MAX, json, data, data_len);
}

/* Opening `path` must fail with `want`, leave *out NULL, and the message must
 * name the file and contain each of the `nfrags` fragments. */
static void expect_open_fails_v(const char *path, int want, const char *const *frags,
                                size_t nfrags)
{
    elle__st_file *f = (elle__st_file *)&f; /* not NULL: open must reset it */
    assert_elle_status(elle__safetensors_open(&f, path), want);
    assert_null(f);
    /* a copy (also keeps gcc 12 -fsanitize=undefined from a false
     * -Wformat-overflow "argument is null" on the thread-local message) */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", elle_error_last()->message);
    if (!strstr(msg, path)) {
        print_error("message does not name the file %s: %s\n", path, msg);
        fail();
    }
    for (size_t i = 0; i < nfrags; i++) {
        if (!strstr(msg, frags[i])) {
            print_error("message lacks \"%s\": %s\n", frags[i], msg);
            fail();
        }
    }
}
#define expect_open_fails(path, want, ...)                     \
    do {                                                       \
        const char *const frags_[] = {__VA_ARGS__};            \
        expect_open_fails_v((path), (want), frags_,            \
                            sizeof frags_ / sizeof frags_[0]); \
    } while (0)

/* A JSON header with a file of data_len zero bytes must be ELLE_EFORMAT
 * with the given fragments in the message. */
#define EXPECT_BAD(json, data_len, ...)                                 \
    do {                                                                \
        const char *p_ = tpath("bad.safetensors");                      \
        make_file(p_, (json), NULL, (data_len));                        \
        expect_open_fails(p_, ELLE_EFORMAT, __VA_ARGS__);               \
    } while (0)

/* Files in g_dir whose name contains ".tmp." (writer leftovers). */
static int count_temp_files(void)
{
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, ".tmp."))
            n++;
    }
    closedir(d);
    return n;
}

static int rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            chmod(p, 0700);
            rm_tree(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    return rmdir(dir);
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/elle_st_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return rm_tree(g_dir);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* floats compared bit for bit (so -0, NaN payloads and infinities count) */
static void assert_f32_bits(const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (f32_bits(got[i]) != f32_bits(want[i])) {
            print_error("element %zu: got %.9g (0x%08x), want %.9g (0x%08x)\n", i,
                        (double)got[i], f32_bits(got[i]), (double)want[i], f32_bits(want[i]));
            fail();
        }
    }
}

/* A small valid file with metadata, a float and an int tensor. */
static void make_small_valid(const char *path)
{
    static const float w[6] = {1, 2, 3, 4, 5, 6};
    static const int64_t cnt = 7;
    elle__st_tensor t[2] = {
        {.name = "w", .dtype = ELLE__ST_F32, .ndim = 2, .shape = {2, 3}, .data = w},
        {.name = "n", .dtype = ELLE__ST_I64, .ndim = 0, .data = &cnt},
    };
    static const char *const meta[] = {"format", "pt", NULL};
    assert_elle_ok(elle__safetensors_write(path, t, 2, meta));
}

/* ---- round trips -------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    enum { NW = 4 * 3 * 3 * 3, NB = 10 };
    float w[NW], b[NB];
    for (int i = 0; i < NW; i++)
        w[i] = (float)i * 0.25f - 7.0f;
    for (int i = 0; i < NB; i++)
        b[i] = 1.0f / (float)(i + 1);
    w[5] = -0.0f;
    w[6] = bits_f32(0x00000001u); /* smallest subnormal survives untouched */
    const float scalar = 3.5f;
    const int64_t tracked = 12345678901LL;
    const uint16_t half[3] = {0x3C00, 0xC000, 0x7BFF};
    const uint8_t mask[5] = {0, 1, 255, 7, 128};
    elle__st_tensor t[] = {
        {.name = "layer1.0.conv1.weight", .dtype = ELLE__ST_F32, .ndim = 4, .shape = {4, 3, 3, 3},
         .data = w},
        {.name = "fc.bias", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {NB}, .data = b},
        {.name = "temperature", .dtype = ELLE__ST_F32, .ndim = 0, .data = &scalar},
        {.name = "bn1.num_batches_tracked", .dtype = ELLE__ST_I64, .ndim = 0, .data = &tracked},
        {.name = "empty", .dtype = ELLE__ST_F32, .ndim = 2, .shape = {0, 5}, .data = NULL},
        {.name = "half", .dtype = ELLE__ST_F16, .ndim = 1, .shape = {3}, .data = half},
        {.name = "mask", .dtype = ELLE__ST_U8, .ndim = 1, .shape = {5}, .data = mask},
    };
    const size_t n = sizeof t / sizeof t[0];
    static const char *const meta[] = {"format", "pt", "note", "caf\xc3\xa9 \"quoted\"\n", NULL};
    const char *path = tpath("round.safetensors");
    assert_elle_ok(elle__safetensors_write(path, t, n, meta));
    assert_int_equal(count_temp_files(), 0);

    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    assert_int_equal(elle__safetensors_count(f), n);
    uint64_t expect_begin = 0;
    for (size_t i = 0; i < n; i++) {
        const elle__st_entry *e = elle__safetensors_entry(f, i);
        assert_non_null(e);
        assert_string_equal(e->name, t[i].name); /* header order = given order */
        assert_ptr_equal(elle__safetensors_find(f, t[i].name), e);
        assert_int_equal(e->dtype, t[i].dtype);
        assert_int_equal(e->ndim, t[i].ndim);
        int64_t numel = 1;
        for (int k = 0; k < e->ndim; k++) {
            assert_int_equal(e->shape[k], t[i].shape[k]);
            numel *= t[i].shape[k];
        }
        assert_int_equal(e->numel, numel);
        size_t nbytes = (size_t)numel * elle__st_dtype_size(t[i].dtype);
        /* contiguous, in the given order */
        assert_int_equal(e->begin, expect_begin);
        assert_int_equal(e->end, expect_begin + nbytes);
        expect_begin = e->end;
        unsigned char *raw = malloc(nbytes + 1);
        assert_non_null(raw);
        assert_elle_ok(elle__safetensors_read_raw(f, e, raw));
        if (nbytes)
            assert_memory_equal(raw, t[i].data, nbytes);
        free(raw);
    }
    assert_null(elle__safetensors_entry(f, n));
    assert_null(elle__safetensors_find(f, "layer1.0.conv1"));
    assert_null(elle__safetensors_find(f, "zzz"));

    float got[NW];
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "layer1.0.conv1.weight"),
                                              got));
    assert_f32_bits(got, w, NW);
    float s = 0;
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "temperature"), &s));
    assert_f32_bits(&s, &scalar, 1);
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "empty"), NULL));
    int64_t tr = 0;
    assert_elle_ok(
        elle__safetensors_read_i64(f, elle__safetensors_find(f, "bn1.num_batches_tracked"), &tr));
    assert_int_equal(tr, tracked);
    int64_t m[5];
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "mask"), m));
    for (int i = 0; i < 5; i++)
        assert_int_equal(m[i], mask[i]);

    assert_string_equal(elle__safetensors_metadata(f, "format"), "pt");
    assert_string_equal(elle__safetensors_metadata(f, "note"), "caf\xc3\xa9 \"quoted\"\n");
    assert_null(elle__safetensors_metadata(f, "missing"));
    assert_null(elle__safetensors_metadata(f, "pt")); /* values are not keys */
    elle__safetensors_close(f);

    /* layout: the header is padded with spaces to a multiple of 8 and the
     * data fills the rest of the file exactly */
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | bytes[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + expect_begin);
    assert_int_equal(bytes[8], '{');
    size_t last = 8 + (size_t)hlen - 1;
    while (bytes[last] == ' ')
        last--;
    assert_int_equal(bytes[last], '}');
    assert_true(8 + hlen - 1 - last < 8); /* fewer than 8 pad bytes */
    free(bytes);
}

/* No tensors at all is a valid file ({} plus padding); metadata alone too. */
static void test_round_trip_empty(void **state)
{
    (void)state;
    const char *path = tpath("empty.safetensors");
    assert_elle_ok(elle__safetensors_write(path, NULL, 0, NULL));
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    assert_int_equal(elle__safetensors_count(f), 0);
    assert_null(elle__safetensors_find(f, "a"));
    assert_null(elle__safetensors_metadata(f, "format"));
    elle__safetensors_close(f);

    static const char *const meta[] = {"k", "v", NULL};
    assert_elle_ok(elle__safetensors_write(path, NULL, 0, meta));
    assert_elle_ok(elle__safetensors_open(&f, path));
    assert_int_equal(elle__safetensors_count(f), 0);
    assert_string_equal(elle__safetensors_metadata(f, "k"), "v");
    elle__safetensors_close(f);
}

/* The bytes safetensors.torch.save_file({"a": torch.arange(1., 7.).reshape(2, 3),
 * "b": torch.tensor(42)}) writes: tensors sorted by dtype (I64 before F32)
 * then name, compact JSON, space padding to 8, data in header order. */
static void test_hand_assembled(void **state)
{
    (void)state;
    static const char json[] = "{\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}";
    static const unsigned char data[32] = {
        42, 0, 0, 0, 0, 0, 0, 0,   /* b = 42 (I64) */
        0x00, 0x00, 0x80, 0x3f,    /* 1.0f */
        0x00, 0x00, 0x00, 0x40,    /* 2.0f */
        0x00, 0x00, 0x40, 0x40,    /* 3.0f */
        0x00, 0x00, 0x80, 0x40,    /* 4.0f */
        0x00, 0x00, 0xa0, 0x40,    /* 5.0f */
        0x00, 0x00, 0xc0, 0x40,    /* 6.0f */
    };
    char padded[sizeof json + 8];
    size_t jl = strlen(json), pl = (jl + 7) / 8 * 8;
    memcpy(padded, json, jl);
    memset(padded + jl, ' ', pl - jl);
    padded[pl] = '\0';
    const char *path = tpath("torch.safetensors");
    make_file(path, padded, data, sizeof data);

    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    assert_int_equal(elle__safetensors_count(f), 2);
    assert_string_equal(elle__safetensors_entry(f, 0)->name, "b");
    assert_string_equal(elle__safetensors_entry(f, 1)->name, "a");
    const elle__st_entry *a = elle__safetensors_find(f, "a");
    const elle__st_entry *b = elle__safetensors_find(f, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->dtype, ELLE__ST_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->numel, 6);
    assert_int_equal(a->begin, 8);
    assert_int_equal(a->end, 32);
    assert_int_equal(b->dtype, ELLE__ST_I64);
    assert_int_equal(b->ndim, 0);
    assert_int_equal(b->numel, 1);
    float av[6];
    assert_elle_ok(elle__safetensors_read_f32(f, a, av));
    const float want[6] = {1, 2, 3, 4, 5, 6};
    assert_f32_bits(av, want, 6);
    int64_t bv = 0;
    assert_elle_ok(elle__safetensors_read_i64(f, b, &bv));
    assert_int_equal(bv, 42);
    /* no implicit int <-> float reinterpretation */
    assert_elle_status(elle__safetensors_read_f32(f, b, av), ELLE_EFORMAT);
    assert_non_null(strstr(elle_error_last()->message, "'b'"));
    int64_t iv[6];
    assert_elle_status(elle__safetensors_read_i64(f, a, iv), ELLE_EFORMAT);
    assert_non_null(strstr(elle_error_last()->message, "'a'"));
    assert_null(elle__safetensors_metadata(f, "format"));
    elle__safetensors_close(f);
}

/* Conversions to float on known bit patterns, and the integer dtypes. */
static void test_conversions(void **state)
{
    (void)state;
    static const uint16_t f16[] = {
        0x3C00, /* 1 */
        0xC000, /* -2 */
        0x0001, /* smallest subnormal 2^-24 */
        0x83FF, /* largest negative subnormal -1023 * 2^-24 */
        0x0400, /* smallest normal 2^-14 */
        0x7BFF, /* max 65504 */
        0x7C00, /* inf */
        0xFC00, /* -inf */
        0x8000, /* -0 */
        0x3555, /* 0.333251953125 */
        0x7E00, /* NaN */
    };
    const float f16_want[] = {1.0f,     -2.0f,     0x1p-24f,  -1023 * 0x1p-24f,
                              0x1p-14f, 65504.0f,  INFINITY,  -INFINITY,
                              -0.0f,    0.333251953125f, bits_f32(0x7fc00000u)};
    static const uint16_t bf16[] = {0x3F80, 0xC000, 0x7F80, 0x0001, 0x3EAB, 0xFF80};
    const float bf16_want[] = {1.0f, -2.0f, INFINITY, bits_f32(0x00010000u), 0.333984375f,
                               -INFINITY};
    const double f64[] = {1.0, -2.5, 0.1, 1e300, -1e300, 1e-50, -1e-50,
                          /* just above FLT_MAX, below the rounding midpoint */
                          0x1.fffffe8p127, 0x1.ffffffp127};
    const float f64_want[] = {1.0f, -2.5f, 0.1f, INFINITY, -INFINITY, 0.0f, -0.0f,
                              0x1.fffffep127f, INFINITY};
    const int32_t i32[] = {-1, INT32_MAX, INT32_MIN, 0};
    const int8_t i8[] = {-128, 127, -1};
    const uint16_t u16[] = {65535, 0, 1};
    const uint32_t u32[] = {UINT32_MAX, 5};
    const uint8_t bools[] = {0, 1, 2};
    const uint64_t u64_ok[] = {0, (uint64_t)INT64_MAX};
    const uint64_t u64_big[] = {1, (uint64_t)INT64_MAX + 1};
    elle__st_tensor t[] = {
        {.name = "f16", .dtype = ELLE__ST_F16, .ndim = 1, .shape = {11}, .data = f16},
        {.name = "bf16", .dtype = ELLE__ST_BF16, .ndim = 1, .shape = {6}, .data = bf16},
        {.name = "f64", .dtype = ELLE__ST_F64, .ndim = 1, .shape = {9}, .data = f64},
        {.name = "i32", .dtype = ELLE__ST_I32, .ndim = 1, .shape = {4}, .data = i32},
        {.name = "i8", .dtype = ELLE__ST_I8, .ndim = 1, .shape = {3}, .data = i8},
        {.name = "u16", .dtype = ELLE__ST_U16, .ndim = 1, .shape = {3}, .data = u16},
        {.name = "u32", .dtype = ELLE__ST_U32, .ndim = 1, .shape = {2}, .data = u32},
        {.name = "bool", .dtype = ELLE__ST_BOOL, .ndim = 1, .shape = {3}, .data = bools},
        {.name = "u64_ok", .dtype = ELLE__ST_U64, .ndim = 1, .shape = {2}, .data = u64_ok},
        {.name = "u64_big", .dtype = ELLE__ST_U64, .ndim = 1, .shape = {2}, .data = u64_big},
    };
    const char *path = tpath("conv.safetensors");
    assert_elle_ok(elle__safetensors_write(path, t, sizeof t / sizeof t[0], NULL));
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    float out[16];
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "f16"), out));
    assert_f32_bits(out, f16_want, 11);
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "bf16"), out));
    assert_f32_bits(out, bf16_want, 6);
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "f64"), out));
    assert_f32_bits(out, f64_want, 9);

    int64_t iv[8];
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "i32"), iv));
    for (int i = 0; i < 4; i++)
        assert_int_equal(iv[i], i32[i]);
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "i8"), iv));
    for (int i = 0; i < 3; i++)
        assert_int_equal(iv[i], i8[i]);
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "u16"), iv));
    for (int i = 0; i < 3; i++)
        assert_int_equal(iv[i], u16[i]);
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "u32"), iv));
    for (int i = 0; i < 2; i++)
        assert_int_equal(iv[i], u32[i]);
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "bool"), iv));
    assert_int_equal(iv[0], 0);
    assert_int_equal(iv[1], 1);
    assert_int_equal(iv[2], 1); /* any non-zero byte is true */
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "u64_ok"), iv));
    assert_int_equal(iv[1], INT64_MAX);
    assert_elle_status(elle__safetensors_read_i64(f, elle__safetensors_find(f, "u64_big"), iv),
                       ELLE_EFORMAT);
    assert_non_null(strstr(elle_error_last()->message, "u64_big"));
    /* float dtypes are not integers and vice versa */
    assert_elle_status(elle__safetensors_read_i64(f, elle__safetensors_find(f, "f16"), iv),
                       ELLE_EFORMAT);
    assert_elle_status(elle__safetensors_read_f32(f, elle__safetensors_find(f, "i32"), out),
                       ELLE_EFORMAT);
    elle__safetensors_close(f);
}

/* A tensor larger than the reader's conversion chunk (64 KiB) converts
 * correctly across chunk boundaries. */
static void test_conversion_chunks(void **state)
{
    (void)state;
    enum { N = 100003 };
    uint16_t *h = malloc(N * sizeof *h);
    float *got = malloc(N * sizeof *got);
    int64_t *ig = malloc(N * sizeof *ig);
    int32_t *iv = malloc(N * sizeof *iv);
    assert_non_null(h);
    assert_non_null(got);
    assert_non_null(ig);
    assert_non_null(iv);
    for (int i = 0; i < N; i++) {
        h[i] = (uint16_t)(i * 7919u); /* every bit pattern class, bf16 view */
        iv[i] = i * 3 - 100000;
    }
    elle__st_tensor t[2] = {
        {.name = "bf", .dtype = ELLE__ST_BF16, .ndim = 1, .shape = {N}, .data = h},
        {.name = "iv", .dtype = ELLE__ST_I32, .ndim = 2, .shape = {1, N}, .data = iv},
    };
    const char *path = tpath("chunks.safetensors");
    assert_elle_ok(elle__safetensors_write(path, t, 2, NULL));
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "bf"), got));
    for (int i = 0; i < N; i++) {
        if (f32_bits(got[i]) != (uint32_t)h[i] << 16) {
            print_error("bf16 element %d: 0x%08x\n", i, f32_bits(got[i]));
            fail();
        }
    }
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "iv"), ig));
    for (int i = 0; i < N; i++)
        assert_int_equal(ig[i], iv[i]);
    elle__safetensors_close(f);
    free(h);
    free(got);
    free(ig);
    free(iv);
}

/* ---- hostile input ------------------------------------------------------------ */

/* Every proper prefix of a valid file must be rejected cleanly. */
static void test_truncation(void **state)
{
    (void)state;
    const char *path = tpath("full.safetensors");
    make_small_valid(path);
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    const char *cut = tpath("cut.safetensors");
    for (size_t n = 0; n < len; n++) {
        write_bytes(cut, bytes, n);
        elle__st_file *f = (elle__st_file *)&f;
        int rc = elle__safetensors_open(&f, cut);
        if ((rc != ELLE_EFORMAT && rc != ELLE_EIO) || f != NULL ||
            elle_error_last()->message[0] == '\0') {
            print_error("prefix of %zu/%zu bytes: %s (%s)\n", n, len, elle_status_name(rc),
                        elle_error_last()->message);
            fail();
        }
    }
    /* and the whole file still opens */
    write_bytes(cut, bytes, len);
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, cut));
    elle__safetensors_close(f);
    free(bytes);
}

static void test_bad_short_file(void **state)
{
    (void)state;
    const char *p = tpath("short.safetensors");
    write_bytes(p, "\x02\0\0\0\0", 5);
    expect_open_fails(p, ELLE_EFORMAT, "5 bytes");
}

static void test_bad_header_length_zero(void **state)
{
    (void)state;
    const char *p = tpath("zero.safetensors");
    make_file_len(p, 0, "{}", NULL, 0);
    expect_open_fails(p, ELLE_EFORMAT, "header length is 0");
}

static void test_bad_header_length_huge(void **state)
{
    (void)state;
    const char *p = tpath("huge.safetensors");
    make_file_len(p, UINT64_C(1) << 63, "{}", NULL, 0);
    expect_open_fails(p, ELLE_EFORMAT, "exceeds");
    make_file_len(p, UINT64_MAX - 1, "{}", NULL, 0);
    expect_open_fails(p, ELLE_EFORMAT, "exceeds");
    /* one past the reference's limit, even though the file is short */
    make_file_len(p, ELLE__ST_MAX_HEADER + 1, "{}", NULL, 0);
    expect_open_fails(p, ELLE_EFORMAT, "exceeds");
}

static void test_bad_header_past_end(void **state)
{
    (void)state;
    const char *p = tpath("past.safetensors");
    make_file_len(p, 3, "{}", NULL, 0); /* 2 header bytes in the file, 3 claimed */
    expect_open_fails(p, ELLE_EFORMAT, "past the end");
}

static void test_bad_json(void **state)
{
    (void)state;
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",", 0, "invalid JSON header");
    EXPECT_BAD("{\"a\" 1}", 0, "invalid JSON header");
    EXPECT_BAD("{} trailing", 0, "invalid JSON header");
}

static void test_bad_json_nul_and_utf8(void **state)
{
    (void)state;
    const char *p = tpath("nul.safetensors");
    /* a NUL byte inside the header (the JSON text ends before the padding) */
    make_file_len(p, 4, "{}", NULL, 2); /* "{}" then two zero bytes counted as header */
    expect_open_fails(p, ELLE_EFORMAT, "invalid JSON header");
    EXPECT_BAD("{\"a\\u0000b\":{}}", 0, "invalid JSON header");
    EXPECT_BAD("{\"\xff\xfe\":{}}", 0, "invalid JSON header"); /* invalid UTF-8 */
}

static void test_bad_not_object(void **state)
{
    (void)state;
    EXPECT_BAD("[1,2,3]", 0, "not a JSON object");
    EXPECT_BAD("[]", 0, "not a JSON object");
    EXPECT_BAD("\"str\"", 0, "invalid JSON header");
    EXPECT_BAD("42", 0, "invalid JSON header");
    /* whitespace around the object is fine, as in the Rust reference */
    const char *p = tpath("ws.safetensors");
    make_file(p, "\n\t {\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} \n", "\x7f",
              1);
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, p));
    int64_t v = 0;
    assert_elle_ok(elle__safetensors_read_i64(f, elle__safetensors_find(f, "a"), &v));
    assert_int_equal(v, 127);
    elle__safetensors_close(f);
}

static void test_bad_entry_not_object(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":5}", 0, "tensor 'w'", "not a JSON object");
    EXPECT_BAD("{\"w\":[\"F32\",[1],[0,4]]}", 4, "tensor 'w'", "not a JSON object");
}

static void test_bad_dtype(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w'", "dtype");
    EXPECT_BAD("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w'",
               "not a string");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'w'", "unknown", "F33");
    EXPECT_BAD("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'w'", "unknown", "f32");
    /* sub-byte dtypes are not supported */
    EXPECT_BAD("{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1,
               "tensor 'w'", "unknown", "F4");
}

static void test_bad_shape_type(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'w'", "shape");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "tensor 'w'",
               "not an array");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
               "tensor 'w'", "shape[0]");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,\"2\"],\"data_offsets\":[0,16]}}", 16,
               "tensor 'w'", "shape[1]");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, "tensor 'w'", "9 dimensions");
}

static void test_bad_negative_dim(void **state)
{
    (void)state;
    EXPECT_BAD("{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16,
               "tensor 'conv.weight'", "shape[1]", "non-negative");
}

static void test_bad_overflow_dims(void **state)
{
    (void)state;
    /* numel 2^80 */
    EXPECT_BAD("{\"big\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
               "\"data_offsets\":[0,0]}}",
               0, "tensor 'big'", "overflows");
    /* numel 2^62 fits, numel * 4 bytes does not */
    EXPECT_BAD("{\"big\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],"
               "\"data_offsets\":[0,0]}}",
               0, "tensor 'big'", "overflows");
    /* a zero dim makes huge dims harmless */
    const char *p = tpath("zero_dim.safetensors");
    make_file(p, "{\"z\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,0,4611686018427387904],"
                 "\"data_offsets\":[0,0]}}",
              NULL, 0);
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, p));
    assert_int_equal(elle__safetensors_entry(f, 0)->numel, 0);
    elle__safetensors_close(f);
    /* integers beyond int64 are a JSON error in jansson */
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,"
               "99999999999999999999]}}",
               4, "invalid JSON header");
}

static void test_bad_offsets_type(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w'", "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               "tensor 'w'", "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "tensor 'w'",
               "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"0\":4}}}", 4,
               "tensor 'w'", "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
               "tensor 'w'", "data_offsets");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
               "tensor 'w'", "data_offsets");
}

static void test_bad_begin_after_end(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
               "tensor 'w'", "[8, 4]");
}

static void test_bad_offsets_beyond_end(void **state)
{
    (void)state;
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
               "tensor 'w'", "beyond", "4-byte data section");
    EXPECT_BAD("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
               "[9223372036854775803,9223372036854775807]}}",
               4, "tensor 'w'", "beyond");
}

static void test_bad_size_mismatch(void **state)
{
    (void)state;
    const char *p = tpath("model.safetensors");
    make_file(p, "{\"layer1.0.conv1.weight\":{\"dtype\":\"F32\",\"shape\":[64,3,3,3],"
                 "\"data_offsets\":[0,100]}}",
              NULL, 100);
    expect_open_fails(p, ELLE_EFORMAT,
                      "model.safetensors: tensor 'layer1.0.conv1.weight': data_offsets [0, 100] "
                      "do not match shape [64,3,3,3] of F32 (6912 bytes)");
    /* a scalar needs exactly one element */
    EXPECT_BAD("{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,0]}}", 0, "tensor 's'",
               "shape [] of I64 (8 bytes)");
}

static void test_bad_overlap(void **state)
{
    (void)state;
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap", "'a'", "'b'");
    /* the same range twice */
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, "overlap", "'a'", "'b'");
    /* an empty tensor strictly inside another */
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               8, "overlap", "'e'", "'a'");
}

static void test_bad_hole(void **state)
{
    (void)state;
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               20, "tensor 'b'", "hole", "[8, 12)");
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
               "tensor 'a'", "hole", "[0, 4)");
    /* trailing bytes after the last tensor */
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
               "12 bytes", "first 8");
    EXPECT_BAD("{}", 1, "1 bytes");

    /* empty tensors at a boundary and at the end are fine; order in the header
     * does not matter */
    const char *p = tpath("holes_ok.safetensors");
    make_file(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                 "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              NULL, 8);
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, p));
    assert_int_equal(elle__safetensors_count(f), 4);
    assert_string_equal(elle__safetensors_entry(f, 3)->name, "a");
    elle__safetensors_close(f);
}

static void test_bad_duplicate_key(void **state)
{
    (void)state;
    EXPECT_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "duplicate", "a");
    EXPECT_BAD("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "duplicate");
}

static void test_bad_metadata(void **state)
{
    (void)state;
    EXPECT_BAD("{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}", 0, "__metadata__",
               "'epoch'", "not a string");
    EXPECT_BAD("{\"__metadata__\":{\"x\":null}}", 0, "__metadata__", "'x'");
    EXPECT_BAD("{\"__metadata__\":[\"format\",\"pt\"]}", 0, "__metadata__", "not an object");
    EXPECT_BAD("{\"__metadata__\":\"pt\"}", 0, "__metadata__", "not an object");
}

static void test_bad_not_a_file(void **state)
{
    (void)state;
    expect_open_fails(tpath("does_not_exist.safetensors"), ELLE_EIO, "cannot open");
    expect_open_fails(g_dir, ELLE_EIO, "regular file");
    /* a FIFO without a writer: refused, not waited on */
    const char *fifo = tpath("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_open_fails(fifo, ELLE_EIO, "regular file");
    unlink(fifo);
}

/* The file is validated once, on open; if it shrinks afterwards, reads fail
 * with ELLE_EIO instead of returning short data. */
static void test_file_shrinks_after_open(void **state)
{
    (void)state;
    const char *path = tpath("shrink.safetensors");
    make_small_valid(path);
    elle__st_file *f = NULL;
    assert_elle_ok(elle__safetensors_open(&f, path));
    const elle__st_entry *n = elle__safetensors_find(f, "n"); /* the last 8 bytes */
    assert_non_null(n);
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    assert_int_equal(truncate(path, (off_t)len - 4), 0);
    int64_t v = 0;
    assert_elle_status(elle__safetensors_read_i64(f, n, &v), ELLE_EIO);
    assert_non_null(strstr(elle_error_last()->message, "end of file"));
    float w[6];
    assert_elle_ok(elle__safetensors_read_f32(f, elle__safetensors_find(f, "w"), w));
    assert_true(w[5] == 6.0f);
    elle__safetensors_close(f);
    free(bytes);
}

/* Random byte flips in the length prefix and header: open either succeeds or
 * fails with ELLE_EFORMAT, and whatever opens can be read. */
static void test_random_header_flips(void **state)
{
    (void)state;
    const char *path = tpath("flip_src.safetensors");
    make_small_valid(path);
    size_t len;
    unsigned char *orig = slurp(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | orig[i];
    assert_true(8 + hlen <= len);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    const char *mut = tpath("flip.safetensors");
    uint64_t s = 0x9e3779b97f4a7c15ull; /* xorshift64, fixed seed: reproducible */
    int opened = 0, rejected = 0;
    for (int it = 0; it < 500; it++) {
        memcpy(buf, orig, len);
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int flips = 1 + (int)(s % 3);
        for (int k = 0; k < flips; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            size_t pos = (size_t)((s >> 8) % (8 + hlen));
            /* mostly single-bit flips; sometimes a byte a JSON parser cares about */
            static const char interesting[] = "{}[]\",:-0123456789 \\eE.";
            if ((s & 7) == 0)
                buf[pos] = (unsigned char)interesting[(s >> 40) % (sizeof interesting - 1)];
            else
                buf[pos] ^= (unsigned char)(1u << ((s >> 32) & 7));
        }
        write_bytes(mut, buf, len);
        elle__st_file *f = NULL;
        int rc = elle__safetensors_open(&f, mut);
        if (rc == ELLE_OK) {
            opened++;
            for (size_t i = 0; i < elle__safetensors_count(f); i++) {
                const elle__st_entry *e = elle__safetensors_entry(f, i);
                void *dst = malloc((size_t)(e->end - e->begin) + (size_t)e->numel * 8 + 1);
                assert_non_null(dst);
                assert_elle_ok(elle__safetensors_read_raw(f, e, dst));
                rc = elle__safetensors_read_f32(f, e, dst);
                assert_true(rc == ELLE_OK || rc == ELLE_EFORMAT);
                rc = elle__safetensors_read_i64(f, e, dst);
                assert_true(rc == ELLE_OK || rc == ELLE_EFORMAT);
                free(dst);
            }
            elle__safetensors_close(f);
        } else {
            rejected++;
            if (rc != ELLE_EFORMAT || f != NULL || !elle_error_last()->message[0]) {
                print_error("iteration %d: %s (%s)\n", it, elle_status_name(rc),
                            elle_error_last()->message);
                fail();
            }
        }
    }
    /* the loop must have exercised both outcomes */
    assert_true(rejected > 0);
    assert_true(opened > 0);
    free(buf);
    free(orig);
}

/* ---- atomic writes ------------------------------------------------------------ */

static void assert_file_equals(const char *path, const unsigned char *want, size_t want_len)
{
    size_t len;
    unsigned char *got = slurp(path, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_atomic_invalid_leaves_old_file(void **state)
{
    (void)state;
    const char *path = tpath("keep.safetensors");
    make_small_valid(path);
    size_t len;
    unsigned char *old = slurp(path, &len);
    const float x[2] = {1, 2};
    elle__st_tensor dup[2] = {
        {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {2}, .data = x},
        {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {1}, .data = x},
    };
    assert_elle_status(elle__safetensors_write(path, dup, 2, NULL), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "duplicate tensor name 'x'"));
    assert_file_equals(path, old, len);
    assert_int_equal(count_temp_files(), 0);
    free(old);
}

static void test_atomic_missing_dir(void **state)
{
    (void)state;
    const float x[1] = {1};
    elle__st_tensor t = {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {1}, .data = x};
    assert_elle_status(elle__safetensors_write(tpath("no/such/dir/x.safetensors"), &t, 1, NULL),
                       ELLE_EIO);
    assert_non_null(strstr(elle_error_last()->message, "no/such/dir/x.safetensors"));
    /* a regular file used as a directory: unwritable even for root */
    const char *plain = tpath("plain_file");
    write_bytes(plain, "x", 1);
    char under[1024];
    snprintf(under, sizeof under, "%s/x.safetensors", plain);
    assert_elle_status(elle__safetensors_write(under, &t, 1, NULL), ELLE_EIO);
    assert_int_equal(count_temp_files(), 0);
    unlink(plain);
}

/* A directory where the file should go: the rename fails after the data was
 * written; the temp file must go. */
static void test_atomic_rename_fails(void **state)
{
    (void)state;
    const char *d = tpath("is_a_dir.safetensors");
    assert_int_equal(mkdir(d, 0700), 0);
    const float x[1] = {1};
    elle__st_tensor t = {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {1}, .data = x};
    assert_elle_status(elle__safetensors_write(d, &t, 1, NULL), ELLE_EIO);
    assert_non_null(strstr(elle_error_last()->message, "rename"));
    assert_int_equal(count_temp_files(), 0);
    struct stat st;
    assert_int_equal(stat(d, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(rmdir(d), 0);
}

/* The file system refuses the data half way (RLIMIT_FSIZE): ELLE_EIO, the old
 * file is intact and the partial temp file is gone. */
static void test_atomic_write_fails_midway(void **state)
{
    (void)state;
    const char *path = tpath("midway.safetensors");
    make_small_valid(path);
    size_t len;
    unsigned char *old = slurp(path, &len);
    enum { N = 1 << 18 }; /* 1 MiB of F32 */
    float *big = calloc(N, sizeof *big);
    assert_non_null(big);
    elle__st_tensor t = {.name = "w", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {N}, .data = big};

    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit lim = saved;
    lim.rlim_cur = 64 * 1024;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* get EFBIG, not a signal */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = elle__safetensors_write(path, &t, 1, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);

    assert_elle_status(rc, ELLE_EIO);
    assert_file_equals(path, old, len);
    assert_int_equal(count_temp_files(), 0);
    free(big);
    free(old);
}

static void test_atomic_unwritable_dir(void **state)
{
    (void)state;
    if (geteuid() == 0) /* root ignores directory permissions */
        skip();
    const char *d = tpath("ro");
    assert_int_equal(mkdir(d, 0700), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/m.safetensors", d);
    make_small_valid(path);
    size_t len;
    unsigned char *old = slurp(path, &len);
    assert_int_equal(chmod(d, 0500), 0);
    const float x[1] = {1};
    elle__st_tensor t = {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {1}, .data = x};
    int rc = elle__safetensors_write(path, &t, 1, NULL);
    chmod(d, 0700);
    assert_elle_status(rc, ELLE_EIO);
    assert_file_equals(path, old, len);
    free(old);
    unlink(path);
    rmdir(d);
}

/* A replaced file keeps its mode; a new file gets 0666 & ~umask, not
 * mkstemp's 0600. */
static void test_atomic_permissions(void **state)
{
    (void)state;
    const char *path = tpath("mode.safetensors");
    make_small_valid(path);
    assert_int_equal(chmod(path, 0604), 0);
    make_small_valid(path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0604);
    unlink(path);

    mode_t saved = umask(027);
    make_small_valid(path);
    umask(saved);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    unlink(path);
}

/* ---- arguments ---------------------------------------------------------------- */

static void test_null_arguments(void **state)
{
    (void)state;
    const float x[2] = {1, 2};
    elle__st_tensor t = {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {2}, .data = x};
    const char *path = tpath("args.safetensors");
    assert_elle_status(elle__safetensors_write(NULL, &t, 1, NULL), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_write("", &t, 1, NULL), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_write(path, NULL, 1, NULL), ELLE_EINVAL);

    elle__st_file *f = (elle__st_file *)&f;
    assert_elle_status(elle__safetensors_open(NULL, path), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_open(&f, NULL), ELLE_EINVAL);
    assert_null(f);

    make_small_valid(path);
    assert_elle_ok(elle__safetensors_open(&f, path));
    const elle__st_entry *e = elle__safetensors_find(f, "w");
    assert_non_null(e);
    float out[6];
    int64_t iv[1];
    assert_elle_status(elle__safetensors_read_f32(NULL, e, out), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_read_f32(f, NULL, out), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_read_f32(f, e, NULL), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_read_i64(NULL, e, iv), ELLE_EINVAL);
    assert_elle_status(elle__safetensors_read_i64(f, elle__safetensors_find(f, "n"), NULL),
                       ELLE_EINVAL);
    assert_elle_status(elle__safetensors_read_raw(f, e, NULL), ELLE_EINVAL);
    /* an entry of another file (its offsets were not checked against this one) */
    elle__st_entry fake = *e;
    assert_elle_status(elle__safetensors_read_f32(f, &fake, out), ELLE_EINVAL);
    elle__st_file *g = NULL;
    assert_elle_ok(elle__safetensors_open(&g, path));
    assert_elle_status(elle__safetensors_read_f32(f, elle__safetensors_find(g, "w"), out),
                       ELLE_EINVAL);
    elle__safetensors_close(g);

    assert_int_equal(elle__safetensors_count(NULL), 0);
    assert_null(elle__safetensors_entry(NULL, 0));
    assert_null(elle__safetensors_find(NULL, "w"));
    assert_null(elle__safetensors_find(f, NULL));
    assert_null(elle__safetensors_metadata(NULL, "format"));
    assert_null(elle__safetensors_metadata(f, NULL));
    elle__safetensors_close(f);
    elle__safetensors_close(NULL);
}

/* Bad tensors or metadata are ELLE_EINVAL and create no file. */
static void test_invalid_tensors(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4};
    const char *path = tpath("invalid.safetensors");
    elle__st_tensor good = {.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = x};
    struct {
        elle__st_tensor t;
        const char *frag;
    } cases[] = {
        {{.name = NULL, .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = x}, "NULL name"},
        {{.name = "", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = x}, "empty name"},
        {{.name = "__metadata__", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = x},
         "reserved"},
        {{.name = "x", .dtype = ELLE__ST_DTYPE_COUNT, .ndim = 1, .shape = {4}, .data = x},
         "dtype"},
        {{.name = "x", .dtype = (elle__st_dtype)-1, .ndim = 1, .shape = {4}, .data = x}, "dtype"},
        {{.name = "x", .dtype = ELLE__ST_F32, .ndim = 9, .shape = {4}, .data = x}, "ndim"},
        {{.name = "x", .dtype = ELLE__ST_F32, .ndim = -1, .shape = {4}, .data = x}, "ndim"},
        {{.name = "x", .dtype = ELLE__ST_F32, .ndim = 2, .shape = {4, -1}, .data = x}, "shape[1]"},
        {{.name = "x", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = NULL}, "NULL"},
        {{.name = "x", .dtype = ELLE__ST_F32, .ndim = 2, .shape = {INT64_C(1) << 40,
                                                                    INT64_C(1) << 40},
          .data = x},
         "overflow"},
        {{.name = "\xff\xfe", .dtype = ELLE__ST_F32, .ndim = 1, .shape = {4}, .data = x}, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        elle__st_tensor two[2] = {good, cases[i].t};
        if (two[1].name && !strcmp(two[1].name, "x"))
            two[1].name = "y";
        int rc = elle__safetensors_write(path, two, 2, NULL);
        if (rc != ELLE_EINVAL || !strstr(elle_error_last()->message, cases[i].frag)) {
            print_error("case %zu: %s (%s), expected ELLE_EINVAL mentioning \"%s\"\n", i,
                        elle_status_name(rc), elle_error_last()->message, cases[i].frag);
            fail();
        }
    }
    /* the sum of sizes overflows though each tensor fits */
    elle__st_tensor huge[2] = {
        {.name = "a", .dtype = ELLE__ST_U8, .ndim = 1, .shape = {INT64_MAX}, .data = x},
        {.name = "b", .dtype = ELLE__ST_U8, .ndim = 1, .shape = {1}, .data = x},
    };
    assert_elle_status(elle__safetensors_write(path, huge, 2, NULL), ELLE_EINVAL);

    static const char *const odd[] = {"format", NULL};
    static const char *const dupm[] = {"k", "a", "k", "b", NULL};
    static const char *const badu[] = {"k", "\xc3", NULL};
    assert_elle_status(elle__safetensors_write(path, &good, 1, odd), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "'format'"));
    assert_elle_status(elle__safetensors_write(path, &good, 1, dupm), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "duplicate metadata key 'k'"));
    assert_elle_status(elle__safetensors_write(path, &good, 1, badu), ELLE_EINVAL);

    struct stat st;
    assert_int_equal(stat(path, &st), -1); /* nothing was created */
    assert_int_equal(errno, ENOENT);
    assert_int_equal(count_temp_files(), 0);
}

static void test_dtype_table(void **state)
{
    (void)state;
    assert_string_equal(elle__st_dtype_name(ELLE__ST_BF16), "BF16");
    assert_string_equal(elle__st_dtype_name(ELLE__ST_F8_E4M3), "F8_E4M3");
    assert_int_equal(elle__st_dtype_size(ELLE__ST_F64), 8);
    assert_int_equal(elle__st_dtype_size(ELLE__ST_BOOL), 1);
    assert_null(elle__st_dtype_name(ELLE__ST_DTYPE_COUNT));
    assert_int_equal(elle__st_dtype_size((elle__st_dtype)-1), 0);
    for (int d = 0; d < ELLE__ST_DTYPE_COUNT; d++) {
        assert_non_null(elle__st_dtype_name((elle__st_dtype)d));
        assert_true(elle__st_dtype_size((elle__st_dtype)d) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_hand_assembled),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_conversion_chunks),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_short_file),
        cmocka_unit_test(test_bad_header_length_zero),
        cmocka_unit_test(test_bad_header_length_huge),
        cmocka_unit_test(test_bad_header_past_end),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_json_nul_and_utf8),
        cmocka_unit_test(test_bad_not_object),
        cmocka_unit_test(test_bad_entry_not_object),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_bad_shape_type),
        cmocka_unit_test(test_bad_negative_dim),
        cmocka_unit_test(test_bad_overflow_dims),
        cmocka_unit_test(test_bad_offsets_type),
        cmocka_unit_test(test_bad_begin_after_end),
        cmocka_unit_test(test_bad_offsets_beyond_end),
        cmocka_unit_test(test_bad_size_mismatch),
        cmocka_unit_test(test_bad_overlap),
        cmocka_unit_test(test_bad_hole),
        cmocka_unit_test(test_bad_duplicate_key),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_bad_not_a_file),
        cmocka_unit_test(test_file_shrinks_after_open),
        cmocka_unit_test(test_random_header_flips),
        cmocka_unit_test(test_atomic_invalid_leaves_old_file),
        cmocka_unit_test(test_atomic_missing_dir),
        cmocka_unit_test(test_atomic_rename_fails),
        cmocka_unit_test(test_atomic_write_fails_midway),
        cmocka_unit_test(test_atomic_unwritable_dir),
        cmocka_unit_test(test_atomic_permissions),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_invalid_tensors),
        cmocka_unit_test(test_dtype_table),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
