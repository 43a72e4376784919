/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_policy - the guaranteed senders: senders file and kernel map
 * SYNOPSIS
 *	#include "tg_policy.h"
 *
 *	int	tg_policy_load(const char *path, struct tg_policy *pol,
 *			       char *err, size_t errlen);
 *	int	tg_policy_scan(const char *path, const struct tg_policy *old,
 *			       struct tg_senders_scan *s, char *err,
 *			       size_t errlen);
 *	int	tg_policy_update(struct tg_policy *pol,
 *				 struct tg_senders_scan *s);
 *	int	tg_policy_read(struct tg_senders_scan *s,
 *			       struct tg_policy *pol, char *err,
 *			       size_t errlen);
 *	void	tg_policy_scan_free(struct tg_senders_scan *s);
 *	void	tg_policy_clear(struct tg_policy *pol);
 *	int	tg_policy_from_map(const struct tg_stab *t,
 *				   struct tg_policy *pol);
 *	int	tg_policy_entry_key(const char *entry, __u64 *key);
 *	int	tg_policy_entry_keys(const char *entry, __u64 *keys);
 *	int	tg_policy_exempt_keys(const char *entry, __u64 *keys);
 *	int	tg_policy_lookup_addr(const struct tg_policy *pol,
 *				      const char *addr, const char **by);
 *	int	tg_policy_sync(struct tg_stab *t, const struct tg_policy *old,
 *			       const struct tg_policy *pol);
 *	int	tg_policy_exempt_key(const char *entry, __u64 *key);
 *	int	tg_policy_set_exempt(struct tg_policy *pol,
 *				     const __u64 *keys, size_t n);
 *	int	tg_policy_match(const struct tg_policy *pol,
 *				__u64 addr_key, __u64 domain_key, int srs);
 *	int	tg_policy_lookup(const struct tg_policy *pol,
 *				 __u64 addr_key, __u64 domain_key, int srs,
 *				 const char **by);
 *	int	tg_policy_map_rule(const struct tg_stab *t, __u64 addr_key,
 *				   __u64 domain_key, int srs);
 *	int	tg_rule_verdict(int rule, const char **by);
 *	void	tg_policy_free(struct tg_policy *pol);
 *
 *	int	tg_policy_insert(struct tg_policy *pol, __u64 key);
 *	int	tg_policy_remove(struct tg_policy *pol, __u64 key);
 *	int	tg_policy_key_value(const struct tg_policy *pol, __u64 key);
 *	int	tg_policy_append(struct tg_policy *pol, __u64 key);
 *	void	tg_policy_finish(struct tg_policy *pol);
 *	int	tg_policy_entry_parse(const char *entry, int exempt,
 *				      __u64 *keys, int *idn);
 *	int	tg_policy_exempt_insert(struct tg_policy *pol, __u64 key);
 *	int	tg_policy_exempt_remove(struct tg_policy *pol, __u64 key);
 *	int	tg_policy_has_key(const struct tg_policy *pol, __u64 key);
 *	int	tg_senders_edit(const char *path, const char *entry,
 *				__u64 key, int add, char *err, size_t errlen);
 *	int	tg_senders_add(const char *path, const char *entry,
 *			       char *err, size_t errlen);
 * DESCRIPTION
 *	A senders file holds one entry a line: "user@domain" (one address)
 *	or "@domain" (every address of that domain). '#' starts a comment;
 *	blank lines are ignored. Entries are matched without regard to ASCII
 *	case and without a "+extension" in the local part, by the keys of
 *	tg_addr_key(), the function the kernel's MAIL parser uses too.
 *
 *	tg_policy_load() reads a file into a sorted set of keys. On error it
 *	returns -1 with a message "FILE:LINE: ..." (or "FILE: ...") in err,
 *	and pol is left empty. It reads the file twice: once to check every
 *	line and count the keys, once to store them in a list of that size
 *	(a list grown as it is read would double its memory on the way); a
 *	file changed in between is read again (three times at most).
 *
 *	A reload holds one list of keys, never two (a million senders: 8 MB
 *	each). tg_policy_scan() reads the file once (pass 1), checks each
 *	line as tg_policy_load() does, counts the keys and, against old
 *	(the list in force, or NULL), notes which of old's keys the file
 *	has and which keys it adds, as long as they are few (an eighth of
 *	old, 4096 at least); beyond that, or without old, s->full is set.
 *	It returns 0; -1 with the message in err for a file that cannot be
 *	put in force, or TG_POLICY_CHANGED when the file changed while it
 *	was read; s then holds nothing and old is as it was.
 *	Then either tg_policy_update() (s->full not set; pol is old) makes
 *	pol the file's list in place: 0, or -1 when out of memory (pol
 *	unchanged, s still to be freed); or, once the caller has freed the
 *	list in force (tg_policy_clear()), tg_policy_read() reads the file
 *	again (pass 2) into pol, sized as pass 1 counted: 0; -1 (err:
 *	out of memory), or TG_POLICY_CHANGED when the file is not the one
 *	pass 1 read (pol is then left empty). Both free s; so does
 *	tg_policy_scan_free(), for a scan not used.
 *	tg_policy_clear() frees pol's guaranteed keys and keeps its exempt
 *	ones.
 *
 *	tg_policy_from_map() reads the guaranteed keys back from the kernel's
 *	table t into pol (its exempt keys kept), and sets pol->idn when t
 *	holds TG_KEY_IDN: after a failed pass 2, the senders in force are
 *	where the kernel has them. It returns 0, 1 when t holds
 *	TG_SENDERS_INCOMPLETE (pol then lacks the senders that did not
 *	fit), or a negative errno (pol unchanged). An entry that is both
 *	guaranteed and exempt comes back as exempt only, as the rule reads
 *	it.
 *
 *	An entry whose domain is internationalized (not ASCII, or with an
 *	"xn--" label) stands for both its forms: it has two keys, that of
 *	its A-label form and that of its U-label form (tg_idn.h), and
 *	pol->idn is set; the kernel map then holds TG_KEY_IDN too.
 *
 *	tg_policy_entry_keys() computes the keys of one entry into keys[]
 *	(room for two) and returns how many (1 or 2), or -1 when the entry
 *	is malformed. tg_policy_entry_key() gives the first: the one key
 *	that both forms of an entry share (the A-label form's), by which
 *	tg_senders_edit() finds an entry however it was written.
 *
 *	tg_policy_sync() makes the kernel's senders table t (tg_stabmap.h)
 *	hold exactly the keys of pol: it deletes those only in old, then
 *	writes the new and changed ones; a sender present in both is never
 *	absent. old NULL means the table's content is unknown (a table
 *	another agent left pinned): every key in it that pol lacks is
 *	removed. It is tg_policy_sync_within() with room for all. With old
 *	NULL the walk that prunes the table notes which of pol's keys it
 *	holds already, and only the others are written.
 *
 *	The exempt list (tlsguard.conf's "exempt") holds "user@domain",
 *	"@domain", "SRS0=" and "SRS1=" (every sender a forwarder rewrote
 *	with SRS); tg_policy_exempt_key() computes the key of one such entry
 *	(TG_KEY_SRS0/1 for the last two) or returns -1;
 *	tg_policy_exempt_keys() gives all its keys, as
 *	tg_policy_entry_keys() does.
 *	tg_policy_set_exempt() gives pol a copy of the exempt keys; -1 when
 *	out of memory. tg_policy_sync() writes them as TG_POL_EXEMPT.
 *
 *	tg_policy_lookup() returns TG_POL_EXEMPT, TG_POL_GUARANTEED or 0 for
 *	a sender given by its keys (srs: tg_cmd_srs()), by the rule the
 *	kernel applies (tg_rule(), include/tg_rule.h) to pol's lists: an
 *	exempt entry wins. *by, if by is not NULL, names the kind of entry
 *	that decided ("address", "domain", "SRS").
 *	tg_policy_match() says whether the sender is guaranteed.
 *	tg_policy_lookup_addr() does what tg_policy_lookup() does for an
 *	address given as text, its domain mapped by IDNA when it is not
 *	ASCII; -1 when the address is malformed.
 *	tg_policy_map_rule() applies the rule to the kernel's table t
 *	itself, and returns tg_rule()'s answer; tg_rule_verdict() turns
 *	such an answer into tg_policy_lookup()'s (a sender the kernel holds
 *	only because the map is incomplete is not guaranteed by it).
 *
 *	tg_policy_insert() and tg_policy_remove() change one guaranteed key
 *	in place: 0 when done, 1 when there was nothing to do, -1 when out
 *	of memory. tg_policy_key_value() is what the kernel map must hold
 *	for key (TG_POL_* or 0 for nothing). tg_policy_exempt_insert() and
 *	tg_policy_exempt_remove() do the same for one exempt key;
 *	tg_policy_has_key() says whether key is a guaranteed one.
 *
 *	A policy built from another source than a file (tg_pgsql.h) is
 *	made with tg_policy_append() (one guaranteed key, unsorted; 0, or
 *	-1 when out of memory), then tg_policy_finish() (sorted, without
 *	duplicates, without spare room). tg_policy_entry_parse() computes
 *	the keys of one entry as tg_policy_entry_keys() does, or as
 *	tg_policy_exempt_keys() when exempt is set, and sets *idn when the
 *	entry needs TG_KEY_IDN in the map (pol->idn).
 *
 *	tg_senders_edit() appends entry to the senders file (add) or drops
 *	every line whose entry has key (!add), atomically: temporary file,
 *	fsync, rename, fsync of the directory; comments and other lines stay
 *	as they were. It returns 0 when the file changed, 1 when entry was
 *	already there (add) or no line had key (!add), -1 with a message
 *	naming the file in err. tg_senders_add() appends entry as a line of
 *	its own (one write, fsync) without reading the file: for a sender
 *	the caller knows is not in it; 0, or -1 with a message in err.
 *	tg_policy_sync_within() does the same for a map of max entries, and
 *	fails closed when pol does not fit: it sets TG_SENDERS_INCOMPLETE
 *	(see tlsguard.h: the kernel then holds every MAIL without TLS and
 *	the agent answers from pol) before any sender can be missing,
 *	removes the senders only in old, writes as many of pol as fit, and
 *	clears the marker only when all of pol is in. It returns how many
 *	senders it wrote, or a negative errno, and sets *incomplete.
 */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <linux/types.h>

