// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tls_sink - an SMTP sink that offers STARTTLS, for benchmarks
 * SYNOPSIS
 *	tls_sink -c CERT -k KEY [-w THREADS] ADDR:PORT
 * DESCRIPTION
 *	Listens on ADDR:PORT (IPv4 loopback) and plays the receiving MX of
 *	a benchmark: it greets with 220, answers EHLO with PIPELINING and
 *	STARTTLS, answers STARTTLS with 220 and then does the TLS handshake
 *	(TLS 1.2 or 1.3; the certificate CERT and key KEY are PEM files),
 *	and from then on accepts every transaction: 250 to MAIL, RCPT, RSET
 *	and NOOP, 354 to DATA, 250 after the body's final dot, 221 to QUIT.
 *	The body is read and thrown away.
 *
 *	Replies to pipelined commands are written together, when no more
 *	input is buffered, as Postfix's smtpd does; so a pipelining client
 *	sees one write per group of commands. Accepted sockets get
 *	TCP_NODELAY (see sink_worker()).
 *
 *	THREADS (default 128) threads each accept and serve one connection
 *	at a time; more concurrent clients than that wait in the backlog.
 *	It runs until killed. smtp-sink(1) is the plaintext counterpart;
 *	it has no STARTTLS, hence this program.
 * DIAGNOSTICS
 *	Setup problems end the program with "tls_sink: fatal: ..." and exit
 *	status 1. A client that breaks the protocol is disconnected silently.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <openssl/err.h>

#include "bench_util.h"

#define SINK_NAME "tls-sink.bench"

static SSL_CTX *sink_ctx;
static int sink_fd;

struct sink_conn {
	struct bu_io io;
	size_t out_len;
	char out[4096];
};

/* Queue a reply; written when the client has nothing more buffered. */
static int sink_reply(struct sink_conn *c, const char *text)
{
	size_t n = strlen(text);

	if (c->out_len + n > sizeof(c->out)) {
		if (bu_io_write(&c->io, c->out, c->out_len) < 0)
			return -1;
		c->out_len = 0;
	}
	memcpy(c->out + c->out_len, text, n);
	c->out_len += n;
	return 0;
}

static int sink_flush(struct sink_conn *c)
{
	if (c->out_len == 0)
		return 0;
	if (bu_io_write(&c->io, c->out, c->out_len) < 0)
		return -1;
	c->out_len = 0;
	return 0;
}

/* The next line; pending replies are flushed before the reader blocks. */
static int sink_line(struct sink_conn *c, char **line, size_t *len)
{
	if (memchr(c->io.in + c->io.off, '\n', c->io.len - c->io.off) == NULL &&
	    (!c->io.ssl || SSL_pending(c->io.ssl) == 0) && sink_flush(c) < 0)
		return -1;
	return bu_io_line(&c->io, line, len);
}

static int sink_verb(const char *line, const char *verb)
{
	size_t n = strlen(verb);

	return strncasecmp(line, verb, n) == 0 &&
	       (line[n] == 0 || line[n] == ' ');
}

static int sink_body(struct sink_conn *c)
{
	char *line;
	size_t len;

	for (;;) {
		if (bu_io_line(&c->io, &line, &len) < 0)
			return -1;
		if (len == 1 && line[0] == '.')
			return sink_reply(c, "250 2.0.0 Ok: queued\r\n");
	}
}

