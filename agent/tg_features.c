// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_features - probe the kernel for tlsguard's BPF needs (see
 *	tg_features.h)
 *
 *	Linux 5.17 (bpf_loop) is the oldest kernel with all of them. Each
 *	entry names the version that brought that feature where it is later
 *	than the rest or well known; the others are older than 5.17, and
 *	say so. Keep the tables in step with bpf/: a helper a program starts
 *	to use belongs here, with the program type that calls it.
 */
#include <errno.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tg_features.h"
#include "tg_log.h"

#define TG_MIN_LINUX	"5.17"

struct tg_prog_need {
	enum bpf_prog_type type;
	const char *name;
	const char *since;
};

struct tg_map_need {
	enum bpf_map_type type;
	const char *name;
	const char *since;
};

struct tg_helper_need {
	enum bpf_prog_type type;
	enum bpf_func_id func;
	const char *name;
	const char *since;
};

static const struct tg_prog_need tg_progs[] = {
	{ BPF_PROG_TYPE_SOCK_OPS, "sock_ops programs", "4.13" },
	{ BPF_PROG_TYPE_SK_SKB, "sk_skb programs", "4.14" },
	{ BPF_PROG_TYPE_SK_MSG, "sk_msg programs", "4.17" },
	{ BPF_PROG_TYPE_KPROBE, "uprobe programs", "4.1" },
};

static const struct tg_map_need tg_maps[] = {
	{ BPF_MAP_TYPE_SOCKHASH, "sockhash maps", "4.18" },
	{ BPF_MAP_TYPE_QUEUE, "queue maps", "4.20" },
	{ BPF_MAP_TYPE_RINGBUF, "the BPF ring buffer", "5.8" },
	{ BPF_MAP_TYPE_CGROUP_ARRAY, "cgroup array maps", "4.8" },
	{ BPF_MAP_TYPE_LRU_HASH, "LRU hash maps", "4.10" },
};

static const struct tg_helper_need tg_helpers[] = {
	/* bpf_loop: the parsers' loops, verified once (bpf/tg_smtp_msg.bpf.c) */
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_loop, "bpf_loop in sk_msg programs", "5.17" },
	{ BPF_PROG_TYPE_SK_SKB, BPF_FUNC_loop, "bpf_loop in sk_skb programs", "5.17" },
	{ BPF_PROG_TYPE_KPROBE, BPF_FUNC_loop, "bpf_loop in uprobe programs", "5.17" },
	/* tg_smtp_msg reads the socket's cookie through it */
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_skc_to_tcp_sock,
	  "bpf_skc_to_tcp_sock in sk_msg programs", NULL },
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_probe_read_kernel,
	  "bpf_probe_read_kernel in sk_msg programs", NULL },
	{ BPF_PROG_TYPE_SK_SKB, BPF_FUNC_probe_read_kernel,
	  "bpf_probe_read_kernel in sk_skb programs", NULL },
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_msg_cork_bytes,
	  "bpf_msg_cork_bytes", "4.17" },
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_msg_pull_data,
	  "bpf_msg_pull_data", "4.17" },
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_msg_redirect_hash,
	  "bpf_msg_redirect_hash", "4.18" },
	{ BPF_PROG_TYPE_SK_MSG, BPF_FUNC_map_pop_elem,
	  "bpf_map_pop_elem in sk_msg programs", NULL },
	{ BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sock_hash_update,
	  "bpf_sock_hash_update", "4.18" },
	{ BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_socket_cookie,
	  "bpf_get_socket_cookie in sock_ops programs", NULL },
	{ BPF_PROG_TYPE_SK_SKB, BPF_FUNC_get_socket_cookie,
	  "bpf_get_socket_cookie in sk_skb programs", NULL },
	{ BPF_PROG_TYPE_KPROBE, BPF_FUNC_current_task_under_cgroup,
	  "bpf_current_task_under_cgroup in uprobe programs", NULL },
	{ BPF_PROG_TYPE_KPROBE, BPF_FUNC_ringbuf_reserve,
	  "bpf_ringbuf_reserve", "5.8" },
	{ BPF_PROG_TYPE_KPROBE, BPF_FUNC_ringbuf_query,
	  "bpf_ringbuf_query", "5.8" },
};

static void tg_missing(const char *what, const char *since)
{
	struct utsname u;

	if (uname(&u) < 0)
		strcpy(u.release, "?");
	if (since)
		msg_fatal("this kernel (Linux %s) lacks %s, which tlsguard "
			  "needs: it came with Linux %s (tlsguard needs %s "
			  "or later)", u.release, what, since, TG_MIN_LINUX);
	msg_fatal("this kernel (Linux %s) lacks %s, which tlsguard needs "
		  "(Linux %s or later)", u.release, what, TG_MIN_LINUX);
}

/* 1: present, 0: missing. A probe that cannot run is fatal. */
static int tg_probe_result(int r, const char *what)
{
	if (r < 0)
		msg_fatal("cannot probe the kernel for %s: %s", what,
			  strerror(-r));
	return r > 0;
}

void tg_features_check(void)
{
	size_t i;

	/* CO-RE relocates against the kernel's BTF, in sysfs since 5.4. */
	if (access("/sys/kernel/btf/vmlinux", R_OK) < 0)
		tg_missing("BTF type information at /sys/kernel/btf/vmlinux "
			   "(CONFIG_DEBUG_INFO_BTF), which CO-RE needs", "5.4");
	for (i = 0; i < sizeof(tg_progs) / sizeof(tg_progs[0]); i++)
		if (!tg_probe_result(libbpf_probe_bpf_prog_type(
					     tg_progs[i].type, NULL),
				     tg_progs[i].name))
			tg_missing(tg_progs[i].name, tg_progs[i].since);
	for (i = 0; i < sizeof(tg_maps) / sizeof(tg_maps[0]); i++)
		if (!tg_probe_result(libbpf_probe_bpf_map_type(tg_maps[i].type,
							       NULL),
				     tg_maps[i].name))
			tg_missing(tg_maps[i].name, tg_maps[i].since);
	for (i = 0; i < sizeof(tg_helpers) / sizeof(tg_helpers[0]); i++)
		if (!tg_probe_result(libbpf_probe_bpf_helper(
					     tg_helpers[i].type,
					     tg_helpers[i].func, NULL),
				     tg_helpers[i].name))
			tg_missing(tg_helpers[i].name, tg_helpers[i].since);
	msg_debug("kernel features: all %zu probes passed",
		  sizeof(tg_progs) / sizeof(tg_progs[0]) +
			  sizeof(tg_maps) / sizeof(tg_maps[0]) +
			  sizeof(tg_helpers) / sizeof(tg_helpers[0]));
}
