// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_policy - the guaranteed senders (see tg_policy.h)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>

#include "tg_smtp.h"
#include "tlsguard.h"
#include "tg_policy.h"

/* Domain: letters, digits, '-', '.', or UTF-8 (SMTPUTF8); no empty label. */
static int tg_domain_ok(const char *d)
{
	const unsigned char *s = (const unsigned char *)d;
	size_t label = 0;

	if (*s == 0)
		return 0;
	for (; *s; s++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s >= 0x80))
			return 0;
		label++;
	}
	return label > 0;
}

int tg_policy_entry_key(const char *entry, __u64 *key)
{
	const char *at = strrchr(entry, '@');
	const unsigned char *s;
	__u64 addr_key, domain_key;
	size_t len = strlen(entry);

	if (!at || !tg_domain_ok(at + 1) || len > TG_ADDR_MAX)
		return -1;
	for (s = (const unsigned char *)entry; s < (const unsigned char *)at; s++)
		if (*s <= ' ' || *s == 0x7f || *s == '<' || *s == '>')
			return -1;
	addr_key = tg_addr_key(entry, (__u32)len, &domain_key);
	if (addr_key == 0 || domain_key == 0)
		return -1;
	*key = (at == entry) ? domain_key : addr_key;
	return 0;
}

static int tg_key_cmp(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

static int tg_policy_add(struct tg_policy *pol, __u64 key)
{
	if (pol->n == pol->cap) {
		size_t cap = pol->cap ? pol->cap * 2 : 256;
		__u64 *k = realloc(pol->keys, cap * sizeof(*k));

		if (!k)
			return -1;
		pol->keys = k;
		pol->cap = cap;
	}
	pol->keys[pol->n++] = key;
	return 0;
}

static void tg_policy_sort(struct tg_policy *pol)
{
	size_t i, j;

	if (pol->n == 0)
		return;
	qsort(pol->keys, pol->n, sizeof(*pol->keys), tg_key_cmp);
	for (i = 1, j = 1; i < pol->n; i++)
		if (pol->keys[i] != pol->keys[j - 1])
			pol->keys[j++] = pol->keys[i];
	pol->n = j;
}

/* Strip a comment and surrounding white space; returns the entry. */
static char *tg_trim(char *line)
{
	char *hash = strchr(line, '#');
	char *end;

	if (hash)
		*hash = 0;
	while (*line == ' ' || *line == '\t')
		line++;
	end = line + strlen(line);
	while (end > line && (end[-1] == ' ' || end[-1] == '\t' ||
			      end[-1] == '\n' || end[-1] == '\r'))
		*--end = 0;
	return line;
}

int tg_policy_load(const char *path, struct tg_policy *pol, char *err,
		   size_t errlen)
{
	struct tg_policy p = { 0 };
	char *line = NULL, *entry;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	__u64 key;
	FILE *fp;

	memset(pol, 0, sizeof(*pol));
	fp = fopen(path, "r");
	if (!fp) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while ((got = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		if (memchr(line, 0, (size_t)got)) {
			snprintf(err, errlen, "%s:%u: NUL byte in line", path,
				 lineno);
			goto fail;
		}
		entry = tg_trim(line);
		if (*entry == 0)
			continue;
		if (strpbrk(entry, " \t")) {
			snprintf(err, errlen,
				 "%s:%u: one sender a line, found \"%.80s\"",
				 path, lineno, entry);
			goto fail;
		}
		if (tg_policy_entry_key(entry, &key) < 0) {
			snprintf(err, errlen,
				 "%s:%u: malformed sender \"%.80s\": expected "
				 "user@domain or @domain", path, lineno, entry);
			goto fail;
		}
		if (tg_policy_add(&p, key) < 0) {
			snprintf(err, errlen, "%s:%u: out of memory", path,
				 lineno);
			goto fail;
		}
	}
	if (ferror(fp)) {
		snprintf(err, errlen, "%s: read error", path);
		goto fail;
	}
	fclose(fp);
	free(line);
	tg_policy_sort(&p);
	*pol = p;
	return 0;
fail:
	fclose(fp);
	free(line);
	tg_policy_free(&p);
	return -1;
}

static int tg_policy_has(const struct tg_policy *pol, __u64 key)
{
	return pol && pol->n &&
	       bsearch(&key, pol->keys, pol->n, sizeof(key), tg_key_cmp);
}

int tg_policy_match(const struct tg_policy *pol, __u64 addr_key,
		    __u64 domain_key)
{
	return tg_policy_has(pol, addr_key) ||
	       (domain_key && tg_policy_has(pol, domain_key));
}

int tg_policy_sync(int map_fd, const struct tg_policy *old,
		   const struct tg_policy *pol)
{
	__u8 one = 1;
	size_t i;

	for (i = 0; i < pol->n; i++)
		if (bpf_map_update_elem(map_fd, &pol->keys[i], &one, BPF_ANY))
			return -errno;
	for (i = 0; old && i < old->n; i++)
		if (!tg_policy_has(pol, old->keys[i]))
			bpf_map_delete_elem(map_fd, &old->keys[i]);
	return 0;
}

int tg_policy_sync_within(int map_fd, const struct tg_policy *old,
			  const struct tg_policy *pol, unsigned max,
			  int *incomplete)
{
	__u64 wild = TG_SENDERS_INCOMPLETE;
	__u8 one = 1;
	size_t i;
	int n = 0;

	/*
	 * Room for the marker is always kept: at most max - 1 senders are
	 * written. The marker goes in before anything can be missing, and
	 * leaves only once every sender is in.
	 */
	*incomplete = pol->n + 1 > max;
	if (*incomplete &&
	    bpf_map_update_elem(map_fd, &wild, &one, BPF_ANY))
		return -errno;
	/* Removed senders first, so that the new ones find room. */
	for (i = 0; old && i < old->n; i++)
		if (!tg_policy_has(pol, old->keys[i]))
			bpf_map_delete_elem(map_fd, &old->keys[i]);
	for (i = 0; i < pol->n; i++) {
		if (bpf_map_update_elem(map_fd, &pol->keys[i], &one, BPF_ANY)) {
			if (errno != E2BIG && errno != ENOSPC &&
			    errno != ENOMEM)
				return -errno;
			if (!*incomplete) {
				*incomplete = 1;
				if (bpf_map_update_elem(map_fd, &wild, &one,
							BPF_ANY))
					return -errno;
			}
			break;
		}
		n++;
	}
	if (!*incomplete)
		bpf_map_delete_elem(map_fd, &wild);
	return n;
}

void tg_policy_free(struct tg_policy *pol)
{
	free(pol->keys);
	memset(pol, 0, sizeof(*pol));
}
