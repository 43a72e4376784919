// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_policy - the guaranteed senders (see tg_policy.h)
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <bpf/bpf.h>

#include "tg_hostport.h"
#include "tg_idn.h"
#include "tg_rule.h"
#include "tg_smtp.h"
#include "tlsguard.h"
#include "tg_policy.h"
#include "tg_stabmap.h"

int tg_policy_entry_keys(const char *entry, __u64 *keys)
{
	const char *at = strrchr(entry, '@');
	const unsigned char *s;
	__u64 addr_keys[2], domain_keys[2];
	size_t len = strlen(entry);
	int i, n;

	if (!at || !tg_domain_valid(at + 1, TG_DOMAIN_UTF8) || len > TG_ADDR_MAX)
		return -1;
	for (s = (const unsigned char *)entry; s < (const unsigned char *)at; s++)
		if (*s <= ' ' || *s == 0x7f || *s == '<' || *s == '>')
			return -1;
	n = tg_idn_keys(entry, addr_keys, domain_keys);
	for (i = 0; i < n; i++) {
		if (addr_keys[i] == 0 || domain_keys[i] == 0)
			return -1;
		keys[i] = (at == entry) ? domain_keys[i] : addr_keys[i];
	}
	return n;
}

int tg_policy_entry_key(const char *entry, __u64 *key)
{
	__u64 keys[2];

	if (tg_policy_entry_keys(entry, keys) < 0)
		return -1;
	*key = keys[0];
	return 0;
}

