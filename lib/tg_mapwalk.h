/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_mapwalk - every entry of a BPF hash map, a batch at a time
 * SYNOPSIS
 *	#include "tg_mapwalk.h"
 *
 *	long	tg_map_each(int fd, __u32 key_size, __u32 value_size,
 *			    int (*fn)(void *ctx, const void *key,
 *				      const void *value),
 *			    void *ctx);
 * DESCRIPTION
 *	tg_map_each() calls fn for each entry of the map fd, in the map's
 *	order, until fn returns non-zero; it returns how many entries fn
 *	saw, or a negative errno. The entries come in batches
 *	(BPF_MAP_LOOKUP_BATCH, a few hundred per system call): walking the
 *	flow table by bpf_map_get_next_key() and a lookup per key cost two
 *	system calls per flow, 38 ms for tlsguardctl status at 10,000
 *	flows. A kernel that refuses batches for the map is walked key by
 *	key.
 *
 *	Entries added or removed during the walk may or may not be seen,
 *	as with any walk of a live hash map.
 */
#ifndef TG_MAPWALK_H
#define TG_MAPWALK_H

#include <linux/types.h>

long tg_map_each(int fd, __u32 key_size, __u32 value_size,
		 int (*fn)(void *ctx, const void *key, const void *value),
		 void *ctx);

#endif /* TG_MAPWALK_H */
