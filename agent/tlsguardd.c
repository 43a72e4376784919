// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tlsguardd - hold back a guaranteed sender's mail unless it leaves
 *	over TLS
 * SYNOPSIS
 *	tlsguardd --cgroup DIR --senders FILE [--port N]... [--tls-port N]...
 *		[--slots N] [--socket PATH] [--mx-check system|IP[:PORT]]
 *		[--audit FILE] [--pin] [--metrics ADDR:PORT] [--max-flows N] [-v]
 *
 *	tlsguardd --check-verifier[=BUDGET] [--port N]... [--tls-port N]... [-v]
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
 *
 *	--metrics ADDR:PORT serves Prometheus metrics at /metrics on a
 *	loopback address, 127.0.0.1:9154 or [::1]:9154 (see tg_metrics.h);
 *	any other address is refused.
 *
 *	--max-flows N sizes the flow table (default 65536): a connection
 *	beyond it is failed closed (its writes dropped, the MTA defers).
 *	--max-senders N sizes the kernel's senders map (default 1048576):
 *	a senders file that does not fit makes the kernel hold every MAIL
 *	without TLS, and the agent answers each as the file says (others
 *	get 451: the MTA defers them). --ringbuf-size BYTES sizes the event
 *	ring buffer (a power of two, at least a page; default 1 MiB). The
 *	last two exist for tests, which shrink them to exercise those cases.
 *
 *	Every load measures what each BPF program costs this kernel's
 *	verifier (see tg_verifier.h); -v prints one line per program.
 *
 *	--check-verifier[=BUDGET] guards nothing: it loads tlsguard's BPF
 *	programs on the running kernel, with the audit trail off and on,
 *	attaches none of them, prints a table of what each cost the
 *	verifier and exits 0 when every program was accepted within BUDGET
 *	instructions processed (default 150000), 1 otherwise. It needs no
 *	--cgroup nor --senders; the ports given are those loaded.
 * DIAGNOSTICS
 *	Problems with the arguments, the cgroup, the senders file or the
 *	kernel end the program with one line "tlsguardd: fatal: ..." and
 *	exit status 1; a program the verifier refused is named, with the
 *	verifier's reason (-v shows its log first). Held mail is logged one
 *	line per message.
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
#include "tg_config.h"
#include "tg_ctl.h"
#include "tg_features.h"
#include "tg_inject.h"
#include "tg_kill.h"
#include "tg_log.h"
#include "tg_metrics.h"
#include "tg_names.h"
#include "tg_policy.h"
#include "tg_service.h"
#include "tg_sys.h"
#include "tg_uprobe.h"
#include "tg_verifier.h"

#define TG_EP_RINGBUF	(2ULL << 32)
#define TG_EP_SIGNAL	(3ULL << 32)
#define TG_EP_CTL	(4ULL << 32)
#define TG_EP_TIMER	(5ULL << 32)
#define TG_EP_MX	(6ULL << 32)

#define TG_RESCAN_SECONDS 5	/* how often new TLS libraries are looked for */
#define TG_PIN_DIR	"/sys/fs/bpf/tlsguard"
#define TG_PIN_LINK	TG_PIN_DIR "/tg_sockops_link"
/*
 * --check-verifier's default budget: instructions processed per program.
 * Far below the kernel's limit (1,000,000), because one program's cost
 * differs by several times between kernel builds: a program must pass
 * here on every kernel it is tested on to load on those it is not.
 */
#define TG_VERIFIER_BUDGET 150000ULL

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
	struct tg_metrics metrics;
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
	struct stat senders_st;	/* the senders file as last read */
	int detach;		/* tlsguardctl detach: remove the pins too */
	time_t no_slot_warned;
};

