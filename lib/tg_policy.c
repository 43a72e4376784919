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

/* Sorted, without duplicates, in place: returns how many are left. */
static size_t tg_key_sort_unique(__u64 *k, size_t n)
{
	size_t i, j;

	if (n == 0)
		return 0;
	tg_key_sort(k, n);
	for (i = 1, j = 1; i < n; i++)
		if (k[i] != k[j - 1])
			k[j++] = k[i];
	return j;
}

/* No spare room: what doubling or duplicates left goes back. */
static void tg_policy_fit(struct tg_policy *pol)
{
	__u64 *k;

	if (pol->cap == pol->n)
		return;
	if (pol->n == 0) {
		free(pol->keys);
		pol->keys = NULL;
		pol->cap = 0;
		return;
	}
	/* Smaller: in place on the heap, mremap() for a mapped chunk. */
	k = realloc(pol->keys, pol->n * sizeof(*k));
	if (k) {
		pol->keys = k;
		pol->cap = pol->n;
	}
}

static void tg_policy_sort(struct tg_policy *pol)
{
	pol->n = tg_key_sort_unique(pol->keys, pol->n);
	tg_policy_fit(pol);
}

/* Strip a comment and surrounding white space; returns the entry. */
static char *tg_trim(char *line)
{
	char *hash = strchr(line, '#');

	if (hash)
		*hash = 0;
	return tg_strip(line);
}

/*
 * The next entry of the senders file: its keys into keys[] (room for
 * two) and *idn set when it names an internationalized domain. Returns
 * how many keys (1 or 2), 0 at the end of the file, or -1 with a message
 * naming the file and the line in err.
 */
static int tg_senders_next(struct tg_senders_scan *s, __u64 *keys, int *idn,
			   char *err, size_t errlen)
{
	char *entry;
	ssize_t got;
	int n;

	while ((got = getline(&s->line, &s->linecap, s->fp)) >= 0) {
		s->lineno++;
		if (memchr(s->line, 0, (size_t)got)) {
			snprintf(err, errlen, "%s:%u: NUL byte in line",
				 s->path, s->lineno);
			return -1;
		}
		entry = tg_trim(s->line);
		if (*entry == 0)
			continue;
		if (strpbrk(entry, " \t")) {
			snprintf(err, errlen,
				 "%s:%u: one sender a line, found \"%.80s\"",
				 s->path, s->lineno, entry);
			return -1;
		}
		n = tg_policy_entry_keys(entry, keys);
		if (n < 0) {
			snprintf(err, errlen,
				 "%s:%u: malformed sender \"%.80s\": expected "
				 "user@domain or @domain", s->path, s->lineno,
				 entry);
			return -1;
		}
		/* a domain that is not ASCII: its other spellings too */
		*idn = n > 1 || tg_nonascii(strrchr(entry, '@'));
		return n;
	}
	if (ferror(s->fp)) {
		snprintf(err, errlen, "%s: read error", s->path);
		return -1;
	}
	return 0;
}

/*
 * Whether the file st0 describes is no longer as it was: its size or
 * modification time. Not its change time, which a rename over its path
 * or a chmod moves while its bytes stay. A write that puts the old
 * modification time back is caught by pass 2's count, when it changes
 * the keys' number; one that does not is read as a file the operator
 * could have written.
 */
static int tg_file_changed(const struct stat *st0, const struct stat *st)
{
	return st->st_ino != st0->st_ino || st->st_dev != st0->st_dev ||
	       st->st_size != st0->st_size ||
	       st->st_mtim.tv_sec != st0->st_mtim.tv_sec ||
	       st->st_mtim.tv_nsec != st0->st_mtim.tv_nsec;
}

static int tg_scan_changed(struct tg_senders_scan *s, char *err,
			   size_t errlen)
{
	struct stat st;

	if (fstat(fileno(s->fp), &st) < 0) {
		snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
		return -1;
	}
	if (!tg_file_changed(&s->st, &st))
		return 0;
	snprintf(err, errlen, "%s: changed while it was read", s->path);
	return TG_POLICY_CHANGED;
}

