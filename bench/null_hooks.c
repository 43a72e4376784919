// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	null_hooks - attach bench/null_hooks.bpf.c: tlsguard's hooks, empty
 * SYNOPSIS
 *	null_hooks --cgroup DIR [--no-uprobes]
 * DESCRIPTION
 *	Attaches null_sockops, null_connect4 and null_connect6 to the cgroup
 *	DIR, null_msg and null_skb to their sockhash, and (unless
 *	--no-uprobes) null_uprobe / null_uretprobe to each function of the
 *	system's libssl and libgnutls that tlsguardd probes, entry or
 *	return as tlsguardd does, for every process. Prints "ready" on
 *	standard output once everything is attached, then waits for SIGTERM
 *	or SIGINT and detaches (the links die with the process).
 *
 *	Test equipment for bench/run.py's floor measurement: what the same
 *	hooks cost when the programs on them do nothing.
 * DIAGNOSTICS
 *	"null_hooks: fatal: TEXT", exit 1, when anything cannot be loaded
 *	or attached (a library that is absent is skipped).
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

/* tlsguardd's probes (agent/tg_uprobe.c): library, function, return probe. */
static const struct {
	const char *lib;
	const char *func;
	int ret;
} probes[] = {
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_set_fd", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_write", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_connect", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_read", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_read", 1 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_write_ex", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_read_ex", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libssl.so.3", "SSL_read_ex", 1 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
	  "gnutls_transport_set_ptr", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "gnutls_record_send2",
	  0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
	  "gnutls_transport_set_ptr2", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
	  "gnutls_transport_set_int2", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "gnutls_handshake", 0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "gnutls_record_recv",
	  0 },
	{ "/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "gnutls_record_recv",
	  1 },
};

#define NPROBES (sizeof(probes) / sizeof(probes[0]))

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
	struct bpf_link *links[3 + NPROBES] = { 0 };
	const char *cgroup = NULL;
	struct null_hooks *skel;
	int uprobes = 1, cg, i, n = 0, sig;
	sigset_t stop;

	bu_init("null_hooks");
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc)
			cgroup = argv[++i];
		else if (strcmp(argv[i], "--no-uprobes") == 0)
			uprobes = 0;
		else
			bu_fatal("usage: null_hooks --cgroup DIR "
				 "[--no-uprobes]");
	}
	if (!cgroup)
		bu_fatal("usage: null_hooks --cgroup DIR [--no-uprobes]");
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
	for (i = 0; uprobes && i < (int)NPROBES; i++) {
		LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = probes[i].func,
			    .retprobe = probes[i].ret);
		struct bpf_program *prog = probes[i].ret ?
						   skel->progs.null_uretprobe :
						   skel->progs.null_uprobe;

		if (access(probes[i].lib, R_OK) < 0)
			continue;
		links[n] = bpf_program__attach_uprobe_opts(prog, -1,
							   probes[i].lib, 0,
							   &opts);
		if (!links[n])
			bu_fatal("uprobe %s:%s: %s", probes[i].lib,
				 probes[i].func, strerror(errno));
		n++;
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
