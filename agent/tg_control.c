// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_control - the control server: tlsguardctl's requests
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_ctl_serve(struct tg_agent *ag);
 * DESCRIPTION
 *	tg_ctl_serve() is called when the control socket (see tg_ctl.h) is
 *	readable. It answers every connection waiting, one at a time: one
 *	request line, read within a second, one answer, then close. A
 *	request is a verb of the table below, alone or, for those that take
 *	them, followed by a space and its arguments. Only root may ask
 *	(the peer's credentials are checked, beside the socket's mode).
 *
 *	The verbs: status [json], flows [json], detach (the loop ends and
 *	the pins are removed), sender add|remove|check ADDRESS and sender
 *	list, reload, config [changed], audit-file. "json" answers with one
 *	JSON object (status) or one object a line (flows) after "ok".
 *
 *	An answer has no size limit: it is made whole in memory, then
 *	written (each write within a second, all of it within
 *	TG_CTL_SEND_SECONDS), so that flows lists every flow of a full
 *	table.
 * DIAGNOSTICS
 *	Answers begin "ok" or "error: TEXT"; an unknown request is an
 *	error naming it. Nothing is logged here but by the rooms it calls.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_ctl.h"
#include "tg_log.h"
#include "tg_json.h"
#include "tg_mapwalk.h"
#include "tg_names.h"
#include "tg_pgsql.h"

#define TG_CTL_SEND_SECONDS	10

static int tg_ctl_sender_buf(struct tg_agent *ag, const char *args, char *out,
			     size_t len)
{
	const char *arg = strchr(args, ' ');

	if (strcmp(args, "list") == 0)
		return snprintf(out, len, "ok\n%s\n%s\n%zu\n",
				ag->opt.senders,
				tg_senders_changed(ag) ? "changed" : "current",
				ag->policy->n);
	if (!arg || !arg[1])
		return snprintf(out, len, "error: sender add|remove|check "
				"ADDRESS, or sender list\n");
	arg++;
	if (strncmp(args, "add ", 4) == 0)
		return tg_sender_change(ag, 1, arg, out, len);
	if (strncmp(args, "remove ", 7) == 0)
		return tg_sender_change(ag, 0, arg, out, len);
	if (strncmp(args, "check ", 6) == 0)
		return tg_sender_check(ag, arg, out, len);
	return snprintf(out, len, "error: unknown sender request \"%.64s\"\n",
			args);
}

static void tg_stats_sum(struct tg_agent *ag, struct tg_stats *sum)
{
	tg_stats_read(bpf_map__fd(ag->skel->maps.tg_stats), sum);
}

struct tg_census {
	unsigned long tracked, diverted, tls, failed;
};

static int tg_census_flow(void *ctx, const void *key, const void *value)
{
	struct tg_census *c = ctx;
	const struct tg_flow *f = value;

	c->tracked++;
	c->diverted += f->state == TG_FS_DIVERTED;
	c->tls += f->state == TG_FS_TLS;
	c->failed += f->state == TG_FS_FAILED;
	return 0;
}

/*
 * This agent's generation, and each older one still draining
 * with the connections it has left (status text, or JSON members).
 */
static void tg_ctl_pins(struct tg_agent *ag, FILE *out, int json)
{
	unsigned i;

	if (json) {
		fputs(",\"pinned\":", out);
		tg_json_str(out, ag->pin_gen);
		fputs(",\"draining\":[", out);
	} else {
		fprintf(out, "pinned:          %s\n", ag->pin_gen);
	}
	for (i = 0; i < ag->ngens; i++) {
		if (json) {
			fputs(i ? ",{\"dir\":" : "{\"dir\":", out);
			tg_json_str(out, ag->gens[i].dir);
			fprintf(out, ",\"connections\":%u}",
				tg_pin_gen_conns(&ag->gens[i]));
		} else {
			fprintf(out, "draining:        %s (%u connection(s))\n",
				ag->gens[i].dir, tg_pin_gen_conns(&ag->gens[i]));
		}
	}
	if (json)
		fputc(']', out);
}

