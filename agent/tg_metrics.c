// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_metrics - Prometheus text exposition and the fail-closed watch
 *	(see tg_metrics.h)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tg_audit.h"
#include "tg_config.h"
#include "tg_hostport.h"
#include "tg_inject.h"
#include "tg_log.h"
#include "tg_metrics.h"
#include "tg_mapwalk.h"
#include "tg_names.h"
#include "tg_policy.h"

#define TG_METRICS_PAGE	16384

void tg_stats_read(int stats_fd, struct tg_stats *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	struct tg_stats *per;
	__u32 zero = 0;
	int i;

	memset(sum, 0, sizeof(*sum));
	if (ncpu <= 0)
		return;
	per = calloc((size_t)ncpu, sizeof(*per));
	if (!per)
		return;
	if (bpf_map_lookup_elem(stats_fd, &zero, per) == 0) {
		for (i = 0; i < ncpu; i++) {
			__u64 *d = (__u64 *)sum, *s = (__u64 *)&per[i];
			size_t k;

			for (k = 0; k < sizeof(*sum) / sizeof(__u64); k++)
				d[k] += s[k];
		}
	}
	free(per);
}

void tg_metrics_init(struct tg_metrics *m)
{
	int i;

	memset(m, 0, sizeof(*m));
	m->listen_fd = -1;
	m->epfd = -1;
	for (i = 0; i < TG_METRICS_CLIENTS; i++)
		m->clients[i].fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &m->last_watch);
}

/*
 * "127.0.0.1:19025" or "[::1]:19025"; another address only when the
 * administrator said so (metrics_remote): the page has no access control
 * of its own, and says how much mail is being held.
 */
static int tg_metrics_addr(const char *addr, int remote,
			   struct sockaddr_storage *ss, socklen_t *len,
			   char *err, size_t errlen)
{
	struct tg_hostport hp;

	if (tg_hostport_parse(addr, &hp, TG_HP_NEED_PORT) < 0) {
		snprintf(err, errlen, "--metrics %s: expected ADDR:PORT, ADDR "
			 "an IP address (IPv6 in brackets)", addr);
		return -1;
	}
	if (!remote && !tg_hostport_loopback(&hp)) {
		snprintf(err, errlen, "--metrics %s: not a loopback address; "
			 "the metrics are served on 127.0.0.0/8 or [::1] "
			 "unless metrics_remote = yes (--metrics-remote)", addr);
		return -1;
	}
	*len = tg_sockaddr(hp.family, hp.addr, hp.port, ss);
	return 0;
}

int tg_metrics_check(const char *addr, int remote, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;

	return tg_metrics_addr(addr, remote, &ss, &len, err, errlen);
}

int tg_metrics_open(struct tg_metrics *m, const char *addr, int remote,
		    int epfd, char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = TG_EP_METRICS |
					      TG_METRICS_LISTENER };
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;

	if (tg_metrics_addr(addr, remote, &ss, &len, err, errlen) < 0)
		return -1;
	m->epfd = epfd;
	m->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
				     SOCK_CLOEXEC, 0);
	if (m->listen_fd < 0) {
		snprintf(err, errlen, "--metrics %s: socket: %s", addr,
			 strerror(errno));
		return -1;
	}
	setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(m->listen_fd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(m->listen_fd, 16) < 0 ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, m->listen_fd, &ev) < 0) {
		snprintf(err, errlen, "--metrics %s: %s", addr, strerror(errno));
		close(m->listen_fd);
		m->listen_fd = -1;
		return -1;
	}
	return 0;
}

