/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_sys - the system around the agent: cgroup v2, bpffs, sockets
 * SYNOPSIS
 *	#include "tg_sys.h"
 *
 *	int	tg_cgroup_open(const char *dir, char *path, size_t pathlen,
 *			       char *err, size_t errlen);
 *	int	tg_bpffs_ensure(const char *path, char *err, size_t errlen);
 *	int	tg_ctl_listen(const char *path, char *err, size_t errlen);
 *	char	*tg_capture(char *const argv[], size_t max);
 * DESCRIPTION
 *	tg_cgroup_open() opens a cgroup v2 directory. A relative DIR is
 *	taken relative to the cgroup2 mount, found in /proc/self/mounts (it is
 *	/sys/fs/cgroup on systemd hosts, /sys/fs/cgroup/unified on hybrid
 *	ones). It fails unless DIR is a directory on a cgroup2 file system.
 *	The path it opened is left in path.
 *
 *	tg_bpffs_ensure() mounts a BPF file system at path unless one is
 *	there already.
 *
 *	tg_ctl_listen() creates the control socket, replacing a stale one,
 *	with the permissions given in tg_ctl.h.
 *
 *	Each returns a file descriptor (or 0) on success, -1 with a message
 *	naming what failed and why in err otherwise.
 *
 *	tg_capture() runs argv[0] with argv (no shell, standard input and
 *	error on /dev/null) and returns what it wrote to standard output,
 *	at most max bytes, NUL-terminated, for the caller to free; NULL
 *	when it cannot run or does not exit 0.
 */
#ifndef TG_SYS_H
#define TG_SYS_H

#include <stddef.h>

int tg_cgroup2_mount(char *buf, size_t len);
int tg_cgroup_open(const char *dir, char *path, size_t pathlen, char *err,
		   size_t errlen);
int tg_bpffs_ensure(const char *path, char *err, size_t errlen);
int tg_ctl_listen(const char *path, char *err, size_t errlen);

char *tg_capture(char *const argv[], size_t max);

#endif /* TG_SYS_H */
