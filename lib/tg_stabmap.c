// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_stabmap - the agent's side of the senders table (see
 *	tg_stabmap.h)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>

#include "tg_stabmap.h"

void tg_stab_init(struct tg_stab *t, int map_fd, __u32 bits)
{
	t->fd = map_fd;
	t->bits = bits;
	t->nbuckets = tg_stab_buckets(bits);
}

static int tg_stab_read(const struct tg_stab *t, __u32 idx,
			struct tg_sbucket *b)
{
	return bpf_map_lookup_elem(t->fd, &idx, b) ? -errno : 0;
}

/*
 * The kernel copies a whole bucket; a reader meanwhile may see the one
 * slot that changes half written, never any other (their bytes are the
 * same before and after).
 */
static int tg_stab_write(const struct tg_stab *t, __u32 idx,
			 const struct tg_sbucket *b)
{
	return bpf_map_update_elem(t->fd, &idx, b, BPF_ANY) ? -errno : 0;
}

/*
 * The run of buckets key may live in: from its home on, while a bucket
 * carries the spill mark, at most TG_STAB_REACH. Calls fn on each until
 * it returns non-zero, and returns that (0 at the end of the run).
 */
static int tg_stab_walk(const struct tg_stab *t, __u64 key,
			int (*fn)(void *ctx, __u32 idx, struct tg_sbucket *b),
			void *ctx)
{
	struct tg_sbucket b;
	__u32 i, idx = tg_stab_home(key, t->bits);
	int rc;

	for (i = 0; i < TG_STAB_REACH; i++, idx++) {
		rc = tg_stab_read(t, idx, &b);
		if (rc)
			return rc;
		rc = fn(ctx, idx, &b);
		if (rc || !b.spill)
			return rc;
	}
	return 0;
}

static int tg_slot_of(const struct tg_sbucket *b, __u64 key)
{
	int i;

	for (i = 0; i < TG_STAB_WAYS; i++)
		if (b->key[i] == key)
			return i;
	return -1;
}

struct tg_find {
	__u64 key;
	int pol;
};

static int tg_find_one(void *ctx, __u32 idx, struct tg_sbucket *b)
{
	struct tg_find *f = ctx;
	int i = tg_slot_of(b, f->key);

	if (i < 0)
		return 0;
	f->pol = b->pol[i];
	return 1;
}

int tg_stab_get(const struct tg_stab *t, __u64 key)
{
	struct tg_find f = { .key = key };
	int rc;

	if (!key)
		return 0;
	rc = tg_stab_walk(t, key, tg_find_one, &f);
	return rc < 0 ? rc : f.pol;
}

struct tg_put {
	const struct tg_stab *t;
	__u64 key;
	__u8 pol;
	int done;		/* key was there: rewritten in place */
	__u32 nfull;		/* full buckets before the first free slot */
	__u32 free_idx;		/* that bucket, when found */
	int found_free;
	__u32 home;
};

static int tg_put_one(void *ctx, __u32 idx, struct tg_sbucket *b)
{
	struct tg_put *p = ctx;
	int i = tg_slot_of(b, p->key), rc;

	if (i >= 0) {
		p->done = 1;
		if (b->pol[i] == p->pol)
			return 1;
		b->pol[i] = p->pol;
		rc = tg_stab_write(p->t, idx, b);
		return rc ? rc : 1;
	}
	if (!p->found_free) {
		if (tg_slot_of(b, 0) >= 0) {
			p->found_free = 1;
			p->free_idx = idx;
		} else {
			p->nfull++;
		}
	}
	return 0;
}

int tg_stab_put(struct tg_stab *t, __u64 key, __u8 pol)
{
	struct tg_put p = { .t = t, .key = key, .pol = pol };
	struct tg_sbucket b;
	__u32 idx, home = tg_stab_home(key, t->bits);
	int rc, i;

	if (!key || !pol)
		return -EINVAL;
	rc = tg_stab_walk(t, key, tg_put_one, &p);
	if (rc < 0)
		return rc;
	if (p.done)
		return 0;
	/*
	 * Not in the table. The run ended at a bucket without the spill
	 * mark (or at the reach); the first free slot may lie beyond a
	 * bucket that had no room but no mark yet, so look on.
	 */
	if (!p.found_free) {
		for (idx = home + p.nfull; idx < home + TG_STAB_REACH; idx++) {
			rc = tg_stab_read(t, idx, &b);
			if (rc)
				return rc;
			if (tg_slot_of(&b, 0) >= 0) {
				p.found_free = 1;
				p.free_idx = idx;
				break;
			}
		}
		if (!p.found_free)
			return -ENOSPC;
	}
	/* The marks on the way first, so that readers go on to the key. */
	for (idx = home; idx < p.free_idx; idx++) {
		rc = tg_stab_read(t, idx, &b);
		if (rc)
			return rc;
		if (b.spill)
			continue;
		b.spill = 1;
		rc = tg_stab_write(t, idx, &b);
		if (rc)
			return rc;
	}
	rc = tg_stab_read(t, p.free_idx, &b);
	if (rc)
		return rc;
	i = tg_slot_of(&b, 0);
	if (i < 0)
		return -EIO;	/* only the agent writes: cannot happen */
	b.key[i] = key;
	b.pol[i] = pol;
	return tg_stab_write(t, p.free_idx, &b);
}

