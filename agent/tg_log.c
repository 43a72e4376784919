// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_log - diagnostics (see tg_log.h)
 * DESCRIPTION
 *	The syslog client is written here rather than taken from syslog(3):
 *	glibc's sends to a fixed /dev/log and may block in send(), and the
 *	agent must neither wait on a syslog daemon nor be untestable
 *	without one.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "tg_log.h"

static const char *tg_progname = "tlsguardd";
static int tg_verbose;
static int tg_stderr = 1;		/* lines other than fatal to stderr */
static int tg_syslog_fd = -1;
static int tg_facility = LOG_MAIL;
static char tg_syslog_name[64];
static struct sockaddr_un tg_syslog_addr;
static unsigned long tg_dropped;

void tg_log_init(const char *progname, int verbose)
{
	tg_progname = progname;
	tg_verbose = verbose;
}

int tg_log_verbose(void)
{
	return tg_verbose;
}

unsigned long tg_log_dropped(void)
{
	return __atomic_load_n(&tg_dropped, __ATOMIC_RELAXED);
}

int tg_log_syslog(const char *name, int facility, const char *socket_path)
{
	if (strlen(socket_path) >= sizeof(tg_syslog_addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	tg_syslog_addr.sun_family = AF_UNIX;
	snprintf(tg_syslog_addr.sun_path, sizeof(tg_syslog_addr.sun_path), "%s",
		 socket_path);
	snprintf(tg_syslog_name, sizeof(tg_syslog_name), "%s", name);
	tg_facility = facility;
	tg_syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			      0);
	if (tg_syslog_fd < 0)
		return -1;
	tg_stderr = isatty(STDERR_FILENO) || tg_verbose;
	return 0;
}

/* "<PRI>Mmm dd hh:mm:ss name[pid]: text", as syslog daemons read it. */
static void tg_syslog_send(int priority, const char *level, const char *text)
{
	char buf[2300], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
	n = snprintf(buf, sizeof(buf), "<%d>%s %s[%ld]: %s%s",
		     tg_facility | priority, stamp, tg_syslog_name,
		     (long)getpid(), level, text);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (sendto(tg_syslog_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL,
		   (struct sockaddr *)&tg_syslog_addr,
		   sizeof(tg_syslog_addr)) < 0)
		__atomic_fetch_add(&tg_dropped, 1, __ATOMIC_RELAXED);
}

static void tg_vlog(int priority, const char *level, const char *fmt,
		    va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (tg_syslog_fd >= 0)
		tg_syslog_send(priority, level, line);
	if (tg_syslog_fd < 0 || tg_stderr || priority == LOG_CRIT)
		fprintf(stderr, "%s: %s%s\n", tg_progname, level, line);
}

void tg_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	if (priority == LOG_DEBUG && !tg_verbose)
		return;
	va_start(ap, fmt);
	tg_vlog(priority, priority == LOG_WARNING ? "warning: " :
			  priority == LOG_DEBUG ? "debug: " : "", fmt, ap);
	va_end(ap);
}

void msg_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tg_vlog(LOG_CRIT, "fatal: ", fmt, ap);
	va_end(ap);
	exit(1);
}
