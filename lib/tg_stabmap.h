/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_stabmap - the agent's side of the senders table (tg_senders)
 * SYNOPSIS
 *	#include "tg_stabmap.h"
 *
 *	void	tg_stab_init(struct tg_stab *t, int map_fd, __u32 bits);
 *	int	tg_stab_get(const struct tg_stab *t, __u64 key);
 *	int	tg_stab_put(struct tg_stab *t, __u64 key, __u8 pol);
 *	int	tg_stab_del(struct tg_stab *t, __u64 key);
 *	int	tg_stab_prune(struct tg_stab *t,
 *			      int (*want)(void *ctx, __u64 key), void *ctx);
 *	int	tg_stab_each(const struct tg_stab *t,
 *			     int (*fn)(void *ctx, __u64 key, __u8 pol),
 *			     void *ctx);
 * DESCRIPTION
 *	The table of include/tg_stab.h in the BPF array map_fd, of
 *	tg_stab_buckets(bits) buckets. The agent is its only writer, one
 *	call at a time; each call leaves every key it does not change
 *	findable at every moment (see tg_stab.h).
 *
 *	tg_stab_get() returns the policy of key (TG_POL_*), 0 when the table
 *	does not hold it, or a negative errno.
 *	tg_stab_put() gives key the policy pol (added, or changed in place):
 *	0, -ENOSPC when none of the buckets within reach of its home has a
 *	free slot, or a negative errno. Key 0 is refused (-EINVAL).
 *	tg_stab_del() removes key: 0, 1 when it was not there, or a
 *	negative errno.
 *	tg_stab_prune() reads the whole table and gives each key the policy
 *	want(ctx, key) returns for it, removing those it returns 0 for; it
 *	returns how many keys the table holds then, or a negative errno. It
 *	is how an agent takes over a table another one filled (pinned).
 *	tg_stab_each() calls fn(ctx, key, pol) for every key of the table,
 *	in bucket order, until fn returns non-zero; it returns that, 0, or
 *	a negative errno. Both read the table 1024 buckets at a time.
 */
#ifndef TG_STABMAP_H
#define TG_STABMAP_H

#include <linux/types.h>
#include "tg_stab.h"

struct tg_stab {
	int fd;
	__u32 bits;
	__u32 nbuckets;
};

void tg_stab_init(struct tg_stab *t, int map_fd, __u32 bits);
int tg_stab_get(const struct tg_stab *t, __u64 key);
int tg_stab_put(struct tg_stab *t, __u64 key, __u8 pol);
int tg_stab_del(struct tg_stab *t, __u64 key);
int tg_stab_prune(struct tg_stab *t, int (*want)(void *ctx, __u64 key),
		  void *ctx);
int tg_stab_each(const struct tg_stab *t,
		 int (*fn)(void *ctx, __u64 key, __u8 pol), void *ctx);

#endif /* TG_STABMAP_H */
