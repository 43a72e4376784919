// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tlsguardd - hold back a guaranteed sender's mail unless it leaves
 *	over TLS
 * SYNOPSIS
 *	tlsguardd --cgroup DIR --senders FILE [--port N]... [--tls-port N]...
 *		[--slots N] [--socket PATH] [--mx-check system|IP[:PORT]]
 *		[--audit FILE] [--pin-dir DIR] [--metrics ADDR:PORT]
 *		[--max-flows N] [-v]
 *
 *	tlsguardd --check-verifier[=BUDGET] [--port N]... [--tls-port N]... [-v]
 * DESCRIPTION
 *	tlsguardd attaches tlsguard's BPF programs to the cgroup v2
 *	directory DIR and guards the outbound TCP connections, IPv4 and
 *	IPv6, that processes in DIR and below make to port 25 (or to each
 *	--port given, at most eight), and to each --tls-port, where TLS
 *	starts with the connection (SMTPS, port 465). It runs in the
 *	foreground until SIGTERM or SIGINT, then exits 0 and leaves the
 *	kernel enforcing (see --pin-dir), or until "tlsguardctl detach",
 *	which removes tlsguard from the kernel. SIGHUP reads the senders
 *	file again.
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
 *	tlsguard stays in the kernel whenever tlsguardd is not running,
 *	however it ended (SIGTERM, SIGKILL, a crash): maps and the cgroup
 *	links are always pinned under --pin-dir DIR (default
 *	/sys/fs/bpf/tlsguard), and a guaranteed sender that would need the
 *	agent is failed closed (the MTA defers) until a new tlsguardd adopts
 *	the pinned state (see tg_pin.c). Only "tlsguardctl detach" removes
 *	it. --pin, once needed for this, is accepted and ignored.
 *
 *	--socket PATH is the control socket tlsguardctl talks to (default
 *	/run/tlsguard/tlsguardd.sock).
 *
 *	--metrics ADDR:PORT serves Prometheus metrics at /metrics on a
 *	loopback address (another only with --metrics-remote; tg_metrics.h).
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
 *
 *	This file is main() and the start-up (tg_setup(): the host, the
 *	load, the data path, the rooms, then the cgroup), the event loop
 *	and the teardown; each room it dispatches to has a file of its own
 *	(tg_agent.h lists them: arguments, kernel events, senders, control
 *	server, pinning, recovery; tg_inject, tg_audit, tg_mx, tg_metrics).
 * DIAGNOSTICS
 *	Problems with the arguments, the cgroup, the senders file or the
 *	kernel end the program with one line "tlsguardd: fatal: ..." and
 *	exit status 1; a program the verifier refused is named, with the
 *	verifier's reason (-v shows its log first). Held mail is logged one
 *	line per message.
 */
#include <errno.h>
#include <malloc.h>
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
#include "tg_agent.h"
#include "tg_ctl.h"
#include "tg_epoll.h"
#include "tg_features.h"
#include "tg_log.h"
#include "tg_mailaddr.h"
#include "tg_pgsql.h"
#include "tg_service.h"
#include "tg_sys.h"
#include "tg_uprobe.h"
#include "tg_verifier.h"

#define TG_RESCAN_SECONDS 5	/* how often new TLS libraries are looked for */
/*
 * How often the ring buffer is read while the audit trail is on: the
 * kernel does not wake the agent for what only the trail reads (lines, a
 * flow that ends unheld: bpf/tg_common.bpf.h), so a record waits at most
 * this long, or until a quarter of the ring buffer waits.
 */
#define TG_AUDIT_FLUSH_NS (100 * 1000 * 1000)

