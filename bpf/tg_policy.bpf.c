// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_policy - a sender's policy in tg_senders, as a global BPF function
 * DESCRIPTION
 *	tg_senders_get() returns the policy (TG_POL_*) of key in the senders
 *	table (include/tg_stab.h), or 0 when the table does not hold it. It
 *	reads the key's home bucket and, while a bucket carries the spill
 *	mark, the next ones, at most TG_STAB_REACH in all.
 *
 *	Key 0 is never a sender's (tg_addr_key()): it is what a free slot
 *	holds, so it is answered 0 before any search.
 *
 *	A global function for the reason the parsers are (tg_parse.bpf.c):
 *	the verifier checks its loop once per program, and tg_rule()'s
 *	callers see only "returns a scalar".
 */
#include "tg_common.bpf.h"

__noinline int tg_senders_get(__u64 key)
{
	__u32 i, idx;

	if (!key)
		return 0;
	idx = tg_stab_home(key, tg_senders_bits);
	for (i = 0; i < TG_STAB_REACH; i++, idx++) {
		const struct tg_sbucket *b;
		__u32 k = idx;
		int pol;

		b = bpf_map_lookup_elem(&tg_senders, &k);
		if (!b)
			return 0;
		pol = tg_stab_in(b, key);
		if (pol)
			return pol;
		if (!b->spill)
			return 0;
	}
	return 0;
}
