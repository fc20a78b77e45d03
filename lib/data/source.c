/* Raw or gzip file reading for the dataset loaders; see source.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dup, fileno (also set by the build) */
#endif

#include "data/source.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/error.h"

/* First buffer size for a gzip stream of unknown length; doubled as needed. */
#define GZ_FIRST_CHUNK ((size_t)1 << 20)
/* zlib's gzread takes an unsigned int length. */
#define GZ_MAX_READ ((size_t)1 << 30)

int elle__src_open(elle__src *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->size = -1;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        ELLE_FAIL(ELLE_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        int e = errno;
        fclose(fp);
        ELLE_FAIL(ELLE_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(fp);
        ELLE_FAIL(ELLE_EIO, "%s: not a regular file", path);
    }
    unsigned char magic[2] = {0, 0};
    size_t m = fread(magic, 1, 2, fp);
    if (m < 2 && ferror(fp)) {
        int e = errno;
        fclose(fp);
        ELLE_FAIL(ELLE_EIO, "%s: cannot read: %s", path, strerror(e));
    }
    if (m == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        /* gzip: hand a duplicate descriptor, rewound, to zlib. fclose first:
         * closing an input stream may move the shared file offset. */
        int fd = dup(fileno(fp));
        fclose(fp);
        if (fd < 0)
            ELLE_FAIL(ELLE_EIO, "%s: cannot open: %s", path, strerror(errno));
        if (lseek(fd, 0, SEEK_SET) != 0) {
            int e = errno;
            close(fd);
            ELLE_FAIL(ELLE_EIO, "%s: cannot seek: %s", path, strerror(e));
        }
        gzFile gz = gzdopen(fd, "rb");
        if (!gz) {
            close(fd);
            ELLE_FAIL(ELLE_ENOMEM, "%s: cannot start gzip decompression (out of memory)", path);
        }
        gzbuffer(gz, 1u << 18);
        s->gz = gz;
        return ELLE_OK;
    }
    if (fseek(fp, 0, SEEK_SET) != 0) {
        int e = errno;
        fclose(fp);
        ELLE_FAIL(ELLE_EIO, "%s: cannot seek: %s", path, strerror(e));
    }
    s->fp = fp;
    s->size = (int64_t)st.st_size;
    return ELLE_OK;
}

void elle__src_close(elle__src *s)
{
    if (s->fp)
        fclose(s->fp);
    if (s->gz)
        gzclose(s->gz);
    s->fp = NULL;
    s->gz = NULL;
}

const char *elle__src_size_note(const elle__src *s)
{
    return s->gz ? " after decompression" : "";
}

static int gz_fail(elle__src *s)
{
    int errnum = Z_OK;
    const char *msg = gzerror(s->gz, &errnum);
    if (errnum == Z_ERRNO)
        ELLE_FAIL(ELLE_EIO, "%s: cannot read: %s", s->path, strerror(errno));
    if (errnum == Z_MEM_ERROR)
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory while decompressing", s->path);
    ELLE_FAIL(ELLE_EFORMAT, "%s: corrupt gzip data: %s", s->path,
              msg && msg[0] ? msg : "unknown zlib error");
}

int elle__src_read(elle__src *s, void *buf, size_t n, size_t *got)
{
    size_t done = 0;
    unsigned char *p = buf;
    if (s->fp) {
        while (done < n) {
            size_t r = fread(p + done, 1, n - done, s->fp);
            done += r;
            if (r == 0) {
                if (ferror(s->fp))
                    ELLE_FAIL(ELLE_EIO, "%s: cannot read: %s", s->path, strerror(errno));
                break;
            }
        }
    } else if (s->gz) {
        while (done < n) {
            size_t want = n - done < GZ_MAX_READ ? n - done : GZ_MAX_READ;
            int r = gzread(s->gz, p + done, (unsigned)want);
            if (r < 0)
                return gz_fail(s);
            if (r == 0)
                break;
            done += (size_t)r;
        }
    } else {
        ELLE_FAIL(ELLE_ERROR, "%s: internal error: read from a closed source", s->path);
    }
    s->pos += (int64_t)done;
    *got = done;
    return ELLE_OK;
}

int elle__src_read_alloc(elle__src *s, size_t n, void **out, size_t *got)
{
    *out = NULL;
    *got = 0;
    size_t cap = n;
    if (s->fp && s->size >= s->pos && (uint64_t)(s->size - s->pos) < (uint64_t)cap)
        cap = (size_t)(s->size - s->pos); /* the file cannot deliver more */
    else if (s->gz && cap > GZ_FIRST_CHUNK)
        cap = GZ_FIRST_CHUNK;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf)
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory for %zu bytes", s->path, cap);
    size_t have = 0;
    for (;;) {
        size_t r = 0;
        int rc = elle__src_read(s, buf + have, cap - have, &r);
        if (rc < 0) {
            free(buf);
            return rc;
        }
        have += r;
        if (have < cap || cap == n || !s->gz)
            break;
        /* gzip delivered all we asked for: grow towards n */
        size_t next = cap > n / 2 ? n : cap * 2;
        unsigned char *nb = realloc(buf, next);
        if (!nb) {
            free(buf);
            ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory for %zu bytes", s->path, next);
        }
        buf = nb;
        cap = next;
    }
    *out = buf;
    *got = have;
    return ELLE_OK;
}

