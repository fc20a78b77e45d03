/*
 * libFuzzer target for the safetensors reader (lib/io/safetensors.c).
 *
 * The input is the whole file. The reader works on paths, so each input is
 * written to one temporary file (under $TMPDIR, default /tmp; point TMPDIR at
 * a tmpfs for speed). Checked beyond "no crash, no sanitizer report":
 *   - open fails only with ELLE_EFORMAT or ELLE_EIO, with a message, and
 *     leaves the output NULL;
 *   - every entry of a file that opens lies inside the data section, matches
 *     its shape and dtype, and can be read raw and converted (or is refused
 *     with ELLE_EFORMAT for a dtype that does not convert);
 *   - writing the entries back and reopening gives the same names, dtypes,
 *     shapes and bytes (the writer and reader agree).
 * A violated property calls abort() so that libFuzzer keeps the input.
 *
 * Build: tests/fuzz/meson.build (clang only). Run, e.g.
 *   build/tests/fuzz/fuzz_safetensors -max_total_time=300 -max_len=4096 corpus/
 * Compiled with -DELLE_FUZZ_STANDALONE (any compiler) it instead replays the
 * files named on the command line, to reproduce a crash without libFuzzer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char in_path[512], out_path[512];

static void remove_temps(void)
{
    if (in_path[0])
        unlink(in_path);
    if (out_path[0])
        unlink(out_path);
}

static void make_temp(char *buf, size_t size, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, size, "%s/elle_fuzz_st_%s_XXXXXX", dir && dir[0] ? dir : "/tmp", tag);
    int fd = mkstemp(buf);
    if (fd < 0) {
        perror("fuzz_safetensors: mkstemp");
        abort();
    }
    close(fd);
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_safetensors: check failed: %s (line %d); last error: %s\n", \
                    #cond, __LINE__, elle_error_last()->message);                          \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Validate and read every entry; returns a malloc'd array of each entry's raw
 * bytes (NULL entries for empty tensors) for the round trip. */
static unsigned char **read_all(elle__st_file *f, uint64_t file_size)
{
    size_t n = elle__safetensors_count(f);
    unsigned char **raw = calloc(n ? n : 1, sizeof *raw);
    CHECK(raw != NULL);
    for (size_t i = 0; i < n; i++) {
        const elle__st_entry *e = elle__safetensors_entry(f, i);
        CHECK(e != NULL && e->name != NULL);
        CHECK(elle__safetensors_find(f, e->name) == e); /* names are unique */
        CHECK(e->ndim >= 0 && e->ndim <= ELLE__ST_MAX_NDIM);
        int64_t numel = 1;
        for (int k = 0; k < e->ndim; k++) {
            CHECK(e->shape[k] >= 0);
            numel *= e->shape[k]; /* cannot overflow: the reader checked */
        }
        CHECK(numel == e->numel);
        CHECK(e->begin <= e->end && e->end <= file_size);
        uint64_t nbytes = e->end - e->begin;
        CHECK(nbytes == (uint64_t)numel * elle__st_dtype_size(e->dtype));

        raw[i] = malloc(nbytes + 1);
        CHECK(raw[i] != NULL);
        CHECK(elle__safetensors_read_raw(f, e, raw[i]) == ELLE_OK);
        float *fv = malloc((size_t)numel * sizeof *fv + 1);
        int64_t *iv = malloc((size_t)numel * sizeof *iv + 1);
        CHECK(fv != NULL && iv != NULL);
        int rf = elle__safetensors_read_f32(f, e, fv);
        int ri = elle__safetensors_read_i64(f, e, iv);
        CHECK(rf == ELLE_OK || rf == ELLE_EFORMAT);
        CHECK(ri == ELLE_OK || ri == ELLE_EFORMAT);
        if (e->dtype == ELLE__ST_F32 && nbytes)
            CHECK(memcmp(fv, raw[i], nbytes) == 0);
        if (e->dtype == ELLE__ST_I64 && nbytes)
            CHECK(memcmp(iv, raw[i], nbytes) == 0);
        free(fv);
        free(iv);
    }
    return raw;
}

