// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mx - another secure MX host? (see tg_mx.h)
 * DESCRIPTION
 *	The cache is shared between the agent's thread and one worker, under
 *	one mutex. The worker takes entries marked queued, works without the
 *	lock, then stores the answer and signals the eventfd. The DNS
 *	lookups and the STARTTLS session are tg_mxconn's, shared with
 *	tlsguardctl probe.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <openssl/ssl.h>

#include "tg_log.h"
#include "tg_mx.h"
#include "tg_mxconn.h"

static long long tg_mx_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Does addr:port complete a STARTTLS handshake at TLS 1.2 or higher? */
static int tg_probe(SSL_CTX *ctx, const struct tg_addr *a, __u16 port)
{
	struct tg_starttls st;
	int ok;

	ok = tg_starttls_open(&st, ctx, a, port, NULL, TG_MX_TIMEOUT) == 0 &&
	     SSL_version(st.ssl) >= TLS1_2_VERSION;
	tg_starttls_close(&st);
	return ok;
}

static int tg_mx_answer(struct tg_mx *mx, SSL_CTX *ctx,
			const struct tg_mx_entry *q)
{
	struct tg_mx_name names[TG_MX_HOSTS];
	struct tg_addr addrs[TG_MX_HOSTS];
	struct __res_state res;
	int nnames, naddrs = 0, i, held = 0;
	size_t alen = q->family == AF_INET6 ? 16 : 4;

	if (tg_dns_open(&res, mx->resolver, TG_MX_TIMEOUT) < 0)
		return TG_MX_NONE;
	nnames = tg_dns_mx(&res, q->domain, names, TG_MX_HOSTS, NULL);
	if (nnames == 0)	/* RFC 5321 5.1: the domain is its own MX */
		naddrs = tg_dns_addrs(&res, q->domain, addrs, 0, TG_MX_HOSTS,
				      NULL);
	for (i = 0; i < nnames; i++)
		naddrs = tg_dns_addrs(&res, names[i].name, addrs, naddrs,
				      TG_MX_HOSTS, NULL);
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
	struct __res_state res;

	memset(mx, 0, sizeof(*mx));
	mx->efd = -1;
	/* A bad server address is the caller's error now, not a silent NONE. */
	if (tg_dns_open(&res, resolver, TG_MX_TIMEOUT) < 0)
		return errno == EINVAL ? -EINVAL : -EIO;
	res_nclose(&res);
	if (resolver && strlen(resolver) >= sizeof(mx->resolver))
		return -EINVAL;
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
