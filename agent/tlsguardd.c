// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tlsguardd - hold back a guaranteed sender's mail unless it leaves
 *	over TLS
 * SYNOPSIS
 *	tlsguardd --cgroup DIR --senders FILE [--port N]... [--tls-port N]...
 *		[--slots N] [--socket PATH] [--mx-check system|IP[:PORT]]
 *		[--audit FILE] [--pin] [-v]
 * DESCRIPTION
 *	tlsguardd attaches tlsguard's BPF programs to the cgroup v2
 *	directory DIR and guards the outbound TCP connections, IPv4 and
 *	IPv6, that processes in DIR and below make to port 25 (or to each
 *	--port given, at most eight), and to each --tls-port, where TLS
 *	starts with the connection (SMTPS, port 465). It runs in the foreground until
 *	SIGTERM or SIGINT, then detaches everything and exits 0. SIGHUP
 *	reads the senders file again.
 *
 *	On a guarded connection without TLS, a MAIL command from a sender
 *	listed in FILE (see tg_policy.h) is held in the kernel, with all
 *	that follows it; tlsguardd answers for the remote host (see
 *	tg_inject.h), so that the MTA bounces the mail to the sender with
 *	"TLS is required, but was not offered by host".
 *
 *	--slots N sets how many held flows can be answered at once (default
 *	256); a flow that needs one when none is free has its write failed,
 *	and the MTA defers the mail.
 *
 *	--mx-check system|IP[:PORT] makes a held MAIL get 450 4.7.10 rather
 *	than 550 5.7.10 when the recipient domain has another MX host that
 *	takes mail over TLS 1.2 or higher, so that the MTA tries that host
 *	(see tg_mx.h); the DNS server asked is the system's or the one
 *	given. Without it tlsguardd sends no DNS query and no probe.
 *
 *	--audit FILE appends one JSON record per message attempt to FILE
 *	(see tg_audit.h); SIGHUP reopens it.
 *
 *	--pin keeps tlsguard in the kernel when tlsguardd exits or is killed:
 *	maps and the cgroup link are pinned under /sys/fs/bpf/tlsguard, and a
 *	guaranteed sender that would need the agent is failed closed (the
 *	MTA defers) until a new tlsguardd --pin adopts the pinned state.
 *	"tlsguardctl detach" removes it all. Without --pin, exiting detaches.
 *
 *	--socket PATH is the control socket tlsguardctl talks to (default
 *	/run/tlsguard/tlsguardd.sock).
 * DIAGNOSTICS
 *	Problems with the arguments, the cgroup, the senders file or the
 *	kernel end the program with one line "tlsguardd: fatal: ..." and
 *	exit status 1. Held mail is logged one line per message.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.h"
#include "tlsguard.skel.h"
#include "tg_audit.h"
#include "tg_ctl.h"
#include "tg_features.h"
#include "tg_inject.h"
#include "tg_kill.h"
#include "tg_log.h"
#include "tg_policy.h"
#include "tg_sys.h"
#include "tg_uprobe.h"

#define TG_EP_RINGBUF	(2ULL << 32)
#define TG_EP_SIGNAL	(3ULL << 32)
#define TG_EP_CTL	(4ULL << 32)
#define TG_EP_TIMER	(5ULL << 32)
#define TG_EP_MX	(6ULL << 32)

#define TG_RESCAN_SECONDS 5	/* how often new TLS libraries are looked for */
#define TG_PIN_DIR	"/sys/fs/bpf/tlsguard"
#define TG_PIN_LINK	TG_PIN_DIR "/tg_sockops_link"

struct tg_opts {
	const char *cgroup;
	const char *senders;
	const char *socket;
	const char *resolver;	/* --mx-check: DNS server, "" for the system's */
	const char *audit;	/* --audit FILE */
	int pin;		/* --pin: enforce while the agent is away */
	__u16 ports[TG_PORTS_MAX];	/* SMTP (STARTTLS) ports */
	unsigned nports;
	__u16 tls_ports[TG_PORTS_MAX];	/* implicit TLS ports */
	unsigned ntls_ports;
	unsigned slots;
	int verbose;
};

