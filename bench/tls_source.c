// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tls_source - an SMTP load generator that sends over STARTTLS
 * SYNOPSIS
 *	tls_source [-s SESSIONS] [-m MESSAGES] [-n PER_SESSION] [-l LENGTH]
 *		[-f FROM] [-t TO] ADDR:PORT
 * DESCRIPTION
 *	The TLS counterpart of Postfix's smtp-source(1). SESSIONS processes
 *	(default 1) run in parallel and send MESSAGES messages in all
 *	(default 1000) to ADDR:PORT (IPv4 loopback). Each session connects,
 *	reads the greeting, sends EHLO, requires STARTTLS in the reply, sends
 *	STARTTLS, does a TLS 1.3 handshake (nothing older is accepted; the
 *	server certificate is not verified, as at Postfix's "may" level),
 *	sends EHLO again, then up to PER_SESSION messages (default 10) and
 *	QUIT. A message is MAIL FROM, RCPT TO and DATA pipelined in one
 *	write, as Postfix writes them; after the 354, a body of LENGTH bytes
 *	of payload (default 4096) after a few header lines, and the dot.
 *
 *	FROM and TO default to bench@source.bench and sink@sink.bench.
 *
 *	Like Postfix's SMTP client, it does not set TCP_NODELAY.
 * DIAGNOSTICS
 *	Exit status 0 when every message was accepted (250 after the dot);
 *	otherwise 1, with one line "tls_source: fatal: ..." from the session
 *	that failed. On success it prints one line:
 *	"messages=M sessions=S elapsed_s=E".
 */
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <openssl/err.h>

#include "bench_util.h"

struct src_opts {
	struct sockaddr_in addr;
	unsigned long sessions, messages, per_session, length;
	const char *from, *to;
	char *envelope;		/* MAIL, RCPT, DATA */
	char *body;		/* headers, payload, final dot */
	size_t envelope_len, body_len;
};

static void src_expect(struct bu_io *io, int want, const char *what)
{
	int code;

	if (bu_io_reply(io, &code) < 0)
		bu_fatal("%s: connection lost", what);
	if (code != want)
		bu_fatal("%s: got %d, expected %d", what, code, want);
}

static void src_build(struct src_opts *o)
{
	static const char line[] =
		"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		"0123456789abcd";	/* 76 characters, CRLF appended */
	size_t cap = o->length + o->length / 76 * 2 + 512, n = 0, left;
	int w;

	o->envelope = malloc(1024);
	o->body = malloc(cap);
	if (!o->envelope || !o->body)
		bu_fatal("out of memory");
	w = snprintf(o->envelope, 1024,
		     "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", o->from,
		     o->to);
	if (w < 0 || w >= 1024)
		bu_fatal("-f or -t too long");
	o->envelope_len = (size_t)w;
	n = (size_t)snprintf(o->body, cap,
			     "From: <%s>\r\nTo: <%s>\r\n"
			     "Subject: tls_source benchmark\r\n\r\n",
			     o->from, o->to);
	for (left = o->length; left > 0;) {
		size_t k = left < 76 ? left : 76;

		memcpy(o->body + n, line, k);
		n += k;
		memcpy(o->body + n, "\r\n", 2);
		n += 2;
		left -= k;
	}
	memcpy(o->body + n, ".\r\n", 3);
	o->body_len = n + 3;
}

static int src_connect(const struct src_opts *o)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		bu_fatal("socket: %s", strerror(errno));
	if (connect(fd, (const struct sockaddr *)&o->addr, sizeof(o->addr)) < 0)
		bu_fatal("connect: %s", strerror(errno));
	return fd;
}

