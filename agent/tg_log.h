/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_log - one vocabulary for the agent's diagnostics
 * SYNOPSIS
 *	#include "tg_log.h"
 *
 *	void	tg_log_init(const char *progname, int verbose);
 *	int	tg_log_syslog(const char *name, int facility,
 *			      const char *socket_path);
 *	void	msg_info(const char *fmt, ...);
 *	void	msg_warn(const char *fmt, ...);
 *	void	msg_fatal(const char *fmt, ...);
 *	void	msg_debug(const char *fmt, ...);
 * DESCRIPTION
 *	Lines go to stderr as "progname: text", "progname: warning: text",
 *	"progname: fatal: text", as Postfix's programs write them.
 *	msg_fatal() exits with status 1. msg_debug() prints only when
 *	verbose was set.
 *
 *	tg_log_syslog() sends every line from then on to syslog as well, in
 *	Postfix's form "name[pid]: text" with the facility given and the
 *	priority of the function (info, warning, crit for fatal, debug),
 *	over the datagram socket socket_path (normally /dev/log). stderr
 *	then gets only fatal errors, unless it is a terminal or verbose is
 *	set, as with Postfix's daemons. A line is never waited for: when
 *	the syslog daemon is slow or gone it is dropped (and counted), so
 *	that logging cannot stall the injection path. It returns -1 when
 *	the socket cannot be created; a syslog daemon that is not running
 *	yet is not an error.
 *
 *	tg_log_dropped() is the number of lines syslog did not take.
 *
 *	msg_info(), msg_warn() and msg_debug() may be called from any
 *	thread (the audit trail's syncer warns of a failed flush): a line
 *	is formatted on the caller's stack and sent with one call.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <syslog.h>

void tg_log_init(const char *progname, int verbose);
int tg_log_syslog(const char *name, int facility, const char *socket_path);
unsigned long tg_log_dropped(void);
int tg_log_verbose(void);
void tg_msg(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void msg_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/* The priority is the function's (syslog's LOG_*), whence the prefix. */
#define msg_info(...)	tg_msg(LOG_INFO, __VA_ARGS__)
#define msg_warn(...)	tg_msg(LOG_WARNING, __VA_ARGS__)
#define msg_debug(...)	tg_msg(LOG_DEBUG, __VA_ARGS__)

#endif /* TG_LOG_H */
