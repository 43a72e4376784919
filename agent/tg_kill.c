// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_kill - destroy a flow's TCP connection (see tg_kill.h)
 */
#include <errno.h>
#include <string.h>
#include <bpf/bpf.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/idiag/idiagnl.h>

#include "tlsguard.h"
#include "tg_kill.h"
#include "tg_mapwalk.h"

int tg_kill_open(struct tg_kill *k)
{
	int err;

	k->nl = nl_socket_alloc();
	if (!k->nl)
		return -ENOMEM;
	err = idiagnl_connect(k->nl);
	if (err < 0) {
		nl_socket_free(k->nl);
		k->nl = NULL;
		return -EPROTO;
	}
	return 0;
}

int tg_kill_flow(struct tg_kill *k, const struct tg_flow *f)
{
	struct inet_diag_req_v2 req;
	struct nl_msg *msg;
	int err;

	if (!k->nl)
		return -ENOTCONN;
	memset(&req, 0, sizeof(req));
	req.sdiag_family = (__u8)f->family;
	req.sdiag_protocol = IPPROTO_TCP;
	req.idiag_states = ~0U;
	req.id.idiag_sport = htons(f->lport);
	req.id.idiag_dport = htons(f->rport);
	memcpy(req.id.idiag_src, f->laddr, 16);
	memcpy(req.id.idiag_dst, f->raddr, 16);
	req.id.idiag_cookie[0] = (__u32)f->cookie;
	req.id.idiag_cookie[1] = (__u32)(f->cookie >> 32);

	msg = nlmsg_alloc_simple(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK);
	if (!msg)
		return -ENOMEM;
	err = nlmsg_append(msg, &req, sizeof(req), NLMSG_ALIGNTO);
	if (err == 0)
		err = nl_send_auto(k->nl, msg);
	nlmsg_free(msg);
	if (err < 0)
		return -EIO;
	err = nl_wait_for_ack(k->nl);
	if (err == -NLE_OBJ_NOTFOUND)
		return -ENOENT;
	return err < 0 ? -EIO : 0;
}

void tg_kill_close(struct tg_kill *k)
{
	if (k->nl)
		nl_socket_free(k->nl);
	k->nl = NULL;
}

struct tg_kill_walk {
	struct tg_kill *k;
	int flows_fd;
	__u32 state;
	unsigned long n;
};

static int tg_kill_one(void *ctx, const void *key, const void *value)
{
	struct tg_kill_walk *w = ctx;
	struct tg_flow f;

	memcpy(&f, value, sizeof(f));
	if (f.state != w->state)
		return 0;
	if (w->state != TG_FS_FAILED) {
		/* the kernel drops its writes from now on */
		f.state = TG_FS_FAILED;
		bpf_map_update_elem(w->flows_fd, key, &f, BPF_EXIST);
	}
	w->n += tg_kill_flow(w->k, &f) == 0;
	return 0;
}

unsigned long tg_kill_state(struct tg_kill *k, int flows_fd, __u32 state)
{
	struct tg_kill_walk w = { .k = k, .flows_fd = flows_fd,
				  .state = state };

	tg_map_each(flows_fd, sizeof(__u64), sizeof(struct tg_flow),
		    tg_kill_one, &w);
	return w.n;
}