struct tg_agent {
	struct tg_opts opt;
	struct tlsguard *skel;
	struct bpf_link *sockops;
	struct ring_buffer *rb;
	struct tg_inject ij;
	struct tg_uprobes uprobes;
	struct tg_kill kill;
	struct tg_mx mx;
	struct tg_audit audit;
	char cgroup_path[4096];
	int timer_fd;
	struct tg_policy policies[2];
	const struct tg_policy *policy;	/* one of policies[] */
	int cgroup_fd;
	int epfd;
	int sigfd;
	int ctl_fd;
	int msg_attached;
	int skb_attached;
	int adopted;		/* --pin found a previous agent's state */
	int detach;		/* tlsguardctl detach: remove the pins too */
	time_t no_slot_warned;
};

static const char usage[] =
	"usage: tlsguardd --cgroup DIR --senders FILE [--port N]... "
	"[--tls-port N]... [--slots N] [--socket PATH]\n"
	"                 [--mx-check system|IP[:PORT]] [--audit FILE] [--pin] "
	"[-v]\n";

static unsigned long tg_number(const char *opt, const char *arg,
			       unsigned long min, unsigned long max)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *arg == 0 || *end || *arg == '-' || v < min || v > max)
		msg_fatal("%s: bad value \"%s\": expected a number from %lu "
			  "to %lu", opt, arg, min, max);
	return v;
}

static void tg_parse_args(int argc, char **argv, struct tg_opts *o)
{
	static const struct option longopts[] = {
		{ "cgroup", required_argument, NULL, 'c' },
		{ "senders", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "tls-port", required_argument, NULL, 't' },
		{ "slots", required_argument, NULL, 'n' },
		{ "socket", required_argument, NULL, 'S' },
		{ "mx-check", required_argument, NULL, 'm' },
		{ "audit", required_argument, NULL, 'a' },
		{ "pin", no_argument, NULL, 'P' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->socket = TG_CTL_DEFAULT;
	o->slots = 256;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "v", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->cgroup = optarg;
			break;
		case 's':
			o->senders = optarg;
			break;
		case 'p':
			if (o->nports + o->ntls_ports == TG_PORTS_MAX)
				msg_fatal("--port: at most %d ports in all",
					  TG_PORTS_MAX);
			o->ports[o->nports++] =
				(__u16)tg_number("--port", optarg, 1, 65535);
			break;
		case 't':
			if (o->nports + o->ntls_ports == TG_PORTS_MAX)
				msg_fatal("--tls-port: at most %d ports in all",
					  TG_PORTS_MAX);
			o->tls_ports[o->ntls_ports++] =
				(__u16)tg_number("--tls-port", optarg, 1, 65535);
			break;
		case 'n':
			o->slots = (unsigned)tg_number("--slots", optarg, 1,
						       TG_SLOTS_MAX);
			break;
		case 'S':
			o->socket = optarg;
			break;
		case 'a':
			o->audit = optarg;
			break;
		case 'P':
			o->pin = 1;
			break;
		case 'm':
			o->resolver = strcmp(optarg, "system") == 0 ? "" : optarg;
			break;
		case 'v':
			o->verbose++;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			msg_fatal("%s: %s", argv[optind - 1] ?
				  argv[optind - 1] : "?",
				  optopt ? "option needs a value" :
				  "unknown option (see --help)");
		}
	}
	if (optind < argc)
		msg_fatal("unexpected argument \"%s\" (see --help)",
			  argv[optind]);
	if (!o->cgroup)
		msg_fatal("--cgroup DIR is required (see --help)");
	if (!o->senders)
		msg_fatal("--senders FILE is required (see --help)");
	if (o->nports == 0 && o->ntls_ports == 0)
		o->ports[o->nports++] = 25;
}

