/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_inject - injection slots: answer for the remote host on held flows
 * SYNOPSIS
 *	#include "tg_inject.h"
 *
 *	int	tg_inject_init(struct tg_inject *ij, unsigned nslots,
 *			       const struct tg_inject_maps *maps, int epfd);
 *	void	tg_inject_readable(struct tg_inject *ij, unsigned slot);
 *	void	tg_inject_closed(struct tg_inject *ij, unsigned slot,
 *				 __u64 flow);
 *	void	tg_inject_fini(struct tg_inject *ij);
 * DESCRIPTION
 *	A slot is a loopback TCP pair: the near end (A) is in the sockhash,
 *	the far end (B) is read by the agent. A held flow's bytes arrive on
 *	B; each command gets one reply, in order, written on A, whence the
 *	kernel puts it into the held flow's receive queue (see tlsguard.h).
 *
 *	Replies: 550 5.7.10 to a MAIL of a guaranteed sender ("TLS is
 *	required, but was not offered by host", or, for a host that was seen
 *	negotiating TLS below 1.2 within the hour, "TLS 1.2 or higher is
 *	required, but host negotiated TLSv1.0"), 501 5.5.4 to
 *	one the kernel could not vouch for; 503 5.5.1 to RCPT, DATA and BDAT;
 *	250 to RSET and NOOP; 221 to QUIT; 502 5.5.2 to anything else. When
 *	the MTA's last command was RSET and nothing follows it, the
 *	transaction is over: the flow is handed back to the kernel's
 *	plaintext path (its next MAIL is judged anew, so a connection the
 *	MTA reuses for another sender keeps working) before the 250 is
 *	written, and the slot is renewed.
 *
 *	tg_inject_readable() is called when B of a slot is readable.
 *	With an MX check (ij->mx set), a held MAIL is answered 450 4.7.10
 *	instead of 550 when the recipient's domain has another MX host that
 *	takes mail over TLS 1.2 or higher (see tg_mx.h): the MTA then tries
 *	that host. The domain is the first RCPT's, pipelined behind the MAIL;
 *	without pipelining, MAIL is accepted for now and each RCPT gets the
 *	450 or 550. While tg_mx works, the slot's later commands wait, so
 *	replies stay in order; tg_inject_mx_ready() resumes them.
 *
 *	tg_inject_note_weak() remembers a host that negotiated TLS below 1.2
 *	(see tg_ssl_uprobe.bpf.c: such a session is cut when a guaranteed
 *	sender's MAIL would go over it; the MTA then retries in plaintext);
 *	tg_inject_weak_version() is the version a flow's host negotiated
 *	within the hour, if below 1.2, else 0 (both in tg_weak.c).
 *
 *	tg_inject_reap() renews every slot whose flow is no longer in the
 *	flow table (its close was reported in an event that was lost) and
 *	returns how many.
 *
 *	tg_inject_closed() is called when the kernel reports that the flow a
 *	slot served has closed: the slot's pair is replaced by a fresh one
 *	(no byte of the old flow can reach a new one) and the slot goes back
 *	to the kernel's free queue.
 * DIAGNOSTICS
 *	One line per held message, naming the flow as host[addr]:port and
 *	the sender, and one per recipient of it (see tg_heldlog.h). Problems with a slot are warnings; the slot is dropped
 *	from the pool, which the kernel sees as fewer free slots (a flow
 *	that finds none is failed closed).
 */
#ifndef TG_INJECT_H
#define TG_INJECT_H

#include <linux/types.h>
#include "tg_epoll.h"
#include "tg_smtp.h"
#include "tg_config.h"
#include "tg_policy.h"
#include "tg_mx.h"
#include "tg_audit.h"
#include "tg_resp.h"
#include "tg_heldlog.h"

/* bytes of a command kept: a MAIL address ends within TG_LINE_MAX */
#define TG_INJECT_LINE (TG_LINE_MAX + 2)
#define TG_INJECT_IN	16384	/* bytes read from a slot, not yet answered */

struct tg_inject_maps {
	int injects;
	int socks;
	int slots;
	int free_slots;
	int flows;
};

struct tg_islot {
	int a, b;		/* near end (in the sockhash), far end */
	__u64 cookie;		/* of a */
	__u64 flow;		/* the flow it serves, as last seen */
	struct tg_cmd cmd;	/* parser of the held flow's commands */
	int quit;		/* QUIT answered: ignore the rest */
	unsigned line_len;
	char line[TG_INJECT_LINE];
	char sender[TG_ADDR_MAX + 1];
	unsigned rcpts;
	unsigned mails;		/* MAIL commands answered in this diversion */
	unsigned in_len, in_off;
	char in[TG_INJECT_IN];	/* read from b, not yet answered */
	int wait;		/* a reply waits for tg_mx: the event */
	int at_rcpt;		/* MAIL accepted for now: judge at RCPT */
	char domain[TG_MX_DOMAIN];	/* recipient domain asked about */
	struct tg_resp resp;	/* the reply to the held MAIL (or RCPT) */
	const struct tg_resp *held;	/* the MAIL was held with it: log RCPTs */
	struct tg_heldlog log;	/* the flow's MTA process, for the log */
};

/* Hosts seen negotiating TLS below 1.2, to name the cause in replies. */
#define TG_WEAK_HOSTS	256

struct tg_weak_host {
	__u8 addr[16];
	__u16 family;
	__u16 version;
	long long seen;		/* CLOCK_MONOTONIC seconds, 0 if unused */
};

struct tg_inject {
	struct tg_weak_host weak[TG_WEAK_HOSTS];
	struct tg_inject_maps maps;
	const struct tg_policy *const *policy;	/* current policy */
	struct tg_mx *mx;	/* NULL: no MX check, always 550 */
	struct tg_audit *audit;	/* NULL: no audit trail */
	const struct tg_replies *replies;	/* tlsguard.conf's texts */
	const char *cgroup;	/* the guarded cgroup, for tg_heldlog */
	int listen_fd;
	int epfd;
	unsigned n;
	struct tg_islot *slots;
	__u64 held;		/* MAIL commands held and judged */
	__u64 replied[TG_RK_MAX];	/* replies written, by kind */
	int policy_incomplete;	/* the kernel holds every sender: judge */
	const char *incomplete_why;	/* why, for the log */
};

int tg_inject_init(struct tg_inject *ij, unsigned nslots,
		   const struct tg_inject_maps *maps, int epfd);
void tg_inject_readable(struct tg_inject *ij, unsigned slot);
void tg_inject_closed(struct tg_inject *ij, unsigned slot, __u64 flow);
void tg_inject_mx_ready(struct tg_inject *ij);
void tg_inject_fini(struct tg_inject *ij);
unsigned tg_inject_reap(struct tg_inject *ij);
void tg_inject_note_weak(struct tg_inject *ij, __u16 family,
			 const __u8 *addr, __u16 version);
__u16 tg_inject_weak_version(const struct tg_inject *ij,
			     const struct tg_flow *f);

#endif /* TG_INJECT_H */
