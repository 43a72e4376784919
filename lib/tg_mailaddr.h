/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_mailaddr - the addresses of MAIL and RCPT lines, for user space
 * SYNOPSIS
 *	#include "tg_mailaddr.h"
 *
 *	int	tg_line_addr(const char *line, size_t len, __u64 *verb,
 *			     char *addr, size_t addrlen);
 *	int	tg_addr_domain(const char *addr, char *out, size_t outlen);
 *	int	tg_delims_set(const char *set);
 * DESCRIPTION
 *	What tlsguardd's replies and audit trail read of a command line,
 *	read by the kernel's own parser (tg_path() of include/tg_smtp.h),
 *	so that user space and the kernel never disagree on a line.
 *
 *	tg_line_addr() reads the len bytes at line (up to an LF, which may
 *	be there or not) and sets *verb to its verb (TG_VERB_*). For a MAIL
 *	or RCPT line whose path the parser reads, addr receives the address
 *	as the client wrote it, without angle brackets and source route,
 *	cut to addrlen - 1 bytes; otherwise addr is empty. It returns
 *	tg_path()'s event: TG_CMD_MAIL when there is an address,
 *	TG_CMD_MAIL_NULL for "<>", TG_CMD_MAIL_BAD for a path the parser
 *	cannot vouch for, TG_CMD_LINE for any other command.
 *
 *	tg_addr_domain() writes the domain of an address (after its last
 *	'@') in ASCII lower case; it returns 0 when there is none.
 *
 *	tg_delims_set() makes the bytes of set (Postfix's
 *	recipient_delimiter, e.g. "+-") the sub-address delimiters of this
 *	process's parsers (tg_delims, include/tg_smtp.h); "" means none. It
 *	returns -1, changing nothing, for a byte that cannot be one (not
 *	printable ASCII, or one of @ " < > \\).
 */
#ifndef TG_MAILADDR_H
#define TG_MAILADDR_H

#include <stddef.h>
#include <linux/types.h>

int tg_line_addr(const char *line, size_t len, __u64 *verb, char *addr,
		 size_t addrlen);
int tg_addr_domain(const char *addr, char *out, size_t outlen);
int tg_delims_set(const char *set);

#endif /* TG_MAILADDR_H */
