// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_connect - refuse connections to guarded ports that would carry
 *	data before tg_sockops can track them
 * DESCRIPTION
 *	cgroup connect4 and connect6 programs on the guarded cgroup. They
 *	run at connect(), and also at the implicit connect of a sendto() or
 *	sendmsg() with MSG_FASTOPEN, before any packet leaves.
 *
 *	tg_sockops puts a socket under tg_smtp_msg when the handshake
 *	completes (ACTIVE_ESTABLISHED). TCP Fast Open sends data in the SYN,
 *	before that: with MSG_FASTOPEN (tp->fastopen_req holds the data
 *	while the connect runs) and with the TCP_FASTOPEN_CONNECT socket
 *	option (tp->fastopen_connect: connect() returns at once and the
 *	first write goes out in the SYN). Such data would pass unread, a
 *	guaranteed sender's MAIL among it. So a connection to a guarded port
 *	is refused (EPERM) when MSG_FASTOPEN carries data, and always with
 *	TCP_FASTOPEN_CONNECT, whose data is not known yet. MSG_FASTOPEN with
 *	no data passes: that is how Exim opens every connection (an SMTP
 *	client has nothing to say before the greeting), and what it writes
 *	later passes tg_smtp_msg like any write.
 *
 *	A connection is refused too when the flow table has no room for it
 *	(tg_conns, counted by tg_sockops from connect to close).
 *
 *	One program per attach point, each a thin wrapper of
 *	tg_connect_verdict(): every rule that decides at connect time lives
 *	there.
 */
#include "tg_common.bpf.h"
#include <bpf/bpf_core_read.h>

#define IPPROTO_TCP 6

static __always_inline int tg_connect_verdict(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct tcp_fastopen_request *req;
	struct tg_conns *conns;
	struct tcp_sock *tp;
	__u32 zero = 0;

	if (ctx->protocol != IPPROTO_TCP ||
	    !tg_port_kind(bpf_ntohs(ctx->user_port & 0xffff)))
		return 1;
	if (!sk)
		return 1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 1;
	req = tp->fastopen_req;
	if ((req && req->size) ||
	    BPF_CORE_READ_BITFIELD(tp, fastopen_connect)) {
		TG_STAT_INC(fastopen_refused);
		return 0;
	}
	/*
	 * The flow table full: a connection made now would only be failed
	 * at its first write (TG_ROLE_UNTRACKED), or, beyond the sockhash's
	 * spare room, not be enforceable at all. Refused here instead, so
	 * the MTA sees EPERM at connect and tries again later. Connects on
	 * several CPUs at once may pass the same last place: those few are
	 * failed at their first write, as before.
	 */
	conns = bpf_map_lookup_elem(&tg_conns, &zero);
	if (conns && conns->live >= (__s64)tg_flows_room) {
		TG_STAT_INC(table_refused);
		return 0;
	}
	return 1;
}

SEC("cgroup/connect4")
int tg_connect4(struct bpf_sock_addr *ctx)
{
	return tg_connect_verdict(ctx);
}

SEC("cgroup/connect6")
int tg_connect6(struct bpf_sock_addr *ctx)
{
	return tg_connect_verdict(ctx);
}