#define TG_BIT_WORDS(n)	(((n) + 63) / 64)
#define TG_BIT_SET(m, i) ((m)[(i) / 64] |= 1ULL << ((i) % 64))
#define TG_BIT_TEST(m, i) ((m)[(i) / 64] >> ((i) % 64) & 1)

/* Keys beyond what old has, noted before pass 2 is needed instead. */
#define TG_SCAN_ADDED_MIN 4096

/* No more noting: too many new keys, or no memory for them. */
static void tg_scan_unnote(struct tg_senders_scan *s)
{
	free(s->seen);
	free(s->added);
	free(s->dir);
	s->seen = NULL;
	s->added = NULL;
	s->dir = NULL;
	s->nadded = s->addcap = 0;
	s->full = 1;
}

/*
 * old's keys by their top bits: those whose top dirbits bits are h are
 * old->keys[dir[h] .. dir[h + 1]), about 16 of them (keys are FNV-1a
 * hashes, spread evenly). The file's keys come in its order, not the
 * list's: a binary search of a million keys misses the cache at every
 * step and took 0.2 s of a reload; through the directory a key costs a
 * miss or two. Its size: half a byte a sender, for pass 1 only.
 */
static void tg_scan_dir(struct tg_senders_scan *s)
{
	const struct tg_policy *old = s->old;
	size_t h, i = 0, slots;
	unsigned bits = 1;

	while (bits < 32 && ((size_t)16 << bits) < old->n)
		bits++;
	slots = (size_t)1 << bits;
	s->dir = malloc((slots + 1) * sizeof(*s->dir));
	if (!s->dir)
		return;		/* a binary search of the whole list */
	s->dirbits = bits;
	for (h = 0; h < slots; h++) {
		while (i < old->n && (old->keys[i] >> (64 - bits)) < h)
			i++;
		s->dir[h] = i;
	}
	s->dir[slots] = old->n;
}