struct tg_stab;

/* tg_policy_scan(), tg_policy_read(): the file is not as it was. */
#define TG_POLICY_CHANGED	(-2)

struct tg_policy {
	__u64 *keys;		/* guaranteed: sorted, unique */
	size_t n;
	size_t cap;
	__u64 *exempt;		/* exempt: sorted, unique */
	size_t nexempt;
	int idn; /* an entry names an internationalized
		  * domain: TG_KEY_IDN goes in the map */
};

#define TG_SCAN_LAG	8

/* A senders file between pass 1 and what follows (tg_policy_scan()). */
struct tg_senders_scan {
	FILE *fp;
	const char *path;
	struct stat st;		/* the file as pass 1 read it */
	char *line;
	size_t linecap;
	unsigned lineno;
	size_t nkeys;		/* keys of its entries (duplicates too) */
	int idn;		/* an entry names an internationalized domain */
	int full;		/* pass 2 is needed: the changes were not noted */
	const struct tg_policy *old;
	__u64 *seen;		/* bit i: old->keys[i] is in the file */
	__u64 *added;		/* keys old lacks, unsorted */
	size_t nadded, addcap, budget;
	size_t *dir;		/* where old's keys of each top bits start */
	unsigned dirbits;
	__u64 lag[TG_SCAN_LAG];	/* keys read, not yet looked up in old */
	size_t nlag;
};

