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

#define TG_TLSCOPY_MAX	(64UL << 20)	/* larger than any TLS library */

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

/* The whole of path, at most TG_TLSCOPY_MAX bytes; NULL with errno. */
static char *tg_slurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > TG_TLSCOPY_MAX) {
		errno = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
		goto fail;
	}
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		goto fail;
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;	/* shrank while read */
			goto fail;
		}
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
fail:
	n = errno;
	free(buf);
	close(fd);
	errno = n;
	return NULL;
}

/* Write len bytes of buf to dst through a temporary file in its directory. */
static int tg_replace(const char *dir, const char *dst, const char *buf,
		      size_t len, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	size_t done = 0;
	ssize_t n;
	int fd, dfd;

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
	while (done < len) {
		n = write(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += n;
	}
	if (done < len || fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
		snprintf(err, errlen, "%s: cannot write: %s", tmp,
			 strerror(errno ? errno : EIO));
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
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
	size_t len, have_len;
	char *buf, *have;
	int same, rc;

	name = name ? name + 1 : src;
	if (!*name || snprintf(dst, dstlen, "%s/%s", dir, name) >= (int)dstlen) {
		snprintf(err, errlen, "%s: no file name, or too long a path",
			 src);
		return -1;
	}
	buf = tg_slurp(src, &len);
	if (!buf) {
		snprintf(err, errlen, "%s: cannot read: %s", src,
			 strerror(errno));
		return -1;
	}
	have = tg_slurp(dst, &have_len);
	same = have && have_len == len && memcmp(have, buf, len) == 0;
	free(have);
	rc = same ? 0 : tg_replace(dir, dst, buf, len, err, errlen) ? -1 : 1;
	free(buf);
	return rc;
}
