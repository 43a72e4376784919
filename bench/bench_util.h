/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	bench_util - small helpers shared by tlsguard's benchmark programs
 * SYNOPSIS
 *	#include "bench_util.h"
 *
 *	void	bu_init(const char *progname);
 *	void	bu_fatal(const char *fmt, ...);
 *	void	bu_warn(const char *fmt, ...);
 *	__u64	bu_now_ns(void);
 *	unsigned long bu_number(const char *opt, const char *arg,
 *				unsigned long min, unsigned long max);
 *	void	bu_parse_addr(const char *arg, struct sockaddr_in *sin);
 *	void	bu_raise_nofile(unsigned long want);
 *
 *	void	bu_io_init(struct bu_io *io, int fd);
 *	int	bu_io_write(struct bu_io *io, const void *buf, size_t len);
 *	int	bu_io_reply(struct bu_io *io, int *code);
 *	int	bu_io_reply_kw(struct bu_io *io, int *code, const char *kw,
 *			       int *found);
 *	int	bu_io_line(struct bu_io *io, char **line, size_t *len);
 * DESCRIPTION
 *	The benchmark programs (tls_source, tls_sink, held_latency,
 *	flow_hold) are test equipment, not part of tlsguard: they are short,
 *	fail loudly and never retry. Diagnostics have one form,
 *	"PROG: fatal: TEXT" (exit 1) or "PROG: warning: TEXT".
 *
 *	bu_parse_addr() takes "a.b.c.d:port" (IPv4 loopback only: the
 *	benchmark never talks to anything else).
 *
 *	bu_raise_nofile() raises RLIMIT_NOFILE to at least want, the hard
 *	limit too if need be (root with CAP_SYS_RESOURCE may, up to
 *	nr_open); without that capability, the soft limit goes up to the
 *	hard one, and whoever needs more finds out at accept() or socket().
 *
 *	struct bu_io is a buffered SMTP line reader and writer over either a
 *	plain socket or, once io->ssl is set, a TLS connection. bu_io_line()
 *	returns the next line (CRLF or LF stripped, NUL-terminated) and 0,
 *	or -1 on EOF or error. bu_io_reply() reads one whole reply,
 *	continuation lines included, and returns 0 with the code, or -1;
 *	bu_io_reply_kw() also sets *found when a line's text (after the
 *	code) starts with kw, ignoring case (an EHLO keyword).
 *	Lines longer than BU_IO_BUF are an error: no peer of ours sends them.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BU_IO_BUF 16384

static const char *bu_prog = "bench";

static inline void bu_init(const char *progname)
{
	const char *slash = strrchr(progname, '/');

	bu_prog = slash ? slash + 1 : progname;
}

/* "PROG: KIND: message" on stderr. */
static inline void __attribute__((format(printf, 2, 0)))
bu_vsay(const char *kind, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: %s: ", bu_prog, kind);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static inline void __attribute__((format(printf, 1, 2), noreturn))
bu_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bu_vsay("fatal", fmt, ap);
	va_end(ap);
	exit(1);
}

static inline void __attribute__((format(printf, 1, 2)))
bu_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bu_vsay("warning", fmt, ap);
	va_end(ap);
}

static inline __u64 bu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static inline unsigned long bu_number(const char *opt, const char *arg,
				      unsigned long min, unsigned long max)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *arg == 0 || *end || *arg == '-' || v < min || v > max)
		bu_fatal("%s: bad value \"%s\": expected %lu to %lu", opt, arg,
			 min, max);
	return v;
}

static inline void bu_parse_addr(const char *arg, struct sockaddr_in *sin)
{
	char host[64];
	const char *colon = strrchr(arg, ':');
	size_t n;

	if (!colon || (n = (size_t)(colon - arg)) == 0 || n >= sizeof(host))
		bu_fatal("bad address \"%s\": expected a.b.c.d:port", arg);
	memcpy(host, arg, n);
	host[n] = 0;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((__u16)bu_number("port", colon + 1, 1, 65535));
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		bu_fatal("bad address \"%s\": expected a.b.c.d:port", arg);
	if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
		bu_fatal("%s: not a loopback address (127.0.0.0/8)", arg);
}

