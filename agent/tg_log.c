// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_log - diagnostics (see tg_log.h)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "tg_log.h"

static const char *tg_progname = "tlsguardd";
static int tg_verbose;

void tg_log_init(const char *progname, int verbose)
{
	tg_progname = progname;
	tg_verbose = verbose;
}

int tg_log_verbose(void)
{
	return tg_verbose;
}

static void tg_vlog(const char *level, const char *fmt, va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "%s: %s%s\n", tg_progname, level, line);
}

void msg_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_vlog("", fmt, ap);
	va_end(ap);
}

void msg_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_vlog("warning: ", fmt, ap);
	va_end(ap);
}

void msg_debug(const char *fmt, ...)
{
	va_list ap;

	if (!tg_verbose)
		return;
	va_start(ap, fmt);
	tg_vlog("debug: ", fmt, ap);
	va_end(ap);
}

void msg_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_vlog("fatal: ", fmt, ap);
	va_end(ap);
	exit(1);
}
