// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_senders - the senders in force: file, agent and kernel map
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	void	tg_senders_stat(struct tg_agent *ag);
 *	int	tg_senders_changed(const struct tg_agent *ag);
 *	int	tg_sync_senders(struct tg_agent *ag,
 *				const struct tg_policy *old,
 *				const struct tg_policy *pol);
 *	int	tg_reload(struct tg_agent *ag, char *err, size_t errlen);
 *	int	tg_sender_change(struct tg_agent *ag, int add,
 *				 const char *entry, char *out, size_t len);
 *	int	tg_sender_check(struct tg_agent *ag, const char *addr,
 *				char *out, size_t len);
 * DESCRIPTION
 *	The senders file is the source; ag->policy is what the agent holds
 *	of it (one of two struct tg_policy, swapped on reload) and
 *	tg_senders what the kernel holds (lib/tg_policy.c does the work).
 *
 *	tg_senders_stat() notes the file as last read or written;
 *	tg_senders_changed() says whether it changed since.
 *
 *	tg_sync_senders() writes pol into the kernel map (old: what is
 *	there now, or NULL), failing closed when it does not fit (the
 *	kernel holds every MAIL without TLS and the agent judges each); 0,
 *	or a negative errno.
 *
 *	tg_reload() (SIGHUP, tlsguardctl reload) reads the file again and
 *	puts it in force, or keeps the senders in force: 0, or -1 with the
 *	reason in err. It never holds two lists of senders: when the list
 *	in force had to go before the new one could be read, and that read
 *	fails, the list comes back from the kernel's map, which kept it;
 *	failing that the map is marked incomplete (the kernel holds every
 *	MAIL without TLS, the agent defers each). With senders from
 *	PostgreSQL it is tg_pgsql_reload(), and sender add|remove are
 *	refused: the database is where they change.
 *
 *	tg_sender_change() (tlsguardctl sender add|remove) and
 *	tg_sender_check() (tlsguardctl sender check) write their answer for
 *	the control channel in out ("ok\n..." or "error: ...\n") and
 *	return its length.
 * DIAGNOSTICS
 *	Each change is logged; a failure is a warning and changes nothing.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tlsguard.skel.h"
#include "tg_agent.h"
#include "tg_log.h"
#include "tg_pgsql.h"
#include "tg_rule.h"
#include "tg_smtp.h"

/* The senders file as last read or written, to tell an edit since. */
void tg_senders_stat(struct tg_agent *ag)
{
	if (stat(ag->opt.senders, &ag->senders_st) < 0)
		memset(&ag->senders_st, 0, sizeof(ag->senders_st));
}

int tg_senders_changed(const struct tg_agent *ag)
{
	struct stat st;

	if (ag->pg)
		return 0;	/* the database is the source, not a file */
	if (stat(ag->opt.senders, &st) < 0)
		return 1;
	return st.st_ino != ag->senders_st.st_ino ||
	       st.st_size != ag->senders_st.st_size ||
	       st.st_mtim.tv_sec != ag->senders_st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != ag->senders_st.st_mtim.tv_nsec;
}

const char tg_senders_unfit[] = "the senders do not all fit in the kernel";

/* How many keys tg_senders may hold, its marker included (max_senders). */
static unsigned tg_senders_room(const struct tg_agent *ag)
{
	return ag->opt.max_senders ? ag->opt.max_senders : TG_SENDERS_MAX;
}