static void src_session(const struct src_opts *o, SSL_CTX *ctx,
			unsigned long count)
{
	static const char ehlo[] = "EHLO tls-source.bench\r\n";
	struct bu_io *io = malloc(sizeof(*io));
	unsigned long i;
	int code, tls;

	if (!io)
		bu_fatal("out of memory");
	bu_io_init(io, src_connect(o));
	src_expect(io, 220, "greeting");
	if (bu_io_write(io, ehlo, sizeof(ehlo) - 1) < 0 ||
	    bu_io_reply_kw(io, &code, "STARTTLS", &tls) < 0 || code != 250)
		bu_fatal("EHLO refused");
	if (!tls)
		bu_fatal("the server does not offer STARTTLS");
	if (bu_io_write(io, "STARTTLS\r\n", 10) < 0)
		bu_fatal("STARTTLS: connection lost");
	src_expect(io, 220, "STARTTLS");
	io->ssl = SSL_new(ctx);
	if (!io->ssl || SSL_set_fd(io->ssl, io->fd) != 1 ||
	    SSL_connect(io->ssl) != 1)
		bu_fatal("TLS handshake failed: %s",
			 ERR_reason_error_string(ERR_get_error()));
	if (bu_io_write(io, ehlo, sizeof(ehlo) - 1) < 0)
		bu_fatal("EHLO after STARTTLS: connection lost");
	src_expect(io, 250, "EHLO after STARTTLS");
	for (i = 0; i < count; i++) {
		if (bu_io_write(io, o->envelope, o->envelope_len) < 0)
			bu_fatal("MAIL: connection lost");
		src_expect(io, 250, "MAIL FROM");
		src_expect(io, 250, "RCPT TO");
		src_expect(io, 354, "DATA");
		if (bu_io_write(io, o->body, o->body_len) < 0)
			bu_fatal("message body: connection lost");
		src_expect(io, 250, "end of data");
	}
	if (bu_io_write(io, "QUIT\r\n", 6) < 0)
		bu_fatal("QUIT: connection lost");
	src_expect(io, 221, "QUIT");
	SSL_shutdown(io->ssl);
	SSL_free(io->ssl);
	close(io->fd);
	free(io);
}

static void src_worker(const struct src_opts *o, unsigned long messages)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
		bu_fatal("cannot set up TLS 1.3");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	while (messages > 0) {
		unsigned long n = messages < o->per_session ? messages :
							       o->per_session;

		src_session(o, ctx, n);
		messages -= n;
	}
	SSL_CTX_free(ctx);
}

int main(int argc, char **argv)
{
	struct src_opts o = {
		.sessions = 1, .messages = 1000, .per_session = 10,
		.length = 4096, .from = "bench@source.bench",
		.to = "sink@sink.bench",
	};
	unsigned long i, failed = 0;
	__u64 t0;
	pid_t pid;
	int c, status;

	bu_init(argv[0]);
	while ((c = getopt(argc, argv, "s:m:n:l:f:t:")) != -1) {
		switch (c) {
		case 's':
			o.sessions = bu_number("-s", optarg, 1, 10000);
			break;
		case 'm':
			o.messages = bu_number("-m", optarg, 1, 100000000);
			break;
		case 'n':
			o.per_session = bu_number("-n", optarg, 1, 1000000);
			break;
		case 'l':
			o.length = bu_number("-l", optarg, 0, 100000000);
			break;
		case 'f':
			o.from = optarg;
			break;
		case 't':
			o.to = optarg;
			break;
		default:
			bu_fatal("usage: tls_source [-s SESSIONS] [-m MESSAGES] "
				 "[-n PER_SESSION] [-l LENGTH] [-f FROM] "
				 "[-t TO] ADDR:PORT");
		}
	}
	if (optind != argc - 1)
		bu_fatal("usage: tls_source [options] ADDR:PORT");
	bu_parse_addr(argv[optind], &o.addr);
	if (o.sessions > o.messages)
		o.sessions = o.messages;
	src_build(&o);
	signal(SIGPIPE, SIG_IGN);

	t0 = bu_now_ns();
	for (i = 0; i < o.sessions; i++) {
		unsigned long share = o.messages / o.sessions +
				      (i < o.messages % o.sessions);

		pid = fork();
		if (pid < 0)
			bu_fatal("fork: %s", strerror(errno));
		if (pid == 0) {
			/* Die with the driver: no stray load generators. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			src_worker(&o, share);
			_exit(0);
		}
	}
	while ((pid = wait(&status)) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	if (failed)
		bu_fatal("%lu of %lu sessions failed", failed, o.sessions);
	printf("messages=%lu sessions=%lu elapsed_s=%.6f\n", o.messages,
	       o.sessions, (double)(bu_now_ns() - t0) / 1e9);
	return 0;
}
