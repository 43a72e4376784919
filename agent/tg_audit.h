/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_audit - one JSON record per message attempt
 * SYNOPSIS
 *	#include "tg_audit.h"
 *
 *	int	tg_audit_open(struct tg_audit *au, const char *path,
 *			      int flows_fd, const struct tg_policy *const *pol);
 *	int	tg_audit_reopen(struct tg_audit *au);
 *	void	tg_audit_line(struct tg_audit *au, __u64 cookie, __u32 flags,
 *			      const char *text, size_t len);
 *	void	tg_audit_held(struct tg_audit *au, __u64 cookie,
 *			      const struct tg_resp *r);
 *	void	tg_audit_line_event(struct tg_audit *au,
 *				    const struct tg_line_event *le);
 *	void	tg_audit_tls(struct tg_audit *au, const struct tg_event *e);
 *	void	tg_audit_killed(struct tg_audit *au, const struct tg_event *e);
 *	void	tg_audit_closed(struct tg_audit *au, __u64 cookie);
 *	void	tg_audit_close(struct tg_audit *au);
 * DESCRIPTION
 *	The audit trail is assembled from the SMTP lines of each flow: the
 *	commands the MTA wrote and the final replies it read, on the wire
 *	or inside TLS (TG_EV_LINE events from the kernel), and the commands
 *	tlsguard answered itself on held flows (from tg_inject: the
 *	commands by tg_audit_line(), and its replies by tg_audit_held(),
 *	as typed replies whose kind, not text, gives the verdict). Replies are matched to commands in
 *	order, as SMTP pipelining requires. tg_audit_line_event() takes a
 *	TG_EV_LINE event as read from the ring buffer: the flow's addresses
 *	come from the event when the flow is already gone from tg_flows.
 *
 *	A record is written when a message attempt ends: the reply after the
 *	message data, a MAIL or DATA refused, RSET, QUIT, a new MAIL, the
 *	flow destroyed, or the connection closed. Fields: time (UTC), flow
 *	(local and remote address and port), host (the name in the host's
 *	greeting), sender, guaranteed, recipients (each with the reply to
 *	its RCPT), tls (version and cipher suite from the handshake on the
 *	wire, or null), mail_reply, data_reply, verdict: delivered,
 *	rejected-by-host, held-no-tls, held-weak-tls or deferred. Addresses
 *	are only ever copied from the conversation.
 *
 *	tg_audit_open() makes the file's directory when only that is
 *	missing (mode 0750, "/var/log/tlsguard"); a missing parent is an
 *	error. Records are appended to path, one line each, with one write()
 *	on the caller's thread (the file is opened O_APPEND). They are
 *	flushed to disk (fdatasync) by a thread of tg_audit_open()'s, the
 *	syncer, which holds no capability and touches nothing but the file
 *	descriptor: each flush covers every record written before it began,
 *	and the caller never waits for the disk. After a crash of the
 *	machine, the file holds the records up to the last completed flush:
 *	a record is on disk at most two flushes after its write (the flush
 *	under way, then its own): measured on ext4 on a virtio disk under
 *	bench case 9's load, 11 ms at p99 and 180 ms at worst (README,
 *	"Audit trail"). The counter written
 *	counts records flushed; write_failed counts records whose write or
 *	flush failed, each failure also a warning.
 *
 *	tg_audit_reopen() reopens the file (SIGHUP, for logrotate);
 *	tg_audit_close() writes the records of the attempts still open and
 *	stops the syncer. Both wait until every record written to the old
 *	file is flushed before they close it: nothing is lost on a reopen
 *	or a clean stop. They, and every other function, are called from
 *	one thread, the agent's loop.
 *
 *	Without a path, nothing is assembled.
 */
#ifndef TG_AUDIT_H
#define TG_AUDIT_H

#include <pthread.h>
#include <stddef.h>
#include <linux/types.h>

#include "tlsguard.h"
#include "tg_policy.h"
#include "tg_resp.h"

#define TG_AUDIT_SCHEMA	2	/* schema_version: 2 has "remote" */
#define TG_AUDIT_FLOWS	4096	/* flows followed at once */
#define TG_AUDIT_RCPTS	64	/* recipients kept per message */
#define TG_AUDIT_PEND	128	/* commands awaiting their replies */
#define TG_AUDIT_ADDR	(TG_ADDR_MAX + 1)
#define TG_AUDIT_REPLY	256

struct tg_audit_rcpt {
	char addr[TG_AUDIT_ADDR];
	char reply[TG_AUDIT_REPLY];
};

struct tg_audit_flow {
	__u64 cookie;		/* 0: unused */
	char local[64], remote[64];
	char remote_ip[48];
	__u16 remote_port;
	char host[128];
	int greeted;		/* the greeting was read */
	__u16 tls_version, tls_cipher;
	unsigned char pend[TG_AUDIT_PEND];	/* command kinds */
	unsigned short pend_rcpt[TG_AUDIT_PEND];
	unsigned pend_head, pend_n;
	/* the message attempt in progress */
	int txn;
	int held;		/* tlsguard answered the MAIL */
	int weak;		/* the session was cut: TLS below 1.2 */
	int ended;		/* a verdict is known; written at the end */
	char verdict[24];
	char sender[TG_AUDIT_ADDR];
	char mail_reply[TG_AUDIT_REPLY];
	char data_reply[TG_AUDIT_REPLY];
	unsigned nrcpt;
	/*
	 * Allocated as recipients come (at most TG_AUDIT_RCPTS), freed with
	 * the entry: the table's entries stay small, so that a new flow's
	 * costs no more than a short memset, and the table's memory stays
	 * near what the flows in it use.
	 */
	unsigned rcpt_cap;
	struct tg_audit_rcpt *rcpt;
};

/* Between the loop and the syncer, under lock (see tg_audit.c). */
struct tg_audit_sync {
	pthread_mutex_t lock;
	pthread_cond_t wake;	/* to the syncer: pending, or stop */
	pthread_cond_t done;	/* from the syncer: a flush ended */
	pthread_t thread;
	int running;		/* the syncer was started */
	int busy;		/* a flush is under way */
	int stop;
	unsigned long long pending;	/* written, no flush started yet */
};

struct tg_audit {
	char path[4096];
	int fd;			/* -1: no audit trail; set by the loop only */
	int flows_fd;		/* tg_flows, for the addresses */
	const struct tg_policy *const *policy;
	struct tg_audit_flow *flows;
	/* Both counters change on either thread: read with __atomic_load_n. */
	unsigned long long written;	/* records written and flushed */
	unsigned long long write_failed;	/* lost: write or flush error */
	unsigned long long dropped;	/* flows not followed: table full */
	struct tg_audit_sync sync;
};

int tg_audit_open(struct tg_audit *au, const char *path, int flows_fd,
		  const struct tg_policy *const *pol);
int tg_audit_reopen(struct tg_audit *au);
void tg_audit_line(struct tg_audit *au, __u64 cookie, __u32 flags,
		   const char *text, size_t len);
void tg_audit_held(struct tg_audit *au, __u64 cookie, const struct tg_resp *r);
void tg_audit_line_event(struct tg_audit *au, const struct tg_line_event *le);
void tg_audit_tls(struct tg_audit *au, const struct tg_event *e);
void tg_audit_killed(struct tg_audit *au, const struct tg_event *e);
void tg_audit_closed(struct tg_audit *au, __u64 cookie);
void tg_audit_close(struct tg_audit *au);

#endif /* TG_AUDIT_H */
