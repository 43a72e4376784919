/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_heldlog - a held message's log lines, joinable with the MTA's
 * SYNOPSIS
 *	#include "tg_heldlog.h"
 *
 *	void	tg_heldlog_mail(const char *name, const char *sender,
 *				const struct tg_resp *r);
 *	void	tg_heldlog_rcpt(struct tg_heldlog *h, const char *cgroup,
 *				const struct tg_flow *f, const char *sender,
 *				const char *rcpt, const struct tg_resp *r);
 * DESCRIPTION
 *	tg_heldlog_mail() logs the held MAIL, as tlsguardd always has:
 *
 *	    NAME: from=<SENDER>: held: 550 5.7.10 TEXT
 *
 *	tg_heldlog_rcpt() logs one line per recipient of a held message
 *	(the RCPT commands the MTA pipelined behind the held MAIL, or the
 *	RCPT a 450/550 answered when MAIL was accepted for now), with the
 *	fields of Postfix's own delivery line, so that the two join on the
 *	recipient, the relay and the MTA process:
 *
 *	    NAME: to=<RCPT>, relay=NAME, mta=smtp[PID], from=<SENDER>,
 *	    dsn=5.7.10, status=held (550 5.7.10 TEXT)
 *
 *	(one line). NAME is the host as Postfix prints it for a host it
 *	reached by address, "addr[addr]:port"; status is "deferred" for the
 *	450 of the MX check, else "held". mta is the process that owns the
 *	flow's socket, named as in /proc/PID/comm, found once per flow (h
 *	keeps it) among the processes of the guarded cgroup and below: the
 *	socket's inode comes from sock_diag (an exact lookup by addresses,
 *	ports and cookie), then the process with a descriptor on it;
 *	"mta=unknown" when it cannot be found (the process is gone, or its
 *	/proc/PID/fd is not readable: tlsguardd keeps no CAP_DAC_READ_SEARCH,
 *	and reads it because an MTA process that changed its credentials,
 *	as Postfix's, Exim's and OpenSMTPD's do, has it owned by root).
 *	Without MAIL pipelining, Postfix sends no RCPT after a refused
 *	MAIL: then only the MAIL line is logged.
 *
 *	tg_heldlog_reset() forgets the process (the slot serves another
 *	flow).
 */
#ifndef TG_HELDLOG_H
#define TG_HELDLOG_H

#include <sys/types.h>
#include <linux/types.h>

#include "tlsguard.h"
#include "tg_resp.h"

struct tg_heldlog {
	__u64 cookie;		/* flow whose process was looked up, 0: none */
	pid_t pid;		/* 0: not found */
	char comm[17];
};

void tg_heldlog_mail(const char *name, const char *sender,
		     const struct tg_resp *r);
void tg_heldlog_rcpt(struct tg_heldlog *h, const char *cgroup,
		     const struct tg_flow *f, const char *sender,
		     const char *rcpt, const struct tg_resp *r);
void tg_heldlog_reset(struct tg_heldlog *h);

#endif /* TG_HELDLOG_H */
