/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_rule - the guarantee rule, one source for the kernel and the
 *	agent
 * SYNOPSIS
 *	#include "tg_rule.h"
 *
 *	typedef const __u8 *(*tg_rule_look_fn)(void *ctx, const __u64 *key);
 *
 *	int	tg_rule(tg_rule_look_fn look, void *ctx, const __u64 *addr_key,
 *			const __u64 *domain_key, int srs);
 *	int	tg_rule_holds(int rule);
 * DESCRIPTION
 *	Whether a sender's mail must leave over TLS, from the senders map
 *	(tg_senders): look(ctx, key) returns the map's value for *key
 *	(TG_POL_GUARANTEED, TG_POL_EXEMPT), or NULL when it holds none, as
 *	bpf_map_lookup_elem() does in the kernel.
 *	The sender is given by its keys (tg_addr_key(); *domain_key 0 when
 *	it has no domain) and srs: in its TG_SENDER_SRS bits what
 *	tg_cmd_srs() says (1 for "SRS0=", 2 for "SRS1=", 0 for none), and
 *	TG_SENDER_IDN when its domain has a byte that is not ASCII.
 *
 *	An exempt entry of the address or the domain wins; then a sender
 *	guaranteed by its address or its domain is guaranteed, unless it is
 *	an SRS sender of an exempt kind ("exempt = SRS0="). A sender found
 *	nowhere is not guaranteed, unless the senders did not all fit in
 *	the map (TG_SENDERS_INCOMPLETE is in it), or its domain is not
 *	ASCII and the senders name internationalized domains (TG_KEY_IDN is
 *	in the map): then the kernel holds its MAIL and the agent decides
 *	from the whole list. The map holds each such entry in its A-label
 *	and its U-label form (lower case, NFC), so a sender written in
 *	either matches here; only another spelling of the U-label (upper
 *	case, NFD) needs the agent, which has IDNA (libidn2).
 *
 *	The keys are looked up in that order and only as far as the rule
 *	needs them: the kernel runs this for every MAIL it reads, and each
 *	lookup it skips is fewer paths for the verifier too. They are
 *	passed by pointer, so that the kernel looks them up where the parser
 *	left them (in the flow's map value) and the constant ones in
 *	.rodata: a copy of each on the stack cost the verifier a tenth more
 *	instructions in tg_smtp_msg, and a third more in tg_ssl_write.
 *
 *	tg_rule() returns what decided, so that tlsguardctl can say it:
 *	TG_RULE_NONE, TG_RULE_ADDR or TG_RULE_DOMAIN (guaranteed by that
 *	entry), TG_RULE_EXEMPT_ADDR, TG_RULE_EXEMPT_DOMAIN or
 *	TG_RULE_EXEMPT_SRS, TG_RULE_AGENT (the map is incomplete).
 *	tg_rule_holds() says whether the kernel holds a MAIL judged so.
 *
 *	The kernel calls it from tg_guaranteed() (bpf/tg_common.bpf.h),
 *	looking in tg_senders; the agent from tg_policy_lookup() (its sorted
 *	list standing for the map) and from "tlsguardctl sender check"
 *	(reading the map itself). look must be a function the compiler can
 *	see, so that in BPF it is inlined and no call is left.
 */
#ifndef TG_RULE_H
#define TG_RULE_H

#include "tg_types.h"
#include "tlsguard.h"

/* Bit 0 set: the kernel holds the MAIL (tg_rule_holds()). */
enum tg_rule_result {
	TG_RULE_NONE = 0,
	TG_RULE_ADDR = 1,
	TG_RULE_EXEMPT_ADDR = 2,
	TG_RULE_DOMAIN = 3,
	TG_RULE_EXEMPT_DOMAIN = 4,
	TG_RULE_AGENT = 5,
	TG_RULE_EXEMPT_SRS = 6,
};

typedef const __u8 *(*tg_rule_look_fn)(void *ctx, const __u64 *key);

static TG_INLINE int tg_rule(tg_rule_look_fn look, void *ctx,
			     const __u64 *addr_key, const __u64 *domain_key,
			     int srs)
{
	static const __u64 srs0 = TG_KEY_SRS0, srs1 = TG_KEY_SRS1,
			   incomplete = TG_SENDERS_INCOMPLETE, idn = TG_KEY_IDN;
	const __u8 *a, *d = NULL, *x;

	a = look(ctx, addr_key);
	if (a && *a == TG_POL_EXEMPT)
		return TG_RULE_EXEMPT_ADDR;
	if (*domain_key) {
		d = look(ctx, domain_key);
		if (d && *d == TG_POL_EXEMPT)
			return TG_RULE_EXEMPT_DOMAIN;
	}
	if (a || d) {
		if (srs & TG_SENDER_SRS) {
			x = look(ctx,
				 (srs & TG_SENDER_SRS) == 1 ? &srs0 : &srs1);
			if (x && *x == TG_POL_EXEMPT)
				return TG_RULE_EXEMPT_SRS;
		}
		if (a)
			return TG_RULE_ADDR;
		return TG_RULE_DOMAIN;
	}
	if (look(ctx, &incomplete))
		return TG_RULE_AGENT;
	if ((srs & TG_SENDER_IDN) && look(ctx, &idn))
		return TG_RULE_AGENT;
	return TG_RULE_NONE;
}

static TG_INLINE int tg_rule_holds(int rule)
{
	return rule & 1;
}

#endif /* TG_RULE_H */
