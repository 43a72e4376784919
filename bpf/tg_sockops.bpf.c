// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_sockops - track the MTA's outbound connections to guarded ports
 * DESCRIPTION
 *	Attached to the guarded cgroup. When an outbound connection to one
 *	of the guarded ports is established, the socket gets its sk_storage
 *	(cookie, role), a flow table entry and a place in tg_socks, which
 *	puts it under tg_smtp_msg and tg_reply_skb. All three happen in the
 *	handshake's last step, before the first byte of data either way.
 *
 *	If the flow table is full, the socket is still put in tg_socks, as
 *	TG_ROLE_UNTRACKED: tg_smtp_msg drops every write on it, so the MTA
 *	defers the mail instead of sending it unchecked (fail closed). The
 *	sockhash has room for TG_SLOTS_MAX such sockets beyond the flow
 *	table; one it cannot take is reported for the agent to destroy.
 *
 *	A flow to an implicit-TLS port starts in the handshake state; any
 *	other starts in plaintext.
 *
 *	Tracked sockets get TCP_NODELAY: with an sk_msg program in the send
 *	path, Nagle's algorithm holds back the MTA's small pipelined writes
 *	and costs about 3x at ten sessions (measured: README.md, "How a
 *	held connection works").
 *
 *	When a tracked socket closes, its flow entry goes; the agent is told
 *	when it has something to do (a diverted flow's injection slot is
 *	free again; an audit record ends).
 */
#include "tg_common.bpf.h"

#define SOL_TCP		6
#define TCP_NODELAY	1
#define AF_INET		2
#define AF_INET6	10

/* Both ends' addresses (IPv4 in the first four bytes). */
static __always_inline void tg_skops_addrs(struct bpf_sock_ops *skops,
					   __u8 *laddr, __u8 *raddr)
{
	if (skops->family == AF_INET6) {
		/* ctx fields must be read one by one, at fixed offsets */
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1],
			       skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1],
			       skops->remote_ip6[2], skops->remote_ip6[3] };

		__builtin_memcpy(laddr, l, 16);
		__builtin_memcpy(raddr, r, 16);
	} else {
		__u32 l = skops->local_ip4, r = skops->remote_ip4;

		__builtin_memcpy(laddr, &l, 4);
		__builtin_memcpy(raddr, &r, 4);
	}
}

/*
 * A new flow enters the table as a copy of this, and is filled in place:
 * a whole struct tg_flow does not fit on the BPF stack beside the rest.
 */
static const struct tg_flow tg_flow_zero;

static __always_inline void tg_flow_fill(struct tg_flow *f,
					 struct bpf_sock_ops *skops,
					 __u64 cookie, int kind)
{
	f->cookie = cookie;
	f->start_ns = bpf_ktime_get_ns();
	f->state = TG_FS_PLAIN;
	f->slot = TG_NO_SLOT;
	f->cmds = 1;		/* the greeting */
	f->family = skops->family;
	f->lport = skops->local_port;
	f->rport = bpf_ntohl(skops->remote_port) & 0xffff;
	tg_skops_addrs(skops, f->laddr, f->raddr);
	tg_cmd_init(&f->cmd);
	tg_reply_init(&f->reply);
	if (kind == 2) {
		f->implicit_tls = 1;
		tg_start_tls(f);
	}
}

/*
 * A socket neither table could take: the agent destroys it. The event
 * carries what the agent needs to name the socket to sock_diag.
 */
