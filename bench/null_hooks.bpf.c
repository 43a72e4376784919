// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	null_hooks - the kernel mechanism tlsguard rides on, doing nothing
 * DESCRIPTION
 *	The floor of tlsguard's cost, for bench/run.py: programs on the
 *	same hooks as tlsguard's, each doing the least its hook needs.
 *	null_sockops puts an established outbound connection to port 25
 *	(or 465) into null_socks, a sockhash, sets TCP_NODELAY on it (as
 *	tg_sockops does: the sockmap path needs it) and asks for no further
 *	callbacks; null_msg (sk_msg) and null_skb (sk_skb stream verdict)
 *	on that sockhash pass every byte; null_connect4/6 allow every
 *	connect; null_uprobe and null_uretprobe sit on the TLS library
 *	functions tlsguard probes, in the same files (bench/run.py gives
 *	null_hooks tlsguardd's copies), and return at once. What a flow costs
 *	with these attached is what the sockmap path, the cgroup hooks and
 *	a uprobe trap cost by themselves; tlsguard's own work is the rest.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SOL_TCP		6
#define TCP_NODELAY	1

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} null_socks SEC(".maps");

SEC("sockops")
int null_sockops(struct bpf_sock_ops *skops)
{
	__u32 port = bpf_ntohl(skops->remote_port) & 0xffff;
	__u64 cookie;
	int one = 1;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ||
	    (port != 25 && port != 465))
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	if (bpf_sock_hash_update(skops, &null_socks, &cookie, BPF_NOEXIST) == 0)
		/* as tg_sockops does: without it, a socket under sk_msg
		 * waits for delayed ACKs (Nagle) between small writes */
		bpf_setsockopt(skops, SOL_TCP, TCP_NODELAY, &one, sizeof(one));
	return 1;
}

SEC("sk_msg")
int null_msg(struct sk_msg_md *msg)
{
	return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int null_skb(struct __sk_buff *skb)
{
	return SK_PASS;
}

SEC("cgroup/connect4")
int null_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/connect6")
int null_connect6(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("uprobe")
int null_uprobe(void *ctx)
{
	return 0;
}

SEC("uretprobe")
int null_uretprobe(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
