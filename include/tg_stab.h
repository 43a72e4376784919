/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_stab - the senders table: tg_senders as buckets of keys
 * SYNOPSIS
 *	#include "tg_stab.h"
 *
 *	__u32	tg_stab_bits(__u32 max_senders);
 *	__u32	tg_stab_buckets(__u32 bits);
 *	__u32	tg_stab_home(__u64 key, __u32 bits);
 *	int	tg_stab_in(const struct tg_sbucket *b, __u64 key);
 * DESCRIPTION
 *	tg_senders, the kernel's copy of the senders in force, is an array
 *	of buckets, each one cache line: seven keys (tg_addr_key() values
 *	and the constant TG_KEY_* ones; 0 is a free slot), the policy of
 *	each (TG_POL_*), and a spill mark.
 *
 *	A key lives in its home bucket, tg_stab_home(): the key's top bits
 *	(FNV-1a mixes every byte into the top bits best), or, when that one
 *	was full, in one of the TG_STAB_REACH - 1 buckets after it. A bucket
 *	that a key had to pass because it was full carries the spill mark
 *	from then on, and a reader stops at the first bucket without it:
 *	nearly every lookup reads one bucket. The table has
 *	tg_stab_buckets(bits) buckets, TG_STAB_REACH - 1 more than the
 *	2^bits homes, so that no run of buckets wraps.
 *
 *	Only the agent writes, and only in steps after each of which every
 *	key in force is still found (lib/tg_stab.c): a key is written into a
 *	free slot after the spill marks on its way are set; a removed key's
 *	slot is cleared and the marks stay (they only lengthen a search);
 *	a policy changes in place. Nothing ever moves, so a reader running
 *	beside a writer finds every key that is neither being added nor
 *	removed at that moment.
 *
 *	Why not a BPF hash map: one entry of a hash map costs about 85
 *	bytes of kernel memory (element header, key and value rounded up,
 *	allocator overhead), 85 MiB at a million senders; this table holds
 *	the same million in 16 MiB, sized by max_senders, and a lookup is
 *	one array access and seven compares in the common case.
 *
 *	tg_stab_bits() gives the homes (2^bits) for max_senders keys, at
 *	most 60% of the slots in use; tg_stab_in() returns the policy of
 *	key in bucket b (0 when absent there).
 */
#ifndef TG_STAB_H
#define TG_STAB_H

#include "tg_types.h"

#define TG_STAB_WAYS	7
#define TG_STAB_REACH	8
#define TG_STAB_MINBITS	4

struct tg_sbucket {
	__u64 key[TG_STAB_WAYS];
	__u8 pol[TG_STAB_WAYS];
	__u8 spill;
};

static TG_INLINE __u32 tg_stab_bits(__u32 max_senders)
{
	__u64 need = (__u64)max_senders * 5 / 3;	/* slots at 60% */
	__u32 bits = TG_STAB_MINBITS;

	while (bits < 30 && ((__u64)TG_STAB_WAYS << bits) < need)
		bits++;
	return bits;
}

static TG_INLINE __u32 tg_stab_buckets(__u32 bits)
{
	return (1U << bits) + TG_STAB_REACH - 1;
}

static TG_INLINE __u32 tg_stab_home(__u64 key, __u32 bits)
{
	return (__u32)(key >> (64 - bits));
}

static TG_INLINE int tg_stab_in(const struct tg_sbucket *b, __u64 key)
{
	int i;

	for (i = 0; i < TG_STAB_WAYS; i++)
		if (b->key[i] == key)
			return b->pol[i];
	return 0;
}

#endif /* TG_STAB_H */
