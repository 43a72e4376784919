// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mx - another secure MX host? (see tg_mx.h)
 * DESCRIPTION
 *	The cache is shared between the agent's thread and one worker, under
 *	one mutex. The worker takes entries marked queued, works without the
 *	lock, then stores the answer and signals the eventfd. The DNS work
 *	uses the libc resolver (res_nquery) with its own state, so that the
 *	server asked can be set without touching /etc/resolv.conf.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tg_log.h"
#include "tg_mx.h"

struct tg_addr {
	int family;
	__u8 addr[16];
};

static long long tg_mx_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* A resolver state that asks mx->resolver, if one was given. */
static int tg_res_open(struct tg_mx *mx, struct __res_state *res)
{
	char host[64], *colon;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	memset(res, 0, sizeof(*res));
	if (res_ninit(res) < 0)
		return -1;
	res->retrans = TG_MX_TIMEOUT;
	res->retry = 1;
	if (!mx->resolver[0])
		return 0;
	snprintf(host, sizeof(host), "%s", mx->resolver);
	colon = strchr(host, ':');
	sin.sin_port = htons(53);
	if (colon) {
		*colon = 0;
		sin.sin_port = htons((__u16)atoi(colon + 1));
	}
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -1;
	res->nsaddr_list[0] = sin;
	res->nscount = 1;
	return 0;
}

/* Names of the MX hosts of domain, best preference first. */
static int tg_mx_names(struct __res_state *res, const char *domain,
		       char names[][NS_MAXDNAME], int max)
{
	unsigned char ans[4096];
	int pref[TG_MX_HOSTS];
	ns_msg msg;
	ns_rr rr;
	int len, i, j, n = 0;

	len = res_nquery(res, domain, ns_c_in, ns_t_mx, ans, sizeof(ans));
	if (len < 0 || ns_initparse(ans, len, &msg) < 0)
		return 0;
	for (i = 0; i < ns_msg_count(msg, ns_s_an) && n < max; i++) {
		const unsigned char *rd;
		char name[NS_MAXDNAME];
		int p;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
		    ns_rr_type(rr) != ns_t_mx || ns_rr_rdlen(rr) < 3)
			continue;
		rd = ns_rr_rdata(rr);
		p = rd[0] << 8 | rd[1];
		if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg),
				       rd + 2, name, sizeof(name)) < 0)
			continue;
		/* insertion by preference */
		for (j = n; j > 0 && pref[j - 1] > p; j--) {
			pref[j] = pref[j - 1];
			memcpy(names[j], names[j - 1], NS_MAXDNAME);
		}
		pref[j] = p;
		memcpy(names[j], name, NS_MAXDNAME);
		n++;
	}
	return n;
}

static int tg_mx_addrs(struct __res_state *res, const char *name,
		       struct tg_addr *out, int n, int max)
{
	static const ns_type types[] = { ns_t_a, ns_t_aaaa };
	unsigned char ans[4096];
	unsigned t;
	ns_msg msg;
	ns_rr rr;
	int len, i;

	for (t = 0; t < 2; t++) {
		len = res_nquery(res, name, ns_c_in, types[t], ans, sizeof(ans));
		if (len < 0 || ns_initparse(ans, len, &msg) < 0)
			continue;
		for (i = 0; i < ns_msg_count(msg, ns_s_an) && n < max; i++) {
			if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
			    ns_rr_type(rr) != types[t])
				continue;
			memset(&out[n], 0, sizeof(out[n]));
			if (types[t] == ns_t_a && ns_rr_rdlen(rr) == 4) {
				out[n].family = AF_INET;
				memcpy(out[n].addr, ns_rr_rdata(rr), 4);
				n++;
			} else if (types[t] == ns_t_aaaa &&
				   ns_rr_rdlen(rr) == 16) {
				out[n].family = AF_INET6;
				memcpy(out[n].addr, ns_rr_rdata(rr), 16);
				n++;
			}
		}
	}
	return n;
}

