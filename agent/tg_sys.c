// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_sys - cgroup v2, bpffs and the control socket (see tg_sys.h)
 */
#include <errno.h>
#include <fcntl.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "tg_sys.h"

int tg_cgroup2_mount(char *buf, size_t len)
{
	struct mntent *m;
	/*
	 * Its own mounts, not /proc/mounts: that link is not in a /proc
	 * mounted with subset=pid (the unit's ProcSubset=pid).
	 */
	FILE *fp = setmntent("/proc/self/mounts", "r");
	int found = -1;

	if (!fp)
		return -1;
	while ((m = getmntent(fp))) {
		if (strcmp(m->mnt_type, "cgroup2") == 0) {
			snprintf(buf, len, "%s", m->mnt_dir);
			found = 0;
			break;
		}
	}
	endmntent(fp);
	return found;
}

int tg_cgroup_open(const char *dir, char *path, size_t pathlen, char *err,
		   size_t errlen)
{
	char mnt[2048];
	struct statfs sfs;
	int fd;

	if (tg_cgroup2_mount(mnt, sizeof(mnt)) < 0) {
		snprintf(err, errlen, "no cgroup2 file system is mounted "
			 "(see /proc/self/mounts)");
		return -1;
	}
	if (strlen(dir) >= 2048) {
		snprintf(err, errlen, "--cgroup: path too long");
		return -1;
	}
	if (dir[0] == '/')
		snprintf(path, pathlen, "%s", dir);
	else
		snprintf(path, pathlen, "%s/%.2040s", mnt, dir);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "--cgroup %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC) {
		snprintf(err, errlen, "--cgroup %s: not a cgroup v2 directory "
			 "(cgroup2 is mounted at %s)", path, mnt);
		close(fd);
		return -1;
	}
	return fd;
}

int tg_bpffs_ensure(const char *path, char *err, size_t errlen)
{
	struct statfs sfs;

	if (statfs(path, &sfs) == 0 && sfs.f_type == BPF_FS_MAGIC)
		return 0;
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	if (mount("bpf", path, "bpf", 0, "mode=0700") < 0) {
		snprintf(err, errlen, "mount bpffs on %s: %s", path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

int tg_ctl_listen(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[sizeof(sun.sun_path)];
	char *slash;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "--socket %s: path too long", path);
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", dir,
				 strerror(errno));
			return -1;
		}
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* A socket someone answers on belongs to a running daemon. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 ||
	    errno == EAGAIN || errno == EINPROGRESS) {
		snprintf(err, errlen, "--socket %s: another tlsguardd is "
			 "listening there", path);
		close(fd);
		return -1;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen, "--socket %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * See tg_sys.h. Standard error is dropped: postconf warns there about
 * things that are not ours.
 */
char *tg_capture(char *const argv[], size_t max)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	int pfd[2], status, devnull;
	ssize_t n;
	pid_t pid;

	if (!buf || pipe2(pfd, O_CLOEXEC) < 0) {
		free(buf);
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		free(buf);
		return NULL;
	}
	if (pid == 0) {
		devnull = open("/dev/null", O_RDWR);
		dup2(pfd[1], 1);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		if (len + 1 == cap) {
			char *b;

			if (cap >= max)
				break;
			b = realloc(buf, cap * 2);
			if (!b)
				break;
			buf = b;
			cap *= 2;
		}
		n = read(pfd[0], buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(pfd[0]);
	buf[len] = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