static int tg_libbpf_print(enum libbpf_print_level level, const char *fmt,
			   va_list ap)
{
	if (level == LIBBPF_DEBUG && tg_log_verbose() < 2)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* The sender as kept by the kernel, made printable. */
static void tg_printable(const char *in, size_t inlen, char *out, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < inlen && in[i] && n + 1 < len; i++)
		out[n++] = (in[i] > ' ' && in[i] < 0x7f) ? in[i] : '?';
	if (n == 0 && len > 1)
		out[n++] = '-';
	out[n] = 0;
}

static const char *tg_why_name(__u32 why)
{
	switch (why) {
	case TG_WHY_NO_TLS:
		return "guaranteed sender without TLS";
	case TG_WHY_BAD_MAIL:
		return "MAIL command not vouched for";
	case TG_WHY_WEAK_TLS:
		return "guaranteed sender over TLS below 1.2";
	case TG_WHY_UNSEEN_TLS:
		return "TLS below 1.2 that no uprobe can read";
	}
	return "no injection slot free, or replies pending";
}

/* The flow an event names, enough of it to name and to destroy it. */
static void tg_event_flow(const struct tg_event *e, struct tg_flow *f,
			  char *name, size_t len)
{
	memset(f, 0, sizeof(*f));
	f->cookie = e->cookie;
	f->family = e->family;
	f->lport = e->lport;
	f->rport = e->rport;
	memcpy(f->laddr, e->laddr, 16);
	memcpy(f->raddr, e->raddr, 16);
	tg_flow_name(f, name, len);
}

static int tg_on_event(void *ctx, void *data, size_t len)
{
	struct tg_agent *ag = ctx;
	const struct tg_event *e = data;
	const struct tg_line_event *le = data;
	struct tg_flow f;
	char name[96];
	time_t now;
	int err;

	if (len >= sizeof(*le) && le->type == TG_EV_LINE) {
		tg_audit_line_event(&ag->audit, le);
		return 0;
	}
	if (len < sizeof(*e))
		return 0;
	switch (e->type) {
	case TG_EV_DIVERT:
		msg_debug("flow %llu diverted to slot %u (why %u)",
			  (unsigned long long)e->cookie, e->slot, e->why);
		break;
	case TG_EV_CLOSE:
		tg_audit_closed(&ag->audit, e->cookie);
		if (e->slot != TG_NO_SLOT)
			tg_inject_closed(&ag->ij, e->slot, e->cookie);
		break;
	case TG_EV_TLS:
		tg_audit_tls(&ag->audit, e);
		tg_event_flow(e, &f, name, sizeof(name));
		if (e->state == TG_FS_WEAK) {
			tg_inject_note_weak(&ag->ij, e->family, e->raddr,
					    e->tls_version);
			msg_info("%s: negotiated %s: guaranteed senders will "
				 "not be sent over it", name,
				 tg_tls_version_name(e->tls_version));
		} else {
			msg_debug("%s: handshake: %s, state %u", name,
				  tg_tls_version_name(e->tls_version),
				  e->state);
		}
		break;
	case TG_EV_KILL:
		tg_event_flow(e, &f, name, sizeof(name));
		err = tg_kill_flow(&ag->kill, &f);
		tg_audit_killed(&ag->audit, e);
		if (e->why == TG_WHY_WEAK_TLS) {
			struct tg_flow kf;
			char from[TG_SENDER_MAX + 1] = "";

			if (bpf_map_lookup_elem(bpf_map__fd(ag->skel->maps.tg_flows),
						&e->cookie, &kf) == 0)
				tg_printable(kf.sender, sizeof(kf.sender), from,
					     sizeof(from));
			msg_info("%s: from=<%s>: held: TLS 1.2 or higher is "
				 "required, but host negotiated %s: connection "
				 "destroyed", name, from,
				 tg_tls_version_name(e->tls_version));
		}
		else
			msg_info("%s: failed closed (%s): connection %s", name,
				 tg_why_name(e->why),
				 err == 0 ? "destroyed" : "already gone");
		break;
	case TG_EV_NO_SLOT:
		/* Once a minute at most: this can come in floods. */
		now = time(NULL);
		if (now - ag->no_slot_warned >= 60) {
			ag->no_slot_warned = now;
			msg_warn("no free injection slot: a held flow was "
				 "failed instead (raise --slots, now %u)",
				 ag->opt.slots);
		}
		break;
	}
	return 0;
}