/* Read one SMTP reply within the timeout; its code, or -1. */
static int tg_probe_reply(int fd, char *buf, size_t len)
{
	size_t got = 0;
	char *line;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, TG_MX_TIMEOUT * 1000) <= 0 || got + 1 >= len)
			return -1;
		n = read(fd, buf + got, len - got - 1);
		if (n <= 0)
			return -1;
		got += (size_t)n;
		buf[got] = 0;
		/* the last line: "DDD " at a line start, ending in LF */
		for (line = buf; line && *line;) {
			char *nl = strchr(line, '\n');

			if (!nl)
				break;
			if (nl - line >= 4 && line[3] == ' ')
				return atoi(line);
			line = nl + 1;
		}
	}
}

static int tg_probe_send(int fd, const char *s)
{
	return write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
}

/* Does addr:port complete a STARTTLS handshake at TLS 1.2 or higher? */
static int tg_probe(SSL_CTX *ctx, const struct tg_addr *a, __u16 port)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	struct timeval tv = { .tv_sec = TG_MX_TIMEOUT };
	char buf[8192];
	SSL *ssl = NULL;
	int fd, ok = 0;

	memset(&ss, 0, sizeof(ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, a->addr, 4);
		slen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a->addr, 16);
		slen = sizeof(*sin6);
	}
	fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&ss, slen) < 0 ||
	    tg_probe_reply(fd, buf, sizeof(buf)) != 220 ||
	    tg_probe_send(fd, "EHLO tlsguard.invalid\r\n") < 0 ||
	    tg_probe_reply(fd, buf, sizeof(buf)) != 250 ||
	    !strcasestr(buf, "STARTTLS") ||
	    tg_probe_send(fd, "STARTTLS\r\n") < 0 ||
	    tg_probe_reply(fd, buf, sizeof(buf)) != 220)
		goto out;
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, fd))
		goto out;
	if (SSL_connect(ssl) == 1 && SSL_version(ssl) >= TLS1_2_VERSION) {
		ok = 1;
		SSL_write(ssl, "QUIT\r\n", 6);
		SSL_shutdown(ssl);
	}
out:
	SSL_free(ssl);
	close(fd);
	return ok;
}

static int tg_mx_answer(struct tg_mx *mx, SSL_CTX *ctx,
			const struct tg_mx_entry *q)
{
	char names[TG_MX_HOSTS][NS_MAXDNAME];
	struct tg_addr addrs[TG_MX_HOSTS];
	struct __res_state res;
	int nnames, naddrs = 0, i, held = 0;
	size_t alen = q->family == AF_INET6 ? 16 : 4;

	if (tg_res_open(mx, &res) < 0)
		return TG_MX_NONE;
	nnames = tg_mx_names(&res, q->domain, names, TG_MX_HOSTS);
	if (nnames == 0)	/* RFC 5321 5.1: the domain is its own MX */
		naddrs = tg_mx_addrs(&res, q->domain, addrs, 0, TG_MX_HOSTS);
	for (i = 0; i < nnames; i++)
		naddrs = tg_mx_addrs(&res, names[i], addrs, naddrs,
				     TG_MX_HOSTS);
	res_nclose(&res);
	for (i = 0; i < naddrs; i++)
		if (addrs[i].family == q->family &&
		    memcmp(addrs[i].addr, q->held, alen) == 0)
			held = 1;
	if (!held)
		return TG_MX_NONE;	/* the MTA will not try these hosts */
	for (i = 0; i < naddrs; i++) {
		if (addrs[i].family == q->family &&
		    memcmp(addrs[i].addr, q->held, alen) == 0)
			continue;
		if (tg_probe(ctx, &addrs[i], q->port))
			return TG_MX_SECURE;
	}
	return TG_MX_NONE;
}

