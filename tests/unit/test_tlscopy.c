// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_tlscopy - the MTA's copies of the TLS libraries
 * SYNOPSIS
 *	build/tests/test_tlscopy
 * DESCRIPTION
 *	tg_tlscopy_make() in a directory of its own: a first copy is
 *	written; a second call with the same source keeps it (the same
 *	inode: the uprobes on it and the MTA's bind mount of it stay
 *	valid); a changed source is copied anew (a new inode, the new
 *	bytes) and leaves no temporary file; an unreadable source is an
 *	error naming it. tg_tlscopy_dir(): a missing directory is made when
 *	its parent exists, with no one but its owner able to write to it; a
 *	directory others may write to, a file, a relative path and a missing
 *	parent are refused, naming the path.
 *
 *	The checks on ownership need root (make check runs as root); other
 *	users skip those cases and say so.
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_tlscopy.h"
#include "tg_test.h"

static char base[] = "/tmp/test_tlscopy-XXXXXX";

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) < 0 || fclose(f))
		CHECK(0, "cannot write %s", path);
}

static int same_file(const char *a, const char *b)
{
	char x[256] = "", y[256] = "";
	FILE *f = fopen(a, "r"), *g = fopen(b, "r");

	if (f) {
		if (!fgets(x, sizeof(x), f))
			x[0] = 0;
		fclose(f);
	}
	if (g) {
		if (!fgets(y, sizeof(y), g))
			y[0] = 0;
		fclose(g);
	}
	return f && g && strcmp(x, y) == 0;
}

/* Entries of dir, "." and ".." not counted. */
static int entries(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	while (d && (de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	if (d)
		closedir(d);
	return n;
}

static void test_make(void)
{
	char src[PATH_MAX], dir[PATH_MAX], dst[PATH_MAX], err[512];
	struct stat a, b;
	int rc;

	snprintf(src, sizeof(src), "%s/libssl.so.3", base);
	snprintf(dir, sizeof(dir), "%s/copies", base);
	put(src, "version one\n");

	tg_case("a missing directory is made, writable by its owner only");
	CHECK_EQ(tg_tlscopy_dir(dir, err, sizeof(err)), 0);
	CHECK(stat(dir, &a) == 0 && S_ISDIR(a.st_mode) &&
		      !(a.st_mode & (S_IWGRP | S_IWOTH)),
	      "%s: mode %o", dir, a.st_mode);

	tg_case("a first copy is written");
	rc = tg_tlscopy_make(src, dir, dst, sizeof(dst), err, sizeof(err));
	CHECK_EQ(rc, 1);
	CHECK_STR(dst, "/copies/libssl.so.3");
	CHECK(same_file(src, dst), "%s differs from %s", dst, src);
	CHECK(stat(dst, &a) == 0 && (a.st_mode & 0777) == 0644,
	      "%s: mode %o", dst, a.st_mode);

	tg_case("the same bytes again: the copy is kept, inode and all");
	rc = tg_tlscopy_make(src, dir, dst, sizeof(dst), err, sizeof(err));
	CHECK_EQ(rc, 0);
	CHECK(stat(dst, &b) == 0 && b.st_ino == a.st_ino,
	      "inode %lu became %lu", (unsigned long)a.st_ino,
	      (unsigned long)b.st_ino);

	tg_case("a changed source: copied anew, no temporary file left");
	put(src, "version two, longer\n");
	rc = tg_tlscopy_make(src, dir, dst, sizeof(dst), err, sizeof(err));
	CHECK_EQ(rc, 1);
	CHECK(same_file(src, dst), "%s differs from %s", dst, src);
	CHECK(stat(dst, &b) == 0 && b.st_ino != a.st_ino,
	      "the copy kept inode %lu", (unsigned long)a.st_ino);
	CHECK_EQ(entries(dir), 1);

	tg_case("an unreadable source is an error naming it");
	rc = tg_tlscopy_make("/nonexistent/libssl.so.3", dir, dst, sizeof(dst),
			     err, sizeof(err));
	CHECK_EQ(rc, -1);
	CHECK_STR(err, "/nonexistent/libssl.so.3");
}

static void test_dir(void)
{
	static const struct {
		int line;
		const char *sub;	/* under base; NULL: the path as is */
		const char *path;
		mode_t mode;		/* 0: a file, not a directory */
		const char *says;
	} rows[] = {
		{ __LINE__, "open", NULL, 0775, "writable by no one else" },
		{ __LINE__, "world", NULL, 0757, "writable by no one else" },
		{ __LINE__, "file", NULL, 0, "not a directory" },
		{ __LINE__, NULL, "relative/dir", 0, "not an absolute path" },
		{ __LINE__, "no/parent", NULL, 0755, "its parent" },
	};
	char path[PATH_MAX], err[512];
	size_t i;
	int fd;

	for (i = 0; i < TG_NELEM(rows); i++) {
		tg_case("tg_tlscopy_dir refuses %s",
			rows[i].sub ? rows[i].sub : rows[i].path);
		if (rows[i].sub)
			snprintf(path, sizeof(path), "%s/%s", base,
				 rows[i].sub);
		else
			snprintf(path, sizeof(path), "%s", rows[i].path);
		if (rows[i].sub && !strchr(rows[i].sub, '/')) {
			if (rows[i].mode) {
				mkdir(path, 0700);
				chmod(path, rows[i].mode);
			} else {
				fd = open(path, O_CREAT | O_WRONLY, 0644);
				if (fd >= 0)
					close(fd);
			}
		}
		err[0] = 0;
		CHECK_AT(rows[i].line, tg_tlscopy_dir(path, err, sizeof(err)) < 0,
			 "%s accepted", path);
		CHECK_AT(rows[i].line, strstr(err, rows[i].says) != NULL,
			 "\"%s\" does not say \"%s\"", err, rows[i].says);
		CHECK_AT(rows[i].line,
			 strstr(err, rows[i].sub ? rows[i].sub : path) != NULL,
			 "\"%s\" does not name the path", err);
	}
}

int main(void)
{
	char cmd[PATH_MAX + 16];

	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	if (geteuid() != 0) {
		tg_skip("the copies' directory must be root's: run as root "
			"(make check does)");
	} else {
		test_make();
		test_dir();
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", base);
	return tg_test_done();
}