static void tg_reload(struct tg_agent *ag)
{
	struct tg_policy *next = ag->policy == &ag->policies[0] ?
					 &ag->policies[1] : &ag->policies[0];
	char err[512];
	int rc;

	if (tg_policy_load(ag->opt.senders, next, err, sizeof(err)) < 0) {
		msg_warn("%s; keeping the senders in force", err);
		return;
	}
	rc = tg_policy_sync(bpf_map__fd(ag->skel->maps.tg_senders),
			    ag->policy, next);
	if (rc < 0) {
		msg_warn("cannot update the kernel policy: %s", strerror(-rc));
		tg_policy_free(next);
		return;
	}
	tg_policy_free((struct tg_policy *)ag->policy);
	ag->policy = next;
	msg_info("reloaded %s: %zu senders", ag->opt.senders, next->n);
}

static void tg_stats_sum(struct tg_agent *ag, struct tg_stats *sum)
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
	if (bpf_map_lookup_elem(bpf_map__fd(ag->skel->maps.tg_stats), &zero,
				per) == 0) {
		for (i = 0; i < ncpu; i++) {
			__u64 *d = (__u64 *)sum, *s = (__u64 *)&per[i];
			size_t k;

			for (k = 0; k < sizeof(*sum) / sizeof(__u64); k++)
				d[k] += s[k];
		}
	}
	free(per);
}

static int tg_status(struct tg_agent *ag, char *out, size_t len)
{
	int fd = bpf_map__fd(ag->skel->maps.tg_flows);
	unsigned long tracked = 0, diverted = 0, tls = 0, failed = 0;
	__u64 key, next, *prev = NULL;
	struct tg_flow f;
	struct tg_stats st;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &f))
			continue;
		tracked++;
		diverted += f.state == TG_FS_DIVERTED;
		tls += f.state == TG_FS_TLS;
		failed += f.state == TG_FS_FAILED;
	}
	tg_stats_sum(ag, &st);
	return snprintf(out, len,
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
			ag->opt.cgroup, ag->policy->n, tracked, diverted, tls,
			failed,
			(unsigned long long)ag->ij.held,
			(unsigned long long)st.flows,
			(unsigned long long)(st.no_slot + st.flows_untracked));
}

static const char *tg_state_name(__u32 state)
{
	switch (state) {
	case TG_FS_PLAIN:
		return "plain";
	case TG_FS_HANDSHAKE:
		return "handshake";
	case TG_FS_TLS:
		return "tls";
	case TG_FS_WEAK:
		return "weak-tls";
	case TG_FS_TLS_FAILED:
		return "tls-failed";
	case TG_FS_DIVERTED:
		return "held";
	case TG_FS_FAILED:
		return "failed";
	}
	return "?";
}

static int tg_flows(struct tg_agent *ag, char *out, size_t len)
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

static void tg_ctl_serve(struct tg_agent *ag)
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
		if (strcmp(req, "status") == 0)
			len = tg_status(ag, out, sizeof(out));
		else if (strcmp(req, "flows") == 0)
			len = tg_flows(ag, out, sizeof(out));
		else if (strcmp(req, "detach") == 0) {
			ag->detach = 1;
			len = snprintf(out, sizeof(out), "ok\n");
		} else if (strcmp(req, "audit-file") == 0)
			len = snprintf(out, sizeof(out), "ok\n%s\n",
				       ag->opt.audit ? ag->opt.audit : "");
		else
			len = snprintf(out, sizeof(out),
				       "error: unknown request \"%.64s\"\n",
				       req);
		if (len > 0 && write(fd, out, (size_t)len) < 0)
			msg_debug("control client went away");
		close(fd);
	}
}

