// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_events - what the kernel reports, dispatched
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	int	tg_on_event(void *ctx, void *data, size_t len);
 * DESCRIPTION
 *	tg_on_event() is the ring buffer's callback (ctx: the struct
 *	tg_agent): it takes one record of tg_events and hands it to the
 *	room it concerns. An SMTP line (TG_EV_LINE) goes to the audit trail;
 *	a closed flow (TG_EV_CLOSE) to the audit trail and to its injection
 *	slot, which is renewed; a handshake (TG_EV_TLS) to the audit trail
 *	and, below TLS 1.2, to tg_inject, which names the version in its
 *	replies to that host; a flow failed closed (TG_EV_KILL) is destroyed
 *	(tg_kill) so that the MTA learns at once. Records shorter than their
 *	type are ignored. It always returns 0: one bad record never stops
 *	the others.
 * DIAGNOSTICS
 *	One line per destroyed flow and per weak handshake, naming the flow
 *	as host[addr]:port; a warning, once a minute at most, when a held
 *	flow found no free injection slot.
 */
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_log.h"
#include "tg_names.h"

/* The flow an event names, enough of it to name and to destroy it. */
static void tg_event_flow(const struct tg_event *e, struct tg_flow *f,
			  char *name, size_t len)
{
	*f = (struct tg_flow){ .cookie = e->cookie, .family = e->family,
			       .lport = e->lport, .rport = e->rport };
	memcpy(f->laddr, e->laddr, 16);
	memcpy(f->raddr, e->raddr, 16);
	tg_flow_name(f, name, len);
}

/* See above. */
int tg_on_event(void *ctx, void *data, size_t len)
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
	case TG_EV_KILL: {
		char from[TG_SENDER_MAX + 1] = "";
		struct tg_flow kf;

		tg_event_flow(e, &f, name, sizeof(name));
		/*
		 * The sender before the kill: destroying the socket closes
		 * it, and tg_sockops drops its flow on close.
		 */
		if (e->why == TG_WHY_WEAK_TLS &&
		    bpf_map_lookup_elem(bpf_map__fd(ag->skel->maps.tg_flows),
					&e->cookie, &kf) == 0)
			tg_printable(kf.sender, sizeof(kf.sender), from,
				     sizeof(from));
		err = tg_kill_flow(&ag->kill, &f);
		tg_audit_killed(&ag->audit, e);
		if (e->why == TG_WHY_WEAK_TLS)
			msg_info("%s: from=<%s>: held: TLS 1.2 or higher is "
				 "required, but host negotiated %s: connection "
				 "destroyed", name, from,
				 tg_tls_version_name(e->tls_version));
		else
			msg_info("%s: failed closed (%s): connection %s", name,
				 tg_why_name(e->why),
				 err == 0 ? "destroyed" : "already gone");
		break;
	}
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