static void tg_client_close(struct tg_metrics *m, struct tg_metrics_client *c)
{
	if (c->fd < 0)
		return;
	epoll_ctl(m->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static void tg_metrics_accept(struct tg_metrics *m)
{
	struct tg_metrics_client *c, *oldest;
	struct epoll_event ev = { .events = EPOLLIN };
	int fd, i;

	while ((fd = accept4(m->listen_fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		c = NULL;
		oldest = &m->clients[0];
		for (i = 0; i < TG_METRICS_CLIENTS; i++) {
			if (m->clients[i].fd < 0) {
				c = &m->clients[i];
				break;
			}
			if (m->clients[i].since < oldest->since)
				oldest = &m->clients[i];
		}
		if (!c) {
			tg_client_close(m, oldest);
			c = oldest;
		}
		c->fd = fd;
		c->since = time(NULL);
		c->len = 0;
		ev.data.u64 = TG_EP_METRICS | (__u64)(c - m->clients);
		if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			tg_client_close(m, c);
	}
}

/* A bounded appender: what does not fit is dropped, never overrun. */
struct tg_page {
	char *buf;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3)))
tg_put(struct tg_page *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->len >= p->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		p->len = (size_t)n < p->cap - p->len ? p->len + (size_t)n : p->cap;
}

static void tg_head(struct tg_page *p, const char *name, const char *type,
		    const char *help)
{
	tg_put(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A counter with one label: HELP, TYPE, a sample per value of it. */
static void tg_counter_by(struct tg_page *p, const char *name,
			  const char *help, const char *label,
			  const char *const *values,
			  const unsigned long long *v, int n)
{
	int i;

	tg_head(p, name, "counter", help);
	for (i = 0; i < n; i++)
		tg_put(p, "%s{%s=\"%s\"} %llu\n", name, label, values[i], v[i]);
}

/* A counter without labels: its HELP, TYPE and one sample. */
static void tg_counter(struct tg_page *p, const char *name, const char *help,
		       unsigned long long v)
{
	tg_head(p, name, "counter", help);
	tg_put(p, "%s %llu\n", name, v);
}

static unsigned long long tg_status_kb(const char *field)
{
	char line[256];
	size_t n = strlen(field);
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			kb = strtoull(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

static const char *const tg_fail_label[TG_FAIL_MAX] = {
	[TG_FAIL_NO_SLOT] = "no_slot",
	[TG_FAIL_PENDING] = "replies_pending",
	[TG_FAIL_SLOT_GONE] = "slot_gone",	/* or the agent is gone */
	[TG_FAIL_UNREADABLE] = "unreadable",
	[TG_FAIL_WEAK_TLS] = "weak_tls",
	[TG_FAIL_UNSEEN_TLS] = "unseen_tls",
};

/* Flows in all, and by state, for the page. */
struct tg_flow_count {
	unsigned long long tracked, by_state[8];
};

static int tg_count_state(void *ctx, const void *key, const void *value)
{
	struct tg_flow_count *c = ctx;
	const struct tg_flow *f = value;

	c->tracked++;
	if (f->state < 8)
		c->by_state[f->state]++;
	return 0;
}

static void tg_metrics_page(struct tg_metrics *m, struct tg_page *p)
{
	const struct tg_metrics_src *src = &m->src;
	unsigned long long by_state[8] = { 0 }, tracked = 0;
	unsigned slots_open = 0, slots_used = 0, i;
	struct tg_flow_count fc = { 0 };
	struct tg_conns conns;
	struct tg_stats st;
	struct tg_slot slot;
	__u32 zero = 0;

	tg_map_each(src->flows_fd, sizeof(__u64), sizeof(struct tg_flow),
		    tg_count_state, &fc);
	tracked = fc.tracked;
	memcpy(by_state, fc.by_state, sizeof(by_state));
	for (i = 0; i < src->ij->n; i++) {
		if (src->ij->slots[i].b < 0)
			continue;
		slots_open++;
		if (bpf_map_lookup_elem(src->ij->maps.slots, &i, &slot) == 0 &&
		    slot.flow)
			slots_used++;
	}
	tg_stats_read(src->stats_fd, &st);

	tg_head(p, "tlsguard_build_info", "gauge",
		"tlsguardd's version, as a label; the value is 1.");
	tg_put(p, "tlsguard_build_info{version=\"%s\"} 1\n", TG_VERSION);
	tg_head(p, "tlsguard_flows_tracked", "gauge",
		"Flows in the flow table (tg_flows) now.");
	tg_put(p, "tlsguard_flows_tracked %llu\n", tracked);
	/*
	 * Not "tlsguard_flows": under OpenMetrics that is the family of the
	 * counter tlsguard_flows_total.
	 */
	tg_head(p, "tlsguard_flows_in_state", "gauge", "Flows now, by state.");
	for (i = TG_FS_PLAIN; i <= TG_FS_TLS_FAILED; i++)
		tg_put(p, "tlsguard_flows_in_state{state=\"%s\"} %llu\n",
		       tg_state_name(i), by_state[i]);
	tg_counter(p, "tlsguard_flows_total",
		   "Flows tracked since the maps were made.",
		   st.flows);
	tg_counter(p, "tlsguard_flows_diverted_total",
		   "Flows diverted to an injection slot (held).",
		   st.diverted);

	tg_counter_by(p, "tlsguard_mail_commands_total",
		      "MAIL commands: passed to the host by the kernel, or "
		      "held and answered by tlsguardd.",
		      "verdict", (const char *const[]){ "passed", "held" },
		      (const unsigned long long[]){ st.passed_mail,
						    src->ij->held },
		      2);

	/*
	 * By the kind of the agent's reply, whatever code tlsguard.conf
	 * gives it: the labels name the default codes.
	 */
	tg_counter_by(p, "tlsguard_replies_total",
		      "Replies tlsguardd wrote for the host on held flows, by "
		      "kind.",
		      "kind",
		      (const char *const[]){ "bounced_550", "deferred_450",
					     "refused_501", "deferred_451" },
		      (const unsigned long long[]){
			      src->ij->replied[TG_RK_HELD_NO_TLS] +
				      src->ij->replied[TG_RK_HELD_WEAK_TLS],
			      src->ij->replied[TG_RK_DEFER_MX],
			      src->ij->replied[TG_RK_REFUSED],
			      src->ij->replied[TG_RK_AGAIN] },
		      4);

	tg_head(p, "tlsguard_failed_closed_total", "counter",
		"Flows failed closed (writes dropped, connection destroyed), "
		"by reason.");
	for (i = 0; i < TG_FAIL_MAX; i++)
		if (tg_fail_label[i])
			tg_put(p, "tlsguard_failed_closed_total{reason=\"%s\"} "
			       "%llu\n", tg_fail_label[i],
			       (unsigned long long)st.failed[i]);
	tg_put(p, "tlsguard_failed_closed_total{reason=\"flow_table_full\"} "
	       "%llu\n", (unsigned long long)st.flows_untracked);

	tg_counter_by(p, "tlsguard_kernel_drops_total",
		      "Writes dropped by tg_smtp_msg and segments dropped by "
		      "tg_reply_skb.",
		      "program",
		      (const char *const[]){ "tg_smtp_msg", "tg_reply_skb" },
		      (const unsigned long long[]){ st.msg_dropped,
						    st.skb_dropped },
		      2);
	tg_counter(p, "tlsguard_ringbuf_overruns_total",
		   "Events the kernel could not report: the ring buffer was "
		   "full.",
		   st.events_lost);
	tg_counter(p, "tlsguard_sockhash_full_total",
		   "Connections the sockhash had no room for (destroyed by the "
		   "agent).",
		   st.sockhash_full);
	conns.live = 0;
	bpf_map_lookup_elem(src->conns_fd, &zero, &conns);
	tg_head(p, "tlsguard_connections_counted", "gauge",
		"Connections of the guarded cgroup to guarded ports counted "
		"against the flow table (from connect to close).");
	tg_put(p, "tlsguard_connections_counted %lld\n",
	       (long long)conns.live);
	tg_counter(p, "tlsguard_table_refused_total",
		   "Connections refused at connect: the flow table was full.",
		   st.table_refused);
	tg_counter(p, "tlsguard_fastopen_refused_total",
		   "Connections to guarded ports refused at connect time: they "
		   "asked for TCP Fast Open.",
		   st.fastopen_refused);

	if (src->source_page && p->len < p->cap)
		p->len += src->source_page(src->source_ctx, p->buf + p->len,
					   p->cap - p->len);
	tg_head(p, "tlsguard_unguarded_routes", "gauge",
		"Routes of the MTA to ports tlsguard does not guard (as last "
		"read; see tlsguard_mta_settings_read).");
	tg_put(p, "tlsguard_unguarded_routes %u\n", src->unguarded_routes);
	tg_head(p, "tlsguard_mta_settings_read", "gauge",
		"1 when the MTA's settings (postfix_config) were read.");
	tg_put(p, "tlsguard_mta_settings_read %d\n", src->routes_read);
	tg_head(p, "tlsguard_map_entries", "gauge", "Entries in a map now.");
	tg_put(p, "tlsguard_map_entries{map=\"tg_flows\"} %llu\n", tracked);
	tg_put(p, "tlsguard_map_entries{map=\"tg_senders\"} %u\n",
	       src->senders_in_map);
	tg_head(p, "tlsguard_map_max_entries", "gauge",
		"Room in a map (max_entries).");
	tg_put(p, "tlsguard_map_max_entries{map=\"tg_flows\"} %u\n",
	       src->flows_max);
	tg_put(p, "tlsguard_map_max_entries{map=\"tg_senders\"} %u\n",
	       src->senders_max);
	tg_head(p, "tlsguard_slots", "gauge",
		"Injection slots, by use (a slot that failed is in neither).");
	tg_put(p, "tlsguard_slots{use=\"held\"} %u\n", slots_used);
	tg_put(p, "tlsguard_slots{use=\"free\"} %u\n", slots_open - slots_used);
	tg_head(p, "tlsguard_slots_configured", "gauge", "--slots.");
	tg_put(p, "tlsguard_slots_configured %u\n", src->ij->n);

	tg_head(p, "tlsguard_audit_records_total", "counter",
		"Audit records written to audit_file and flushed to disk.");
	tg_put(p, "tlsguard_audit_records_total %llu\n",
	       src->audit ? __atomic_load_n(&src->audit->written,
					       __ATOMIC_RELAXED) : 0ULL);
	tg_head(p, "tlsguard_audit_records_dropped_total", "counter",
		"Audit records lost: the write or its flush failed, or the "
		"flow was not followed (the audit's flow table was full).");
	tg_put(p, "tlsguard_audit_records_dropped_total{reason=\"write_failed\"}"
	       " %llu\n", src->audit ?
	       __atomic_load_n(&src->audit->write_failed, __ATOMIC_RELAXED) :
	       0ULL);
	tg_put(p, "tlsguard_audit_records_dropped_total{reason=\"flow_table_"
	       "full\"} %llu\n", src->audit ? src->audit->dropped : 0ULL);
	tg_head(p, "tlsguard_syslog_lines_dropped_total", "counter",
		"Log lines the syslog socket did not take (never waited for).");
	tg_put(p, "tlsguard_syslog_lines_dropped_total %lu\n",
	       tg_log_dropped());

	tg_counter(p, "tlsguard_agent_stalls_total",
		   "Times tlsguardd found it had not run for 10 s or more.",
		   m->stalls);
	tg_head(p, "tlsguard_agent_resident_bytes", "gauge",
		"tlsguardd's resident memory (VmRSS).");
	tg_put(p, "tlsguard_agent_resident_bytes %llu\n",
	       tg_status_kb("VmRSS") * 1024);
	tg_head(p, "tlsguard_agent_resident_peak_bytes", "gauge",
		"tlsguardd's peak resident memory (VmHWM).");
	tg_put(p, "tlsguard_agent_resident_peak_bytes %llu\n",
	       tg_status_kb("VmHWM") * 1024);
}

/* Answer a complete request head; 0 when more is needed. */
static int tg_metrics_answer(struct tg_metrics *m,
			     struct tg_metrics_client *c)
{
	static char body[TG_METRICS_PAGE];
	struct tg_page p = { body, 0, sizeof(body) };
	const char *status, *end;
	char head[256];
	int n;

	c->req[c->len] = 0;
	end = strstr(c->req, "\r\n\r\n");
	if (!end)
		end = strstr(c->req, "\n\n");
	if (!end && c->len < TG_METRICS_REQ - 1)
		return 0;
	if (!end) {
		status = "400 Bad Request";
	} else if (strncmp(c->req, "GET ", 4) != 0) {
		status = strncmp(c->req, "HEAD ", 5) == 0 ?
				 "405 Method Not Allowed" : "400 Bad Request";
	} else if (strncmp(c->req + 4, "/metrics", 8) == 0 &&
		   (c->req[12] == ' ' || c->req[12] == '?' ||
		    c->req[12] == '\r' || c->req[12] == '\n')) {
		status = "200 OK";
		tg_metrics_page(m, &p);
	} else {
		status = "404 Not Found";
	}
	if (p.len == 0)
		tg_put(&p, "%s\n", status);
	n = snprintf(head, sizeof(head),
		     "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu"
		     "\r\nConnection: close\r\n\r\n",
		     status, strncmp(status, "200", 3) == 0 ?
				     "text/plain; version=0.0.4; charset=utf-8" :
				     "text/plain; charset=utf-8",
		     p.len);
	/* One try each: a client that does not read gets a cut answer. */
	if (send(c->fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n)
		(void)!send(c->fd, body, p.len, MSG_NOSIGNAL | MSG_DONTWAIT);
	return 1;
}

void tg_metrics_event(struct tg_metrics *m, __u32 idx)
{
	struct tg_metrics_client *c;
	ssize_t n;

	if (idx == TG_METRICS_LISTENER) {
		tg_metrics_accept(m);
		return;
	}
	if (idx >= TG_METRICS_CLIENTS || m->clients[idx].fd < 0)
		return;
	c = &m->clients[idx];
	for (;;) {
		n = recv(c->fd, c->req + c->len, TG_METRICS_REQ - 1 - c->len,
			 MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			break;		/* EOF or error before a whole request */
		c->len += (unsigned)n;
		if (tg_metrics_answer(m, c))
			break;
	}
	tg_client_close(m, c);
}

void tg_metrics_tick(struct tg_metrics *m)
{
	time_t now = time(NULL);
	int i;

	for (i = 0; i < TG_METRICS_CLIENTS; i++)
		if (m->clients[i].fd >= 0 &&
		    now - m->clients[i].since >= TG_METRICS_TIMEOUT)
			tg_client_close(m, &m->clients[i]);
}

/* Once a minute at most per cause, with the count since the last line. */
static int tg_watch_due(struct tg_metrics *m, int cause, __u64 delta)
{
	time_t now = time(NULL);

	m->unreported[cause] += delta;
	if (!m->unreported[cause] || now - m->warned[cause] < 60)
		return 0;
	m->warned[cause] = now;
	return 1;
}

__u64 tg_metrics_watch(struct tg_metrics *m)
{
	struct timespec now;
	struct tg_stats st;
	__u64 lost;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec - m->last_watch.tv_sec >= TG_METRICS_STALL) {
		m->stalls++;
		msg_warn("tlsguardd did not run for %lld s (stopped, or starved "
			 "of CPU): held flows were not answered meanwhile; the "
			 "MTA defers them at its reply timeout",
			 (long long)(now.tv_sec - m->last_watch.tv_sec));
	}
	m->last_watch = now;
	tg_stats_read(m->src.stats_fd, &st);
	if (tg_watch_due(m, 0, st.flows_untracked - m->seen.flows_untracked +
				       st.table_refused - m->seen.table_refused)) {
		msg_warn("flow table full (%u flows): %llu new connection(s) "
			 "refused at connect, or failed closed with every "
			 "write dropped (raise --max-flows)",
			 m->src.flows_max,
			 (unsigned long long)m->unreported[0]);
		m->unreported[0] = 0;
	}
	if (tg_watch_due(m, 1, st.sockhash_full - m->seen.sockhash_full)) {
		msg_warn("sockhash full: %llu connection(s) could not be "
			 "watched and were destroyed",
			 (unsigned long long)m->unreported[1]);
		m->unreported[1] = 0;
	}
	lost = st.events_lost - m->seen.events_lost;
	if (tg_watch_due(m, 2, lost)) {
		msg_warn("event ring buffer full: %llu event(s) lost; failed "
			 "flows and injection slots are checked instead",
			 (unsigned long long)m->unreported[2]);
		m->unreported[2] = 0;
	}
	m->seen = st;
	return lost;
}

void tg_metrics_close(struct tg_metrics *m)
{
	int i;

	for (i = 0; i < TG_METRICS_CLIENTS; i++)
		tg_client_close(m, &m->clients[i]);
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	m->listen_fd = -1;
}