/* key of the file: marked in old, or noted as added. */
static void tg_scan_note(struct tg_senders_scan *s, __u64 key)
{
	const struct tg_policy *old = s->old;
	size_t lo = 0, hi = old->n, mid, cap;
	__u64 *k;

	if (s->dir) {
		lo = s->dir[key >> (64 - s->dirbits)];
		hi = s->dir[(key >> (64 - s->dirbits)) + 1];
	}
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (old->keys[mid] == key) {
			TG_BIT_SET(s->seen, mid);
			return;
		}
		if (old->keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (s->nadded == s->addcap) {
		cap = s->addcap ? s->addcap * 2 : 256;
		if (cap > s->budget)
			cap = s->budget;
		k = s->nadded < cap ? realloc(s->added, cap * sizeof(*k)) :
				      NULL;
		if (!k) {
			tg_scan_unnote(s);
			return;
		}
		s->added = k;
		s->addcap = cap;
	}
	s->added[s->nadded++] = key;
}

/*
 * key of the file, noted TG_SCAN_LAG keys late. Its directory slot is
 * fetched into the cache at once, its run of old's keys halfway, and it
 * is looked up at the end, when both are there: parsing a line takes
 * longer than a miss, and the misses, not the parsing, were half of
 * pass 1 at a million senders. (The prefetches are written here, not in
 * a function of their own: GCC takes one that only prefetches for pure,
 * and drops the call.)
 */
static void tg_scan_key(struct tg_senders_scan *s, __u64 key)
{
	size_t n = s->nlag++, lo, hi, h;
	__u64 mid;

	if (n >= TG_SCAN_LAG && !s->full)
		tg_scan_note(s, s->lag[n % TG_SCAN_LAG]);
	s->lag[n % TG_SCAN_LAG] = key;
	if (s->full || !s->dir)
		return;
	__builtin_prefetch(&s->dir[key >> (64 - s->dirbits)]);
	if (n < TG_SCAN_LAG / 2)
		return;
	mid = s->lag[(n - TG_SCAN_LAG / 2) % TG_SCAN_LAG];
	h = mid >> (64 - s->dirbits);
	lo = s->dir[h];
	hi = s->dir[h + 1];
	if (lo < hi) {
		__builtin_prefetch(&s->old->keys[lo]);
		__builtin_prefetch(&s->old->keys[lo + (hi - lo) / 2]);
		__builtin_prefetch(&s->old->keys[hi - 1]);
	}
}

/* The keys still in the lag, at the end of the file. */
static void tg_scan_flush(struct tg_senders_scan *s)
{
	size_t i = s->nlag > TG_SCAN_LAG ? s->nlag - TG_SCAN_LAG : 0;

	for (; i < s->nlag && !s->full; i++)
		tg_scan_note(s, s->lag[i % TG_SCAN_LAG]);
}

void tg_policy_scan_free(struct tg_senders_scan *s)
{
	if (s->fp)
		fclose(s->fp);
	free(s->line);
	free(s->seen);
	free(s->added);
	free(s->dir);
	memset(s, 0, sizeof(*s));
}

int tg_policy_scan(const char *path, const struct tg_policy *old,
		   struct tg_senders_scan *s, char *err, size_t errlen)
{
	__u64 keys[2];
	int n, i, idn, rc = -1;

	memset(s, 0, sizeof(*s));
	s->path = path;
	s->full = 1;
	s->fp = fopen(path, "re");
	if (!s->fp || fstat(fileno(s->fp), &s->st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	/* Pass 2 reads it again: a pipe or a device cannot be. */
	if (!S_ISREG(s->st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	if (old && old->n) {
		s->old = old;
		s->budget = old->n / 8 > TG_SCAN_ADDED_MIN ? old->n / 8 :
							     TG_SCAN_ADDED_MIN;
		s->seen = calloc(TG_BIT_WORDS(old->n), sizeof(*s->seen));
		s->full = !s->seen;
		if (s->seen)
			tg_scan_dir(s);
	}
	while ((n = tg_senders_next(s, keys, &idn, err, errlen)) > 0) {
		s->nkeys += (size_t)n;
		s->idn |= idn;
		for (i = 0; i < n && !s->full; i++)
			tg_scan_key(s, keys[i]);
	}
	if (n < 0)
		goto fail;
	tg_scan_flush(s);
	/* What was read must be one state of the file, not two. */
	rc = tg_scan_changed(s, err, errlen);
	if (rc)
		goto fail;
	return 0;
fail:
	tg_policy_scan_free(s);
	return rc;
}

int tg_policy_read(struct tg_senders_scan *s, struct tg_policy *pol,
		   char *err, size_t errlen)
{
	__u64 keys[2], *k = NULL;
	size_t n = 0;
	int got, idn, any_idn = 0, rc = TG_POLICY_CHANGED;
	char why[256];

	/* Exactly as many as pass 1 counted: no doubling, no copy. */
	if (s->nkeys) {
		k = malloc(s->nkeys * sizeof(*k));
		if (!k) {
			snprintf(err, errlen, "%s: out of memory", s->path);
			rc = -1;
			goto out;
		}
	}
	rewind(s->fp);
	s->lineno = 0;
	while ((got = tg_senders_next(s, keys, &idn, why, sizeof(why))) > 0) {
		if (n + (size_t)got > s->nkeys)
			break;
		any_idn |= idn;
		k[n++] = keys[0];
		if (got > 1)
			k[n++] = keys[1];
	}
	/* Pass 1 found every line sound: anything else is a new file. */
	if (got != 0 || n != s->nkeys) {
		snprintf(err, errlen, "%s: changed while it was read", s->path);
		goto out;
	}
	rc = tg_scan_changed(s, err, errlen);
	if (rc)
		goto out;
	pol->keys = k;
	pol->n = pol->cap = n;
	pol->idn = any_idn;
	k = NULL;
	tg_policy_sort(pol);
out:
	free(k);
	tg_policy_scan_free(s);
	return rc;
}

int tg_policy_update(struct tg_policy *pol, struct tg_senders_scan *s)
{
	size_t i, kept = 0, m, w, j;
	__u64 *k;

	if (s->full || s->old != pol)
		return -1;
	m = tg_key_sort_unique(s->added, s->nadded);
	for (i = 0; i < TG_BIT_WORDS(pol->n); i++)
		kept += (size_t)__builtin_popcountll(s->seen[i]);
	/* Room first: pol stays whole when there is none. */
	if (kept + m > pol->cap) {
		k = realloc(pol->keys, (kept + m) * sizeof(*k));
		if (!k)
			return -1;
		pol->keys = k;
		pol->cap = kept + m;
	}
	for (i = 0, w = 0; i < pol->n; i++)
		if (TG_BIT_TEST(s->seen, i))
			pol->keys[w++] = pol->keys[i];
	/* Both sorted: merged from the top down, into the room above. */
	for (i = kept, j = m, w = kept + m; j > 0; w--) {
		if (i > 0 && pol->keys[i - 1] > s->added[j - 1])
			pol->keys[w - 1] = pol->keys[--i];
		else
			pol->keys[w - 1] = s->added[--j];
	}
	pol->n = kept + m;
	pol->idn = s->idn;
	tg_policy_fit(pol);
	tg_policy_scan_free(s);
	return 0;
}

int tg_policy_load(const char *path, struct tg_policy *pol, char *err,
		   size_t errlen)
{
	struct tg_senders_scan s;
	int rc, tries;

	memset(pol, 0, sizeof(*pol));
	/* Nothing is lost by reading it again when it changed meanwhile. */
	for (tries = 0; tries < 3; tries++) {
		rc = tg_policy_scan(path, NULL, &s, err, errlen);
		if (rc == 0)
			rc = tg_policy_read(&s, pol, err, errlen);
		if (rc != TG_POLICY_CHANGED)
			break;
	}
	return rc < 0 ? -1 : 0;
}

void tg_policy_clear(struct tg_policy *pol)
{
	free(pol->keys);
	pol->keys = NULL;
	pol->n = pol->cap = 0;
	pol->idn = 0;
}

struct tg_from_map {
	__u64 *keys;
	size_t n, cap;
	int idn, incomplete;
};

static int tg_from_map_key(void *ctx, __u64 key, __u8 pol)
{
	struct tg_from_map *f = ctx;

	if (key == TG_SENDERS_INCOMPLETE) {
		f->incomplete = 1;
		return 0;
	}
	if (key == TG_KEY_IDN) {
		f->idn = 1;
		return 0;
	}
	if (pol != TG_POL_GUARANTEED)
		return 0;
	if (f->keys && f->n == f->cap)
		return -EAGAIN;	/* the table changed between the walks */
	if (f->keys)
		f->keys[f->n] = key;
	f->n++;
	return 0;
}

int tg_policy_from_map(const struct tg_stab *t, struct tg_policy *pol)
{
	struct tg_from_map f = { 0 };
	int rc;

	/* Counted first, so that the list takes what it needs and no more. */
	rc = tg_stab_each(t, tg_from_map_key, &f);
	if (rc < 0)
		return rc;
	if (f.n) {
		f.keys = malloc(f.n * sizeof(*f.keys));
		if (!f.keys)
			return -ENOMEM;
		f.cap = f.n;
		f.n = 0;
		rc = tg_stab_each(t, tg_from_map_key, &f);
		if (rc < 0) {
			free(f.keys);
			return rc;
		}
	}
	tg_policy_clear(pol);
	pol->keys = f.keys;
	pol->n = pol->cap = f.n;
	pol->idn = f.idn;
	tg_policy_sort(pol);
	return f.incomplete;
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
	/* bit i: entry i of pol (exempt ones first) is in the map already */
	__u64 *found;
	size_t finger;		/* where the last key was looked for */
};

/*
 * Where key is in the sorted keys[] of n, or -1, looked for from
 * *finger on by doubling steps. The walk of the table gives keys in the
 * order of their home buckets, which is their order give or take a
 * bucket or two (a key spills at most TG_STAB_REACH - 1 on): each is a
 * few places from the last, where a binary search of the whole list
 * would take twenty steps.
 */
static ssize_t tg_keys_near(const __u64 *keys, size_t n, size_t *finger,
			    __u64 key)
{
	size_t lo, hi, step, mid, f = *finger < n ? *finger : n - 1;

	if (n == 0)
		return -1;
	if (keys[f] < key) {
		for (step = 1, lo = f + 1; f + step < n && keys[f + step] < key;
		     step *= 2)
			lo = f + step + 1;
		hi = f + step < n ? f + step + 1 : n;
	} else {
		for (step = 1, hi = f + 1; step <= f && keys[f - step] > key;
		     step *= 2)
			hi = f - step;
		lo = step <= f ? f - step : 0;
	}
	/* keys[lo - 1] < key <= keys[hi], or the ends */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	*finger = lo;
	return lo < n && keys[lo] == key ? (ssize_t)lo : -1;
}

/* Where key is in the sorted keys[] of n, or -1. */
static ssize_t tg_keys_index(const __u64 *keys, size_t n, __u64 key)
{
	const __u64 *k = n ? bsearch(&key, keys, n, sizeof(key), tg_key_cmp) :
			     NULL;

	return k ? k - keys : -1;
}

static int tg_want_key(void *ctx, __u64 key)
{
	struct tg_want *w = ctx;
	const struct tg_policy *pol = w->pol;
	ssize_t e, g;

	if (key == TG_SENDERS_INCOMPLETE)
		return w->keep_marker;
	if (key == TG_KEY_IDN)
		return pol->idn ? 1 : 0;
	if (!w->found)
		return tg_policy_value(pol, key);
	/* The map will hold it as pol says: no put for it. */
	e = tg_keys_index(pol->exempt, pol->nexempt, key);
	g = tg_keys_near(pol->keys, pol->n, &w->finger, key);
	if (e >= 0)
		TG_BIT_SET(w->found, (size_t)e);
	if (g >= 0)
		TG_BIT_SET(w->found, pol->nexempt + (size_t)g);
	return e >= 0 ? TG_POL_EXEMPT : g >= 0 ? TG_POL_GUARANTEED : 0;
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
	/*
	 * Without old, the map is the old state: the walk that prunes it
	 * notes which of pol's entries it holds already, and only the
	 * others are written. A reload that changes a few of a million
	 * senders writes a few (without the note, a million puts: 1.3 s).
	 * Without memory for the note, every entry is written.
	 */
	if (!old && total)
		w.found = calloc(TG_BIT_WORDS(total), sizeof(*w.found));
	/* Removed entries first, so that the new ones find room. */
	rc = old ? tg_policy_drop(t, old, pol) :
		   tg_stab_prune(t, tg_want_key, &w);
	if (rc < 0)
		goto out;
	for (i = 0; i < total && i + 1 + (pol->idn != 0) < max; i++) {
		__u64 key = i < pol->nexempt ? pol->exempt[i] :
					       pol->keys[i - pol->nexempt];
		int v;

		if (w.found && TG_BIT_TEST(w.found, i)) {
			n += i >= pol->nexempt;
			continue;
		}
		v = tg_policy_value(pol, key);
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
					goto out;
			}
			continue;
		}
		if (rc < 0)
			goto out;
		n += i >= pol->nexempt;
	}
	if (!*incomplete) {
		rc = tg_stab_del(t, TG_SENDERS_INCOMPLETE);
		if (rc < 0)
			goto out;
	}
	if (!pol->idn) {
		rc = tg_policy_idn_mark(t, old, pol);
		if (rc < 0)
			goto out;
	}
	rc = n;
out:
	free(w.found);
	return rc;
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
