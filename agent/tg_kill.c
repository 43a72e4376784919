// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_kill - destroy a flow's TCP connection (see tg_kill.h)
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <bpf/bpf.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
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

void tg_diag_req(struct inet_diag_req_v2 *req, const struct tg_flow *f)
{
	memset(req, 0, sizeof(*req));
	req->sdiag_family = (__u8)f->family;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_states = ~0U;
	req->id.idiag_sport = htons(f->lport);
	req->id.idiag_dport = htons(f->rport);
	memcpy(req->id.idiag_src, f->laddr, 16);
	memcpy(req->id.idiag_dst, f->raddr, 16);
	req->id.idiag_cookie[0] = (__u32)f->cookie;
	req->id.idiag_cookie[1] = (__u32)(f->cookie >> 32);
}

int tg_kill_flow(struct tg_kill *k, const struct tg_flow *f)
{
	struct inet_diag_req_v2 req;
	struct nl_msg *msg;
	int err;

	if (!k->nl)
		return -ENOTCONN;
	tg_diag_req(&req, f);

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

/* The cgroup ids of a cgroup v2 directory and of those below it. */
struct tg_cgids {
	__u64 id[256];
	unsigned n;
	int overflow;
};

static struct tg_cgids *tg_walk_ids;

static int tg_cgid_of(const char *path, __u64 *id)
{
	struct {
		struct file_handle fh;
		__u64 id;
	} h;
	int mount_id;

	h.fh.handle_bytes = sizeof(h.id);
	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) < 0 ||
	    h.fh.handle_bytes != sizeof(h.id))
		return -1;
	memcpy(id, h.fh.f_handle, sizeof(*id));
	return 0;
}

static int tg_cgid_visit(const char *path, const struct stat *st, int type,
			 struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type != FTW_D)
		return 0;
	if (tg_walk_ids->n == sizeof(tg_walk_ids->id) / sizeof(__u64)) {
		tg_walk_ids->overflow = 1;
		return 1;
	}
	if (tg_cgid_of(path, &tg_walk_ids->id[tg_walk_ids->n]) == 0)
		tg_walk_ids->n++;
	return 0;
}

static int tg_cgids_has(const struct tg_cgids *c, __u64 id)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->id[i] == id)
			return 1;
	return 0;
}

/*
 * One sock_diag dump of family's TCP sockets in the states that can
 * still carry the MTA's writes; each one of the cgroups, to a guarded
 * port, that is no flow is destroyed. Returns the count, or -errno.
 */
static long tg_kill_unseen_family(struct tg_kill *k, const int *seen,
				  unsigned nseen, const struct tg_cgids *cg,
				  __u8 family, const __u16 *ports,
				  unsigned nports)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} rq;
	struct tg_flow victim, f;
	static char buf[32768];
	unsigned j;
	struct nlmsghdr *h;
	long killed = 0;
	int fd, done = 0;
	ssize_t len;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	memset(&rq, 0, sizeof(rq));
	rq.nlh.nlmsg_len = sizeof(rq);
	rq.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	rq.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	rq.req.sdiag_family = family;
	rq.req.sdiag_protocol = IPPROTO_TCP;
	rq.req.idiag_states = (1U << TCP_ESTABLISHED) | (1U << TCP_CLOSE_WAIT);
	if (send(fd, &rq, sizeof(rq), 0) < 0) {
		killed = -errno;
		goto out;
	}
	while (!done && (len = recv(fd, buf, sizeof(buf), 0)) > 0) {
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len);
		     h = NLMSG_NEXT(h, len)) {
			struct inet_diag_msg *m = NLMSG_DATA(h);
			struct rtattr *a;
			int alen, guarded = 0;
			__u64 cgid = 0, cookie;
			__u16 dport;

			if (h->nlmsg_type == NLMSG_DONE) {
				done = 1;
				break;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);

				/* no IPv6 in this kernel: no IPv6 sockets */
				if (family == AF_INET6 &&
				    (e->error == -ENOENT ||
				     e->error == -EAFNOSUPPORT))
					goto out;
				killed = e->error < 0 ? e->error : -EPROTO;
				goto out;
			}
			dport = ntohs(m->id.idiag_dport);
			for (unsigned i = 0; i < nports; i++)
				guarded |= ports[i] == dport;
			if (!guarded)
				continue;
			alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			for (a = (struct rtattr *)(m + 1); RTA_OK(a, alen);
			     a = RTA_NEXT(a, alen))
				if (a->rta_type == INET_DIAG_CGROUP_ID &&
				    RTA_PAYLOAD(a) >= sizeof(cgid))
					memcpy(&cgid, RTA_DATA(a),
					       sizeof(cgid));
			if (!cgid) {
				/* a kernel without the attribute: cannot tell
				 */
				killed = -EOPNOTSUPP;
				goto out;
			}
			if (!tg_cgids_has(cg, cgid))
				continue;
			cookie = (__u64)m->id.idiag_cookie[0] |
				 (__u64)m->id.idiag_cookie[1] << 32;
			for (j = 0; j < nseen; j++)
				if (bpf_map_lookup_elem(seen[j], &cookie,
							&f) == 0)
					break;
			if (j < nseen)
				continue; /* tracked */
			memset(&victim, 0, sizeof(victim));
			victim.family = family;
			victim.lport = ntohs(m->id.idiag_sport);
			victim.rport = dport;
			memcpy(victim.laddr, m->id.idiag_src, 16);
			memcpy(victim.raddr, m->id.idiag_dst, 16);
			victim.cookie = cookie;
			killed += tg_kill_flow(k, &victim) == 0;
		}
	}
out:
	close(fd);
	return killed;
}

long tg_kill_unseen(struct tg_kill *k, const int *seen, unsigned nseen,
		    const char *cgroup, const __u16 *ports, unsigned nports)
{
	static struct tg_cgids cg;
	long n4, n6;

	memset(&cg, 0, sizeof(cg));
	tg_walk_ids = &cg;
	if (nftw(cgroup, tg_cgid_visit, 16, FTW_PHYS) < 0)
		return -errno;
	if (cg.overflow)
		return -E2BIG;
	if (cg.n == 0)
		return -ENOENT;
	n4 = tg_kill_unseen_family(k, seen, nseen, &cg, AF_INET, ports,
				   nports);
	if (n4 < 0)
		return n4;
	n6 = tg_kill_unseen_family(k, seen, nseen, &cg, AF_INET6, ports,
				   nports);
	if (n6 < 0)
		return n6;
	return n4 + n6;
}
