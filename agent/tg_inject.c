// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_inject - injection slots (see tg_inject.h)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>

#include "tlsguard.h"
#include "tg_inject.h"
#include "tg_log.h"
#include "tg_mailaddr.h"
#include "tg_names.h"

#define TG_WAIT		((const struct tg_resp *)1)	/* waits for tg_mx */

/* The replies that decide nothing, or nothing about TLS. */
static const struct tg_resp tg_r_mail_ok = { TG_RK_PROTOCOL, 250, "2.1.0",
					     "Ok" };
static const struct tg_resp tg_r_no_rcpt = { TG_RK_PROTOCOL, 554, "5.5.1",
					     "Error: no valid recipients" };
static const struct tg_resp tg_r_unread = {
	TG_RK_AGAIN, 451, "4.5.4",
	"MAIL command not understood; try again later"
};
static const struct tg_resp tg_r_again = { TG_RK_AGAIN, 451, "4.3.0",
					   "Try again later" };
static const struct tg_resp tg_r_seq = { TG_RK_PROTOCOL, 503, "5.5.1",
					 "Error: need MAIL command" };
static const struct tg_resp tg_r_ok = { TG_RK_PROTOCOL, 250, "2.0.0", "Ok" };
static const struct tg_resp tg_r_bye = { TG_RK_PROTOCOL, 221, "2.0.0",
					 "Bye" };
static const struct tg_resp tg_r_unknown = { TG_RK_PROTOCOL, 502, "5.5.2",
					     "Error: command not recognized" };

