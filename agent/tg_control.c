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
 *	The verbs: status, flows, detach (the loop ends and the pins are
 *	removed), sender add|remove|check ADDRESS and sender list, reload,
 *	config [changed], audit-file.
 * DIAGNOSTICS
 *	Answers begin "ok" or "error: TEXT"; an unknown request is an
 *	error naming it. Nothing is logged here but by the rooms it calls.
 */
#include <stdio.h>
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
#include "tg_mapwalk.h"
#include "tg_names.h"

static int tg_ctl_sender(struct tg_agent *ag, const char *args, char *out,
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

static int tg_ctl_status(struct tg_agent *ag, const char *args, char *out,
			 size_t len)
{
	struct tg_census c = { 0 };
	struct tg_stats st;
	int n;

	tg_map_each(bpf_map__fd(ag->skel->maps.tg_flows), sizeof(__u64),
		    sizeof(struct tg_flow), tg_census_flow, &c);
	tg_stats_sum(ag, &st);
	n = snprintf(out, len,
		     "ok\n"
		     "cgroup:          %s\n"
		     "senders:         %zu\n"
		     "flows tracked:   %lu\n"
		     "flows diverted:  %lu\n"
		     "flows in TLS:    %lu\n"
		     "flows failed:    %lu\n"
		     "messages held:   %llu\n"
		     "flows since start: %llu\n"
		     "flows failed since start: %llu\n",
		     ag->opt.cgroup, ag->policy->n, c.tracked, c.diverted,
		     c.tls, c.failed,
		     (unsigned long long)ag->ij.held,
		     (unsigned long long)st.flows,
		     (unsigned long long)(st.no_slot + st.flows_untracked));
	if (n < 0 || (size_t)n >= len)
		return n;
	if (!ag->routes.read)
		return n + snprintf(out + n, len - (size_t)n,
				    "MTA routes:      not read (%s)\n",
				    ag->routes.why);
	n += snprintf(out + n, len - (size_t)n,
		      "MTA routes:      %u, %u not guarded (postfix %s)\n",
		      ag->routes.n + ag->routes.dropped,
		      ag->routes.unguarded + ag->routes.dropped,
		      ag->routes.dir);
	if ((size_t)n >= len)
		return n;
	return n + (int)tg_routes_print(&ag->routes, out + n, len - (size_t)n);
}

static int tg_ctl_flows(struct tg_agent *ag, const char *args, char *out,
			size_t len)
{
	int fd = bpf_map__fd(ag->skel->maps.tg_flows);
	__u64 key, next, *prev = NULL;
	struct timespec now;
	struct tg_flow f;
	size_t used;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &now);
	n = snprintf(out, len, "ok\n%-40s %-10s %-8s %-8s %-6s %s\n",
		     "REMOTE", "STATE", "TLS", "STARTTLS", "AGE", "SENDER");
	used = n > 0 ? (size_t)n : 0;
	while (bpf_map_get_next_key(fd, prev, &next) == 0 && used < len) {
		char name[96], sender[TG_SENDER_MAX + 1];
		__u64 ns = (__u64)now.tv_sec * 1000000000ULL + now.tv_nsec;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &f))
			continue;
		tg_flow_name(&f, name, sizeof(name));
		tg_printable(f.sender, sizeof(f.sender), sender,
			     sizeof(sender));
		n = snprintf(out + used, len - used,
			     "%-40s %-10s %-8s %-8s %-6llu %s\n", name,
			     tg_state_name(f.state),
			     tg_tls_version_name(f.tls_version),
			     f.implicit_tls ? "implicit" :
			     f.starttls_offered ? "offered" : "-",
			     (unsigned long long)((ns - f.start_ns) /
						  1000000000ULL),
			     sender);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	return (int)used;
}

static int tg_ctl_detach(struct tg_agent *ag, const char *args, char *out,
			 size_t len)
{
	ag->detach = 1;
	return snprintf(out, len, "ok\n");
}

static int tg_ctl_reload(struct tg_agent *ag, const char *args, char *out,
			 size_t len)
{
	char err[600];

	if (tg_reload(ag, err, sizeof(err)) < 0)
		return snprintf(out, len, "error: %s\n", err);
	return snprintf(out, len, "ok\nreloaded %s: %zu senders\n",
			ag->opt.senders, ag->policy->n);
}

static int tg_ctl_config(struct tg_agent *ag, const char *args, char *out,
			 size_t len)
{
	int n = snprintf(out, len, "ok\n");

	return n + (int)tg_config_print(&ag->opt, args != NULL, out + n,
					len - (size_t)n);
}

static int tg_ctl_audit_file(struct tg_agent *ag, const char *args,
			     char *out, size_t len)
{
	return snprintf(out, len, "ok\n%s\n", ag->opt.audit);
}

/*
 * The requests, as OpenSMTPD's smtpctl names its verbs in one table.
 * args: NULL when the verb takes none; "" when it needs some, which its
 * function checks; else the one word it may take.
 */
static const struct tg_ctl_verb {
	const char *name;
	const char *args;
	int (*fn)(struct tg_agent *ag, const char *args, char *out,
		  size_t len);
} tg_ctl_verbs[] = {
	{ "status", NULL, tg_ctl_status },
	{ "flows", NULL, tg_ctl_flows },
	{ "detach", NULL, tg_ctl_detach },
	{ "sender", "", tg_ctl_sender },
	{ "reload", NULL, tg_ctl_reload },
	{ "config", "changed", tg_ctl_config },
	{ "audit-file", NULL, tg_ctl_audit_file },
};

/* One request line: the length of the answer written in out. */
static int tg_ctl_request(struct tg_agent *ag, const char *req, char *out,
			  size_t len)
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
		return v->fn(ag, args, out, len);
	}
	return snprintf(out, len, "error: unknown request \"%.64s\"\n", req);
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
	char req[TG_CTL_REQ_MAX], out[TG_CTL_REPLY_MAX];
	ssize_t n;
	int fd, len;

	while ((fd = accept4(ag->ctl_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		n = read(fd, req, sizeof(req) - 1);
		if (n <= 0) {
			close(fd);
			continue;
		}
		req[n] = 0;
		req[strcspn(req, "\r\n")] = 0;
		if (!tg_ctl_peer_root(fd))
			len = snprintf(out, sizeof(out), "error: only root may "
				       "use tlsguardd's control socket\n");
		else
			len = tg_ctl_request(ag, req, out, sizeof(out));
		if (len > 0 && write(fd, out, (size_t)len) < 0)
			msg_debug("control client went away");
		close(fd);
	}
}