static int tg_nonascii(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
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

/*
 * Keys in ascending order, in place. qsort() would do, but glibc's sorts
 * through a copy of the whole array: 8 MB more at the agent's peak for a
 * million senders. A quicksort (median of three, the smaller part first
 * by recursion, so the stack stays O(log n)) with insertion sort for
 * short runs.
 */
static void tg_key_sort(__u64 *k, size_t n)
{
	size_t i, j, lo, hi;
	__u64 p, t;

	while (n > 16) {
		p = k[n / 2];
		if ((k[0] < p) != (p < k[n - 1]))
			p = (k[0] < k[n - 1]) == (k[0] < p) ? k[n - 1] : k[0];
		lo = 0;
		hi = n - 1;
		for (;;) {
			while (k[lo] < p)
				lo++;
			while (k[hi] > p)
				hi--;
			if (lo >= hi)
				break;
			t = k[lo];
			k[lo++] = k[hi];
			k[hi--] = t;
		}
		/* k[0..hi] <= p <= k[hi+1..n-1] */
		if (hi + 1 < n - hi - 1) {
			tg_key_sort(k, hi + 1);
			k += hi + 1;
			n -= hi + 1;
		} else {
			tg_key_sort(k + hi + 1, n - hi - 1);
			n = hi + 1;
		}
	}
	for (i = 1; i < n; i++) {
		t = k[i];
		for (j = i; j > 0 && k[j - 1] > t; j--)
			k[j] = k[j - 1];
		k[j] = t;
	}
}

static void tg_policy_sort(struct tg_policy *pol)
{
	size_t i, j;
	__u64 *k;

	if (pol->n == 0)
		return;
	tg_key_sort(pol->keys, pol->n);
	for (i = 1, j = 1; i < pol->n; i++)
		if (pol->keys[i] != pol->keys[j - 1])
			pol->keys[j++] = pol->keys[i];
	pol->n = j;
	/* What doubling left spare goes back. */
	k = realloc(pol->keys, pol->n * sizeof(*k));
	if (k) {
		pol->keys = k;
		pol->cap = pol->n;
	}
}

/* Strip a comment and surrounding white space; returns the entry. */
static char *tg_trim(char *line)
{
	char *hash = strchr(line, '#');

	if (hash)
		*hash = 0;
	return tg_strip(line);
}

int tg_policy_load(const char *path, struct tg_policy *pol, char *err,
		   size_t errlen)
{
	struct tg_policy p = { 0 };
	char *line = NULL, *entry;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	__u64 keys[2];
	FILE *fp;
	int n;

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
		n = tg_policy_entry_keys(entry, keys);
		if (n < 0) {
			snprintf(err, errlen,
				 "%s:%u: malformed sender \"%.80s\": expected "
				 "user@domain or @domain", path, lineno, entry);
			goto fail;
		}
		/* a domain that is not ASCII: its other spellings too */
		p.idn |= n > 1 || tg_nonascii(strrchr(entry, '@'));
		if (tg_policy_add(&p, keys[0]) < 0 ||
		    (n > 1 && tg_policy_add(&p, keys[1]) < 0)) {
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

static int tg_keys_has(const __u64 *keys, size_t n, __u64 key)
{
	return n && bsearch(&key, keys, n, sizeof(key), tg_key_cmp);
}

static int tg_policy_has(const struct tg_policy *pol, __u64 key)
{
	return pol && tg_keys_has(pol->keys, pol->n, key);
}

static int tg_policy_is_exempt(const struct tg_policy *pol, __u64 key)
{
	return pol && tg_keys_has(pol->exempt, pol->nexempt, key);
}

int tg_policy_exempt_keys(const char *entry, __u64 *keys)
{
	if (strcasecmp(entry, "SRS0=") == 0) {
		keys[0] = TG_KEY_SRS0;
		return 1;
	}
	if (strcasecmp(entry, "SRS1=") == 0) {
		keys[0] = TG_KEY_SRS1;
		return 1;
	}
	return tg_policy_entry_keys(entry, keys);
}

int tg_policy_exempt_key(const char *entry, __u64 *key)
{
	__u64 keys[2];

	if (tg_policy_exempt_keys(entry, keys) < 0)
		return -1;
	*key = keys[0];
	return 0;
}

int tg_policy_set_exempt(struct tg_policy *pol, const __u64 *keys, size_t n)
{
	__u64 *copy = NULL;

	if (n) {
		copy = malloc(n * sizeof(*copy));
		if (!copy)
			return -1;
		memcpy(copy, keys, n * sizeof(*copy));
		qsort(copy, n, sizeof(*copy), tg_key_cmp);
	}
	free(pol->exempt);
	pol->exempt = copy;
	pol->nexempt = n;
	return 0;
}

/* What the kernel map says of one key of pol, or 0 when pol lacks it. */
static __u8 tg_policy_value(const struct tg_policy *pol, __u64 key)
{
	if (tg_policy_is_exempt(pol, key))
		return TG_POL_EXEMPT;
	return tg_policy_has(pol, key) ? TG_POL_GUARANTEED : 0;
}

/* The sorted lists as tg_rule() looks up the kernel map. */
static const __u8 *tg_policy_look(void *ctx, const __u64 *key)
{
	static const __u8 guaranteed = TG_POL_GUARANTEED,
			  exempt = TG_POL_EXEMPT;

	switch (tg_policy_value(ctx, *key)) {
	case TG_POL_GUARANTEED:
		return &guaranteed;
	case TG_POL_EXEMPT:
		return &exempt;
	}
	return NULL;
}

/* The kernel map itself; a value stays valid for a few lookups. */
struct tg_map_look {
	const struct tg_stab *t;
	unsigned n;
	__u8 val[4];
};

static const __u8 *tg_map_look(void *ctx, const __u64 *key)
{
	struct tg_map_look *m = ctx;
	__u8 *v = &m->val[m->n++ % 4];
	int pol = tg_stab_get(m->t, *key);

	/* A table it cannot read holds the sender (as "incomplete" does). */
	if (pol < 0)
		pol = *key == TG_SENDERS_INCOMPLETE ? 1 : 0;
	*v = (__u8)pol;
	return pol ? v : NULL;
}

int tg_policy_map_rule(const struct tg_stab *t, __u64 addr_key,
		       __u64 domain_key, int srs)
{
	struct tg_map_look m = { .t = t };

	return tg_rule(tg_map_look, &m, &addr_key, &domain_key, srs);
}

int tg_rule_verdict(int rule, const char **by)
{
	const char *dummy;

	if (!by)
		by = &dummy;
	*by = rule == TG_RULE_ADDR || rule == TG_RULE_EXEMPT_ADDR ? "address" :
	      rule == TG_RULE_EXEMPT_SRS ? "SRS" : "domain";
	switch (rule) {
	case TG_RULE_ADDR:
	case TG_RULE_DOMAIN:
		return TG_POL_GUARANTEED;
	case TG_RULE_EXEMPT_ADDR:
	case TG_RULE_EXEMPT_DOMAIN:
	case TG_RULE_EXEMPT_SRS:
		return TG_POL_EXEMPT;
	}
	return 0;
}

int tg_policy_lookup(const struct tg_policy *pol, __u64 addr_key,
		     __u64 domain_key, int srs, const char **by)
{
	return tg_rule_verdict(tg_rule(tg_policy_look, (void *)pol, &addr_key,
				       &domain_key, srs), by);
}

int tg_policy_match(const struct tg_policy *pol, __u64 addr_key,
		    __u64 domain_key, int srs)
{
	return tg_policy_lookup(pol, addr_key, domain_key, srs, NULL) ==
	       TG_POL_GUARANTEED;
}


int tg_policy_lookup_addr(const struct tg_policy *pol, const char *addr,
			  const char **by)
{
	__u64 akey, dkey, keys[2], dkeys[2];
	int srs = 0;

	akey = tg_addr_key_srs(addr, (__u32)strlen(addr), &dkey, &srs);
	if (!akey)
		return -1;
	if (!(srs & TG_SENDER_IDN))
		return tg_policy_lookup(pol, akey, dkey, srs, by);
	/* Its A-label form: every entry of pol has that form too. */
	if (tg_idn_keys(addr, keys, dkeys) < 0)
		return -1;
	return tg_policy_lookup(pol, keys[0], dkeys[0], srs & TG_SENDER_SRS,
				by);
}

/*
 * TG_KEY_IDN in the map while pol names an internationalized domain
 * (include/tg_rule.h): before its entries go in, after they leave. old
 * NULL (a table of unknown content) is taken as holding it.
 */
static int tg_policy_idn_mark(struct tg_stab *t, const struct tg_policy *old,
			      const struct tg_policy *pol)
{
	int rc;

	if (pol->idn && (!old || !old->idn))
		return tg_stab_put(t, TG_KEY_IDN, 1);
	if (!pol->idn && (!old || old->idn)) {
		rc = tg_stab_del(t, TG_KEY_IDN);
		return rc < 0 ? rc : 0;
	}
	return 0;
}

/* Delete from the map the keys of old that pol lacks (old may be NULL). */
static int tg_policy_drop(struct tg_stab *t, const struct tg_policy *old,
			  const struct tg_policy *pol)
{
	size_t i;
	int rc;

	for (i = 0; old && i < old->n + old->nexempt; i++) {
		__u64 k = i < old->n ? old->keys[i] : old->exempt[i - old->n];

		if (!tg_policy_value(pol, k)) {
			rc = tg_stab_del(t, k);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

struct tg_want {
	const struct tg_policy *pol;
	int keep_marker;
};

static int tg_want_key(void *ctx, __u64 key)
{
	struct tg_want *w = ctx;

	if (key == TG_SENDERS_INCOMPLETE)
		return w->keep_marker;
	if (key == TG_KEY_IDN)
		return w->pol->idn ? 1 : 0;
	return tg_policy_value(w->pol, key);
}

/*
 * The map as pol says, from a map that holds what old says (old NULL:
 * unknown, e.g. a table a previous agent left pinned: every key in it is
 * checked). Keys only old has go first, then the new and changed ones
 * are written: a sender in both policies is never absent from the map,
 * and an entry that turns exempt is overwritten in place.
 */
int tg_policy_sync(struct tg_stab *t, const struct tg_policy *old,
		   const struct tg_policy *pol)
{
	int incomplete, rc;

	/* A table with room for all: tg_policy_sync_within() never fills it. */
	rc = tg_policy_sync_within(t, old, pol, UINT_MAX, &incomplete);
	return rc < 0 ? rc : 0;
}

int tg_policy_sync_within(struct tg_stab *t, const struct tg_policy *old,
			  const struct tg_policy *pol, unsigned max,
			  int *incomplete)
{
	struct tg_want w = { .pol = pol, .keep_marker = 1 };
	size_t i, total = pol->n + pol->nexempt;
	int n = 0, rc;

	/*
	 * Room for the marker is always kept: at most max - 1 entries are
	 * written. The marker goes in before anything can be missing, and
	 * leaves only once every entry is in. Exempt entries go first: a
	 * sender the kernel holds because its exemption did not fit is
	 * still answered by the agent from the whole policy. A key whose
	 * buckets are all full counts as not fitting too.
	 */
	*incomplete = total + 1 + (pol->idn != 0) > max;
	if (*incomplete) {
		rc = tg_stab_put(t, TG_SENDERS_INCOMPLETE, 1);
		if (rc < 0)
			return rc;
	}
	if (pol->idn) {
		rc = tg_policy_idn_mark(t, old, pol);
		if (rc < 0)
			return rc;
	}
	/* Removed entries first, so that the new ones find room. */
	rc = old ? tg_policy_drop(t, old, pol) :
		   tg_stab_prune(t, tg_want_key, &w);
	if (rc < 0)
		return rc;
	for (i = 0; i < total && i + 1 + (pol->idn != 0) < max; i++) {
		__u64 key = i < pol->nexempt ? pol->exempt[i] :
					       pol->keys[i - pol->nexempt];
		int v = tg_policy_value(pol, key);

		if (old && tg_policy_value(old, key) == v) {
			n += i >= pol->nexempt;
			continue;
		}
		rc = tg_stab_put(t, key, (__u8)v);
		if (rc == -ENOSPC) {
			if (!*incomplete) {
				*incomplete = 1;
				rc = tg_stab_put(t, TG_SENDERS_INCOMPLETE, 1);
				if (rc < 0)
					return rc;
			}
			continue;
		}
		if (rc < 0)
			return rc;
		n += i >= pol->nexempt;
	}
	if (!*incomplete) {
		rc = tg_stab_del(t, TG_SENDERS_INCOMPLETE);
		if (rc < 0)
			return rc;
	}
	if (!pol->idn) {
		rc = tg_policy_idn_mark(t, old, pol);
		if (rc < 0)
			return rc;
	}
	return n;
}

void tg_policy_free(struct tg_policy *pol)
{
	free(pol->keys);
	free(pol->exempt);
	memset(pol, 0, sizeof(*pol));
}

int tg_policy_append(struct tg_policy *pol, __u64 key)
{
	return tg_policy_add(pol, key);
}

void tg_policy_finish(struct tg_policy *pol)
{
	tg_policy_sort(pol);
}

int tg_policy_entry_parse(const char *entry, int exempt, __u64 *keys,
			  int *idn)
{
	int n = exempt ? tg_policy_exempt_keys(entry, keys) :
			 tg_policy_entry_keys(entry, keys);

	if (n > 0)
		*idn = n > 1 || tg_nonascii(strrchr(entry, '@'));
	return n;
}

/* key into the sorted array *keys of *n (capacity *cap: 0 for exact). */
static int tg_keys_insert(__u64 **keys, size_t *n, size_t *cap, __u64 key)
{
	size_t lo = 0, hi = *n, mid;
	__u64 *k;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if ((*keys)[mid] == key)
			return 1;
		if ((*keys)[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!cap || *n == *cap) {
		size_t room = cap ? (*cap ? *cap * 2 : 256) : *n + 1;

		k = realloc(*keys, room * sizeof(*k));
		if (!k)
			return -1;
		*keys = k;
		if (cap)
			*cap = room;
	}
	memmove(&(*keys)[lo + 1], &(*keys)[lo], (*n - lo) * sizeof(**keys));
	(*keys)[lo] = key;
	(*n)++;
	return 0;
}

static int tg_keys_remove(__u64 *keys, size_t *n, __u64 key)
{
	__u64 *k = *n ? bsearch(&key, keys, *n, sizeof(key), tg_key_cmp) :
			NULL;

	if (!k)
		return 1;
	memmove(k, k + 1, (*n - (size_t)(k - keys) - 1) * sizeof(*k));
	(*n)--;
	return 0;
}

int tg_policy_exempt_insert(struct tg_policy *pol, __u64 key)
{
	return tg_keys_insert(&pol->exempt, &pol->nexempt, NULL, key);
}

int tg_policy_exempt_remove(struct tg_policy *pol, __u64 key)
{
	return tg_keys_remove(pol->exempt, &pol->nexempt, key);
}

int tg_policy_has_key(const struct tg_policy *pol, __u64 key)
{
	return tg_policy_has(pol, key);
}

int tg_policy_insert(struct tg_policy *pol, __u64 key)
{
	return tg_keys_insert(&pol->keys, &pol->n, &pol->cap, key);
}

int tg_policy_remove(struct tg_policy *pol, __u64 key)
{
	return tg_keys_remove(pol->keys, &pol->n, key);
}

int tg_policy_key_value(const struct tg_policy *pol, __u64 key)
{
	return tg_policy_value(pol, key);
}

/*
 * entry as a new last line of the senders file: one write() of the whole
 * line with O_APPEND (after a newline when the file lacks its last one),
 * then fsync(). A million-line file is not read or rewritten for one
 * sender more; a crash leaves the file without the line or with it.
 */
static int tg_senders_append(const char *path, const char *entry, char *err,
			     size_t errlen)
{
	char line[TG_ADDR_MAX + 3];
	struct stat st;
	int fd, n, rc = -1;
	char last = '\n';

	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size > 0) {
		int rfd = open(path, O_RDONLY | O_CLOEXEC);

		if (rfd < 0 || pread(rfd, &last, 1, st.st_size - 1) != 1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			if (rfd >= 0)
				close(rfd);
			goto out;
		}
		close(rfd);
	}
	n = snprintf(line, sizeof(line), "%s%s\n", last == '\n' ? "" : "\n",
		     entry);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		snprintf(err, errlen, "%s: entry too long", path);
		goto out;
	}
	if (write(fd, line, (size_t)n) != n || fsync(fd) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

int tg_senders_add(const char *path, const char *entry, char *err,
		   size_t errlen)
{
	return tg_senders_append(path, entry, err, errlen);
}

/*
 * Rewrite the senders file with entry added or with every line of key
 * removed, atomically: a temporary file in the same directory, with the
 * old file's owner and mode, written, fsync()ed, renamed over the old one,
 * then the directory fsync()ed, so that a crash leaves the old file or
 * the new one, never a part.
 */
int tg_senders_edit(const char *path, const char *entry, __u64 key, int add,
		    char *err, size_t errlen)
{
	char tmp[4096], dir[4096], *line = NULL, *copy = NULL, *slash;
	int fd = -1, dfd, found = 0, made = 0, rc = -1;
	FILE *in = NULL, *out = NULL;
	size_t cap = 0;
	ssize_t got;
	struct stat st;
	__u64 k;

	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	in = fopen(path, "r");
	if (!in || fstat(fileno(in), &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	fd = mkstemp(tmp);
	made = fd >= 0;
	if (fd < 0 || fchmod(fd, st.st_mode & 07777) < 0 ||
	    (fchown(fd, st.st_uid, st.st_gid) < 0 && errno != EPERM)) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	out = fdopen(fd, "w");
	if (!out) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	while ((got = getline(&line, &cap, in)) >= 0) {
		free(copy);
		copy = strdup(line);
		if (!copy) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		if (tg_policy_entry_key(tg_trim(copy), &k) == 0 && k == key) {
			found = 1;
			if (!add)
				continue;	/* the line goes */
		}
		fwrite(line, 1, (size_t)got, out);
		if (got && line[got - 1] != '\n')
			fputc('\n', out);
	}
	if (ferror(in)) {
		snprintf(err, errlen, "%s: read error", path);
		goto out;
	}
	if (add && found) {
		rc = 1;
		goto out;
	}
	if (!add && !found) {
		rc = 1;
		goto out;
	}
	if (add)
		fprintf(out, "%s\n", entry);
	if (fflush(out) || ferror(out) || fsync(fileno(out)) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (fclose(out) != 0) {
		out = NULL;
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	out = NULL;
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
		goto out;
	}
	made = 0;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	rc = 0;
out:
	if (out)
		fclose(out);
	if (fd >= 0)
		close(fd);
	if (made)
		unlink(tmp);
	if (in)
		fclose(in);
	free(line);
	free(copy);
	return rc;
}