static int tg_ctl_status(struct tg_agent *ag, const char *args, FILE *out)
{
	static char routes[TG_CTL_REPLY_MAX];
	struct tg_census c = { 0 };
	struct tg_stats st;

	tg_map_each(bpf_map__fd(ag->skel->maps.tg_flows), sizeof(__u64),
		    sizeof(struct tg_flow), tg_census_flow, &c);
	tg_stats_sum(ag, &st);
	if (args) {
		fputs("ok\n{\"version\":", out);
		tg_json_str(out, TG_VERSION);
		fputs(",\"cgroup\":", out);
		tg_json_str(out, ag->opt.cgroup);
		tg_pgsql_status(ag, out, 1);
		tg_ctl_pins(ag, out, 1);
		return fprintf(out, ",\"senders\":%zu,\"flows_tracked\":%lu,"
			       "\"flows_diverted\":%lu,\"flows_tls\":%lu,"
			       "\"flows_failed\":%lu,\"messages_held\":%llu,"
			       "\"flows_since_start\":%llu,"
			       "\"flows_failed_since_start\":%llu,"
			       "\"mta_routes\":{\"read\":%s,\"routes\":%u,"
			       "\"not_guarded\":%u}}\n",
			       ag->policy->n, c.tracked, c.diverted, c.tls,
			       c.failed, (unsigned long long)ag->ij.held,
			       (unsigned long long)st.flows,
			       (unsigned long long)(st.no_slot +
						    st.flows_untracked),
			       ag->routes.read ? "true" : "false",
			       ag->routes.n + ag->routes.dropped,
			       ag->routes.unguarded + ag->routes.dropped);
	}
	fprintf(out,
		"ok\n"
		"cgroup:          %s\n"
		"senders:         %zu\n"
		"flows tracked:   %lu\n"
		"flows diverted:  %lu\n"
		"flows in TLS:    %lu\n"
		"flows failed:    %lu\n"
		"messages held:   %llu\n"
		"flows since start: %llu\n"
		"flows failed since start: %llu\n"
		"version:         %s\n",
		ag->opt.cgroup, ag->policy->n, c.tracked, c.diverted, c.tls,
		c.failed, (unsigned long long)ag->ij.held,
		(unsigned long long)st.flows,
		(unsigned long long)(st.no_slot + st.flows_untracked),
		TG_VERSION);
	tg_pgsql_status(ag, out, 0);
	tg_ctl_pins(ag, out, 0);
	if (!ag->routes.read)
		return fprintf(out, "MTA routes:      not read (%s)\n",
			       ag->routes.why);
	fprintf(out, "MTA routes:      %u, %u not guarded (postfix %s)\n",
		ag->routes.n + ag->routes.dropped,
		ag->routes.unguarded + ag->routes.dropped, ag->routes.dir);
	tg_routes_print(&ag->routes, routes, sizeof(routes));
	return fputs(routes, out);
}

struct tg_flows_out {
	FILE *out;
	int json;
	__u64 now_ns;
};

/* One line of flows: a column row, or a JSON object. */
static int tg_ctl_flow(void *ctx, const void *key, const void *value)
{
	struct tg_flows_out *w = ctx;
	const struct tg_flow *f = value;
	char name[96], sender[TG_SENDER_MAX + 1], addr[48] = "?";
	const char *starttls = f->implicit_tls ? "implicit" :
			       f->starttls_offered ? "offered" : "-";
	/* an entry whose connect is under way: no handshake yet */
	const char *state = f->start_ns ? tg_state_name(f->state) :
			    "connecting";
	unsigned long long age = f->start_ns ?
		(w->now_ns - f->start_ns) / 1000000000ULL : 0;

	tg_flow_name(f, name, sizeof(name));
	if (!w->json) {
		tg_printable(f->sender, sizeof(f->sender), sender,
			     sizeof(sender));
		fprintf(w->out, "%-40s %-10s %-8s %-8s %-6llu %s\n", name,
			state,
			tg_tls_version_name(f->tls_version), starttls, age,
			sender);
		return 0;
	}
	inet_ntop(f->family == AF_INET6 ? AF_INET6 : AF_INET, f->raddr, addr,
		  sizeof(addr));
	fprintf(w->out, "{\"cookie\":%llu,\"remote\":{\"address\":",
		(unsigned long long)f->cookie);
	tg_json_str(w->out, addr);
	fprintf(w->out, ",\"port\":%u},\"state\":\"%s\",\"tls\":", f->rport,
		state);
	if (f->tls_version)
		fprintf(w->out, "\"%s\"", tg_tls_version_name(f->tls_version));
	else
		fputs("null", w->out);
	fprintf(w->out, ",\"starttls\":\"%s\",\"age_seconds\":%llu,"
		"\"sender\":", starttls, age);
	if (f->sender[0])
		tg_json_strn(w->out, f->sender,
			     strnlen(f->sender, sizeof(f->sender)));
	else
		fputs("null", w->out);
	fputs("}\n", w->out);
	return 0;
}