static const char usage[] =
	"usage: tlsguardd [-c FILE] [--cgroup DIR] [--senders FILE] "
	"[--port N]... [--tls-port N]...\n"
	"                 [--slots N] [--socket PATH] [--mx-check "
	"system|IP[:PORT]] [--audit FILE]\n"
	"                 [--metrics ADDR:PORT] [--pin] [--syslog] [-v] "
	"[--print-config[=changed]]\n"
	"                 [--max-flows N] [--max-senders N] "
	"[--ringbuf-size BYTES]\n"
	"       tlsguardd --check-verifier[=BUDGET] [-c FILE] [--port N]... "
	"[--tls-port N]... [-v]\n"
	"\n"
	"--check-verifier loads the BPF programs without attaching them, "
	"prints what\n"
	"each cost this kernel's verifier, and exits 1 when one was refused "
	"or processed\n"
	"more than BUDGET instructions (default 150000).\n";

/* A command-line value, checked by the setting it stands for. */
static void tg_flag(struct tg_opts *o, const char *flag, const char *name,
		    const char *value)
{
	char why[600];

	if (tg_config_set(o, name, value, why, sizeof(why)) < 0)
		msg_fatal("%s: %s", flag, why);
}

/* A list flag given several times: its values, space-separated. */
static void tg_flag_append(char *list, size_t len, const char *flag,
			   const char *value)
{
	size_t used = strlen(list);

	if (used + strlen(value) + 2 > len)
		msg_fatal("%s: too many values", flag);
	snprintf(list + used, len - used, "%s%s", used ? " " : "", value);
}

/* --check-verifier=BUDGET: instructions, at least 1. */
static unsigned long long tg_budget(const char *value)
{
	unsigned long long v;
	char *end;

	if (!value)
		return TG_VERIFIER_BUDGET;
	errno = 0;
	v = strtoull(value, &end, 10);
	if (*value < '0' || *value > '9' || *end || errno || v == 0)
		msg_fatal("--check-verifier=%s: expected a number of "
			  "instructions, 1 or more", value);
	return v;
}

/*
 * The configuration file first (-c), then the flags, so that a flag
 * overrides the file as an administrator expects. Returns 1 when the
 * settings are to be printed rather than used (--print-config), 2 for
 * only those that differ from the defaults. *budget is not 0 for
 * --check-verifier, which needs neither a cgroup nor senders.
 */
