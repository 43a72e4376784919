/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_metrics - Prometheus text exposition on a loopback address, and
 *	the watch that logs the kernel's fail-closed counters
 * SYNOPSIS
 *	#include "tg_metrics.h"
 *
 *	int	tg_metrics_check(const char *addr, int remote, char *err,
 *				 size_t errlen);
 *	int	tg_metrics_open(struct tg_metrics *m, const char *addr,
 *				int remote, int epfd, char *err,
 *				size_t errlen);
 *	void	tg_metrics_event(struct tg_metrics *m, __u32 idx);
 *	void	tg_metrics_tick(struct tg_metrics *m);
 *	__u64	tg_metrics_watch(struct tg_metrics *m);
 *	void	tg_metrics_close(struct tg_metrics *m);
 * DESCRIPTION
 *	tg_metrics_open() listens on addr, "127.0.0.1:19025" or
 *	"[::1]:19025": IPv4 127.0.0.0/8 or IPv6 ::1 unless remote is set
 *	(metrics_remote = yes), because the page tells how much mail is
 *	held and has no access control. It returns -1 with a message in
 *	err for another address or a bind failure; tg_metrics_check() only
 *	checks the address, for the command line and (tg_config.c) the
 *	setting metrics_address. The listener and each client are registered on epfd under
 *	TG_EP_METRICS; tg_metrics_event() is called with the low 32 bits of
 *	the epoll data when one is ready.
 *
 *	Everything is non-blocking: a client's request is read as it comes
 *	(at most TG_METRICS_REQ bytes, else 400), "GET /metrics" is answered
 *	HTTP/1.0 200 with "text/plain; version=0.0.4", any other path 404,
 *	anything else 400; the answer is written once (it fits in a fresh
 *	socket's send buffer; what does not is cut) and the connection is
 *	closed. At most TG_METRICS_CLIENTS clients at once (a new one
 *	replaces the oldest); tg_metrics_tick(), from the agent's periodic
 *	timer, closes those older than TG_METRICS_TIMEOUT seconds. So a
 *	stuck or slow client can never hold up the injection path, which
 *	runs in the same loop.
 *
 *	The page (names, HELP and TYPE lines in the answer itself; one
 *	meaning per family, no family name shared under OpenMetrics): the
 *	build's version, flows tracked now and by state, flows diverted,
 *	MAIL commands passed and held, the agent's replies by kind, audit
 *	records written and dropped, syslog lines dropped, flows failed closed by reason, kernel drops (sk_msg writes,
 *	sk_skb segments), ring buffer overruns, policy entries, map fill
 *	(tg_flows, tg_senders, injection slots in use and free), the
 *	agent's resident memory.
 *
 *	tg_metrics_watch(), from the same timer, logs once (not per packet:
 *	at most one line per cause a minute, with the count since the last
 *	line) when the flow table was full, the sockhash was full, or ring
 *	buffer records were lost, and when it finds that the agent itself
 *	did not run for TG_METRICS_STALL seconds or more (stopped, or starved
 *	of CPU: held flows were not answered meanwhile, and the MTA defers
 *	them at its reply timeout). It returns how many ring buffer records
 *	were lost since the last watch: the caller repairs what they would
 *	have done (tg_recover.c); the metrics only observe.
 * DIAGNOSTICS
 *	Client errors are not logged; the watch's lines are warnings.
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stddef.h>
#include <time.h>
#include <linux/types.h>
#include "tg_epoll.h"
#include "tlsguard.h"

#define TG_METRICS_LISTENER	0xffffffffU
#define TG_METRICS_CLIENTS	8
#define TG_METRICS_REQ		2048
#define TG_METRICS_TIMEOUT	5	/* seconds */

struct tg_inject;
struct tg_policy;
struct tg_audit;

struct tg_metrics_client {
	int fd;			/* -1: free */
	time_t since;
	unsigned len;
	char req[TG_METRICS_REQ];
};

/* What the page and the watch read; set by the agent. */
struct tg_metrics_src {
	int stats_fd;
	int flows_fd;
	int conns_fd;			/* tg_conns */
	unsigned flows_max;
	unsigned senders_max;
	unsigned senders_in_map;   /* entries written to tg_senders */
	int senders_incomplete;	   /* TG_SENDERS_INCOMPLETE is set */
	unsigned unguarded_routes; /* the MTA's, to ports not guarded */
	int routes_read;	   /* the MTA's settings were read */
	struct tg_inject *ij;
	const struct tg_policy *const *policy;
	const struct tg_audit *audit;	/* its counters; NULL: none */
};

struct tg_metrics {
	struct tg_metrics_src src;
	int listen_fd;		/* -1: no --metrics */
	int epfd;
	struct tg_metrics_client clients[TG_METRICS_CLIENTS];
	struct tg_stats seen;	/* counters at the last watch */
	time_t warned[4];	/* last line per cause */
	__u64 unreported[4];	/* counted since that line */
	struct timespec last_watch;	/* CLOCK_MONOTONIC */
	__u64 stalls;		/* watches late by TG_METRICS_STALL or more */
};

/* A watch this late (seconds) means the agent did not run meanwhile. */
#define TG_METRICS_STALL	10

void tg_metrics_init(struct tg_metrics *m);
int tg_metrics_check(const char *addr, int remote, char *err, size_t errlen);
int tg_metrics_open(struct tg_metrics *m, const char *addr, int remote,
		    int epfd, char *err, size_t errlen);
void tg_metrics_event(struct tg_metrics *m, __u32 idx);
void tg_metrics_tick(struct tg_metrics *m);
__u64 tg_metrics_watch(struct tg_metrics *m);
void tg_metrics_close(struct tg_metrics *m);

/* The counters of every CPU, added up. */
void tg_stats_read(int stats_fd, struct tg_stats *sum);

#endif /* TG_METRICS_H */
