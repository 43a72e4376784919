/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_mx - does a domain have another MX host that offers TLS 1.2+?
 * SYNOPSIS
 *	#include "tg_mx.h"
 *
 *	int	tg_mx_init(struct tg_mx *mx, const char *resolver);
 *	int	tg_mx_lookup(struct tg_mx *mx, const char *domain,
 *			     int family, const __u8 *held_addr, __u16 port);
 *	int	tg_mx_fd(const struct tg_mx *mx);
 *	int	tg_mx_collect(struct tg_mx *mx);
 *	void	tg_mx_fini(struct tg_mx *mx);
 * DESCRIPTION
 *	Before tlsguard answers 550 for a host that offers no usable TLS, it
 *	asks whether the recipient's domain has another MX host that would
 *	take the mail over TLS 1.2 or higher. If so, the answer is 450, and
 *	the MTA tries that host next (a 5xx to MAIL FROM would bounce the
 *	mail at once, without trying other MX hosts).
 *
 *	tg_mx_init() starts a worker thread. resolver is the address of the
 *	DNS server to ask ("IP" or "IP:PORT"), or NULL for the servers of
 *	/etc/resolv.conf.
 *
 *	tg_mx_lookup() answers from the cache: TG_MX_SECURE (another MX host
 *	of the domain, not held_addr, completed a STARTTLS handshake at TLS
 *	1.2 or higher on port), TG_MX_NONE (none did, or held_addr is not an
 *	MX host of the domain, so the MTA will not try the others), or
 *	TG_MX_PENDING: the question was handed to the worker; ask again when
 *	tg_mx_fd() is readable and tg_mx_collect() returned.
 *
 *	The worker looks up the MX records (or, if there are none, the
 *	domain's own addresses), their A and AAAA records, and probes each
 *	address but held_addr: connect, EHLO, STARTTLS, handshake with
 *	OpenSSL at TLS 1.2 or higher, QUIT. Each step is bounded in time
 *	(TG_MX_TIMEOUT seconds; at most TG_MX_HOSTS addresses). Answers are
 *	cached for TG_MX_TTL seconds.
 * BUGS
 *	The MX hosts' certificates are not verified, as Postfix does not at
 *	its "may" level: the question is whether the MTA would get TLS 1.2.
 */
#ifndef TG_MX_H
#define TG_MX_H

#include <pthread.h>
#include <linux/types.h>

#define TG_MX_SECURE	1
#define TG_MX_NONE	0
#define TG_MX_PENDING	(-1)

#define TG_MX_TIMEOUT	3	/* seconds per DNS query or probe step */
#define TG_MX_HOSTS	8	/* addresses probed per domain */
#define TG_MX_TTL	300	/* seconds an answer is kept */
#define TG_MX_CACHE	256
#define TG_MX_DOMAIN	256

struct tg_mx_entry {
	char domain[TG_MX_DOMAIN];
	__u8 held[16];
	int family;
	__u16 port;
	int state;		/* TG_MX_* */
	long long expires;	/* CLOCK_MONOTONIC seconds */
	int queued;		/* handed to the worker, not answered yet */
};

struct tg_mx {
	pthread_t worker;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int efd;		/* eventfd: answers are ready */
	int stop;
	int started;
	char resolver[64];	/* "" for /etc/resolv.conf */
	struct tg_mx_entry cache[TG_MX_CACHE];
};

int tg_mx_init(struct tg_mx *mx, const char *resolver);
int tg_mx_lookup(struct tg_mx *mx, const char *domain, int family,
		 const __u8 *held_addr, __u16 port);
int tg_mx_fd(const struct tg_mx *mx);
int tg_mx_collect(struct tg_mx *mx);
void tg_mx_fini(struct tg_mx *mx);

#endif /* TG_MX_H */
