// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_uprobe - the TLS library uprobes (see tg_uprobe.h)
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_log.h"
#include "tg_tlscopy.h"
#include "tg_uprobe.h"

/* The TLS libraries tlsguard reads, and where a system keeps them. */
enum tg_lib_kind {
	TG_LIB_SSL,		/* OpenSSL's libssl: tg_ssl_uprobe.bpf.c */
	TG_LIB_GNUTLS,		/* GnuTLS: tg_gnutls_uprobe.bpf.c */
};

static const struct {
	const char *file;	/* "/NAME" of the file in /proc/PID/maps */
	enum tg_lib_kind kind;
} tg_lib_names[] = {
	{ "/libssl.so", TG_LIB_SSL },
	{ "/libgnutls.so", TG_LIB_GNUTLS },
};

static const struct {
	const char *path;
	enum tg_lib_kind kind;
} tg_system_libs[] = {
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", TG_LIB_SSL },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.1.1", TG_LIB_SSL },
	{ "/usr/lib/aarch64-linux-gnu/libssl.so.3", TG_LIB_SSL },
	{ "/usr/lib/aarch64-linux-gnu/libssl.so.1.1", TG_LIB_SSL },
	{ "/usr/lib64/libssl.so.3", TG_LIB_SSL },
	{ "/usr/lib/libssl.so.3", TG_LIB_SSL },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30", TG_LIB_GNUTLS },
	{ "/usr/lib/aarch64-linux-gnu/libgnutls.so.30", TG_LIB_GNUTLS },
	{ "/usr/lib64/libgnutls.so.30", TG_LIB_GNUTLS },
	{ "/usr/lib/libgnutls.so.30", TG_LIB_GNUTLS },
};

_Static_assert(sizeof(tg_system_libs) / sizeof(*tg_system_libs) ==
		       TG_UPROBE_SYSLIBS,
	       "TG_UPROBE_SYSLIBS is the number of tg_system_libs");

struct tg_probe {
	struct bpf_program *prog;
	const char *func;
	int ret;
	int optional;
};

/*
 * The probes of a library kind; the first ties a session to its socket
 * and the second reads what the MTA writes: without both, the library's
 * weak sessions cannot be read.
 */
static void tg_lib_probes(struct tlsguard *skel, enum tg_lib_kind kind,
			  struct tg_probe probes[TG_UPROBE_PER_LIB])
{
	/*
	 * GnuTLS: gnutls_record_send2, not gnutls_record_send, which jumps
	 * to it (see tg_gnutls_uprobe.bpf.c). set_ptr2 and set_int2 are the
	 * other ways to give a session its socket: optional.
	 */
	const struct {
		enum tg_lib_kind kind;
		struct tg_probe probe;
	} all[] = {
		{ TG_LIB_SSL, { skel->progs.tg_ssl_set_fd, "SSL_set_fd", 0, 0 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_write, "SSL_write", 0, 0 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_connect, "SSL_connect", 0, 1 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_read, "SSL_read", 0, 0 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_read_ret, "SSL_read", 1, 0 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_write_ex, "SSL_write_ex", 0, 1 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_read_ex, "SSL_read_ex", 0, 1 } },
		{ TG_LIB_SSL, { skel->progs.tg_ssl_read_ret, "SSL_read_ex", 1, 1 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_set_ptr,
				   "gnutls_transport_set_ptr", 0, 0 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_send,
				   "gnutls_record_send2", 0, 0 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_set_ptr2,
				   "gnutls_transport_set_ptr2", 0, 1 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_set_int2,
				   "gnutls_transport_set_int2", 0, 1 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_handshake,
				   "gnutls_handshake", 0, 1 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_recv,
				   "gnutls_record_recv", 0, 0 } },
		{ TG_LIB_GNUTLS, { skel->progs.tg_gnutls_recv_ret,
				   "gnutls_record_recv", 1, 0 } },
	};
	size_t i, n = 0;

	memset(probes, 0, TG_UPROBE_PER_LIB * sizeof(*probes));
	for (i = 0; i < sizeof(all) / sizeof(*all); i++)
		if (all[i].kind == kind && n < TG_UPROBE_PER_LIB)
			probes[n++] = all[i].probe;
}

/* The entry of u->libs for the file (dev, ino); -1 for none. */
static int tg_uprobe_known(const struct tg_uprobes *u, dev_t dev, ino_t ino)
{
	unsigned i;

	for (i = 0; i < u->nlibs; i++)
		if (u->libs[i].dev == dev && u->libs[i].ino == ino)
			return (int)i;
	return -1;
}

/*
 * Probe the library at path (shown as name), once per file; returns its
 * entry in u->libs, or -1.
 */
static int tg_uprobe_lib(struct tg_uprobes *u, struct tlsguard *skel,
			 const char *path, const char *name,
			 enum tg_lib_kind kind)
{
	struct tg_probe probes[TG_UPROBE_PER_LIB];
	struct stat st;
	unsigned i, n;
	int k;