/* Every flow of the table, however many: the answer has no size limit. */
static int tg_ctl_flows(struct tg_agent *ag, const char *args, FILE *out)
{
	struct tg_flows_out w = { .out = out, .json = args != NULL };
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	w.now_ns = (__u64)now.tv_sec * 1000000000ULL + (__u64)now.tv_nsec;
	fputs("ok\n", out);
	if (!w.json)
		fprintf(out, "%-40s %-10s %-8s %-8s %-6s %s\n", "REMOTE",
			"STATE", "TLS", "STARTTLS", "AGE", "SENDER");
	tg_map_each(bpf_map__fd(ag->skel->maps.tg_flows), sizeof(__u64),
		    sizeof(struct tg_flow), tg_ctl_flow, &w);
	return 0;
}

static int tg_ctl_sender(struct tg_agent *ag, const char *args, FILE *out)
{
	static char buf[TG_CTL_REPLY_MAX];

	tg_ctl_sender_buf(ag, args, buf, sizeof(buf));
	return fputs(buf, out);
}

static int tg_ctl_detach(struct tg_agent *ag, const char *args, FILE *out)
{
	ag->detach = 1;
	return fputs("ok\n", out);
}

static int tg_ctl_reload(struct tg_agent *ag, const char *args, FILE *out)
{
	char err[600];

	if (tg_reload(ag, err, sizeof(err)) < 0)
		return fprintf(out, "error: %s\n", err);
	return fprintf(out, "ok\nreloaded %s: %zu senders\n",
		       ag->opt.senders, ag->policy->n);
}

static int tg_ctl_config(struct tg_agent *ag, const char *args, FILE *out)
{
	static char buf[TG_CTL_REPLY_MAX];

	tg_config_print(&ag->opt, args != NULL, buf, sizeof(buf));
	return fprintf(out, "ok\n%s", buf);
}

static int tg_ctl_audit_file(struct tg_agent *ag, const char *args,
			     FILE *out)
{
	return fprintf(out, "ok\n%s\n", ag->opt.audit);
}

/*
 * The requests, as OpenSMTPD's smtpctl names its verbs in one table.
 * args: NULL when the verb takes none; "" when it needs some, which its
 * function checks; else the one word it may take.
 */
static const struct tg_ctl_verb {
	const char *name;
	const char *args;
	int (*fn)(struct tg_agent *ag, const char *args, FILE *out);
} tg_ctl_verbs[] = {
	{ "status", "json", tg_ctl_status },
	{ "flows", "json", tg_ctl_flows },
	{ "detach", NULL, tg_ctl_detach },
	{ "sender", "", tg_ctl_sender },
	{ "reload", NULL, tg_ctl_reload },
	{ "config", "changed", tg_ctl_config },
	{ "audit-file", NULL, tg_ctl_audit_file },
};

/* One request line: its answer written to out. */
static void tg_ctl_request(struct tg_agent *ag, const char *req, FILE *out)
{
	const struct tg_ctl_verb *v;
	const char *args;
	size_t i, n;

	for (i = 0; i < sizeof(tg_ctl_verbs) / sizeof(*tg_ctl_verbs); i++) {
		v = &tg_ctl_verbs[i];
		n = strlen(v->name);
		if (strncmp(req, v->name, n) != 0 || (req[n] && req[n] != ' '))
			continue;
		args = req[n] ? req + n + 1 : NULL;
		if (!args && v->args && !v->args[0])
			break;
		if (args && (!v->args || (v->args[0] && strcmp(args, v->args))))
			break;
		v->fn(ag, args, out);
		return;
	}
	fprintf(out, "error: unknown request \"%.64s\"\n", req);
}

/* All of buf, each write within the socket's timeout, all within a bound. */
static int tg_ctl_send(int fd, const char *buf, size_t len)
{
	time_t end = time(NULL) + TG_CTL_SEND_SECONDS;
	ssize_t n;

	while (len) {
		n = write(fd, buf, len);
		if (n <= 0 || time(NULL) > end)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Defence in depth: the socket's mode already keeps others out. */
static int tg_ctl_peer_root(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
	       cred.uid == 0;
}

/* See above. */
void tg_ctl_serve(struct tg_agent *ag)
{
	struct timeval tv = { .tv_sec = 1 };
	char req[TG_CTL_REQ_MAX], *buf;
	size_t len;
	FILE *out;
	ssize_t n;
	int fd;

	while ((fd = accept4(ag->ctl_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		n = read(fd, req, sizeof(req) - 1);
		buf = NULL;
		len = 0;
		out = n > 0 ? open_memstream(&buf, &len) : NULL;
		if (!out) {
			close(fd);
			continue;
		}
		req[n] = 0;
		req[strcspn(req, "\r\n")] = 0;
		if (!tg_ctl_peer_root(fd))
			fputs("error: only root may use tlsguardd's control "
			      "socket\n", out);
		else
			tg_ctl_request(ag, req, out);
		if (fclose(out) == 0 && tg_ctl_send(fd, buf, len) < 0)
			msg_debug("control client went away");
		free(buf);
		close(fd);
	}
}