static int tg_slot_open(struct tg_inject *ij, unsigned idx)
{
	struct tg_islot *s = &ij->slots[idx];
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	struct epoll_event ev;
	struct tg_slot val;
	socklen_t clen = sizeof(s->cookie);
	int one = 1;
	__u64 fd64;

	memset(s, 0, sizeof(*s));
	s->a = s->b = -1;
	if (getsockname(ij->listen_fd, (struct sockaddr *)&sin, &slen) < 0)
		return -errno;
	s->a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->a < 0)
		return -errno;
	if (connect(s->a, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -errno;
	s->b = accept4(ij->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (s->b < 0)
		return -errno;
	setsockopt(s->a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (getsockopt(s->a, SOL_SOCKET, SO_COOKIE, &s->cookie, &clen) < 0)
		return -errno;

	if (bpf_map_update_elem(ij->maps.injects, &s->cookie, &idx, BPF_ANY))
		return -errno;
	fd64 = (__u64)s->a;
	if (bpf_map_update_elem(ij->maps.socks, &s->cookie, &fd64, BPF_ANY))
		return -errno;
	val.flow = 0;
	val.inject = s->cookie;
	if (bpf_map_update_elem(ij->maps.slots, &idx, &val, BPF_ANY))
		return -errno;
	tg_cmd_init(&s->cmd);
	ev.events = EPOLLIN;
	ev.data.u64 = TG_EP_SLOT | idx;
	if (epoll_ctl(ij->epfd, EPOLL_CTL_ADD, s->b, &ev) < 0)
		return -errno;
	return 0;
}

static void tg_slot_close(struct tg_inject *ij, unsigned idx)
{
	struct tg_islot *s = &ij->slots[idx];

	/* Closing A takes it out of the sockhash. */
	if (s->b >= 0)
		close(s->b);
	if (s->a >= 0)
		close(s->a);
	if (s->cookie)
		bpf_map_delete_elem(ij->maps.injects, &s->cookie);
	s->a = s->b = -1;
	s->cookie = 0;
}

/*
 * Injection sockets of a previous agent (--pin): they died with it, and
 * their cookies are never made again.
 */
static void tg_forget_injects(int fd)
{
	__u64 key;

	while (bpf_map_get_next_key(fd, NULL, &key) == 0)
		if (bpf_map_delete_elem(fd, &key))
			break;
}

/* Renew a slot's pair and give the slot back to the kernel. */
static void tg_slot_recycle(struct tg_inject *ij, unsigned idx)
{
	int err;

	tg_slot_close(ij, idx);
	err = tg_slot_open(ij, idx);
	if (err) {
		msg_warn("injection slot %u: cannot renew: %s; slot retired",
			 idx, strerror(-err));
		tg_slot_close(ij, idx);
		return;
	}
	if (bpf_map_update_elem(ij->maps.free_slots, NULL, &idx, BPF_ANY))
		msg_warn("injection slot %u: cannot queue: %s; slot retired",
			 idx, strerror(errno));
}

int tg_inject_init(struct tg_inject *ij, unsigned nslots,
		   const struct tg_inject_maps *maps, int epfd)
{
	struct sockaddr_in sin;
	unsigned i;
	int err;

	memset(ij, 0, sizeof(*ij));
	ij->maps = *maps;
	ij->epfd = epfd;
	ij->slots = calloc(nslots, sizeof(*ij->slots));
	if (!ij->slots)
		return -ENOMEM;
	for (i = 0; i < nslots; i++)
		ij->slots[i].a = ij->slots[i].b = -1;
	ij->n = nslots;
	tg_forget_injects(ij->maps.injects);
	ij->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ij->listen_fd < 0)
		return -errno;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ij->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(ij->listen_fd, 16) < 0)
		return -errno;
	for (i = 0; i < nslots; i++) {
		err = tg_slot_open(ij, i);
		if (err)
			return err;
		if (bpf_map_update_elem(ij->maps.free_slots, NULL, &i, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* Hand a flow back to the kernel's plaintext path (see tg_inject.h). */
static int tg_undivert(struct tg_inject *ij, __u64 cookie)
{
	struct tg_flow f;

	if (bpf_map_lookup_elem(ij->maps.flows, &cookie, &f))
		return -1;
	if (f.state != TG_FS_DIVERTED)
		return -1;
	f.state = TG_FS_PLAIN;
	f.slot = TG_NO_SLOT;
	f.why = TG_WHY_NONE;
	f.data_cmd = 0;
	f.starttls_cmd = 0;
	tg_cmd_init(&f.cmd);
	tg_reply_init(&f.reply);
	if (bpf_map_update_elem(ij->maps.flows, &cookie, &f, BPF_EXIST))
		return -1;
	return 0;
}

/* The recipient domain of a RCPT line, lower case; 0 if none. */
static int tg_rcpt_domain(const char *line, size_t len, char *out,
			  size_t outlen)
{
	char addr[TG_ADDR_MAX + 1];
	__u64 verb;

	out[0] = 0;
	return tg_line_addr(line, len, &verb, addr, sizeof(addr)) ==
		       TG_CMD_MAIL && verb == TG_VERB_RCPT &&
	       tg_addr_domain(addr, out, outlen);
}

/* The first RCPT line pipelined in what is still unanswered. */
static int tg_next_rcpt_domain(const struct tg_islot *s, char *out,
			       size_t outlen)
{
	const char *p = s->in + s->in_off, *end = s->in + s->in_len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (!nl)
			return 0;
		if (tg_rcpt_domain(p, (size_t)(nl - p), out, outlen))
			return 1;
		p = nl + 1;
	}
	return 0;
}

/*
 * The reply to a held MAIL (or, when it was accepted for now, to a RCPT)
 * once the recipient domain is in s->domain: 450 while another MX host
 * of the domain offers TLS 1.2 or higher, else 550; TG_WAIT while tg_mx
 * works on it.
 */
static const struct tg_resp *tg_decide(struct tg_inject *ij,
				       struct tg_islot *s,
				       const struct tg_flow *f,
				       const char *name)
{
	int st = TG_MX_NONE;
	__u16 version;

	if (ij->mx && f && s->domain[0])
		st = tg_mx_lookup(ij->mx, s->domain, f->family, f->raddr,
				  f->rport);
	if (st == TG_MX_PENDING)
		return TG_WAIT;
	if (st == TG_MX_SECURE)
		msg_info("%s: from=<%s>: deferred: another MX host of %s "
			 "offers TLS", name, s->sender, s->domain);
	version = tg_inject_weak_version(ij, f);
	tg_resp_held(&s->resp, ij->replies, st == TG_MX_SECURE,
		     version ? tg_tls_version_name(version) : NULL);
	return &s->resp;
}

/* The held MAIL's line (tg_heldlog.h); its recipients' lines follow. */
static void tg_log_held(const char *name, struct tg_islot *s,
			const struct tg_resp *r)
{
	tg_heldlog_mail(name, s->sender, r);
	s->held = r;
}

/* A recipient of the held message in s->line (see tg_heldlog.h). */
static void tg_log_rcpt(struct tg_inject *ij, struct tg_islot *s,
			const struct tg_flow *f, const struct tg_resp *r)
{
	char rcpt[TG_ADDR_MAX + 1];
	__u64 verb;

	if (r && tg_line_addr(s->line, s->line_len, &verb, rcpt,
			      sizeof(rcpt)) == TG_CMD_MAIL)
		tg_heldlog_rcpt(&s->log, ij->cgroup, f, s->sender, rcpt, r);
}

static const struct tg_resp *tg_reply_for(struct tg_inject *ij,
					   struct tg_islot *s, int ev,
					   const struct tg_flow *f,
					   const char *name)
{
	const struct tg_resp *r;

	switch (ev) {
	case TG_CMD_MAIL: {
		int idn = tg_cmd_idn(&s->cmd), first = s->mails++ == 0, g;
		__u64 verb;

		tg_line_addr(s->line, s->line_len, &verb, s->sender,
			     sizeof(s->sender));
		s->rcpts = 0;
		s->at_rcpt = 0;
		s->held = NULL;
		s->domain[0] = 0;
		/*
		 * The first MAIL is the one the kernel held as guaranteed; a
		 * later one was pipelined behind a reset, and one whose
		 * domain is not ASCII the kernel could not judge
		 * (include/tg_rule.h): those are judged here, the domain
		 * mapped by IDNA.
		 */
		if (first && f && f->why == TG_WHY_NO_TLS && !idn &&
		    !ij->policy_incomplete)
			g = 1;
		else if (idn)
			g = tg_policy_lookup_addr(*ij->policy, s->sender,
						  NULL) == TG_POL_GUARANTEED;
		else
			g = tg_policy_match(*ij->policy, s->cmd.addr_key,
					    s->cmd.domain_key,
					    tg_cmd_srs(&s->cmd));
		if (!g) {
			/*
			 * Not guaranteed, but the flow is diverted: the host
			 * cannot have this MAIL any more. A temporary reply:
			 * the MTA tries again, on a new connection.
			 */
			msg_info("%s: from=<%s>: deferred: %s", name,
				 s->sender, ij->policy_incomplete ?
				 ij->incomplete_why :
				 !first ? "pipelined after a held transaction" :
				 idn ? "an internationalized domain the kernel "
				       "could not match" :
				 "held before its sender was known");
			return &tg_r_again;
		}
		ij->held++;
		if (ij->mx && !tg_next_rcpt_domain(s, s->domain,
						   sizeof(s->domain))) {
			/* No pipelining: the domain comes with RCPT. */
			s->at_rcpt = 1;
			return &tg_r_mail_ok;
		}
		r = tg_decide(ij, s, f, name);
		if (r != TG_WAIT)
			tg_log_held(name, s, r);
		return r;
	}
	case TG_CMD_MAIL_NULL:
		return &tg_r_again;
	case TG_CMD_MAIL_BAD:
		/*
		 * A sender tlsguard cannot read may be a guaranteed one, and
		 * may not: it waits (a temporary reply), it is neither passed
		 * nor bounced.
		 */
		msg_info("%s: held: MAIL command not understood: deferred: "
			 "%.*s",
			 name, (int)(s->line_len > 200 ? 200 : s->line_len),
			 s->line);
		return &tg_r_unread;
	case TG_CMD_LINE:
	case TG_CMD_CHUNK_BAD:	/* a BDAT line: answered as one below */
		break;
	default:
		return NULL;
	}
	switch (s->cmd.verb) {
	case TG_VERB_RCPT:
		s->rcpts++;
		if (!s->at_rcpt) {
			tg_log_rcpt(ij, s, f, s->held);
			return &tg_r_seq;
		}
		tg_rcpt_domain(s->line, s->line_len, s->domain,
			       sizeof(s->domain));
		r = tg_decide(ij, s, f, name);
		if (r != TG_WAIT) {
			tg_log_held(name, s, r);
			tg_log_rcpt(ij, s, f, r);
		}
		return r;
	case TG_VERB_DATA:
	case TG_VERB_BDAT:
		return s->at_rcpt ? &tg_r_no_rcpt : &tg_r_seq;
	case TG_VERB_RSET:
		s->at_rcpt = 0;
		s->held = NULL;
		/* fall through */
	case TG_VERB_NOOP:
		return &tg_r_ok;
	case TG_VERB_QUIT:
		s->quit = 1;
		return &tg_r_bye;
	}
	return &tg_r_unknown;
}

static int tg_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void tg_slot_events(struct tg_inject *ij, struct tg_islot *s,
			   unsigned idx, __u32 events)
{
	struct epoll_event ev = { .events = events,
				  .data.u64 = TG_EP_SLOT | idx };

	epoll_ctl(ij->epfd, EPOLL_CTL_MOD, s->b, &ev);
}

/* A reply of the agent's own: counted by kind, and in the audit trail. */
static void tg_slot_replied(struct tg_inject *ij, struct tg_islot *s,
			    const struct tg_resp *r)
{
	ij->replied[r->kind]++;
	if (ij->audit && s->flow)
		tg_audit_held(ij->audit, s->flow, r);
}

/* A command line of a held flow, for the audit trail: without CR LF. */
static void tg_slot_audit(struct tg_inject *ij, struct tg_islot *s,
			  const char *text, size_t len)
{
	if (!ij->audit || !s->flow)
		return;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	tg_audit_line(ij->audit, s->flow, 0, text, len);
}

/* Answer what was read, in order, up to a reply that must wait. */
static void tg_slot_process(struct tg_inject *ij, unsigned idx,
			    const struct tg_resp *first, int eof)
{
	struct tg_islot *s = &ij->slots[idx];
	struct tg_flow f, *fp = NULL;
	char out[8192], name[96] = "unknown";
	size_t outlen = 0, n;
	int reset = 0, ev;
	const struct tg_resp *r;

	if (s->flow && bpf_map_lookup_elem(ij->maps.flows, &s->flow, &f) == 0) {
		fp = &f;
		tg_flow_name(fp, name, sizeof(name));
	}
	if (first)
		outlen = tg_resp_line(first, out, sizeof(out));
	while (s->in_off < s->in_len && !s->quit && !s->wait) {
		unsigned char c = (unsigned char)s->in[s->in_off++];

		if (s->cmd.mode == TG_MODE_CMD && s->cmd.line_len == 0)
			s->line_len = 0;
		if (s->cmd.mode == TG_MODE_CMD && s->line_len < sizeof(s->line))
			s->line[s->line_len++] = (char)c;
		ev = tg_cmd_feed(&s->cmd, c);
		if (ev == TG_CMD_NONE)
			continue;
		reset = ev == TG_CMD_LINE && s->cmd.verb == TG_VERB_RSET;
		tg_slot_audit(ij, s, s->line, s->line_len);
		r = tg_reply_for(ij, s, ev, fp, name);
		if (r == TG_WAIT) {
			s->wait = 1;
			tg_slot_events(ij, s, idx, 0);
			break;
		}
		if (!r)
			continue;
		tg_slot_replied(ij, s, r);
		if (outlen + TG_RESP_LINE > sizeof(out)) {
			if (tg_write_all(s->a, out, outlen) < 0)
				break;
			outlen = 0;
		}
		n = tg_resp_line(r, out + outlen, sizeof(out) - outlen);
		outlen += n;
	}
	if (s->in_off == s->in_len)
		s->in_off = s->in_len = 0;
	/*
	 * The transaction ended with RSET and nothing after it: give the flow
	 * back to the kernel before the MTA can read the 250 and go on.
	 */
	if (reset && !s->wait && s->in_len == 0 && s->cmd.mode == TG_MODE_CMD &&
	    s->cmd.line_len == 0 && !eof && !s->quit && s->flow &&
	    tg_undivert(ij, s->flow) == 0) {
		msg_debug("%s: transaction reset: flow handed back", name);
		if (tg_write_all(s->a, out, outlen) < 0)
			msg_warn("%s: cannot answer RSET", name);
		tg_slot_recycle(ij, idx);
		return;
	}
	if (outlen && tg_write_all(s->a, out, outlen) < 0)
		msg_debug("%s: flow gone before its replies", name);
	if (eof) {
		/* Our own pair broke: renew it; the kernel fails the flow. */
		msg_warn("injection slot %u: peer closed", idx);
		tg_slot_recycle(ij, idx);
	}
}

void tg_inject_readable(struct tg_inject *ij, unsigned idx)
{
	struct tg_islot *s;
	struct tg_slot slot;
	int eof = 0;
	ssize_t n;

	if (idx >= ij->n || ij->slots[idx].b < 0)
		return;
	s = &ij->slots[idx];
	if (bpf_map_lookup_elem(ij->maps.slots, &idx, &slot) == 0 && slot.flow)
		s->flow = slot.flow;
	while (s->in_len < sizeof(s->in)) {
		n = read(s->b, s->in + s->in_len, sizeof(s->in) - s->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;		/* EAGAIN: all read */
		if (n == 0) {
			eof = 1;
			break;
		}
		s->in_len += (unsigned)n;
	}
	tg_slot_process(ij, idx, NULL, eof);
}

void tg_inject_mx_ready(struct tg_inject *ij)
{
	struct tg_flow f, *fp;
	char name[96];
	unsigned i;
	const struct tg_resp *r;

	for (i = 0; i < ij->n; i++) {
		struct tg_islot *s = &ij->slots[i];

		if (!s->wait || s->b < 0)
			continue;
		fp = NULL;
		if (s->flow &&
		    bpf_map_lookup_elem(ij->maps.flows, &s->flow, &f) == 0)
			fp = &f;
		if (!fp) {
			/* The flow is gone: its slot comes back on close. */
			s->wait = 0;
			continue;
		}
		tg_flow_name(fp, name, sizeof(name));
		r = tg_decide(ij, s, fp, name);
		if (r == TG_WAIT || !r)
			continue;
		tg_log_held(name, s, r);
		tg_slot_replied(ij, s, r);
		s->wait = 0;
		tg_slot_events(ij, s, i, EPOLLIN);
		tg_slot_process(ij, i, r, 0);
	}
}

void tg_inject_closed(struct tg_inject *ij, unsigned idx, __u64 flow)
{
	struct tg_slot slot;

	if (idx >= ij->n)
		return;
	/* A late report for a slot renewed meanwhile: nothing to do. */
	if (bpf_map_lookup_elem(ij->maps.slots, &idx, &slot) == 0 &&
	    slot.flow != flow)
		return;
	tg_slot_recycle(ij, idx);
}

unsigned tg_inject_reap(struct tg_inject *ij)
{
	struct tg_slot slot;
	struct tg_flow f;
	unsigned i, n = 0;

	for (i = 0; i < ij->n; i++) {
		if (ij->slots[i].b < 0 ||
		    bpf_map_lookup_elem(ij->maps.slots, &i, &slot) ||
		    !slot.flow ||
		    bpf_map_lookup_elem(ij->maps.flows, &slot.flow, &f) == 0)
			continue;
		tg_slot_recycle(ij, i);
		n++;
	}
	return n;
}

void tg_inject_fini(struct tg_inject *ij)
{
	unsigned i;

	for (i = 0; ij->slots && i < ij->n; i++)
		tg_slot_close(ij, i);
	free(ij->slots);
	ij->slots = NULL;
	if (ij->listen_fd >= 0)
		close(ij->listen_fd);
	ij->listen_fd = -1;
}