static int tg_parse_args(int argc, char **argv, struct tg_opts *o,
			 unsigned long long *budget)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "cgroup", required_argument, NULL, 'g' },
		{ "senders", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "tls-port", required_argument, NULL, 't' },
		{ "slots", required_argument, NULL, 'n' },
		{ "socket", required_argument, NULL, 'S' },
		{ "mx-check", required_argument, NULL, 'm' },
		{ "audit", required_argument, NULL, 'a' },
		{ "metrics", required_argument, NULL, 'M' },
		{ "pin", no_argument, NULL, 'P' },
		{ "syslog", no_argument, NULL, 'L' },
		{ "print-config", optional_argument, NULL, 'D' },
		{ "max-flows", required_argument, NULL, 'F' },
		{ "max-senders", required_argument, NULL, 'E' },
		{ "ringbuf-size", required_argument, NULL, 'R' },
		{ "check-verifier", optional_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static char ports[256], tls_ports[256];
	char err[1024];
	int c, print = 0;

	tg_config_defaults(o);
	opterr = 0;
	/* Pass 1: the configuration file. */
	while ((c = getopt_long(argc, argv, "vc:", longopts, NULL)) != -1)
		if (c == 'c' && tg_config_read(o, optarg, err, sizeof(err)) < 0)
			msg_fatal("%s", err);
	optind = 1;
	while ((c = getopt_long(argc, argv, "vc:", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			break;
		case 'g':
			tg_flag(o, "--cgroup", "cgroup", optarg);
			break;
		case 's':
			tg_flag(o, "--senders", "senders_file", optarg);
			break;
		case 'p':
			tg_flag_append(ports, sizeof(ports), "--port", optarg);
			break;
		case 't':
			tg_flag_append(tls_ports, sizeof(tls_ports),
				       "--tls-port", optarg);
			break;
		case 'n':
			tg_flag(o, "--slots", "slots", optarg);
			break;
		case 'S':
			tg_flag(o, "--socket", "control_socket", optarg);
			break;
		case 'a':
			tg_flag(o, "--audit", "audit_file", optarg);
			break;
		case 'P':
			o->pin = 1;
			break;
		case 'L':
			o->syslog = 1;
			break;
		case 'm':
			tg_flag(o, "--mx-check", "mx_check", optarg);
			break;
		case 'D':
			print = optarg && strcmp(optarg, "changed") == 0 ? 2 : 1;
			if (optarg && print == 1)
				msg_fatal("--print-config=%s: expected "
					  "--print-config or "
					  "--print-config=changed", optarg);
			break;
		case 'v':
			o->verbose++;
			break;
		case 'M': {
			char err[256];

			if (tg_metrics_check(optarg, err, sizeof(err)) < 0)
				msg_fatal("%s", err);
			tg_flag(o, "--metrics", "metrics_address", optarg);
			break;
		}
		case 'F':
			tg_flag(o, "--max-flows", "max_flows", optarg);
			break;
		case 'E':
			tg_flag(o, "--max-senders", "max_senders", optarg);
			break;
		case 'R':
			tg_flag(o, "--ringbuf-size", "ringbuf_size", optarg);
			break;
		case 'C':
			*budget = tg_budget(optarg);
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
	/* A list on the command line replaces the file's, as a whole. */
	if (ports[0] || tls_ports[0]) {
		tg_flag(o, "--port", "smtp_ports", "");
		tg_flag(o, "--tls-port", "smtps_ports", tls_ports);
		tg_flag(o, "--port", "smtp_ports", ports);
	}
	if (!print && !*budget && tg_config_finish(o, err, sizeof(err)) < 0)
		msg_fatal("%s", err);
	if (print || *budget) {
		/* Derived values as the daemon would use them. */
		tg_config_finish(o, err, sizeof(err));
	}
	return print;
}

static int tg_libbpf_print(enum libbpf_print_level level, const char *fmt,
			   va_list ap)
{
	if (level == LIBBPF_DEBUG && tg_log_verbose() < 2)
		return 0;
	return vfprintf(stderr, fmt, ap);
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

/* The senders file as last read or written, to tell an edit since. */
static void tg_senders_stat(struct tg_agent *ag)
{
	if (stat(ag->opt.senders, &ag->senders_st) < 0)
		memset(&ag->senders_st, 0, sizeof(ag->senders_st));
}

static int tg_senders_changed(const struct tg_agent *ag)
{
	struct stat st;

	if (stat(ag->opt.senders, &st) < 0)
		return 1;
	return st.st_ino != ag->senders_st.st_ino ||
	       st.st_size != ag->senders_st.st_size ||
	       st.st_mtim.tv_sec != ag->senders_st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != ag->senders_st.st_mtim.tv_nsec;
}

/* The senders into the kernel; fails closed when they do not fit. */
static int tg_sync_senders(struct tg_agent *ag, const struct tg_policy *old,
			   const struct tg_policy *pol)
{
	unsigned max = bpf_map__max_entries(ag->skel->maps.tg_senders);
	int incomplete, n;

	n = tg_policy_sync_within(bpf_map__fd(ag->skel->maps.tg_senders),
				  old, pol, max, &incomplete);
	if (n < 0)
		return n;
	if (incomplete && !ag->ij.policy_incomplete)
		msg_warn("%zu senders do not fit in tg_senders (%u entries): "
			 "every MAIL without TLS is held, and senders who "
			 "are not guaranteed are deferred (raise "
			 "--max-senders)", pol->n, max);
	else if (!incomplete && ag->ij.policy_incomplete)
		msg_info("all %zu senders are in the kernel again", pol->n);
	ag->ij.policy_incomplete = incomplete;
	ag->metrics.src.senders_incomplete = incomplete;
	ag->metrics.src.senders_in_map = (unsigned)n;
	return 0;
}

/* SIGHUP, tlsguardctl reload: 0, or -1 with the reason in err. */
static int tg_reload(struct tg_agent *ag, char *err, size_t errlen)
{
	struct tg_policy *next = ag->policy == &ag->policies[0] ?
					 &ag->policies[1] : &ag->policies[0];
	char why[512];
	int rc;

	if (tg_policy_load(ag->opt.senders, next, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s; keeping the senders in force", why);
		msg_warn("%s", err);
		return -1;
	}
	if (tg_policy_set_exempt(next, ag->opt.exempt, ag->opt.nexempt) < 0) {
		snprintf(err, errlen, "out of memory; keeping the senders in "
			 "force");
		msg_warn("%s", err);
		tg_policy_free(next);
		return -1;
	}
	rc = tg_sync_senders(ag, ag->policy, next);
	if (rc < 0) {
		snprintf(err, errlen, "cannot update the kernel policy: %s",
			 strerror(-rc));
		msg_warn("%s", err);
		tg_policy_free(next);
		return -1;
	}
	tg_policy_free((struct tg_policy *)ag->policy);
	ag->policy = next;
	tg_senders_stat(ag);
	msg_info("reloaded %s: %zu senders", ag->opt.senders, next->n);
	return 0;
}

/*
 * tlsguardctl sender add|remove ADDRESS. The kernel map and the file
 * change together or not at all. add: the map first (it may be full),
 * then the file; remove: the file first, then the map, so that a failure
 * leaves the sender guaranteed rather than not. Requests are served one
 * at a time from the event loop, so concurrent changes cannot lose one
 * another; the file is read afresh each time, so an edit by hand is
 * kept too.
 */
static int tg_sender_change(struct tg_agent *ag, int add, const char *entry,
			    char *out, size_t len)
{
	struct tg_policy *pol = (struct tg_policy *)ag->policy;
	int fd = bpf_map__fd(ag->skel->maps.tg_senders);
	char err[600];
	int rc, had, changed;
	__u64 key;
	__u8 v;

	if (tg_policy_entry_key(entry, &key) < 0 || strpbrk(entry, " \t#"))
		return snprintf(out, len, "error: malformed sender \"%.80s\": "
				"expected user@domain or @domain\n", entry);
	if (tg_senders_changed(ag))
		msg_warn("%s changed since it was read; the change by "
			 "tlsguardctl keeps that edit, which applies at the "
			 "next reload", ag->opt.senders);
	if (add) {
		had = tg_policy_insert(pol, key);
		if (had < 0)
			return snprintf(out, len, "error: out of memory\n");
		v = (__u8)tg_policy_key_value(pol, key);
		if (!had && bpf_map_update_elem(fd, &key, &v, BPF_ANY)) {
			rc = errno;
			tg_policy_remove(pol, key);
			msg_warn("sender %s not added: the kernel's policy "
				 "map: %s", entry, strerror(rc));
			return snprintf(out, len, "error: the kernel's policy "
					"map refused %s: %s%s\n", entry,
					strerror(rc), rc == E2BIG ?
					" (the map is full)" : "");
		}
		rc = tg_senders_edit(ag->opt.senders, entry, key, 1, err,
				     sizeof(err));
		if (rc < 0) {
			if (!had) {
				tg_policy_remove(pol, key);
				if (!tg_policy_key_value(pol, key))
					bpf_map_delete_elem(fd, &key);
			}
			msg_warn("sender %s not added: %s", entry, err);
			return snprintf(out, len, "error: %s; %s not added\n",
					err, entry);
		}
		changed = !had || rc == 0;
	} else {
		rc = tg_senders_edit(ag->opt.senders, entry, key, 0, err,
				     sizeof(err));
		if (rc < 0) {
			msg_warn("sender %s not removed: %s", entry, err);
			return snprintf(out, len, "error: %s; %s not removed\n",
					err, entry);
		}
		had = tg_policy_remove(pol, key) == 0;
		if (had) {
			v = (__u8)tg_policy_key_value(pol, key);
			if (v)
				bpf_map_update_elem(fd, &key, &v, BPF_ANY);
			else
				bpf_map_delete_elem(fd, &key);
		}
		if (rc == 1 && !had)
			return snprintf(out, len, "error: %s is not in %s\n",
					entry, ag->opt.senders);
		changed = 1;
	}
	tg_senders_stat(ag);
	if (!changed)
		return snprintf(out, len, "ok\n%s: already guaranteed\n",
				entry);
	msg_info("sender %s: %s by tlsguardctl (%zu senders)", entry,
		 add ? "guaranteed" : "no longer guaranteed", pol->n);
	return snprintf(out, len, "ok\n%s: %s\n", entry,
			add ? "added" : "removed");
}

/* tlsguardctl sender check ADDRESS: what the kernel map decides. */
static int tg_sender_check(struct tg_agent *ag, const char *addr, char *out,
			   size_t len)
{
	int fd = bpf_map__fd(ag->skel->maps.tg_senders);
	const char *by;
	__u64 akey, dkey;
	int srs = 0, verdict;

	akey = tg_addr_key_srs(addr, (__u32)strlen(addr), &dkey, &srs);
	if (!akey || addr[0] == '@')
		return snprintf(out, len, "error: \"%.80s\" is not an "
				"address\n", addr);
	verdict = tg_rule_verdict(tg_policy_map_rule(fd, akey, dkey, srs),
				  &by);
	if (verdict != tg_policy_lookup(ag->policy, akey, dkey, srs, NULL))
		msg_warn("sender check %s: the kernel map and the agent's "
			 "policy disagree", addr);
	if (verdict == TG_POL_GUARANTEED)
		return snprintf(out, len, "ok\n%s: guaranteed (by its %s "
				"entry)\n", addr, by);
	if (verdict == TG_POL_EXEMPT)
		return snprintf(out, len, "ok\n%s: exempt (by the exempt "
				"list's %s entry): not held\n", addr, by);
	return snprintf(out, len, "ok\n%s: not guaranteed\n", addr);
}

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

/* Defence in depth: the socket's mode already keeps others out. */
static int tg_ctl_peer_root(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
	       cred.uid == 0;
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
		if (!tg_ctl_peer_root(fd))
			len = snprintf(out, sizeof(out), "error: only root may "
				       "use tlsguardd's control socket\n");
		else if (strcmp(req, "status") == 0)
			len = tg_status(ag, out, sizeof(out));
		else if (strcmp(req, "flows") == 0)
			len = tg_flows(ag, out, sizeof(out));
		else if (strcmp(req, "detach") == 0) {
			ag->detach = 1;
			len = snprintf(out, sizeof(out), "ok\n");
		} else if (strncmp(req, "sender ", 7) == 0) {
			len = tg_ctl_sender(ag, req + 7, out, sizeof(out));
		} else if (strcmp(req, "reload") == 0) {
			char err[600];

			if (tg_reload(ag, err, sizeof(err)) == 0)
				len = snprintf(out, sizeof(out), "ok\nreloaded "
					       "%s: %zu senders\n",
					       ag->opt.senders, ag->policy->n);
			else
				len = snprintf(out, sizeof(out), "error: %s\n",
					       err);
		} else if (strcmp(req, "config") == 0 ||
			   strcmp(req, "config changed") == 0) {
			len = snprintf(out, sizeof(out), "ok\n");
			len += (int)tg_config_print(&ag->opt, req[6] != 0,
						    out + len,
						    sizeof(out) - (size_t)len);
		} else if (strcmp(req, "audit-file") == 0)
			len = snprintf(out, sizeof(out), "ok\n%s\n",
				       ag->opt.audit);
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

/*
 * The object as the settings make it, opened and not yet loaded: what
 * the verifier sees depends on the ports and on audit_on, which this
 * takes apart from the settings so that --check-verifier can load both.
 */
static void tg_open_object(struct tg_agent *ag, int audit_on)
{
	unsigned i;

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
	ag->skel->rodata->tg_audit_on = audit_on;
	if (ag->opt.max_flows &&
	    (bpf_map__set_max_entries(ag->skel->maps.tg_flows,
				      ag->opt.max_flows) ||
	     bpf_map__set_max_entries(ag->skel->maps.tg_socks,
				      ag->opt.max_flows + TG_SLOTS_MAX)))
		msg_fatal("--max-flows: %s", strerror(errno));
	if (ag->opt.max_senders &&
	    bpf_map__set_max_entries(ag->skel->maps.tg_senders,
				     ag->opt.max_senders))
		msg_fatal("--max-senders: %s", strerror(errno));
	if (ag->opt.ringbuf &&
	    bpf_map__set_max_entries(ag->skel->maps.tg_events,
				     ag->opt.ringbuf))
		msg_fatal("--ringbuf-size: %s", strerror(errno));
}

static struct bpf_object *tg_check_open(void *ctx, int audit_on)
{
	struct tg_agent *ag = ctx;

	tg_open_object(ag, audit_on);
	return ag->skel->obj;
}

static void tg_check_close(void *ctx)
{
	struct tg_agent *ag = ctx;

	tlsguard__destroy(ag->skel);
	ag->skel = NULL;
}

/*
 * --check-verifier: only what loading needs (no senders, cgroup, bpffs
 * nor pins), and nothing attached. Returns the exit status.
 */
static int tg_check_verifier(struct tg_agent *ag, unsigned long long budget)
{
	struct tg_vcheck_ops ops = {
		.open = tg_check_open,
		.close = tg_check_close,
		.ctx = ag,
		.verbose = ag->opt.verbose,
	};

	tg_features_check();
	return tg_verifier_check(&ops, budget, stdout);
}

static void tg_setup(struct tg_agent *ag)
{
	struct itimerspec its = { { TG_RESCAN_SECONDS, 0 },
				  { TG_RESCAN_SECONDS, 0 } };
	struct tg_inject_maps maps;
	struct tg_verifier vf;
	struct rlimit rl;
	__u32 zero = 0;
	char err[512];
	sigset_t mask;
	int err_no;

	if (tg_policy_load(ag->opt.senders, &ag->policies[0], err,
			   sizeof(err)) < 0)
		msg_fatal("%s", err);
	if (tg_policy_set_exempt(&ag->policies[0], ag->opt.exempt,
				 ag->opt.nexempt) < 0)
		msg_fatal("out of memory");
	ag->policy = &ag->policies[0];
	tg_senders_stat(ag);
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
	tg_open_object(ag, ag->opt.audit[0] != 0);
	if (ag->opt.pin)
		tg_pin_prepare(ag);
	err_no = tg_verifier_arm(&vf, ag->skel->obj, ag->opt.verbose);
	if (err_no < 0)
		msg_fatal("cannot set up the verifier's logs: %s",
			  strerror(-err_no));
	err_no = tlsguard__load(ag->skel);
	tg_verifier_done(&vf, ag->skel->obj, err_no);
	if (err_no && ag->adopted)
		msg_fatal("cannot adopt the state pinned under %s: %s (left "
			  "by another version? tlsguardctl detach removes it)",
			  TG_PIN_DIR, strerror(-err_no));
	if (err_no)
		tg_verifier_fatal(&vf);
	tg_verifier_report(&vf);
	tg_verifier_free(&vf);
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

	err_no = tg_sync_senders(ag, NULL, ag->policy);
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
	ag->ij.replies = &ag->opt.replies;
	ag->ij.policy_incomplete = ag->metrics.src.senders_incomplete;
	err_no = tg_audit_open(&ag->audit,
			       ag->opt.audit[0] ? ag->opt.audit : NULL,
			       bpf_map__fd(ag->skel->maps.tg_flows), &ag->policy);
	if (err_no < 0)
		msg_fatal("--audit %s: %s", ag->opt.audit, strerror(-err_no));
	ag->ij.audit = &ag->audit;
	if (ag->opt.mx_check) {
		err_no = tg_mx_init(&ag->mx, ag->opt.resolver[0] ?
					     ag->opt.resolver : NULL);
		if (err_no == -EINVAL)	/* tg_mxconn asks IPv4 servers only */
			msg_fatal("mx_check %s: the DNS server must be an IPv4 "
				  "address (IP or IP:PORT)", ag->opt.resolver);
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

	ag->metrics.src.stats_fd = bpf_map__fd(ag->skel->maps.tg_stats);
	ag->metrics.src.flows_fd = bpf_map__fd(ag->skel->maps.tg_flows);
	ag->metrics.src.flows_max = bpf_map__max_entries(ag->skel->maps.tg_flows);
	ag->metrics.src.senders_max =
		bpf_map__max_entries(ag->skel->maps.tg_senders);
	ag->metrics.src.ij = &ag->ij;
	ag->metrics.src.kill = &ag->kill;
	ag->metrics.src.policy = &ag->policy;
	tg_stats_read(ag->metrics.src.stats_fd, &ag->metrics.seen);
	if (ag->opt.metrics[0] &&
	    tg_metrics_open(&ag->metrics, ag->opt.metrics, ag->epfd, err,
			    sizeof(err)) < 0)
		msg_fatal("%s", err);

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
			char err[600];

			tg_notify("RELOADING=1");
			tg_reload(ag, err, sizeof(err));
			tg_notify("READY=1");
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
	tg_metrics_tick(&ag->metrics);
	tg_metrics_watch(&ag->metrics);
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
			else if (tag == TG_EP_METRICS)
				tg_metrics_event(&ag->metrics, idx);
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
	tg_metrics_close(&ag->metrics);
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

	char err[TG_SETTING_MAX + 128];
	unsigned long long budget = 0;
	sigset_t mask;
	int print;

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
	print = tg_parse_args(argc, argv, &ag.opt, &budget);
	if (print) {
		static char out[TG_CTL_REPLY_MAX];

		fwrite(out, 1, tg_config_print(&ag.opt, print == 2, out,
					       sizeof(out)), stdout);
		return 0;
	}
	tg_log_init("tlsguardd", ag.opt.verbose);
	if (ag.opt.syslog &&
	    tg_log_syslog(ag.opt.syslog_name, ag.opt.syslog_facility,
			  ag.opt.syslog_socket) < 0)
		msg_fatal("syslog_socket %s: %s", ag.opt.syslog_socket,
			  strerror(errno));
	libbpf_set_print(tg_libbpf_print);
	if (budget)
		return tg_check_verifier(&ag, budget);
	ag.ij.listen_fd = -1;
	tg_metrics_init(&ag.metrics);

	tg_setup(&ag);
	if (tg_drop_caps(err, sizeof(err)) < 0)
		msg_fatal("cannot drop privileges: %s", err);
	/* The watch measures stalls of the loop, not of the set-up. */
	clock_gettime(CLOCK_MONOTONIC, &ag.metrics.last_watch);
	msg_info("guarding cgroup %s: %u port(s), %zu senders, %u slots",
		 ag.opt.cgroup, ag.opt.nports + ag.opt.ntls_ports,
		 ag.policy->n, ag.opt.slots);
	snprintf(err, sizeof(err), "READY=1\nSTATUS=guarding %s: %zu senders",
		 ag.opt.cgroup, ag.policy->n);
	tg_notify(err);
	tg_run(&ag);
	if (ag.opt.pin && !ag.detach)
		msg_info("exiting; the kernel keeps enforcing (pinned under %s; "
			 "tlsguardctl detach removes it)", TG_PIN_DIR);
	else
		msg_info("detaching");
	tg_notify("STOPPING=1");
	tg_teardown(&ag);
	return 0;
}