static int tg_epoll_add(int epfd, int fd, __u64 tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

/*
 * --pin: every map of tlsguard's lives under TG_PIN_DIR, so that the
 * kernel goes on enforcing when the agent is gone (the sk_msg and sk_skb
 * programs belong to the pinned sockhash, the sock_ops program to the
 * pinned cgroup link). A held flow then finds no live injection slot and
 * is failed closed: the MTA defers. A new agent adopts the pinned maps
 * (libbpf reuses a map whose pin exists) and the flows in them.
 */
static void tg_pin_prepare(struct tg_agent *ag)
{
	struct bpf_map *map;
	char path[256];

	if (mkdir(TG_PIN_DIR, 0700) < 0 && errno != EEXIST)
		msg_fatal("mkdir %s: %s", TG_PIN_DIR, strerror(errno));
	ag->adopted = access(TG_PIN_DIR "/tg_flows", F_OK) == 0;
	bpf_object__for_each_map(map, ag->skel->obj) {
		if (strncmp(bpf_map__name(map), "tg_", 3) != 0)
			continue;	/* .rodata: per program, not shared */
		snprintf(path, sizeof(path), "%s/%s", TG_PIN_DIR,
			 bpf_map__name(map));
		if (bpf_map__set_pin_path(map, path))
			msg_fatal("cannot pin %s: %s", path, strerror(errno));
	}
}

/*
 * Flows the previous agent held wait for replies that will never come
 * (its injection slots died with it): destroy them, so that the MTA
 * defers at once instead of waiting for its own timeout.
 */
static void tg_adopt_flows(struct tg_agent *ag)
{
	int fd = bpf_map__fd(ag->skel->maps.tg_flows);
	__u64 key, next, *prev = NULL;
	unsigned long n = 0;
	struct tg_flow f;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &f) ||
		    f.state != TG_FS_DIVERTED)
			continue;
		f.state = TG_FS_FAILED;
		bpf_map_update_elem(fd, &key, &f, BPF_EXIST);
		if (tg_kill_flow(&ag->kill, &f) == 0)
			n++;
	}
	if (n)
		msg_info("destroyed %lu held connection(s) of the previous "
			 "agent; the MTA retries them", n);
}

/* tlsguardctl detach: nothing of tlsguard stays in the kernel. */
static void tg_unpin(struct tg_agent *ag)
{
	unlink(TG_PIN_LINK);
	bpf_object__unpin_maps(ag->skel->obj, NULL);
	if (rmdir(TG_PIN_DIR) < 0 && errno != ENOENT)
		msg_warn("rmdir %s: %s", TG_PIN_DIR, strerror(errno));
}