static int tg_libbpf_print(enum libbpf_print_level level, const char *fmt,
			   va_list ap)
{
	if (level == LIBBPF_DEBUG && tg_log_verbose() < 2)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* The senders, the cgroup, bpffs and the descriptors the slots need. */
static void tg_setup_host(struct tg_agent *ag)
{
	struct rlimit rl;
	char err[512];

	/* The delimiters first: the senders' keys depend on them. */
	tg_mta_read(ag, 1);
	if (tg_pgsql_source(ag->opt.senders))
		tg_pgsql_setup(ag);
	else if (tg_policy_load(ag->opt.senders, &ag->policies[0], err,
				sizeof(err)) < 0)
		msg_fatal("%s", err);
	else if (tg_policy_set_exempt(&ag->policies[0], ag->opt.exempt,
				      ag->opt.nexempt) < 0)
		msg_fatal("out of memory");
	ag->policy = ag->pg ? ag->policy : &ag->policies[0];
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
}

/* A program of the sockhash tg_socks, attached; returns 1. */
static int tg_attach_socks(struct tg_agent *ag, struct bpf_program *prog,
			   enum bpf_attach_type type)
{
	if (bpf_prog_attach(bpf_program__fd(prog),
			    bpf_map__fd(ag->skel->maps.tg_socks), type, 0))
		msg_fatal("cannot attach %s to tg_socks: %s",
			  bpf_program__name(prog), strerror(errno));
	return 1;
}

/* The data path: the cgroup for the uprobes, sock_diag, the map programs. */
static void tg_setup_datapath(struct tg_agent *ag)
{
	__u32 zero = 0;
	int err_no;

	if (bpf_map_update_elem(bpf_map__fd(ag->skel->maps.tg_cgroup), &zero,
				&ag->cgroup_fd, BPF_ANY))
		msg_fatal("cannot set the guarded cgroup: %s", strerror(errno));
	if (tg_kill_open(&ag->kill) < 0)
		msg_fatal("cannot open sock_diag netlink (SOCK_DESTROY): %s",
			  strerror(errno));
	tg_pin_adopt(ag);

	/* Map programs first: they apply to sockets added after them. */
	ag->msg_attached = tg_attach_socks(ag, ag->skel->progs.tg_smtp_msg,
					   BPF_SK_MSG_VERDICT);
	ag->skb_attached = tg_attach_socks(ag, ag->skel->progs.tg_reply_skb,
					   BPF_SK_SKB_STREAM_VERDICT);

	tg_stab_init(&ag->stab, bpf_map__fd(ag->skel->maps.tg_senders),
		     ag->skel->rodata->tg_senders_bits);
	err_no = tg_sync_senders(ag, NULL, ag->policy);
	if (err_no < 0)
		msg_fatal("cannot load the senders into the kernel: %s",
			  strerror(-err_no));
	/* What loading the object and the senders freed goes back. */
	malloc_trim(0);
}

/* The rooms on the event loop: slots, audit, MX check, events, metrics. */
static void tg_setup_rooms(struct tg_agent *ag)
{
	struct tg_inject_maps maps;
	char err[512];
	int err_no;

	ag->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ag->epfd < 0)
		msg_fatal("epoll_create1: %s", strerror(errno));
	maps.injects = bpf_map__fd(ag->skel->maps.tg_injects);
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
	ag->ij.cgroup = ag->cgroup_path;
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
	ag->metrics.src.conns_fd = bpf_map__fd(ag->skel->maps.tg_conns);
	ag->metrics.src.flows_max = bpf_map__max_entries(ag->skel->maps.tg_flows);
	ag->metrics.src.senders_max = ag->opt.max_senders ?
		ag->opt.max_senders : TG_SENDERS_MAX;
	ag->metrics.src.ij = &ag->ij;
	ag->metrics.src.policy = &ag->policy;
	ag->metrics.src.audit = &ag->audit;
	ag->metrics.src.source_page = tg_pgsql_page;
	ag->metrics.src.source_ctx = ag;
	if (ag->pg)
		tg_pgsql_start(ag);
	tg_stats_read(ag->metrics.src.stats_fd, &ag->metrics.seen);
	if (ag->opt.metrics[0] &&
	    tg_metrics_open(&ag->metrics, ag->opt.metrics, ag->opt.metrics_remote,
			    ag->epfd, err, sizeof(err)) < 0)
		msg_fatal("%s", err);

	ag->ctl_fd = tg_ctl_listen(ag->opt.socket, err, sizeof(err));
	if (ag->ctl_fd < 0)
		msg_fatal("%s", err);
	if (tg_epoll_add(ag->epfd, ag->ctl_fd, TG_EP_CTL) < 0)
		msg_fatal("epoll: %s", strerror(errno));
}

/* A cgroup program, attached (or, pinned, the pinned link updated). */
static struct bpf_link *tg_attach_cgroup(struct tg_agent *ag,
					 struct bpf_program *prog,
					 const char *name)
{
	struct bpf_link *link;
	char pin[256];

	tg_pin_path(ag, name, pin, sizeof(pin));
	if ((link = tg_pin_link(ag, prog, pin)) != NULL) {
		ag->linked = 1;	/* the pinned link runs this generation */
		return link;
	}
	link = bpf_program__attach_cgroup(prog, ag->cgroup_fd);
	if (!link)
		msg_fatal("cannot attach %s to cgroup %s: %s",
			  bpf_program__name(prog), ag->opt.cgroup,
			  strerror(errno));
	if (bpf_link__pin(link, pin))
		msg_fatal("cannot pin %s: %s", pin, strerror(errno));
	ag->linked = 1;
	return link;
}