static __always_inline void tg_emit_unwatched(struct bpf_sock_ops *skops,
					      __u64 cookie)
{
	struct tg_event *e;

	e = bpf_ringbuf_reserve(&tg_events, sizeof(*e), 0);
	if (!e) {
		TG_STAT_INC(events_lost);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = TG_EV_KILL;
	e->slot = TG_NO_SLOT;
	e->cookie = cookie;
	e->why = TG_WHY_UNWATCHED;
	e->family = skops->family;
	e->lport = skops->local_port;
	e->rport = bpf_ntohl(skops->remote_port) & 0xffff;
	tg_skops_addrs(skops, e->laddr, e->raddr);
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

/*
 * The storage of a socket connecting to a guarded port, made if it has
 * none yet, and the port's kind (tg_port_kind()); NULL for any other.
 */
static __always_inline struct tg_sk *tg_guarded_sk(struct bpf_sock_ops *skops,
						   int *kind)
{
	struct bpf_sock *sk = skops->sk;

	*kind = tg_port_kind(bpf_ntohl(skops->remote_port) & 0xffff);
	if (!*kind || !sk)
		return NULL;
	return bpf_sk_storage_get(&tg_sk_store, sk, 0,
				  BPF_SK_STORAGE_GET_F_CREATE);
}

static __always_inline void tg_track(struct bpf_sock_ops *skops)
{
	struct tg_flow *f = NULL;
	struct tg_sk *sks;
	int one = 1, kind;
	__u64 cookie;

	sks = tg_guarded_sk(skops, &kind);
	if (!sks)
		return;
	cookie = bpf_get_socket_cookie(skops);
	sks->cookie = cookie;
	sks->slot = TG_NO_SLOT;

	if (bpf_map_update_elem(&tg_flows, &cookie, &tg_flow_zero,
				BPF_NOEXIST) == 0)
		f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (f) {
		tg_flow_fill(f, skops, cookie, kind);
		sks->role = TG_ROLE_MTA;
		TG_STAT_INC(flows);
	} else {
		sks->role = TG_ROLE_UNTRACKED;
		TG_STAT_INC(flows_untracked);
	}
	if (bpf_sock_hash_update(skops, &tg_socks, &cookie, BPF_NOEXIST)) {
		/*
		 * Not enforceable: nothing here can drop its writes. The
		 * agent destroys it and logs the counter; that races the
		 * MTA's first commands, hence the sockhash's spare room.
		 */
		TG_STAT_INC(sockhash_full);
		bpf_map_delete_elem(&tg_flows, &cookie);
		tg_emit_unwatched(skops, cookie);
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	bpf_setsockopt(skops, SOL_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * A connect to a guarded port: it counts against the flow table from now
 * on (tg_conns, which tg_connect reads), until it closes, established or
 * not; the state callbacks are asked for here so that a connect that
 * fails is seen closing too.
 */
static __always_inline void tg_count_connect(struct bpf_sock_ops *skops)
{
	struct tg_conns *conns;
	struct tg_sk *sks;
	__u32 zero = 0;
	int kind;

	sks = tg_guarded_sk(skops, &kind);
	conns = bpf_map_lookup_elem(&tg_conns, &zero);
	if (!sks || !conns || sks->counted)
		return;
	sks->counted = 1;
	__sync_fetch_and_add(&conns->live, 1);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void tg_untrack(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct tg_conns *conns;
	struct tg_flow *flow;
	struct tg_sk *sks;
	__u32 zero = 0;

	if (!sk)
		return;
	sks = bpf_sk_storage_get(&tg_sk_store, sk, 0, 0);
	if (!sks)
		return;
	if (sks->counted) {
		sks->counted = 0;
		conns = bpf_map_lookup_elem(&tg_conns, &zero);
		if (conns)
			__sync_fetch_and_add(&conns->live, -1);
	}
	if (sks->role != TG_ROLE_MTA)
		return;
	flow = bpf_map_lookup_elem(&tg_flows, &sks->cookie);
	if (!flow)
		return;
	/*
	 * The agent frees a diverted flow's slot at once, and ends the flow's
	 * audit record when it next reads the ring; for any other flow it
	 * has nothing to do.
	 */
	if (flow->state == TG_FS_DIVERTED)
		tg_emit(TG_EV_CLOSE, flow, flow->slot);
	else if (tg_audit_on)
		tg_emit_audit(TG_EV_CLOSE, flow);
	bpf_map_delete_elem(&tg_flows, &sks->cookie);
}

SEC("sockops")
int tg_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		tg_count_connect(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		tg_track(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			tg_untrack(skops);
		break;
	}
	return 1;
}