	if (stat(path, &st) < 0)
		return -1;
	if ((k = tg_uprobe_known(u, st.st_dev, st.st_ino)) >= 0)
		return k;
	if (u->nlibs == TG_UPROBE_LIBS_MAX) {
		if (!u->full_warned)
			msg_warn("%s: not probed: more than %d TLS libraries",
				 name, TG_UPROBE_LIBS_MAX);
		u->full_warned = 1;
		return -1;
	}
	tg_lib_probes(skel, kind, probes);
	n = u->nlibs++;
	memset(&u->libs[n], 0, sizeof(u->libs[n]));
	u->libs[n].dev = st.st_dev;
	u->libs[n].ino = st.st_ino;
	for (i = 0; i < TG_UPROBE_PER_LIB && probes[i].prog; i++) {
		LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = probes[i].func,
			    .retprobe = probes[i].ret);
		struct bpf_link *l;

		l = bpf_program__attach_uprobe_opts(probes[i].prog, -1, path, 0,
						    &opts);
		if (!l) {
			if (!probes[i].optional)
				msg_warn("%s: cannot probe %s: %s; TLS sessions "
					 "of this library are failed closed "
					 "below TLS 1.2", name, probes[i].func,
					 strerror(errno));
			continue;
		}
		u->libs[n].links[i] = l;
	}
	u->libs[n].ok = u->libs[n].links[0] && u->libs[n].links[1];
	if (strcmp(path, name))
		msg_info("probing %s (%s)", name, path);
	else
		msg_info("probing %s", path);
	return (int)n;
}

/*
 * A path here to the file (dev, ino) that process pid maps at the range
 * of its maps line, as file: /proc/PID/map_files names it whatever mount
 * namespace or chroot the process is in (a copy bound over the system's
 * library path in the MTA's namespace is not the file that path names
 * here), but only with CAP_SYS_ADMIN, which tlsguardd gives up once
 * attached; then /proc/PID/root and the path (the process's namespace,
 * outside a chroot); then the path itself. NULL when none of them is
 * that file.
 */