/*
 * A TCP socket (close-on-exec, and FLAGS such as SOCK_NONBLOCK) bound to
 * SIN, listening; a failure is fatal and names ADDR, the address as given.
 */
static inline int bu_listen(const struct sockaddr_in *sin, int flags,
			    const char *addr)
{
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);

	if (fd < 0)
		bu_fatal("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sin, sizeof(*sin)) < 0)
		bu_fatal("bind %s: %s", addr, strerror(errno));
	if (listen(fd, 4096) < 0)
		bu_fatal("listen %s: %s", addr, strerror(errno));
	return fd;
}

static inline void bu_raise_nofile(unsigned long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		bu_fatal("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur >= want)
		return;
	if (rl.rlim_max < want) {
		struct rlimit up = { want, want };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return;
		if (errno != EPERM)
			bu_fatal("cannot raise the open file limit to %lu: %s",
				 want, strerror(errno));
		/* No CAP_SYS_RESOURCE (a container): the hard limit is all. */
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		bu_fatal("setrlimit: %s", strerror(errno));
}

struct bu_io {
	int fd;
	SSL *ssl;		/* NULL: plaintext */
	size_t off, len;	/* unread input: in[off..len) */
	char in[BU_IO_BUF + 1];
};

static inline void bu_io_init(struct bu_io *io, int fd)
{
	io->fd = fd;
	io->ssl = NULL;
	io->off = io->len = 0;
}

static inline int bu_io_write(struct bu_io *io, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		if (io->ssl) {
			int w = SSL_write(io->ssl, p,
					  len > 1 << 30 ? 1 << 30 : (int)len);

			if (w <= 0)
				return -1;
			n = w;
		} else {
			n = write(io->fd, p, len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read more input after what is buffered; 0, or -1 on EOF or error. */
static inline int bu_io_fill(struct bu_io *io)
{
	ssize_t n;

	if (io->off > 0) {
		memmove(io->in, io->in + io->off, io->len - io->off);
		io->len -= io->off;
		io->off = 0;
	}
	if (io->len >= BU_IO_BUF)
		return -1;
	for (;;) {
		if (io->ssl) {
			int r = SSL_read(io->ssl, io->in + io->len,
					 (int)(BU_IO_BUF - io->len));

			if (r <= 0)
				return -1;
			n = r;
		} else {
			n = read(io->fd, io->in + io->len, BU_IO_BUF - io->len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		io->len += (size_t)n;
		return 0;
	}
}

static inline int bu_io_line(struct bu_io *io, char **line, size_t *len)
{
	char *nl;

	for (;;) {
		nl = memchr(io->in + io->off, '\n', io->len - io->off);
		if (nl)
			break;
		if (bu_io_fill(io) < 0)
			return -1;
	}
	*line = io->in + io->off;
	*len = (size_t)(nl - *line);
	io->off += *len + 1;
	if (*len > 0 && nl[-1] == '\r')
		(*len)--;
	(*line)[*len] = 0;
	return 0;
}

static inline int bu_io_reply_kw(struct bu_io *io, int *code, const char *kw,
				 int *found)
{
	char *line;
	size_t len;

	if (found)
		*found = 0;
	for (;;) {
		if (bu_io_line(io, &line, &len) < 0)
			return -1;
		if (len < 3 || line[0] < '1' || line[0] > '5')
			return -1;
		if (kw && len > 4 && strncasecmp(line + 4, kw, strlen(kw)) == 0)
			*found = 1;
		if (len == 3 || line[3] == ' ') {
			*code = atoi(line);
			return 0;
		}
		if (line[3] != '-')
			return -1;
	}
}

static inline int bu_io_reply(struct bu_io *io, int *code)
{
	return bu_io_reply_kw(io, code, NULL, NULL);
}

#endif /* BENCH_UTIL_H */