static void tg_setup(struct tg_agent *ag)
{
	struct itimerspec its = { { TG_RESCAN_SECONDS, 0 },
				  { TG_RESCAN_SECONDS, 0 } };
	struct tg_inject_maps maps;
	struct rlimit rl;
	__u32 zero = 0;
	char err[512];
	sigset_t mask;
	unsigned i;
	int err_no;

	if (tg_policy_load(ag->opt.senders, &ag->policies[0], err,
			   sizeof(err)) < 0)
		msg_fatal("%s", err);
	ag->policy = &ag->policies[0];
	ag->cgroup_fd = tg_cgroup_open(ag->opt.cgroup, ag->cgroup_path,
				       sizeof(ag->cgroup_path), err,
				       sizeof(err));
	if (ag->cgroup_fd < 0)
		msg_fatal("%s", err);
	if (tg_bpffs_ensure("/sys/fs/bpf", err, sizeof(err)) < 0)
		msg_fatal("%s", err);
	/* Two descriptors per slot, plus ours. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < 2ULL * ag->opt.slots + 64)
		msg_fatal("--slots %u needs %u open files; the limit is %llu",
			  ag->opt.slots, 2 * ag->opt.slots + 64,
			  (unsigned long long)rl.rlim_cur);

	tg_features_check();
	ag->skel = tlsguard__open();
	if (!ag->skel)
		msg_fatal("cannot open the BPF object: %s", strerror(errno));
	/* Implicit TLS ports first: tg_sockops counts them by tg_ntls. */
	for (i = 0; i < ag->opt.ntls_ports; i++)
		ag->skel->rodata->tg_ports[i] = ag->opt.tls_ports[i];
	for (i = 0; i < ag->opt.nports; i++)
		ag->skel->rodata->tg_ports[ag->opt.ntls_ports + i] =
			ag->opt.ports[i];
	ag->skel->rodata->tg_nports = ag->opt.nports + ag->opt.ntls_ports;
	ag->skel->rodata->tg_ntls = ag->opt.ntls_ports;
	/* Lines for the audit trail cost a ring buffer record each. */
	ag->skel->rodata->tg_audit_on = ag->opt.audit != NULL;
	if (ag->opt.pin)
		tg_pin_prepare(ag);
	err_no = tlsguard__load(ag->skel);
	if (err_no && ag->adopted)
		msg_fatal("cannot adopt the state pinned under %s: %s (left "
			  "by another version? tlsguardctl detach removes it)",
			  TG_PIN_DIR, strerror(-err_no));
	if (err_no)
		msg_fatal("the kernel refused tlsguard's BPF programs: %s "
			  "(run with -v for the verifier's log)",
			  strerror(-err_no));
	if (ag->adopted) {
		__u32 stale;

		/* The old agent's slots died with it. */
		while (bpf_map_lookup_and_delete_elem(
			       bpf_map__fd(ag->skel->maps.tg_free_slots), NULL,
			       &stale) == 0)
			;
		msg_info("adopted the state pinned under %s", TG_PIN_DIR);
	}

	if (bpf_map_update_elem(bpf_map__fd(ag->skel->maps.tg_cgroup), &zero,
				&ag->cgroup_fd, BPF_ANY))
		msg_fatal("cannot set the guarded cgroup: %s", strerror(errno));
	if (tg_kill_open(&ag->kill) < 0)
		msg_fatal("cannot open sock_diag netlink (SOCK_DESTROY): %s",
			  strerror(errno));
	if (ag->adopted)
		tg_adopt_flows(ag);

	/* Map programs first: they apply to sockets added after them. */
	if (bpf_prog_attach(bpf_program__fd(ag->skel->progs.tg_smtp_msg),
			    bpf_map__fd(ag->skel->maps.tg_socks),
			    BPF_SK_MSG_VERDICT, 0))
		msg_fatal("cannot attach tg_smtp_msg to tg_socks: %s",
			  strerror(errno));
	ag->msg_attached = 1;
	if (bpf_prog_attach(bpf_program__fd(ag->skel->progs.tg_reply_skb),
			    bpf_map__fd(ag->skel->maps.tg_socks),
			    BPF_SK_SKB_STREAM_VERDICT, 0))
		msg_fatal("cannot attach tg_reply_skb to tg_socks: %s",
			  strerror(errno));
	ag->skb_attached = 1;

	err_no = tg_policy_sync(bpf_map__fd(ag->skel->maps.tg_senders), NULL,
				ag->policy);
	if (err_no < 0)
		msg_fatal("cannot load the senders into the kernel: %s",
			  strerror(-err_no));

	ag->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ag->epfd < 0)
		msg_fatal("epoll_create1: %s", strerror(errno));
	maps.sk_store = bpf_map__fd(ag->skel->maps.tg_sk_store);
	maps.socks = bpf_map__fd(ag->skel->maps.tg_socks);
	maps.slots = bpf_map__fd(ag->skel->maps.tg_slots);
	maps.free_slots = bpf_map__fd(ag->skel->maps.tg_free_slots);
	maps.flows = bpf_map__fd(ag->skel->maps.tg_flows);
	err_no = tg_inject_init(&ag->ij, ag->opt.slots, &maps, ag->epfd);
	if (err_no < 0)
		msg_fatal("cannot set up %u injection slots: %s",
			  ag->opt.slots, strerror(-err_no));
	ag->ij.policy = &ag->policy;
	err_no = tg_audit_open(&ag->audit, ag->opt.audit,
			       bpf_map__fd(ag->skel->maps.tg_flows), &ag->policy);
	if (err_no < 0)
		msg_fatal("--audit %s: %s", ag->opt.audit, strerror(-err_no));
	ag->ij.audit = &ag->audit;
	if (ag->opt.resolver) {
		err_no = tg_mx_init(&ag->mx, *ag->opt.resolver ?
					     ag->opt.resolver : NULL);
		if (err_no < 0)
			msg_fatal("cannot start the MX check: %s",
				  strerror(-err_no));
		ag->ij.mx = &ag->mx;
		if (tg_epoll_add(ag->epfd, tg_mx_fd(&ag->mx), TG_EP_MX) < 0)
			msg_fatal("epoll: %s", strerror(errno));
	}

	ag->rb = ring_buffer__new(bpf_map__fd(ag->skel->maps.tg_events),
				  tg_on_event, ag, NULL);
	if (!ag->rb)
		msg_fatal("cannot open the event ring buffer: %s",
			  strerror(errno));
	if (tg_epoll_add(ag->epfd, ring_buffer__epoll_fd(ag->rb),
			 TG_EP_RINGBUF) < 0)
		msg_fatal("epoll: %s", strerror(errno));

	ag->ctl_fd = tg_ctl_listen(ag->opt.socket, err, sizeof(err));
	if (ag->ctl_fd < 0)
		msg_fatal("%s", err);
	if (tg_epoll_add(ag->epfd, ag->ctl_fd, TG_EP_CTL) < 0)
		msg_fatal("epoll: %s", strerror(errno));

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	ag->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ag->sigfd < 0 || tg_epoll_add(ag->epfd, ag->sigfd, TG_EP_SIGNAL))
		msg_fatal("signalfd: %s", strerror(errno));

	/* TLS libraries: the system's now, the MTA's own as they appear. */
	tg_uprobe_scan(&ag->uprobes, ag->skel, ag->cgroup_path);
	ag->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (ag->timer_fd < 0 || timerfd_settime(ag->timer_fd, 0, &its, NULL) ||
	    tg_epoll_add(ag->epfd, ag->timer_fd, TG_EP_TIMER))
		msg_fatal("timerfd: %s", strerror(errno));

	/* Last: from here on the MTA's new connections are guarded. */
	if (ag->opt.pin) {
		ag->sockops = bpf_link__open(TG_PIN_LINK);
		if (ag->sockops &&
		    bpf_link__update_program(ag->sockops,
					     ag->skel->progs.tg_sockops) == 0)
			return;
		bpf_link__destroy(ag->sockops);
	}
	ag->sockops = bpf_program__attach_cgroup(ag->skel->progs.tg_sockops,
						 ag->cgroup_fd);
	if (!ag->sockops)
		msg_fatal("cannot attach tg_sockops to cgroup %s: %s",
			  ag->opt.cgroup, strerror(errno));
	if (ag->opt.pin && bpf_link__pin(ag->sockops, TG_PIN_LINK))
		msg_fatal("cannot pin %s: %s", TG_PIN_LINK, strerror(errno));
}