/* Write the entries back and check that they read back the same. */
static void round_trip(elle__st_file *f, unsigned char **raw)
{
    size_t n = elle__safetensors_count(f);
    elle__st_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    CHECK(ts != NULL);
    for (size_t i = 0; i < n; i++) {
        const elle__st_entry *e = elle__safetensors_entry(f, i);
        ts[i].name = e->name;
        ts[i].dtype = e->dtype;
        ts[i].ndim = e->ndim;
        memcpy(ts[i].shape, e->shape, sizeof ts[i].shape);
        ts[i].data = raw[i];
    }
    const char *meta_value = elle__safetensors_metadata(f, "format");
    const char *meta[] = {"format", meta_value, NULL};
    int rc = elle__safetensors_write(out_path, ts, n, meta_value ? meta : NULL);
    if (rc == ELLE_EINVAL) {
        /* the reader accepts an empty name (as the Rust reference does); the
         * writer refuses to produce one */
        int empty = 0;
        for (size_t i = 0; i < n; i++)
            empty |= ts[i].name[0] == '\0';
        CHECK(empty);
        free(ts);
        return;
    }
    CHECK(rc == ELLE_OK);
    elle__st_file *g = NULL;
    CHECK(elle__safetensors_open(&g, out_path) == ELLE_OK);
    CHECK(elle__safetensors_count(g) == n);
    for (size_t i = 0; i < n; i++) {
        const elle__st_entry *a = elle__safetensors_entry(f, i);
        const elle__st_entry *b = elle__safetensors_entry(g, i);
        CHECK(strcmp(a->name, b->name) == 0);
        CHECK(a->dtype == b->dtype && a->ndim == b->ndim && a->numel == b->numel);
        CHECK(memcmp(a->shape, b->shape, sizeof a->shape) == 0);
        uint64_t nbytes = b->end - b->begin;
        CHECK(nbytes == a->end - a->begin);
        unsigned char *back = malloc(nbytes + 1);
        CHECK(back != NULL);
        CHECK(elle__safetensors_read_raw(g, b, back) == ELLE_OK);
        CHECK(nbytes == 0 || memcmp(back, raw[i], nbytes) == 0);
        free(back);
    }
    if (meta_value)
        CHECK(strcmp(elle__safetensors_metadata(g, "format"), meta_value) == 0);
    elle__safetensors_close(g);
    free(ts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!in_path[0]) {
        make_temp(in_path, sizeof in_path, "in");
        make_temp(out_path, sizeof out_path, "out");
        atexit(remove_temps);
    }
    FILE *fp = fopen(in_path, "wb");
    CHECK(fp != NULL);
    CHECK(size == 0 || fwrite(data, 1, size, fp) == size);
    CHECK(fclose(fp) == 0);

    elle_error_clear();
    elle__st_file *f = (elle__st_file *)&f; /* open must reset it */
    int rc = elle__safetensors_open(&f, in_path);
    if (rc != ELLE_OK) {
        CHECK(rc == ELLE_EFORMAT || rc == ELLE_EIO);
        CHECK(f == NULL);
        CHECK(elle_error_last()->message[0] != '\0');
        return 0;
    }
    unsigned char **raw = read_all(f, (uint64_t)size);
    round_trip(f, raw);
    for (size_t i = 0; i < elle__safetensors_count(f); i++)
        free(raw[i]);
    free(raw);
    elle__safetensors_close(f);
    return 0;
}

#ifdef ELLE_FUZZ_STANDALONE
/* Replay the inputs named on the command line. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (!fp) {
            perror(argv[i]);
            return 1;
        }
        size_t cap = 1 << 16, len = 0;
        uint8_t *buf = malloc(cap);
        size_t got;
        while (buf && (got = fread(buf + len, 1, cap - len, fp)) > 0) {
            len += got;
            if (len == cap) {
                uint8_t *bigger = realloc(buf, cap *= 2);
                if (!bigger)
                    free(buf);
                buf = bigger;
            }
        }
        fclose(fp);
        if (!buf) {
            fprintf(stderr, "%s: out of memory\n", argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        printf("%s: ok\n", argv[i]);
    }
    return 0;
}
#endif
