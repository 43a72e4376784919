// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	null_hooks - attach bench/null_hooks.bpf.c: tlsguard's hooks, empty
 * SYNOPSIS
 *	null_hooks --cgroup DIR [--no-uprobes] [--tls-lib PATH]...
 * DESCRIPTION
 *	Attaches null_sockops, null_connect4 and null_connect6 to the cgroup
 *	DIR, null_msg and null_skb to their sockhash, and (unless
 *	--no-uprobes) null_uprobe / null_uretprobe to each function of
 *	libssl and libgnutls that tlsguardd probes, entry or return as
 *	tlsguardd does, for every process that maps the file. The files are
 *	the system's libssl.so.3 and libgnutls.so.30, or those given with
 *	--tls-lib (at most 8; by file name libssl.so* or libgnutls.so*):
 *	tlsguardd's copies (tls_library_copies), so that the floor traps in
 *	exactly the processes tlsguardd's probes trap in. Prints "ready" on
 *	standard output once everything is attached, then waits for SIGTERM
 *	or SIGINT and detaches (the links die with the process).
 *
 *	Test equipment for bench/run.py's floor measurement: what the same
 *	hooks cost when the programs on them do nothing.
 * DIAGNOSTICS
 *	"null_hooks: fatal: TEXT", exit 1, when anything cannot be loaded
 *	or attached, or a --tls-lib is absent or of neither kind (a system
 *	library that is absent is skipped).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bench_util.h"
#include "null_hooks.skel.h"

enum lib_kind { LIB_SSL, LIB_GNUTLS };

/* tlsguardd's probes (agent/tg_uprobe.c): library, function, return probe. */
static const struct {
	enum lib_kind kind;
	const char *func;
	int ret;
} probes[] = {
	{ LIB_SSL, "SSL_set_fd", 0 },
	{ LIB_SSL, "SSL_write", 0 },
	{ LIB_SSL, "SSL_connect", 0 },
	{ LIB_SSL, "SSL_read", 0 },
	{ LIB_SSL, "SSL_read", 1 },
	{ LIB_SSL, "SSL_write_ex", 0 },
	{ LIB_SSL, "SSL_read_ex", 0 },
	{ LIB_SSL, "SSL_read_ex", 1 },
	{ LIB_GNUTLS, "gnutls_transport_set_ptr", 0 },
	{ LIB_GNUTLS, "gnutls_record_send2", 0 },
	{ LIB_GNUTLS, "gnutls_transport_set_ptr2", 0 },
	{ LIB_GNUTLS, "gnutls_transport_set_int2", 0 },
	{ LIB_GNUTLS, "gnutls_handshake", 0 },
	{ LIB_GNUTLS, "gnutls_record_recv", 0 },
	{ LIB_GNUTLS, "gnutls_record_recv", 1 },
};

/* The system's files, probed when no --tls-lib is given. */
static const char *const system_libs[] = {
	"/usr/lib/x86_64-linux-gnu/libssl.so.3",
	"/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
};

#define NPROBES	 (sizeof(probes) / sizeof(probes[0]))
#define NSYSLIBS (sizeof(system_libs) / sizeof(system_libs[0]))
#define MAXLIBS	 8

static const char usage[] =
	"usage: null_hooks --cgroup DIR [--no-uprobes] [--tls-lib PATH]...";

/* The kind of library path is, by its file name (libssl.so*, libgnutls.so*). */
static enum lib_kind lib_kind(const char *path)
{
	const char *name = strrchr(path, '/');

	name = name ? name + 1 : path;
	if (strncmp(name, "libssl.so", 9) == 0)
		return LIB_SSL;
	if (strncmp(name, "libgnutls.so", 12) == 0)
		return LIB_GNUTLS;
	bu_fatal("%s: neither libssl.so* nor libgnutls.so*", path);
	return LIB_SSL;
}

static struct bpf_link *attach_cgroup(struct bpf_program *prog, int cg)
{
	struct bpf_link *l = bpf_program__attach_cgroup(prog, cg);

	if (!l)
		bu_fatal("attach %s: %s", bpf_program__name(prog),
			 strerror(errno));
	return l;
}

static void attach_socks(struct bpf_program *prog, int map,
			 enum bpf_attach_type type)
{
	if (bpf_prog_attach(bpf_program__fd(prog), map, type, 0))
		bu_fatal("attach %s to null_socks: %s",
			 bpf_program__name(prog), strerror(errno));
}

int main(int argc, char **argv)
{
	struct bpf_link *links[3 + MAXLIBS * NPROBES] = { 0 };
	const char *cgroup = NULL, *libs[MAXLIBS];
	struct null_hooks *skel;
	int uprobes = 1, nlibs = 0, given, cg, i, j, n = 0, sig;
	sigset_t stop;

	bu_init("null_hooks");
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc)
			cgroup = argv[++i];
		else if (strcmp(argv[i], "--no-uprobes") == 0)
			uprobes = 0;
		else if (strcmp(argv[i], "--tls-lib") == 0 && i + 1 < argc &&
			 nlibs < MAXLIBS)
			libs[nlibs++] = argv[++i];
		else
			bu_fatal("%s", usage);
	}
	if (!cgroup)
		bu_fatal("%s", usage);
	/* Given files must be there; the system's are skipped when absent. */
	given = nlibs > 0;
	for (i = 0; !given && i < (int)NSYSLIBS; i++)
		if (access(system_libs[i], R_OK) == 0)
			libs[nlibs++] = system_libs[i];
	for (i = 0; i < nlibs; i++)
		lib_kind(libs[i]);
	cg = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0)
		bu_fatal("%s: %s", cgroup, strerror(errno));
	skel = null_hooks__open_and_load();
	if (!skel)
		bu_fatal("load null_hooks.bpf.o: %s", strerror(errno));
	attach_socks(skel->progs.null_msg,
		     bpf_map__fd(skel->maps.null_socks), BPF_SK_MSG_VERDICT);
	attach_socks(skel->progs.null_skb,
		     bpf_map__fd(skel->maps.null_socks),
		     BPF_SK_SKB_STREAM_VERDICT);
	links[n++] = attach_cgroup(skel->progs.null_connect4, cg);
	links[n++] = attach_cgroup(skel->progs.null_connect6, cg);
	links[n++] = attach_cgroup(skel->progs.null_sockops, cg);
	for (j = 0; uprobes && j < nlibs; j++) {
		for (i = 0; i < (int)NPROBES; i++) {
			LIBBPF_OPTS(bpf_uprobe_opts, opts,
				    .func_name = probes[i].func,
				    .retprobe = probes[i].ret);
			struct bpf_program *prog =
				probes[i].ret ? skel->progs.null_uretprobe :
						skel->progs.null_uprobe;

			if (probes[i].kind != lib_kind(libs[j]))
				continue;
			links[n] = bpf_program__attach_uprobe_opts(
				prog, -1, libs[j], 0, &opts);
			if (!links[n])
				bu_fatal("uprobe %s:%s: %s", libs[j],
					 probes[i].func, strerror(errno));
			n++;
		}
	}
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	printf("ready\n");
	fflush(stdout);
	sigwait(&stop, &sig);
	while (n > 0)
		bpf_link__destroy(links[--n]);
	null_hooks__destroy(skel);
	close(cg);
	return 0;
}