static void *tg_mx_worker(void *arg)
{
	struct tg_mx *mx = arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct tg_mx_entry q;
	__u64 one = 1;
	int i, state;

	if (ctx) {
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	pthread_mutex_lock(&mx->lock);
	while (!mx->stop) {
		for (i = 0; i < TG_MX_CACHE; i++)
			if (mx->cache[i].queued)
				break;
		if (i == TG_MX_CACHE) {
			pthread_cond_wait(&mx->wake, &mx->lock);
			continue;
		}
		q = mx->cache[i];
		pthread_mutex_unlock(&mx->lock);
		state = ctx ? tg_mx_answer(mx, ctx, &q) : TG_MX_NONE;
		pthread_mutex_lock(&mx->lock);
		/* The slot may have been reused for another question. */
		if (mx->cache[i].queued && strcmp(mx->cache[i].domain,
						  q.domain) == 0) {
			mx->cache[i].queued = 0;
			mx->cache[i].state = state;
			mx->cache[i].expires = tg_mx_now() + TG_MX_TTL;
		}
		if (write(mx->efd, &one, sizeof(one)) < 0)
			msg_debug("mx: eventfd: %s", strerror(errno));
	}
	pthread_mutex_unlock(&mx->lock);
	SSL_CTX_free(ctx);
	return NULL;
}

int tg_mx_init(struct tg_mx *mx, const char *resolver)
{
	memset(mx, 0, sizeof(*mx));
	snprintf(mx->resolver, sizeof(mx->resolver), "%s",
		 resolver ? resolver : "");
	mx->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (mx->efd < 0)
		return -errno;
	pthread_mutex_init(&mx->lock, NULL);
	pthread_cond_init(&mx->wake, NULL);
	if (pthread_create(&mx->worker, NULL, tg_mx_worker, mx) != 0)
		return -EAGAIN;
	mx->started = 1;
	return 0;
}

int tg_mx_lookup(struct tg_mx *mx, const char *domain, int family,
		 const __u8 *held_addr, __u16 port)
{
	size_t alen = family == AF_INET6 ? 16 : 4;
	long long now = tg_mx_now();
	struct tg_mx_entry *e, *victim = NULL;
	int i, state;

	if (strlen(domain) >= TG_MX_DOMAIN)
		return TG_MX_NONE;
	pthread_mutex_lock(&mx->lock);
	for (i = 0; i < TG_MX_CACHE; i++) {
		e = &mx->cache[i];
		if (e->domain[0] && strcasecmp(e->domain, domain) == 0 &&
		    e->family == family && e->port == port &&
		    memcmp(e->held, held_addr, alen) == 0 &&
		    (e->queued || e->expires > now)) {
			state = e->queued ? TG_MX_PENDING : e->state;
			pthread_mutex_unlock(&mx->lock);
			return state;
		}
		if (!e->queued && (!victim || e->expires < victim->expires))
			victim = e;
	}
	if (!victim) {
		/* Every entry is being worked on: do not wait for one. */
		pthread_mutex_unlock(&mx->lock);
		return TG_MX_NONE;
	}
	memset(victim, 0, sizeof(*victim));
	snprintf(victim->domain, sizeof(victim->domain), "%s", domain);
	memcpy(victim->held, held_addr, alen);
	victim->family = family;
	victim->port = port;
	victim->queued = 1;
	pthread_cond_signal(&mx->wake);
	pthread_mutex_unlock(&mx->lock);
	return TG_MX_PENDING;
}

int tg_mx_fd(const struct tg_mx *mx)
{
	return mx->efd;
}

int tg_mx_collect(struct tg_mx *mx)
{
	__u64 n;

	return read(mx->efd, &n, sizeof(n)) == sizeof(n) ? 0 : -1;
}

void tg_mx_fini(struct tg_mx *mx)
{
	if (mx->started) {
		pthread_mutex_lock(&mx->lock);
		mx->stop = 1;
		pthread_cond_signal(&mx->wake);
		pthread_mutex_unlock(&mx->lock);
		/* A probe in progress ends within its time bounds. */
		pthread_join(mx->worker, NULL);
	}
	if (mx->efd >= 0)
		close(mx->efd);
	mx->started = 0;
}