/*
 * Connections of the cgroup's processes that tg_sockops never saw (made
 * before tlsguard guarded the cgroup, or that the flow table could not
 * take) would carry any sender's mail unread: the MTA reuses cached
 * connections for minutes. Once tg_sockops is attached every new one is
 * tracked before its first byte, so one sweep at start leaves none.
 */
static void tg_sweep_unseen(struct tg_agent *ag)
{
	__u16 ports[TG_PORTS_MAX];
	int seen[1 + TG_GENS_MAX];
	unsigned i, n = 0;
	long killed;

	for (i = 0; i < ag->opt.ntls_ports && n < TG_PORTS_MAX; i++)
		ports[n++] = ag->opt.tls_ports[i];
	for (i = 0; i < ag->opt.nports && n < TG_PORTS_MAX; i++)
		ports[n++] = ag->opt.ports[i];
	/* An older generation's connections drain under its programs. */
	killed = tg_kill_unseen(&ag->kill, seen,
				(unsigned)tg_pin_seen(ag, seen, 1 + TG_GENS_MAX),
				ag->cgroup_path, ports, n);
	if (killed < 0)
		msg_fatal("cannot list the connections of cgroup %s "
			  "(sock_diag): %s", ag->opt.cgroup,
			  strerror((int)-killed));
	if (killed)
		msg_info("destroyed %ld connection(s) to guarded ports that "
			 "tlsguard never tracked (made before it guarded the "
			 "cgroup); the MTA retries their mail", killed);
}

/* Signals, the TLS libraries and their timer, then the cgroup: guarding. */
static void tg_setup_guard(struct tg_agent *ag)
{
	struct itimerspec its = { { TG_RESCAN_SECONDS, 0 },
				  { TG_RESCAN_SECONDS, 0 } };
	struct itimerspec flush = { { 0, TG_AUDIT_FLUSH_NS },
				    { 0, TG_AUDIT_FLUSH_NS } };
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	ag->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ag->sigfd < 0 || tg_epoll_add(ag->epfd, ag->sigfd, TG_EP_SIGNAL))
		msg_fatal("signalfd: %s", strerror(errno));

	/*
	 * TLS libraries: the system's now (or their copies for the MTA), the
	 * MTA's own as they appear.
	 */
	tg_uprobe_scan(&ag->uprobes, ag->skel, ag->cgroup_path);
	ag->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (ag->timer_fd < 0 || timerfd_settime(ag->timer_fd, 0, &its, NULL) ||
	    tg_epoll_add(ag->epfd, ag->timer_fd, TG_EP_TIMER))
		msg_fatal("timerfd: %s", strerror(errno));
	if (ag->opt.audit[0]) {
		ag->flush_fd = timerfd_create(CLOCK_MONOTONIC,
					      TFD_CLOEXEC | TFD_NONBLOCK);
		if (ag->flush_fd < 0 ||
		    timerfd_settime(ag->flush_fd, 0, &flush, NULL) ||
		    tg_epoll_add(ag->epfd, ag->flush_fd, TG_EP_TIMER | 1))
			msg_fatal("timerfd: %s", strerror(errno));
	}

	/*
	 * Last: from here on the MTA's new connections are guarded; first
	 * the connect programs, so that none is made with data before the
	 * handshake (TCP Fast Open) once tg_sockops tracks them.
	 */
	ag->connect4 = tg_attach_cgroup(ag, ag->skel->progs.tg_connect4,
					TG_PIN_CONNECT4);
	ag->connect6 = tg_attach_cgroup(ag, ag->skel->progs.tg_connect6,
					TG_PIN_CONNECT6);
	ag->sockops = tg_attach_cgroup(ag, ag->skel->progs.tg_sockops,
				       TG_PIN_LINK);
	tg_sweep_unseen(ag);
}

/*
 * The start-up, in the order the data path needs: nothing guards the
 * cgroup until every room that answers for it is ready.
 */
