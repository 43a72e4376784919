// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pindir - is a directory fit to hold tlsguard's pins (see
 *	tg_pindir.h)
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "tg_pindir.h"

int tg_pindir_check(const char *dir, char *err, size_t errlen)
{
	char parent[4096];
	struct stat a, b;
	struct statfs fs;

	if (statfs(dir, &fs) < 0 || stat(dir, &a) < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if (fs.f_type != BPF_FS_MAGIC || !S_ISDIR(a.st_mode)) {
		snprintf(err, errlen, "%s: not a directory on a bpf file system "
			 "(mount -t bpf bpf /sys/fs/bpf)", dir);
		return -1;
	}
	snprintf(parent, sizeof(parent), "%s/..", dir);
	if (stat(parent, &b) < 0 || a.st_dev != b.st_dev ||
	    a.st_ino == b.st_ino) {
		snprintf(err, errlen, "%s: the root of a bpf file system, shared "
			 "with other programs' pins: tlsguard needs a directory "
			 "of its own beneath it", dir);
		return -1;
	}
	return 0;
}

/* The first failure is the one reported; the rest is still tried. */
static int tg_pindir_fail(int rc, const char *path, char *err, size_t errlen)
{
	if (rc == 0)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return -1;
}

static int tg_pindir_is_gen(const struct dirent *de)
{
	size_t i;

	if (de->d_name[0] != TG_PINDIR_GEN || de->d_type != DT_DIR ||
	    strlen(de->d_name) != 17)
		return 0;
	for (i = 1; i < 17; i++)
		if (!strchr("0123456789abcdef", de->d_name[i]))
			return 0;
	return 1;
}

int tg_pindir_empty(const char *dir, int links, char *err, size_t errlen)
{
	char p[4096 + 256];
	struct dirent *de;
	int rc = 0;
	size_t len;
	DIR *d = opendir(dir);

	if (!d) {
		if (errno == ENOENT)
			return -ENOENT;
		return tg_pindir_fail(rc, dir, err, errlen);
	}
	while ((de = readdir(d))) {
		len = strlen(de->d_name);
		if (strncmp(de->d_name, "tg_", 3) != 0 || de->d_type == DT_DIR)
			continue;	/* tlsguard's pins are all tg_* */
		if (!links && len > 5 &&
		    strcmp(de->d_name + len - 5, "_link") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (unlink(p) < 0 && errno != ENOENT)
			rc = tg_pindir_fail(rc, p, err, errlen);
	}
	closedir(d);
	return rc;
}

int tg_pindir_remove(const char *dir, char *err, size_t errlen)
{
	static const char *const links[] = { "tg_sockops_link",
		"tg_connect4_link", "tg_connect6_link" };
	char p[4096 + 256];
	struct dirent *de;
	int rc = 0;
	size_t i;
	DIR *d;

	for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, links[i]);
		if (unlink(p) < 0 && errno != ENOENT)
			rc = tg_pindir_fail(rc, p, err, errlen);
	}
	d = opendir(dir);
	if (!d) {
		if (errno == ENOENT && rc == 0)
			return -ENOENT;
		return tg_pindir_fail(rc, dir, err, errlen);
	}
	while ((de = readdir(d))) {
		if (!tg_pindir_is_gen(de))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (tg_pindir_empty(p, 1, rc ? NULL : err,
				    rc ? 0 : errlen) == -1)
			rc = -1;
		else if (rmdir(p) < 0 && errno != ENOENT)
			rc = tg_pindir_fail(rc, p, err, errlen);
	}
	closedir(d);
	if (tg_pindir_empty(dir, 1, rc ? NULL : err, rc ? 0 : errlen) == -1)
		rc = -1;
	if (rmdir(dir) < 0 && errno != ENOENT)
		rc = tg_pindir_fail(rc, dir, err, errlen);
	return rc;
}