/* The senders into the kernel; fails closed when they do not fit. */
int tg_sync_senders(struct tg_agent *ag, const struct tg_policy *old,
			   const struct tg_policy *pol)
{
	unsigned max = tg_senders_room(ag);
	int incomplete, n;

	n = tg_policy_sync_within(&ag->stab, old, pol, max, &incomplete);
	if (n < 0)
		return n;
	if (incomplete && !ag->ij.policy_incomplete)
		msg_warn("%zu senders do not fit in tg_senders (%u entries): "
			 "every MAIL without TLS is held, and senders who "
			 "are not guaranteed are deferred (raise "
			 "--max-senders)", pol->n, max);
	else if (!incomplete && ag->ij.policy_incomplete)
		msg_info("all %zu senders are in the kernel again", pol->n);
	ag->ij.policy_incomplete = incomplete;
	ag->ij.incomplete_why = tg_senders_unfit;
	ag->metrics.src.senders_incomplete = incomplete;
	ag->metrics.src.senders_in_map = (unsigned)n;
	return 0;
}

static const char tg_senders_lost[] =
	"the senders in force could not be read back";
static const char tg_senders_unsynced[] =
	"the senders could not all be written to the kernel";

/*
 * Pass 2 failed after the list in force was freed; the kernel's map
 * still holds it, unchanged, and enforces it. The agent reads it back
 * from there; failing that, it cannot judge any sender, so the map is
 * marked incomplete: the kernel holds every MAIL without TLS and the
 * agent defers each (law 2: a guaranteed sender is held, never passed).
 */
static int tg_reload_lost(struct tg_agent *ag, struct tg_policy *pol,
			  size_t had, const char *why, char *err,
			  size_t errlen)
{
	int rc = tg_policy_from_map(&ag->stab, pol);

	if (rc >= 0) {
		snprintf(err, errlen, "%s; keeping the senders in force (%zu "
			 "of %zu read back from the kernel's map%s)", why,
			 pol->n, had, rc ? ", which did not hold them all" :
			 "");
		msg_warn("%s", err);
		return -1;
	}
	snprintf(err, errlen, "%s; the senders in force cannot be read back "
		 "from the kernel's map (%s): every MAIL without TLS is held "
		 "and deferred until a reload succeeds", why, strerror(-rc));
	msg_warn("%s", err);
	tg_stab_put(&ag->stab, TG_SENDERS_INCOMPLETE, 1);
	ag->ij.policy_incomplete = ag->metrics.src.senders_incomplete = 1;
	ag->ij.incomplete_why = tg_senders_lost;
	return -1;
}

/*
 * SIGHUP, tlsguardctl reload: 0, or -1 with the reason in err. The agent
 * holds one list of senders, never two (a million: 8 MB each). Pass 1
 * reads the file, checks every line and notes what changed against the
 * list in force; a file that cannot be used leaves everything as it was.
 * A few changes are applied to that list in place. Many: the list is
 * freed and the file read again (pass 2) into one of the size pass 1
 * counted; the kernel's map still holds the old senders meanwhile. Then
 * the map is made to hold the new ones: the walk that prunes it is what
 * tells which are there already (tg_policy_sync_within()).
 */