static void tg_setup(struct tg_agent *ag)
{
	char err[PATH_MAX + 256];

	/* Before anything is attached: a directory that cannot be used. */
	if (tg_uprobe_copies(&ag->uprobes, ag->opt.tls_copies, err,
			     sizeof(err)))
		msg_fatal("tls_library_copies: %s", err);
	tg_setup_host(ag);
	tg_load(ag);
	tg_setup_datapath(ag);
	tg_setup_rooms(ag);
	tg_setup_guard(ag);
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

static void tg_on_timer(struct tg_agent *ag, __u32 idx)
{
	__u64 ticks;

	if (idx == 1) {
		/* the audit timer: what woke nobody (TG_AUDIT_FLUSH_NS) */
		if (read(ag->flush_fd, &ticks, sizeof(ticks)) == sizeof(ticks))
			ring_buffer__consume(ag->rb);
		return;
	}
	if (read(ag->timer_fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	/* The loop is alive (WatchdogSec= in the unit: six ticks or more). */
	tg_notify("WATCHDOG=1");
	/* audit lines that woke nobody (bpf/tg_common.bpf.h, tg_line_wakeup) */
	ring_buffer__consume(ag->rb);
	tg_metrics_tick(&ag->metrics);
	if (tg_metrics_watch(&ag->metrics))
		tg_recover_lost(ag);
	tg_uprobe_scan(&ag->uprobes, ag->skel, ag->cgroup_path);
	if (ag->ngens)
		tg_pin_drain(ag);
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
			__u64 tag = TG_EP_TAG(evs[i].data.u64);
			__u32 idx = TG_EP_INDEX(evs[i].data.u64);

			if (tag == TG_EP_SLOT)
				tg_inject_readable(&ag->ij, idx);
			else if (tag == TG_EP_RINGBUF)
				ring_buffer__consume(ag->rb);
			else if (tag == TG_EP_CTL)
				tg_ctl_serve(ag);
			else if (tag == TG_EP_METRICS)
				tg_metrics_event(&ag->metrics, idx);
			else if (tag == TG_EP_PGSQL)
				tg_pgsql_event(ag, idx);
			if (ag->detach)
				return;
			else if (tag == TG_EP_TIMER)
				tg_on_timer(ag, idx);
			else if (tag == TG_EP_MX) {
				tg_mx_collect(&ag->mx);
				tg_inject_mx_ready(&ag->ij);
			}
			else if (tag == TG_EP_SIGNAL && tg_on_signal(ag)) {
				/*
				 * What the kernel reported before the stop is
				 * read (audit records of flows that ended, held
				 * flows answered); what comes later waits for
				 * the next tlsguardd, as the pinned state does.
				 */
				ring_buffer__consume(ag->rb);
				return;
			}
		}
	}
}

static void tg_teardown(struct tg_agent *ag)
{
	/*
	 * New flows first, then the data path, then the maps. Unless told
	 * to detach, only what is the agent's own goes: the kernel keeps
	 * enforcing on the pinned maps and links.
	 */
	int keep = !ag->detach;

	if (keep)
		tg_pin_leave(ag);
	else
		tg_unpin(ag);
	bpf_link__destroy(ag->sockops);
	bpf_link__destroy(ag->connect4);
	bpf_link__destroy(ag->connect6);
	tg_uprobe_detach(&ag->uprobes);
	tg_kill_close(&ag->kill);
	if (ag->timer_fd >= 0)
		close(ag->timer_fd);
	if (ag->flush_fd >= 0)
		close(ag->flush_fd);
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
	tg_pgsql_close(ag);
	tg_policy_free(&ag->policies[0]);
	tg_policy_free(&ag->policies[1]);
	if (ag->cgroup_fd >= 0)
		close(ag->cgroup_fd);
}

int main(int argc, char **argv)
{
	static struct tg_agent ag = { .cgroup_fd = -1, .ctl_fd = -1,
				      .timer_fd = -1, .flush_fd = -1,
				      .pin_fd = -1 };

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
	/*
	 * Blocks of 128 KiB and more are mapped apart, always: the senders'
	 * keys (8 bytes each) go back to the system as soon as they are
	 * freed, and a list that grows moves its pages (mremap) rather than
	 * copying them. glibc's default raises this threshold to the size
	 * of the largest mapped block freed so far (up to 32 MiB), after
	 * which such lists come from the heap, where realloc() copies.
	 */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);

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
	if (ag.opt.pin_note[0])
		msg_warn("%s", ag.opt.pin_note);
	libbpf_set_print(tg_libbpf_print);
	if (budget)
		return tg_load_check(&ag, budget);
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
	if (!ag.detach)
		msg_info("exiting; the kernel keeps enforcing (pinned under %s; "
			 "tlsguardctl --pin-dir %s detach removes it)",
			 ag.opt.pin_dir, ag.opt.pin_dir);
	else
		msg_info("detaching");
	tg_notify("STOPPING=1");
	tg_teardown(&ag);
	return 0;
}
