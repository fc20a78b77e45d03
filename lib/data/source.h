/*
 * Reading a dataset file that may be raw or gzip-compressed.
 *
 * elle__src_open looks at the first two bytes: 0x1f 0x8b is gzip (read
 * through zlib), anything else is read as is. For a raw file the size is
 * known up front (loaders check it against their header before reading);
 * for gzip it is known only at the end, so buffers grow as data arrives and
 * a lying header cannot make us allocate more than about twice what the
 * file really holds.
 *
 * Every error message starts with the file's path.
 */
#ifndef ELLE_DATA_SOURCE_H
#define ELLE_DATA_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <zlib.h>

typedef struct elle__src {
    const char *path; /* borrowed */
    FILE *fp;         /* raw file, or NULL */
    gzFile gz;        /* gzip stream, or NULL */
    int64_t size;     /* raw: file size in bytes; gzip: -1 */
    int64_t pos;      /* bytes delivered so far (decompressed, for gzip) */
} elle__src;

/* Open `path`. ELLE_EIO when it cannot be opened or is not a regular file. */
int elle__src_open(elle__src *s, const char *path);

/* Close (safe on a zeroed or already closed source). */
void elle__src_close(elle__src *s);

/* 1 for a gzip source. */
static inline int elle__src_is_gz(const elle__src *s)
{
    return s->gz != NULL;
}

/* Read up to n bytes into buf; *got < n means the data ended. ELLE_EIO for a
 * read error, ELLE_EFORMAT for a corrupt gzip stream. A gzip stream cut
 * short reads as a short count (the caller reports the truncation). */
int elle__src_read(elle__src *s, void *buf, size_t n, size_t *got);

/* Read n bytes into a new malloc'd buffer (*out; free it). For gzip the
 * buffer grows as data arrives. *got < n when the data ended first (the
 * buffer is still returned). ELLE_ENOMEM, and read errors as above. */
int elle__src_read_alloc(elle__src *s, size_t n, void **out, size_t *got);

/* Read everything that is left (at most `cap` bytes: more is ELLE_EFORMAT
 * "larger than ..."). */
int elle__src_read_all(elle__src *s, int64_t cap, void **out, size_t *len);

/* Call after the last expected byte: ELLE_OK at a clean end of data,
 * ELLE_EFORMAT when bytes follow ("<what> is followed by trailing data") or
 * when a gzip stream ends without its trailer or fails its CRC check. */
int elle__src_expect_end(elle__src *s, const char *what);

/* " after decompression" for gzip sources, "" otherwise: for size messages. */
const char *elle__src_size_note(const elle__src *s);

/* "<dir>/<name>" into buf; ELLE_EINVAL when it does not fit. */
int elle__path_join(char *buf, size_t cap, const char *dir, const char *name);

/* 1 when `path` names an existing regular file. */
int elle__file_exists(const char *path);

/* ELLE_OK when `path` is an existing directory; ELLE_EIO naming it otherwise
 * (`who` is the public function, for the message). */
int elle__dir_check(const char *path, const char *who);

/* The first file "<dir>/<prefix><suffix>" that exists, for the suffixes of
 * a NULL-terminated list, joined into buf. ELLE_EIO listing the names looked
 * for when none exists. */
int elle__find_file(char *buf, size_t cap, const char *dir, const char *prefix,
                    const char *const *suffixes);

#endif /* ELLE_DATA_SOURCE_H */