int tg_reload(struct tg_agent *ag, char *err, size_t errlen)
{
	struct tg_policy *pol = (struct tg_policy *)ag->policy;
	struct tg_senders_scan s;
	struct stat st;
	char why[512];
	size_t had = pol->n;
	int rc;

	if (ag->pg)
		return tg_pgsql_reload(ag, err, errlen);
	tg_mta_read(ag, 0);
	if (tg_policy_scan(ag->opt.senders, pol, &s, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s; keeping the senders in force", why);
		msg_warn("%s", err);
		return -1;
	}
	st = s.st;
	if (!s.full) {
		if (tg_policy_update(pol, &s) < 0) {
			tg_policy_scan_free(&s);
			snprintf(err, errlen, "out of memory; keeping the "
				 "senders in force");
			msg_warn("%s", err);
			return -1;
		}
	} else {
		tg_policy_clear(pol);
		malloc_trim(0);	/* the old list's pages back first */
		if (tg_policy_read(&s, pol, why, sizeof(why)) < 0)
			return tg_reload_lost(ag, pol, had, why, err, errlen);
	}
	/* The file as it was read, not as it may be now. */
	ag->senders_st = st;
	rc = tg_sync_senders(ag, NULL, pol);
	if (rc < 0) {
		/*
		 * The map is part old, part new: the kernel holds every MAIL
		 * without TLS, and the agent answers from the new list.
		 */
		snprintf(err, errlen, "cannot update the kernel policy: %s: "
			 "every MAIL without TLS is held until a reload "
			 "succeeds", strerror(-rc));
		msg_warn("%s", err);
		tg_stab_put(&ag->stab, TG_SENDERS_INCOMPLETE, 1);
		ag->ij.policy_incomplete = ag->metrics.src.senders_incomplete = 1;
		ag->ij.incomplete_why = tg_senders_unsynced;
		return -1;
	}
	malloc_trim(0);		/* what pass 1 and the sync used goes back */
	msg_info("reloaded %s: %zu senders", ag->opt.senders, pol->n);
	return 0;
}

/*
 * tlsguardctl sender add|remove ADDRESS. The kernel map and the file
 * change together or not at all. add: the map first (it may be full),
 * then the file; remove: the file first, then the map, so that a failure
 * leaves the sender guaranteed rather than not. Requests are served one
 * at a time from the event loop, so concurrent changes cannot lose one
 * another; the file is read afresh each time, so an edit by hand is
 * kept too.
 */
int tg_sender_change(struct tg_agent *ag, int add, const char *entry, char *out,
		     size_t len)
{
	struct tg_policy *pol = (struct tg_policy *)ag->policy;
	struct tg_stab *t = &ag->stab;
	char err[600];
	int rc, had = 1, changed, edited, n, i, e, added[2] = { 0, 0 };
	__u64 keys[2], key;
	__u8 v;

	/* keys[0] finds the entry's lines in either form (tg_policy.h) */
	n = tg_policy_entry_keys(entry, keys);
	if (n < 0 || strpbrk(entry, " \t#"))
		return snprintf(out, len,
				"error: malformed sender \"%.80s\": "
				"expected user@domain or @domain\n",
				entry);
	if (ag->pg)
		return snprintf(out, len, "error: the senders come from "
				"PostgreSQL (senders_file = %s): change %s in "
				"the database; tlsguardctl cannot\n",
				ag->opt.senders, entry);
	key = keys[0];
	edited = tg_senders_changed(ag);
	if (edited)
		msg_warn("%s changed since it was read; the change by "
			 "tlsguardctl keeps that edit, which applies at the "
			 "next reload",
			 ag->opt.senders);
	if (add) {
		if (n > 1 && !pol->idn) {
			rc = tg_stab_put(t, TG_KEY_IDN, 1);
			if (rc < 0)
				return snprintf(out, len,
						"error: the kernel's "
						"policy map refused %s: %s\n",
						entry, strerror(-rc));
			pol->idn = 1;
		}
		for (i = 0; i < n; i++) {
			rc = tg_policy_insert(pol, keys[i]);
			if (rc < 0)
				return snprintf(out, len,
						"error: out of memory\n");
			had &= rc;
			if (rc)
				continue;
			added[i] = 1;
			v = (__u8)tg_policy_key_value(pol, keys[i]);
			rc = pol->n + pol->nexempt + 1 > tg_senders_room(ag) ?
				     -E2BIG :
				     tg_stab_put(t, keys[i], v);
			if (rc < 0) {
				e = -rc;
				for (; i >= 0; i--) {
					if (!added[i])
						continue;
					tg_policy_remove(pol, keys[i]);
					if (!tg_policy_key_value(pol, keys[i]))
						tg_stab_del(t, keys[i]);
				}
				msg_warn("sender %s not added: the kernel's "
					 "policy map: %s",
					 entry, strerror(e));
				return snprintf(out, len,
						"error: the kernel's "
						"policy map refused %s: %s%s\n",
						entry, strerror(e),
						e == E2BIG || e == ENOSPC ?
							" (the map is full)" :
							"");
			}
		}
		/*
		 * The file as last read holds the sender exactly when the
		 * policy did: a new one is appended, unless the file was
		 * edited since, which only a full read can tell.
		 */
		if (edited)
			rc = tg_senders_edit(ag->opt.senders, entry, key, 1,
					     err, sizeof(err));
		else
			rc = had ? 1 : tg_senders_add(ag->opt.senders, entry,
						      err, sizeof(err));
		if (rc < 0) {
			for (i = 0; i < n; i++) {
				if (!added[i])
					continue;
				tg_policy_remove(pol, keys[i]);
				if (!tg_policy_key_value(pol, keys[i]))
					tg_stab_del(t, keys[i]);
			}
			msg_warn("sender %s not added: %s", entry, err);
			return snprintf(out, len, "error: %s; %s not added\n",
					err, entry);
		}
		changed = !had || rc == 0;
	} else {
		rc = tg_senders_edit(ag->opt.senders, entry, key, 0, err,
				     sizeof(err));
		if (rc < 0) {
			msg_warn("sender %s not removed: %s", entry, err);
			return snprintf(out, len, "error: %s; %s not removed\n",
					err, entry);
		}
		had = 0;
		for (i = 0; i < n; i++) {
			if (tg_policy_remove(pol, keys[i]) != 0)
				continue;
			had = 1;
			v = (__u8)tg_policy_key_value(pol, keys[i]);
			if (v)
				tg_stab_put(t, keys[i], v);
			else
				tg_stab_del(t, keys[i]);
		}
		if (rc == 1 && !had)
			return snprintf(out, len, "error: %s is not in %s\n",
					entry, ag->opt.senders);
		changed = 1;
	}
	tg_senders_stat(ag);
	if (!changed)
		return snprintf(out, len, "ok\n%s: already guaranteed\n",
				entry);
	msg_info("sender %s: %s by tlsguardctl (%zu senders)", entry,
		 add ? "guaranteed" : "no longer guaranteed", pol->n);
	return snprintf(out, len, "ok\n%s: %s\n", entry,
			add ? "added" : "removed");
}

/* tlsguardctl sender check ADDRESS: what the kernel map decides. */
int tg_sender_check(struct tg_agent *ag, const char *addr, char *out,
		    size_t len)
{
	const char *by;
	__u64 akey, dkey;
	int srs = 0, verdict, rule;

	akey = tg_addr_key_srs(addr, (__u32)strlen(addr), &dkey, &srs);
	if (!akey || addr[0] == '@')
		return snprintf(out, len,
				"error: \"%.80s\" is not an "
				"address\n",
				addr);
	rule = tg_policy_map_rule(&ag->stab, akey, dkey, srs);
	verdict = tg_rule_verdict(rule, &by);
	if (rule == TG_RULE_AGENT && (srs & TG_SENDER_IDN)) {
		/* the kernel holds it for the agent, which maps the domain */
		verdict = tg_policy_lookup_addr(ag->policy, addr, &by);
		if (verdict != TG_POL_GUARANTEED)
			return snprintf(out, len,
					"ok\n%s: not guaranteed "
					"(held without TLS: an "
					"internationalized domain the kernel "
					"cannot map; deferred)\n",
					addr);
	} else if (verdict !=
		   tg_policy_lookup(ag->policy, akey, dkey, srs, NULL))
		msg_warn("sender check %s: the kernel map and the agent's "
			 "policy disagree",
			 addr);
	if (verdict == TG_POL_GUARANTEED)
		return snprintf(out, len,
				"ok\n%s: guaranteed (by its %s "
				"entry)\n",
				addr, by);
	if (verdict == TG_POL_EXEMPT)
		return snprintf(out, len,
				"ok\n%s: exempt (by the exempt "
				"list's %s entry): not held\n",
				addr, by);
	return snprintf(out, len, "ok\n%s: not guaranteed\n", addr);
}
