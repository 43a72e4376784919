// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mapwalk - every entry of a BPF hash map (see tg_mapwalk.h)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>

#include "tg_mapwalk.h"

#define TG_WALK_BATCH 256

#ifndef ENOTSUPP
#define ENOTSUPP 524	/* the kernel's own, not in <errno.h> */
#endif

/* One key, one lookup: for a kernel without batches for this map. */
static long tg_map_each_key(int fd, __u32 key_size, void *key, void *next,
			    void *value,
			    int (*fn)(void *, const void *, const void *),
			    void *ctx)
{
	void *prev = NULL;
	long n = 0;

	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		memcpy(key, next, key_size);
		prev = key;
		if (bpf_map_lookup_elem(fd, key, value))
			continue;
		n++;
		if (fn(ctx, key, value))
			break;
	}
	return n;
}

long tg_map_each(int fd, __u32 key_size, __u32 value_size,
		 int (*fn)(void *ctx, const void *key, const void *value),
		 void *ctx)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 cap = TG_WALK_BATCH, count, i;
	char *keys, *values, *tmp;
	__u64 in = 0, out = 0;	/* a hash map's batch token is a __u32 */
	long n = 0, rc = 0;
	int first = 1, err, stop = 0;

	keys = malloc((size_t)cap * key_size);
	values = malloc((size_t)cap * value_size);
	if (!keys || !values) {
		rc = -ENOMEM;
		goto out;
	}
	while (!stop) {
		count = cap;
		err = bpf_map_lookup_batch(fd, first ? NULL : &in, &out, keys,
					   values, &count, &opts);
		err = err ? -errno : 0;
		if (err == -ENOSPC && count == 0) {
			/* one bucket holds more than cap entries */
			cap *= 2;
			tmp = realloc(keys, (size_t)cap * key_size);
			if (tmp)
				keys = tmp;
			tmp = tmp ? realloc(values, (size_t)cap * value_size) :
				    NULL;
			if (!tmp) {
				rc = -ENOMEM;
				goto out;
			}
			values = tmp;
			continue;
		}
		if (err && err != -ENOENT) {
			if (first && (err == -EINVAL || err == -ENOTSUP ||
				      err == -EOPNOTSUPP || err == -ENOTSUPP))
				rc = tg_map_each_key(fd, key_size, keys,
						     keys + key_size, values,
						     fn, ctx);
			else
				rc = err;
			goto out;
		}
		for (i = 0; i < count && !stop; i++) {
			n++;
			stop = fn(ctx, keys + (size_t)i * key_size,
				  values + (size_t)i * value_size);
		}
		if (err == -ENOENT)
			break;
		in = out;
		first = 0;
	}
	rc = n;
out:
	free(keys);
	free(values);
	return rc;
}
