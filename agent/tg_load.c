// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_load - tlsguard's BPF object as the settings make it, loaded
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_load(struct tg_agent *ag);
 *	int	tg_load_check(struct tg_agent *ag, unsigned long long budget);
 * DESCRIPTION
 *	tg_load() opens the skeleton, sizes its maps and sets its read-only
 *	data from ag->opt (ports, audit, address delimiters, the flow
 *	table's room, the senders table's buckets), prepares the pins under
 *	pin_dir (always: tg_pin.c), and loads it with the verifier's logs
 *	kept: a refusal is one
 *	fatal line naming the program (tg_verifier.h), and a pinned state
 *	the object cannot take is named too. Nothing is attached and no
 *	program runs yet.
 *
 *	tg_load_check() is --check-verifier: the object loaded with audit
 *	off and on, each program's cost against budget, nothing attached
 *	(no senders, cgroup, bpffs nor pins needed). It returns the exit
 *	status.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <bpf/libbpf.h>

#include "tlsguard.h"
#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_features.h"
#include "tg_log.h"
#include "tg_mailaddr.h"
#include "tg_verifier.h"

/*
 * The object as the settings make it, opened and not yet loaded: what
 * the verifier sees depends on the ports and on audit_on, which this
 * takes apart from the settings so that --check-verifier can load both.
 */
static void tg_open_object(struct tg_agent *ag, int audit_on)
{
	unsigned i;
	__u32 bits;

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
	/* The address delimiters, as the agent's parsers have them. */
	ag->skel->rodata->tg_delims[0] = tg_delims[0];
	ag->skel->rodata->tg_delims[1] = tg_delims[1];
	/* tg_connect refuses connections beyond the flow table's size. */
	ag->skel->rodata->tg_flows_room =
		ag->opt.max_flows ? ag->opt.max_flows : TG_FLOWS_MAX;
	if (ag->opt.max_flows &&
	    (bpf_map__set_max_entries(ag->skel->maps.tg_flows,
				      ag->opt.max_flows) ||
	     bpf_map__set_max_entries(ag->skel->maps.tg_socks,
				      ag->opt.max_flows + TG_SLOTS_MAX)))
		msg_fatal("--max-flows: %s", strerror(errno));
	/* The senders table's buckets, for max_senders keys (tg_stab.h). */
	bits = tg_stab_bits(ag->opt.max_senders ? ag->opt.max_senders :
						  TG_SENDERS_MAX);
	ag->skel->rodata->tg_senders_bits = bits;
	if (bpf_map__set_max_entries(ag->skel->maps.tg_senders,
				     tg_stab_buckets(bits)))
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

/* See above. */
int tg_load_check(struct tg_agent *ag, unsigned long long budget)
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

/* See above. */
void tg_load(struct tg_agent *ag)
{
	struct tg_verifier vf;
	int err_no;

	tg_features_check();
	tg_open_object(ag, ag->opt.audit[0] != 0);
	tg_pin_prepare(ag);	/* the maps' layout is known once sized */
	err_no = tg_verifier_arm(&vf, ag->skel->obj, ag->opt.verbose);
	if (err_no < 0)
		msg_fatal("cannot set up the verifier's logs: %s",
			  strerror(-err_no));
	err_no = tlsguard__load(ag->skel);
	tg_verifier_done(&vf, ag->skel->obj, err_no);
	if (err_no && ag->adopted)
		msg_fatal("cannot adopt the state pinned under %s: %s "
			  "(tlsguardctl --pin-dir %s detach removes it)",
			  ag->pin_gen, strerror(-err_no), ag->opt.pin_dir);
	if (err_no)
		tg_verifier_fatal(&vf);
	tg_verifier_report(&vf);
	tg_verifier_free(&vf);
}