static const char *tg_mapped_file(int pid, const char *line, const char *file,
				  dev_t dev, ino_t ino, char *buf, size_t len)
{
	unsigned long start = 0, end = 0;
	struct stat st;
	int k;

	/* maps pads an address to 8 digits, map_files does not */
	if (sscanf(line, "%lx-%lx", &start, &end) != 2)
		return NULL;
	for (k = 0; k < 3; k++) {
		if (k == 0)
			snprintf(buf, len, "/proc/%d/map_files/%lx-%lx", pid,
				 start, end);
		else if (k == 1)
			snprintf(buf, len, "/proc/%d/root%s", pid, file);
		else
			snprintf(buf, len, "%s", file);
		if (stat(buf, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
			return buf;
	}
	return NULL;
}

/*
 * The device and inode of a line of /proc/PID/maps
 * ("START-END PERMS OFFSET MAJ:MIN INODE PATH"); 0 when it has none.
 */
static int tg_maps_file(const char *line, dev_t *dev, ino_t *ino)
{
	unsigned maj, min;
	unsigned long long inode;

	if (sscanf(line, "%*s %*s %*s %x:%x %llu", &maj, &min, &inode) != 3 ||
	    inode == 0)
		return 0;
	*dev = makedev(maj, min);
	*ino = (ino_t)inode;
	return 1;
}

/*
 * A library a process maps that no path here reaches: it cannot be
 * probed. Said once, and kept as a library without probes so that it is
 * not looked for again; its sessions below TLS 1.2 are failed closed.
 */
static void tg_uprobe_unreachable(struct tg_uprobes *u, int pid,
				  const char *file, dev_t dev, ino_t ino)
{
	unsigned n;

	if (u->nlibs == TG_UPROBE_LIBS_MAX)
		return;
	n = u->nlibs++;
	memset(&u->libs[n], 0, sizeof(u->libs[n]));
	u->libs[n].dev = dev;
	u->libs[n].ino = ino;
	u->libs[n].warned = 1;
	msg_warn("process %d of the guarded cgroup maps %s (inode %lu), which "
		 "cannot be reached from here to be probed: its TLS sessions "
		 "below 1.2 are failed closed", pid, file, (unsigned long)ino);
}

/* TLS libraries mapped by the processes listed in dir/cgroup.procs. */
static void tg_uprobe_procs(struct tg_uprobes *u, struct tlsguard *skel,
			    const char *dir, int depth)
{
	char path[PATH_MAX], line[PATH_MAX + 256], mapped[PATH_MAX];
	struct dirent *de;
	FILE *procs, *maps;
	const char *at;
	dev_t dev;
	ino_t ino;
	DIR *d;
	int pid, k;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	procs = fopen(path, "r");
	while (procs && fscanf(procs, "%d", &pid) == 1) {
		snprintf(path, sizeof(path), "/proc/%d/maps", pid);
		maps = fopen(path, "r");
		while (maps && fgets(line, sizeof(line), maps)) {
			char *file = strchr(line, '/');
			unsigned j;

			if (!file)
				continue;
			file[strcspn(file, "\n")] = 0;
			for (j = 0; j < sizeof(tg_lib_names) /
					sizeof(*tg_lib_names); j++) {
				if (!strstr(file, tg_lib_names[j].file) ||
				    !tg_maps_file(line, &dev, &ino) ||
				    tg_uprobe_known(u, dev, ino) >= 0)
					continue;
				at = tg_mapped_file(pid, line, file, dev, ino,
						    mapped, sizeof(mapped));
				if (!at) {
					/* gone since its maps were read: skip */
					snprintf(path, sizeof(path), "/proc/%d",
						 pid);
					if (access(path, F_OK) == 0)
						tg_uprobe_unreachable(u, pid, file,
								      dev, ino);
					continue;
				}
				k = tg_uprobe_lib(u, skel, at, file,
						  tg_lib_names[j].kind);
				if (k < 0 || !u->copies[0] ||
				    u->libs[k].copy || u->libs[k].warned)
					continue;
				u->libs[k].warned = 1;
				msg_warn("process %d of the guarded cgroup maps "
					 "%s, not one of the copies in %s: %s "
					 "(start the MTA with the copies bound "
					 "over the system's files: tlsguardd(8), "
					 "TLS LIBRARIES)", pid, file, u->copies,
					 u->libs[k].ok ?
						 "probed, and with it every "
						 "process on the host that maps "
						 "that file" :
						 "it could not be probed, so its "
						 "sessions below TLS 1.2 are "
						 "failed closed");
			}
		}
		if (maps)
			fclose(maps);
	}
	if (procs)
		fclose(procs);
	if (depth >= 8)
		return;
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		tg_uprobe_procs(u, skel, path, depth + 1);
	}
	if (d)
		closedir(d);
}

/*
 * The system's library i: at the first scan, copied into u->copies and
 * the copy probed. The copy is made once per start: the MTA binds it at
 * its own start, and a copy made later could not be probed (tlsguardd
 * no longer has CAP_SYS_ADMIN) nor reach a running MTA. A system file
 * that changes later (an upgrade of the library) is reported once: the
 * MTA keeps the library it was started with until tlsguardd, then the
 * MTA, are restarted (needrestart does both: both map the library).
 */
static void tg_uprobe_copy(struct tg_uprobes *u, struct tlsguard *skel,
			   unsigned i)
{
	const char *src = tg_system_libs[i].path;
	char dst[PATH_MAX], err[PATH_MAX + 256];
	struct stat st;
	int rc, k;

	if (stat(src, &st) < 0)
		return;
	if (u->sys[i].seen) {
		if (!u->sys[i].changed &&
		    (u->sys[i].ino != st.st_ino || u->sys[i].dev != st.st_dev ||
		     u->sys[i].mtime != st.st_mtime ||
		     u->sys[i].size != st.st_size)) {
			u->sys[i].changed = 1;
			msg_warn("%s changed since it was copied to %s: the MTA "
				 "runs the copy until tlsguardd, then the MTA, "
				 "are restarted", src, u->copies);
		}
		return;
	}
	u->sys[i].seen = 1;
	u->sys[i].dev = st.st_dev;
	u->sys[i].ino = st.st_ino;
	u->sys[i].mtime = st.st_mtime;
	u->sys[i].size = st.st_size;
	rc = tg_tlscopy_make(src, u->copies, dst, sizeof(dst), err,
			     sizeof(err));
	if (rc < 0) {
		msg_warn("%s; TLS sessions below 1.2 of an MTA that maps the "
			 "copy are failed closed", err);
		return;
	}
	if (rc > 0)
		msg_info("copied %s to %s", src, dst);
	k = tg_uprobe_lib(u, skel, dst, dst, tg_system_libs[i].kind);
	if (k >= 0)
		u->libs[k].copy = 1;
}

void tg_uprobe_scan(struct tg_uprobes *u, struct tlsguard *skel,
		    const char *cgroup_dir)
{
	unsigned i;

	for (i = 0; i < sizeof(tg_system_libs) / sizeof(*tg_system_libs); i++) {
		if (u->copies[0])
			tg_uprobe_copy(u, skel, i);
		else
			tg_uprobe_lib(u, skel, tg_system_libs[i].path,
				      tg_system_libs[i].path,
				      tg_system_libs[i].kind);
	}
	tg_uprobe_procs(u, skel, cgroup_dir, 0);
}

int tg_uprobe_copies(struct tg_uprobes *u, const char *dir, char *err,
		     size_t errlen)
{
	if (!dir || !*dir)
		return 0;
	if (tg_tlscopy_dir(dir, err, errlen) < 0)
		return -1;
	snprintf(u->copies, sizeof(u->copies), "%s", dir);
	return 0;
}

void tg_uprobe_detach(struct tg_uprobes *u)
{
	unsigned i, j;

	for (i = 0; i < u->nlibs; i++)
		for (j = 0; j < TG_UPROBE_PER_LIB; j++)
			bpf_link__destroy(u->libs[i].links[j]);
	u->nlibs = 0;
	memset(u->sys, 0, sizeof(u->sys));
}
