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

	if (stat(path, &st) < 0)
		return -1;
	for (i = 0; i < u->nlibs; i++)
		if (u->libs[i].dev == st.st_dev && u->libs[i].ino == st.st_ino)
			return (int)i;
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
 * The file a process maps, as that process sees it, whatever mount
 * namespace or chroot it is in (a copy bound over the system's library
 * path in the MTA's namespace is not the file that path names here):
 * /proc/PID/map_files names the very file mapped, but can be followed
 * only with CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE), which the daemon
 * gives up after its set-up (tg_drop_caps()); /proc/PID/root and the
 * path as the process named it need CAP_SYS_PTRACE, as its maps do.
 * NULL when neither can be read (the process exited meanwhile): the
 * path read here would name the system's file, and probing that would
 * make every process on the host trap.
 */
static const char *tg_mapped_file(int pid, const char *line, const char *file,
				  char *buf, size_t len)
{
	size_t range = strcspn(line, " ");
	struct stat st;

	snprintf(buf, len, "/proc/%d/map_files/%.*s", pid, (int)range, line);
	if (stat(buf, &st) == 0)
		return buf;
	if (snprintf(buf, len, "/proc/%d/root%s", pid, file) < (int)len &&
	    stat(buf, &st) == 0)
		return buf;
	return NULL;
}

/* TLS libraries mapped by the processes listed in dir/cgroup.procs. */
static void tg_uprobe_procs(struct tg_uprobes *u, struct tlsguard *skel,
			    const char *dir, int depth)
{
	char path[PATH_MAX], line[PATH_MAX + 256], mapped[PATH_MAX];
	struct dirent *de;
	FILE *procs, *maps;
	const char *at;
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
				if (!strstr(file, tg_lib_names[j].file))
					continue;
				at = tg_mapped_file(pid, line, file, mapped,
						    sizeof(mapped));
				if (!at)
					continue;
				k = tg_uprobe_lib(u, skel, at, file,
						  tg_lib_names[j].kind);
				if (k < 0 || !u->copies[0] ||
				    u->libs[k].copy || u->libs[k].warned)
					continue;
				u->libs[k].warned = 1;
				msg_warn("process %d of the guarded cgroup maps "
					 "%s, not one of the copies in %s: "
					 "probed, and with it every process on "
					 "the host that maps that file (start "
					 "the MTA with the copies bound over "
					 "the system's files: tlsguardd(8), "
					 "TLS LIBRARIES)", pid, file,
					 u->copies);
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
 * The system's library i, copied into u->copies when it is new or has
 * changed since the last scan, and its copy probed.
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
	if (u->sys[i].ino == st.st_ino && u->sys[i].dev == st.st_dev &&
	    u->sys[i].mtime == st.st_mtime && u->sys[i].size == st.st_size)
		return;
	rc = tg_tlscopy_make(src, u->copies, dst, sizeof(dst), err,
			     sizeof(err));
	if (rc < 0) {
		msg_warn("%s; its sessions are failed closed below TLS 1.2 "
			 "in processes that map the copy", err);
		return;
	}
	u->sys[i].dev = st.st_dev;
	u->sys[i].ino = st.st_ino;
	u->sys[i].mtime = st.st_mtime;
	u->sys[i].size = st.st_size;
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
