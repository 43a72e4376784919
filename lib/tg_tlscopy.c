// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_tlscopy - the MTA's own copies of the TLS libraries (see
 *	tg_tlscopy.h)
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_tlscopy.h"

/* See tg_tlscopy.h. */
int tg_tlscopy_dir(const char *dir, char *err, size_t errlen)
{
	char parent[PATH_MAX];
	struct stat st;

	if (dir[0] != '/') {
		snprintf(err, errlen, "%s: not an absolute path", dir);
		return -1;
	}
	if (stat(dir, &st) < 0 && errno == ENOENT) {
		snprintf(parent, sizeof(parent), "%s", dir);
		if (stat(dirname(parent), &st) < 0) {
			snprintf(err, errlen, "%s: %s (its parent %s)", dir,
				 strerror(errno), parent);
			return -1;
		}
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: cannot make it: %s", dir,
				 strerror(errno));
			return -1;
		}
	}
	if (stat(dir, &st) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a directory", dir);
		return -1;
	}
	if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(err, errlen,
			 "%s: must be owned by root and writable by no one "
			 "else (the TLS libraries the MTA runs are copied "
			 "there)", dir);
		return -1;
	}
	return 0;
}

#define TG_TLSCOPY_CHUNK	(64 * 1024)

/* Up to len bytes of fd into buf (fewer only at its end); -1 with errno. */
static ssize_t tg_read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += n;
	}
	return (ssize_t)got;
}

/*
 * Whether the open file have holds the same bytes as src, a chunk at a
 * time (a library is megabytes; the agent's memory is not).
 */
static int tg_same_bytes(int src, int have, char *a, char *b)
{
	ssize_t x, y;

	for (;;) {
		x = tg_read_full(src, a, TG_TLSCOPY_CHUNK);
		y = tg_read_full(have, b, TG_TLSCOPY_CHUNK);
		if (x < 0 || y < 0 || x != y || memcmp(a, b, x))
			return 0;
		if (x == 0)
			return 1;
	}
}

/*
 * src (open, at its start) copied to dst through a temporary file in its
 * directory, flushed, then renamed over dst.
 */
static int tg_replace(int src, const char *dir, const char *dst, char *buf,
		      char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	ssize_t n, w;
	int fd, dfd, e = 0;
	size_t done;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", dst) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", dst);
		return -1;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot write a copy: %s", dir,
			 strerror(errno));
		return -1;
	}
	while (!e && (n = tg_read_full(src, buf, TG_TLSCOPY_CHUNK)) > 0) {
		for (done = 0; done < (size_t)n; done += w) {
			w = write(fd, buf + done, n - done);
			if (w < 0 && errno == EINTR) {
				w = 0;
				continue;
			}
			if (w <= 0) {
				e = w < 0 ? errno : EIO;
				break;
			}
		}
	}
	if (!e && n < 0)
		e = errno;
	if (!e && (fchmod(fd, 0644) < 0 || fsync(fd) < 0))
		e = errno;
	close(fd);
	if (e) {
		snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(e));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, dst) < 0) {
		snprintf(err, errlen, "%s: cannot rename to %s: %s", tmp, dst,
			 strerror(errno));
		unlink(tmp);
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* See tg_tlscopy.h. */
int tg_tlscopy_make(const char *src, const char *dir, char *dst, size_t dstlen,
		    char *err, size_t errlen)
{
	const char *name = strrchr(src, '/');
	struct stat ss, hs;
	char *a = NULL, *b = NULL;
	int sfd, hfd, same = 0, rc = -1;

	name = name ? name + 1 : src;
	if (!*name || snprintf(dst, dstlen, "%s/%s", dir, name) >= (int)dstlen) {
		snprintf(err, errlen, "%s: no file name, or too long a path",
			 src);
		return -1;
	}
	sfd = open(src, O_RDONLY | O_CLOEXEC);
	if (sfd < 0 || fstat(sfd, &ss) < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", src,
			 strerror(errno));
		if (sfd >= 0)
			close(sfd);
		return -1;
	}
	if (!S_ISREG(ss.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", src);
		close(sfd);
		return -1;
	}
	a = malloc(TG_TLSCOPY_CHUNK);
	b = malloc(TG_TLSCOPY_CHUNK);
	if (!a || !b) {
		snprintf(err, errlen, "%s: %s", src, strerror(ENOMEM));
		goto out;
	}
	hfd = open(dst, O_RDONLY | O_CLOEXEC);
	if (hfd >= 0) {
		same = fstat(hfd, &hs) == 0 && S_ISREG(hs.st_mode) &&
		       hs.st_size == ss.st_size && tg_same_bytes(sfd, hfd, a, b);
		close(hfd);
	}
	if (same) {
		rc = 0;
	} else if (lseek(sfd, 0, SEEK_SET) < 0) {
		snprintf(err, errlen, "%s: %s", src, strerror(errno));
	} else {
		rc = tg_replace(sfd, dir, dst, a, err, errlen) ? -1 : 1;
	}
out:
	free(a);
	free(b);
	close(sfd);
	return rc;
}