int tg_policy_load(const char *path, struct tg_policy *pol, char *err,
		   size_t errlen);
int tg_policy_scan(const char *path, const struct tg_policy *old,
		   struct tg_senders_scan *s, char *err, size_t errlen);
int tg_policy_update(struct tg_policy *pol, struct tg_senders_scan *s);
int tg_policy_read(struct tg_senders_scan *s, struct tg_policy *pol,
		   char *err, size_t errlen);
void tg_policy_scan_free(struct tg_senders_scan *s);
void tg_policy_clear(struct tg_policy *pol);
int tg_policy_from_map(const struct tg_stab *t, struct tg_policy *pol);
int tg_policy_entry_key(const char *entry, __u64 *key);
int tg_policy_entry_keys(const char *entry, __u64 *keys);
int tg_policy_exempt_keys(const char *entry, __u64 *keys);
int tg_policy_lookup_addr(const struct tg_policy *pol, const char *addr,
			  const char **by);
int tg_policy_sync(struct tg_stab *t, const struct tg_policy *old,
		   const struct tg_policy *pol);
int tg_policy_exempt_key(const char *entry, __u64 *key);
int tg_policy_set_exempt(struct tg_policy *pol, const __u64 *keys, size_t n);
int tg_policy_sync_within(struct tg_stab *t, const struct tg_policy *old,
			  const struct tg_policy *pol, unsigned max,
			  int *incomplete);
int tg_policy_match(const struct tg_policy *pol, __u64 addr_key,
		    __u64 domain_key, int srs);
int tg_policy_lookup(const struct tg_policy *pol, __u64 addr_key,
		     __u64 domain_key, int srs, const char **by);
int tg_policy_map_rule(const struct tg_stab *t, __u64 addr_key,
		       __u64 domain_key, int srs);
int tg_rule_verdict(int rule, const char **by);
void tg_policy_free(struct tg_policy *pol);
int tg_policy_insert(struct tg_policy *pol, __u64 key);
int tg_policy_remove(struct tg_policy *pol, __u64 key);
int tg_policy_key_value(const struct tg_policy *pol, __u64 key);
int tg_policy_append(struct tg_policy *pol, __u64 key);
void tg_policy_finish(struct tg_policy *pol);
int tg_policy_entry_parse(const char *entry, int exempt, __u64 *keys,
			  int *idn);
int tg_policy_exempt_insert(struct tg_policy *pol, __u64 key);
int tg_policy_exempt_remove(struct tg_policy *pol, __u64 key);
int tg_policy_has_key(const struct tg_policy *pol, __u64 key);
int tg_senders_add(const char *path, const char *entry, char *err,
		   size_t errlen);
int tg_senders_edit(const char *path, const char *entry, __u64 key, int add,
		    char *err, size_t errlen);

#endif /* TG_POLICY_H */
