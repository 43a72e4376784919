// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pindir - is a directory fit to hold tlsguard's pins (see
 *	tg_pindir.h)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
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
