/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_kill - destroy a flow's TCP connection (SOCK_DESTROY)
 * SYNOPSIS
 *	#include "tg_kill.h"
 *
 *	int	tg_kill_open(struct tg_kill *k);
 *	int	tg_kill_flow(struct tg_kill *k, const struct tg_flow *f);
 *	unsigned long tg_kill_state(struct tg_kill *k, int flows_fd,
 *				    __u32 state);
 *	long	tg_kill_unseen(struct tg_kill *k, const int *seen,
 *			       unsigned nseen, const char *cgroup,
 *			       const __u16 *ports, unsigned nports);
 *	void	tg_kill_close(struct tg_kill *k);
 *	void	tg_diag_req(struct inet_diag_req_v2 *req,
 *			    const struct tg_flow *f);
 * DESCRIPTION
 *	tg_kill_flow() asks the kernel, over sock_diag netlink (libnl-idiag),
 *	to destroy the TCP socket of a flow, named by its addresses, ports
 *	and socket cookie, so that no other socket can be hit. The MTA's
 *	next call on it fails with ECONNABORTED and it defers the mail;
 *	the peer gets a reset. It returns 0, or a negative errno (-ENOENT
 *	when the socket is gone already).
 *
 *	tg_kill_state() destroys every flow of the flow table flows_fd in
 *	state (TG_FS_*), failing it closed first when it is not already:
 *	TG_FS_FAILED after lost events that asked for it, TG_FS_DIVERTED
 *	for the held flows of a previous agent. It returns how many it
 *	destroyed.
 *
 *	tg_kill_unseen() destroys every TCP connection of the processes of
 *	cgroup (a directory of the cgroup v2 tree) and of the cgroups below
 *	it, IPv4 and IPv6, established or half-closed by the peer (so that
 *	it can still be written to), to one of ports, whose socket is a key
 *	of none of the nseen maps seen (keyed by socket cookie, values of
 *	at most sizeof(struct tg_flow): this agent's tg_flows, and the
 *	tg_socks of each older generation that drains): connections no
 *	tg_sockops ever tracked. It lists
 *	them over sock_diag (the cgroup of each socket comes with it) and
 *	returns how many it destroyed, or a negative errno when it cannot
 *	list them.
 *
 *	tg_diag_req() fills a sock_diag request that names exactly the
 *	socket of flow f (addresses, ports, cookie), for SOCK_DESTROY here
 *	and for a lookup of the socket elsewhere (tg_heldlog).
 */
#ifndef TG_KILL_H
#define TG_KILL_H

#include <linux/types.h>

struct nl_sock;
struct tg_flow;
struct inet_diag_req_v2;

struct tg_kill {
	struct nl_sock *nl;
};

int tg_kill_open(struct tg_kill *k);
int tg_kill_flow(struct tg_kill *k, const struct tg_flow *f);
unsigned long tg_kill_state(struct tg_kill *k, int flows_fd, __u32 state);
long tg_kill_unseen(struct tg_kill *k, const int *seen, unsigned nseen,
		    const char *cgroup, const __u16 *ports, unsigned nports);
void tg_kill_close(struct tg_kill *k);
void tg_diag_req(struct inet_diag_req_v2 *req, const struct tg_flow *f);

#endif /* TG_KILL_H */
