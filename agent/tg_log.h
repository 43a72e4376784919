/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_log - one vocabulary for the agent's diagnostics
 * SYNOPSIS
 *	#include "tg_log.h"
 *
 *	void	tg_log_init(const char *progname, int verbose);
 *	void	msg_info(const char *fmt, ...);
 *	void	msg_warn(const char *fmt, ...);
 *	void	msg_fatal(const char *fmt, ...);
 *	void	msg_debug(const char *fmt, ...);
 * DESCRIPTION
 *	Lines go to stderr as "progname: text", "progname: warning: text",
 *	"progname: fatal: text", as Postfix's programs write them.
 *	msg_fatal() exits with status 1. msg_debug() prints only when
 *	verbose was set.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

void tg_log_init(const char *progname, int verbose);
int tg_log_verbose(void);
void msg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

#endif /* TG_LOG_H */