int elle__src_read_all(elle__src *s, int64_t cap, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (s->fp) {
        int64_t left = s->size - s->pos;
        if (left < 0)
            left = 0;
        if (left > cap)
            ELLE_FAIL(ELLE_EFORMAT, "%s: file of %lld bytes is larger than the %lld-byte limit",
                      s->path, (long long)s->size, (long long)cap);
        void *buf = NULL;
        size_t got = 0;
        ELLE_TRY(elle__src_read_alloc(s, (size_t)left, &buf, &got));
        *out = buf;
        *len = got;
        return ELLE_OK;
    }
    /* gzip: ask for one byte past the cap to detect an oversized stream */
    void *buf = NULL;
    size_t got = 0;
    ELLE_TRY(elle__src_read_alloc(s, (size_t)cap + 1, &buf, &got));
    if ((int64_t)got > cap) {
        free(buf);
        ELLE_FAIL(ELLE_EFORMAT, "%s: decompressed data is larger than the %lld-byte limit",
                  s->path, (long long)cap);
    }
    *out = buf;
    *len = got;
    return ELLE_OK;
}

int elle__src_expect_end(elle__src *s, const char *what)
{
    if (s->fp) {
        if (s->size > s->pos)
            ELLE_FAIL(ELLE_EFORMAT,
                      "%s: %lld bytes of trailing data after %s (file has %lld bytes, "
                      "expected %lld)",
                      s->path, (long long)(s->size - s->pos), what, (long long)s->size,
                      (long long)s->pos);
        return ELLE_OK;
    }
    unsigned char b;
    int r = gzread(s->gz, &b, 1);
    if (r < 0)
        return gz_fail(s);
    if (r > 0)
        ELLE_FAIL(ELLE_EFORMAT, "%s: trailing data after %s (%lld bytes expected%s)", s->path,
                  what, (long long)s->pos, elle__src_size_note(s));
    /* A stream cut short (even inside the CRC trailer) ends with Z_BUF_ERROR;
     * a CRC mismatch was reported by gzread above. */
    int errnum = Z_OK;
    gzerror(s->gz, &errnum);
    if (errnum == Z_BUF_ERROR)
        ELLE_FAIL(ELLE_EFORMAT, "%s: truncated gzip stream (it ends before its trailer)",
                  s->path);
    if (errnum != Z_OK)
        return gz_fail(s);
    return ELLE_OK;
}

int elle__path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] != '/';
    int len = snprintf(buf, cap, "%s%s%s", dir, slash ? "/" : "", name);
    if (len < 0 || (size_t)len >= cap)
        ELLE_FAIL(ELLE_EINVAL, "%s: path too long (more than %zu bytes with '%s')", dir, cap - 1,
                  name);
    return ELLE_OK;
}

int elle__file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int elle__dir_check(const char *path, const char *who)
{
    struct stat st;
    if (stat(path, &st) != 0)
        ELLE_FAIL(ELLE_EIO, "%s: %s: %s", who, path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        ELLE_FAIL(ELLE_EIO, "%s: %s: not a directory (give the folder that holds the files)",
                  who, path);
    return ELLE_OK;
}

int elle__find_file(char *buf, size_t cap, const char *dir, const char *prefix,
                    const char *const *suffixes)
{
    char name[256];
    char tried[512] = "";
    size_t used = 0;
    for (size_t i = 0; suffixes[i]; i++) {
        int len = snprintf(name, sizeof name, "%s%s", prefix, suffixes[i]);
        if (len < 0 || (size_t)len >= sizeof name)
            continue;
        ELLE_TRY(elle__path_join(buf, cap, dir, name));
        if (elle__file_exists(buf))
            return ELLE_OK;
        int w = snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", name);
        if (w > 0 && (size_t)w < sizeof tried - used)
            used += (size_t)w;
    }
    ELLE_FAIL(ELLE_EIO, "%s: none of %s found in this directory", dir, tried);
}
