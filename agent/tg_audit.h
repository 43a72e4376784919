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
 *	error. Records are appended to path, one line each, and each is flushed to
 *	disk (fdatasync) before the next one: a record that was written
 *	survives a crash. tg_audit_reopen() reopens the file (SIGHUP, for
 *	logrotate).
 *
 *	Without a path, nothing is assembled.
 */
#ifndef TG_AUDIT_H
#define TG_AUDIT_H

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
	struct tg_audit_rcpt rcpt[TG_AUDIT_RCPTS];
};

struct tg_audit {
	char path[4096];
	int fd;			/* -1: no audit trail */
	int flows_fd;		/* tg_flows, for the addresses */
	const struct tg_policy *const *policy;
	struct tg_audit_flow *flows;
	unsigned long long written;
	unsigned long long dropped;	/* flows not followed: table full */
	unsigned long long write_failed;	/* records lost: write error */
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