static int tg_del_one(void *ctx, __u32 idx, struct tg_sbucket *b)
{
	struct tg_put *p = ctx;
	int i = tg_slot_of(b, p->key), rc;

	if (i < 0)
		return 0;
	b->key[i] = 0;
	b->pol[i] = 0;
	rc = tg_stab_write(p->t, idx, b);
	return rc ? rc : 1;
}

int tg_stab_del(struct tg_stab *t, __u64 key)
{
	struct tg_put p = { .t = t, .key = key };
	int rc;

	if (!key)
		return 1;
	rc = tg_stab_walk(t, key, tg_del_one, &p);
	return rc < 0 ? rc : rc == 1 ? 0 : 1;
}

#define TG_STAB_CHUNK 1024	/* buckets read at once: 64 KiB */

#ifndef ENOTSUPP
#define ENOTSUPP 524	/* the kernel's own, not in <errno.h> */
#endif

/*
 * Buckets idx .. idx + n - 1 into b. One system call for them all
 * (BPF_MAP_LOOKUP_BATCH, which array maps have had since Linux 5.6)
 * rather than one per bucket: a walk of the default table (262,151
 * buckets) takes 0.06 s instead of 0.25. A kernel without batches gets
 * them one at a time. keys: room for n indexes, which the batch fills.
 */
static int tg_stab_read_run(const struct tg_stab *t, __u32 idx, __u32 n,
			    struct tg_sbucket *b, __u32 *keys)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 prev = idx - 1, out, count = n, j;
	int rc;

	/* The batch starts after the key given: none for bucket 0. */
	rc = bpf_map_lookup_batch(t->fd, idx ? &prev : NULL, &out, keys, b,
				  &count, &opts);
	if ((rc == 0 || errno == ENOENT) && count == n)
		return 0;
	if (rc < 0 && errno != EINVAL && errno != ENOTSUPP &&
	    errno != EOPNOTSUPP && errno != ENOENT)
		return -errno;
	for (j = 0; j < n; j++) {
		rc = tg_stab_read(t, idx + j, &b[j]);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * Every bucket in order, TG_STAB_CHUNK at a time: fn(ctx, idx, b) on
 * each until it returns non-zero, which is returned (0 at the end).
 */
static int tg_stab_scan(const struct tg_stab *t,
			int (*fn)(void *ctx, __u32 idx, struct tg_sbucket *b),
			void *ctx)
{
	struct tg_sbucket *b;
	__u32 idx, n, j, *keys;
	int rc = 0;

	b = calloc(TG_STAB_CHUNK, sizeof(*b));
	keys = calloc(TG_STAB_CHUNK, sizeof(*keys));
	if (!b || !keys) {
		rc = -ENOMEM;
		goto out;
	}
	for (idx = 0; idx < t->nbuckets && !rc; idx += n) {
		n = t->nbuckets - idx < TG_STAB_CHUNK ? t->nbuckets - idx :
							TG_STAB_CHUNK;
		rc = tg_stab_read_run(t, idx, n, b, keys);
		for (j = 0; j < n && !rc; j++)
			rc = fn(ctx, idx + j, &b[j]);
	}
out:
	free(b);
	free(keys);
	return rc;
}

struct tg_prune {
	struct tg_stab *t;
	int (*want)(void *ctx, __u64 key);
	void *ctx;
	int held;
};

static int tg_prune_one(void *ctx, __u32 idx, struct tg_sbucket *b)
{
	struct tg_prune *p = ctx;
	int i, pol, dirty = 0;

	for (i = 0; i < TG_STAB_WAYS; i++) {
		if (!b->key[i])
			continue;
		pol = p->want(p->ctx, b->key[i]);
		if (pol == b->pol[i]) {
			p->held++;
			continue;
		}
		dirty = 1;
		b->pol[i] = (__u8)pol;
		if (pol)
			p->held++;
		else
			b->key[i] = 0;
	}
	return dirty ? tg_stab_write(p->t, idx, b) : 0;
}

int tg_stab_prune(struct tg_stab *t, int (*want)(void *ctx, __u64 key),
		  void *ctx)
{
	struct tg_prune p = { .t = t, .want = want, .ctx = ctx };
	int rc = tg_stab_scan(t, tg_prune_one, &p);

	return rc < 0 ? rc : p.held;
}

struct tg_each {
	int (*fn)(void *ctx, __u64 key, __u8 pol);
	void *ctx;
};

static int tg_each_one(void *ctx, __u32 idx, struct tg_sbucket *b)
{
	struct tg_each *e = ctx;
	int i, rc;

	for (i = 0; i < TG_STAB_WAYS; i++) {
		if (!b->key[i])
			continue;
		rc = e->fn(e->ctx, b->key[i], b->pol[i]);
		if (rc)
			return rc;
	}
	return 0;
}

int tg_stab_each(const struct tg_stab *t,
		 int (*fn)(void *ctx, __u64 key, __u8 pol), void *ctx)
{
	struct tg_each e = { .fn = fn, .ctx = ctx };

	return tg_stab_scan(t, tg_each_one, &e);
}
