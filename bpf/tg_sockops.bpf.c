// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_sockops - track the MTA's outbound connections to guarded ports
 * DESCRIPTION
 *	Attached to the guarded cgroup. A connect to one of the guarded ports
 *	gets its flow table entry at once (TCP_CONNECT), keyed by the
 *	socket's cookie, and counts against the table (tg_conns, which
 *	tg_connect reads) until it closes, established or not. When the
 *	handshake completes (ACTIVE_ESTABLISHED), before the first byte of
 *	data either way, the socket gets its place in tg_socks, which puts it
 *	under tg_smtp_msg and tg_reply_skb.
 *
 *	No socket storage: the cookie is all a program needs to find a
 *	flow, and tg_smtp_msg reads it from the socket. Creating the storage
 *	cost more than a whole plaintext message's other sockops work (an
 *	allocation at every connect, freed after an RCU grace period).
 *
 *	If the flow table is full, the socket is still put in tg_socks,
 *	untracked: tg_smtp_msg finds no flow for it and drops every write,
 *	so the MTA defers the mail instead of sending it unchecked (fail
 *	closed). The sockhash has room for TG_SLOTS_MAX such sockets beyond
 *	the flow table; one it cannot take is reported for the agent to
 *	destroy. A connection whose connect ran before tlsguard was attached
 *	gets its entry when it is established.
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
 * A flow table entry for a socket that has none, counted in tg_conns
 * while it lives; NULL when the table has no room. Its close is asked
 * for here, so that a connect that fails is seen closing too.
 */
static __always_inline struct tg_flow *tg_flow_new(struct bpf_sock_ops *skops,
						   __u64 cookie, int kind)
{
	struct tg_conns *conns;
	struct tg_flow *f;
	__u32 zero = 0;

	if (bpf_map_update_elem(&tg_flows, &cookie, &tg_flow_zero,
				BPF_NOEXIST))
		return NULL;
	f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!f)
		return NULL;
	conns = bpf_map_lookup_elem(&tg_conns, &zero);
	if (conns)
		__sync_fetch_and_add(&conns->live, 1);
	tg_flow_fill(f, skops, cookie, kind);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	return f;
}

/* The entry goes, and its place in tg_conns with it. */
static __always_inline void tg_flow_drop(__u64 cookie)
{
	struct tg_conns *conns;
	__u32 zero = 0;

	if (bpf_map_delete_elem(&tg_flows, &cookie))
		return;
	conns = bpf_map_lookup_elem(&tg_conns, &zero);
	if (conns)
		__sync_fetch_and_add(&conns->live, -1);
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

/* The port's kind (tg_port_kind()) of a socket to a guarded port, else 0. */
static __always_inline int tg_guarded(struct bpf_sock_ops *skops)
{
	return tg_port_kind(bpf_ntohl(skops->remote_port) & 0xffff);
}

/* A connect to a guarded port: its flow entry, from now to its close. */
static __always_inline void tg_connecting(struct bpf_sock_ops *skops)
{
	int kind = tg_guarded(skops);

	if (kind)
		tg_flow_new(skops, bpf_get_socket_cookie(skops), kind);
}

static __always_inline void tg_track(struct bpf_sock_ops *skops)
{
	int one = 1, kind = tg_guarded(skops);
	struct tg_flow *f;
	__u64 cookie;

	if (!kind)
		return;
	cookie = bpf_get_socket_cookie(skops);
	f = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!f)
		f = tg_flow_new(skops, cookie, kind);
	if (f) {
		f->start_ns = bpf_ktime_get_ns();
		TG_STAT_INC(flows);
	} else {
		TG_STAT_INC(flows_untracked);
	}
	if (bpf_sock_hash_update(skops, &tg_socks, &cookie, BPF_NOEXIST)) {
		/*
		 * Not enforceable: nothing here can drop its writes. The
		 * agent destroys it and logs the counter; that races the
		 * MTA's first commands, hence the sockhash's spare room.
		 */
		TG_STAT_INC(sockhash_full);
		tg_flow_drop(cookie);
		tg_emit_unwatched(skops, cookie);
		return;
	}
	bpf_setsockopt(skops, SOL_TCP, TCP_NODELAY, &one, sizeof(one));
}

static __always_inline void tg_untrack(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tg_flow *flow;

	flow = bpf_map_lookup_elem(&tg_flows, &cookie);
	if (!flow)
		return;
	/*
	 * The agent frees a diverted flow's slot at once, and ends the flow's
	 * audit record when it next reads the ring; for any other flow it
	 * has nothing to do. A connect that never completed has no record.
	 */
	if (flow->state == TG_FS_DIVERTED)
		tg_emit(TG_EV_CLOSE, flow, flow->slot);
	else if (tg_audit_on && flow->start_ns)
		tg_emit_audit(TG_EV_CLOSE, flow);
	tg_flow_drop(cookie);
}

SEC("sockops")
int tg_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		tg_connecting(skops);
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