static void sink_serve(int fd)
{
	struct sink_conn *c = malloc(sizeof(*c));
	char *line;
	size_t len;

	if (!c)
		return;
	bu_io_init(&c->io, fd);
	c->out_len = 0;
	if (sink_reply(c, "220 " SINK_NAME " ESMTP\r\n") < 0)
		goto done;
	while (sink_line(c, &line, &len) == 0) {
		int rc;

		if (sink_verb(line, "EHLO")) {
			rc = sink_reply(c, c->io.ssl ?
				"250-" SINK_NAME "\r\n250-PIPELINING\r\n"
				"250 8BITMIME\r\n" :
				"250-" SINK_NAME "\r\n250-PIPELINING\r\n"
				"250-8BITMIME\r\n250 STARTTLS\r\n");
		} else if (sink_verb(line, "HELO") || sink_verb(line, "MAIL") ||
			   sink_verb(line, "RCPT") || sink_verb(line, "RSET") ||
			   sink_verb(line, "NOOP")) {
			rc = sink_reply(c, "250 2.0.0 Ok\r\n");
		} else if (sink_verb(line, "DATA")) {
			rc = sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
			if (rc == 0)
				rc = sink_flush(c);
			if (rc == 0)
				rc = sink_body(c);
		} else if (sink_verb(line, "STARTTLS") && !c->io.ssl) {
			if (sink_reply(c, "220 2.0.0 Ready to start TLS\r\n") < 0 ||
			    sink_flush(c) < 0)
				break;
			/* RFC 3207: nothing may be pipelined after STARTTLS. */
			c->io.off = c->io.len = 0;
			c->io.ssl = SSL_new(sink_ctx);
			if (!c->io.ssl || SSL_set_fd(c->io.ssl, fd) != 1 ||
			    SSL_accept(c->io.ssl) != 1)
				break;
			rc = 0;
		} else if (sink_verb(line, "QUIT")) {
			if (sink_reply(c, "221 2.0.0 Bye\r\n") == 0)
				sink_flush(c);
			if (c->io.ssl)
				SSL_shutdown(c->io.ssl);
			break;
		} else {
			rc = sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
		}
		if (rc < 0)
			break;
	}
done:
	if (c->io.ssl)
		SSL_free(c->io.ssl);
	free(c);
	ERR_clear_error();
}

static void *sink_worker(void *arg)
{
	int fd, one = 1;

	(void)arg;
	for (;;) {
		fd = accept4(sink_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EMFILE || errno == ENFILE)
				continue;
			bu_fatal("accept: %s", strerror(errno));
		}
		/*
		 * Replies go out in groups already (sink_flush). Without
		 * NODELAY, the reply to the EHLO after the handshake waits
		 * for the ACK of TLS 1.3's session tickets, which the client
		 * delays 40 ms: a stall per session that is not tlsguard's.
		 */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		sink_serve(fd);
		close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *cert = NULL, *key = NULL;
	unsigned long nthreads = 128, i;
	struct sockaddr_in sin;
	pthread_t tid;
	int c;

	bu_init(argv[0]);
	while ((c = getopt(argc, argv, "c:k:w:")) != -1) {
		switch (c) {
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'w':
			nthreads = bu_number("-w", optarg, 1, 4096);
			break;
		default:
			bu_fatal("usage: tls_sink -c CERT -k KEY [-w THREADS] "
				 "ADDR:PORT");
		}
	}
	if (!cert || !key || optind != argc - 1)
		bu_fatal("usage: tls_sink -c CERT -k KEY [-w THREADS] ADDR:PORT");
	bu_parse_addr(argv[optind], &sin);
	signal(SIGPIPE, SIG_IGN);
	bu_raise_nofile(nthreads + 64);

	sink_ctx = SSL_CTX_new(TLS_server_method());
	if (!sink_ctx ||
	    !SSL_CTX_set_min_proto_version(sink_ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate_chain_file(sink_ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(sink_ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(sink_ctx) != 1)
		bu_fatal("cannot set up TLS with %s and %s: %s", cert, key,
			 ERR_reason_error_string(ERR_get_error()));

	sink_fd = bu_listen(&sin, 0, argv[optind]);

	for (i = 1; i < nthreads; i++)
		if ((errno = pthread_create(&tid, NULL, sink_worker, NULL)))
			bu_fatal("pthread_create: %s", strerror(errno));
	sink_worker(NULL);
	return 0;
}