/* Returns 0 to go on, 1 on SIGTERM/SIGINT. */
static int tg_on_signal(struct tg_agent *ag)
{
	struct signalfd_siginfo si;

	while (read(ag->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			tg_reload(ag);
			if (tg_audit_reopen(&ag->audit) < 0)
				msg_warn("--audit %s: cannot reopen: %s",
					 ag->opt.audit, strerror(errno));
		}
		else
			return 1;
	}
	return 0;
}

static void tg_on_timer(struct tg_agent *ag)
{
	__u64 ticks;

	if (read(ag->timer_fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	tg_uprobe_scan(&ag->uprobes, ag->skel, ag->cgroup_path);
}

static void tg_run(struct tg_agent *ag)
{
	struct epoll_event evs[64];
	int i, n;

	for (;;) {
		n = epoll_wait(ag->epfd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			msg_fatal("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			__u64 tag = evs[i].data.u64 & ~0xffffffffULL;
			__u32 idx = (__u32)evs[i].data.u64;

			if (tag == TG_EP_SLOT)
				tg_inject_readable(&ag->ij, idx);
			else if (tag == TG_EP_RINGBUF)
				ring_buffer__consume(ag->rb);
			else if (tag == TG_EP_CTL)
				tg_ctl_serve(ag);
			if (ag->detach)
				return;
			else if (tag == TG_EP_TIMER)
				tg_on_timer(ag);
			else if (tag == TG_EP_MX) {
				tg_mx_collect(&ag->mx);
				tg_inject_mx_ready(&ag->ij);
			}
			else if (tag == TG_EP_SIGNAL && tg_on_signal(ag))
				return;
		}
	}
}

static void tg_teardown(struct tg_agent *ag)
{
	/*
	 * New flows first, then the data path, then the maps. Pinned, only
	 * what is the agent's own goes: the kernel keeps enforcing.
	 */
	int keep = ag->opt.pin && !ag->detach;

	if (ag->opt.pin && ag->detach)
		tg_unpin(ag);
	bpf_link__destroy(ag->sockops);
	tg_uprobe_detach(&ag->uprobes);
	tg_kill_close(&ag->kill);
	if (ag->timer_fd >= 0)
		close(ag->timer_fd);
	if (keep)
		ag->msg_attached = ag->skb_attached = 0;
	if (ag->msg_attached)
		bpf_prog_detach2(bpf_program__fd(ag->skel->progs.tg_smtp_msg),
				 bpf_map__fd(ag->skel->maps.tg_socks),
				 BPF_SK_MSG_VERDICT);
	if (ag->skb_attached)
		bpf_prog_detach2(bpf_program__fd(ag->skel->progs.tg_reply_skb),
				 bpf_map__fd(ag->skel->maps.tg_socks),
				 BPF_SK_SKB_STREAM_VERDICT);
	if (ag->ij.mx)
		tg_mx_fini(&ag->mx);
	tg_audit_close(&ag->audit);
	tg_inject_fini(&ag->ij);
	ring_buffer__free(ag->rb);
	tlsguard__destroy(ag->skel);
	if (ag->ctl_fd >= 0) {
		close(ag->ctl_fd);
		unlink(ag->opt.socket);
	}
	tg_policy_free(&ag->policies[0]);
	tg_policy_free(&ag->policies[1]);
	if (ag->cgroup_fd >= 0)
		close(ag->cgroup_fd);
}

int main(int argc, char **argv)
{
	static struct tg_agent ag = { .cgroup_fd = -1, .ctl_fd = -1,
				      .timer_fd = -1 };

	sigset_t mask;

	/*
	 * Held from the start, so that a SIGTERM during set-up is taken
	 * from the signalfd once the loop runs, and still detaches cleanly.
	 */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	tg_log_init("tlsguardd", 0);
	tg_parse_args(argc, argv, &ag.opt);
	tg_log_init("tlsguardd", ag.opt.verbose);
	libbpf_set_print(tg_libbpf_print);
	ag.ij.listen_fd = -1;

	tg_setup(&ag);
	msg_info("guarding cgroup %s: %u port(s), %zu senders, %u slots",
		 ag.opt.cgroup, ag.opt.nports + ag.opt.ntls_ports,
		 ag.policy->n, ag.opt.slots);
	tg_run(&ag);
	if (ag.opt.pin && !ag.detach)
		msg_info("exiting; the kernel keeps enforcing (pinned under %s; "
			 "tlsguardctl detach removes it)", TG_PIN_DIR);
	else
		msg_info("detaching");
	tg_teardown(&ag);
	return 0;
}
