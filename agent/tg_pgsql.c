// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pgsql - the senders from PostgreSQL (see tg_pgsql.h)
 * DESCRIPTION
 *	One connection, LISTENing on the channel; the socket is in the
 *	agent's epoll set and notifications are read without blocking. A
 *	sync is two short queries and the changes since the last sequence
 *	number, read one row at a time (libpq's single-row mode), so that a
 *	first sync of a million rows never holds the result set: only the
 *	keys are kept. A sync waits for the database: at most connect_timeout
 *	to connect (5 s unless the conninfo says otherwise) and
 *	query_timeout for each answer; a database that does not answer
 *	in time is lost, as a closed connection is.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>

#include "tlsguard.h"
#include "tg_agent.h"
#include "tg_epoll.h"
#include "tg_log.h"
#include "tg_pgsql.h"

#define TG_PG_BACKOFF_MAX	30	/* seconds between tries, at most */

const char tg_pgsql_nopolicy[] = "no policy yet: the database is unreachable "
				 "and there is no snapshot";

/*
 * One row of changes into pol (and into the kernel map once it follows
 * the policy): a live row puts its keys in the list of its kind and takes
 * them out of the other; a tombstone takes them out of both (an exempt
 * key the exempt setting names stays).
 */
static void tg_pg_apply(struct tg_agent *ag, struct tg_policy *pol,
			const char *sender, const char *kind, int live,
			const char *seq)
{
	struct tg_pgsql *pg = ag->pg;
	int exempt = !strcmp(kind, "exempt"), idn = 0, n, i, v, rc = 0;
	__u64 keys[2];
	size_t c;

	n = tg_policy_entry_parse(sender, exempt, keys, &idn);
	if (n < 0 || (strcmp(kind, "guaranteed") && !exempt)) {
		msg_warn("pgsql:%s: change %s: malformed sender \"%.80s\" or "
			 "kind \"%.20s\" (expected user@domain, @domain, or "
			 "for exempt SRS0= or SRS1=; guaranteed or exempt): "
			 "ignored", pg->path, seq, sender, kind);
		return;
	}
	if (pg->bulk) {
		/* A first sync: live rows only, sorted at the end. */
		for (i = 0; i < n && rc >= 0; i++)
			rc = tg_policy_append(exempt ? &pg->dbx : pol, keys[i]);
		pol->idn |= idn;
		if (rc < 0)
			pg->bulk = -1;
		return;
	}
	if (live && idn && !pol->idn) {
		if (pg->map_ready)
			rc = tg_stab_put(&ag->stab, TG_KEY_IDN, 1);
		pol->idn = 1;
	}
	for (i = 0; i < n && rc >= 0; i++) {
		int conf = 0;

		for (c = 0; c < ag->opt.nexempt; c++)
			conf |= ag->opt.exempt[c] == keys[i];
		if (!live || !exempt) {
			tg_policy_remove(&pg->dbx, keys[i]);
			if (!conf)
				tg_policy_exempt_remove(pol, keys[i]);
		}
		if (!live || exempt)
			tg_policy_remove(pol, keys[i]);
		if (live && exempt && (tg_policy_insert(&pg->dbx, keys[i]) < 0 ||
				       tg_policy_exempt_insert(pol, keys[i]) < 0))
			rc = -ENOMEM;
		if (live && !exempt && tg_policy_insert(pol, keys[i]) < 0)
			rc = -ENOMEM;
		if (!pg->map_ready || rc < 0)
			continue;
		v = tg_policy_key_value(pol, keys[i]);
		if (v && pol->n + pol->nexempt + 1 + (pol->idn != 0) >
				 (ag->opt.max_senders ? ag->opt.max_senders :
							TG_SENDERS_MAX))
			rc = -E2BIG;
		else
			rc = v ? tg_stab_put(&ag->stab, keys[i], (__u8)v) :
				 tg_stab_del(&ag->stab, keys[i]);
	}
	if (rc >= 0 || !pg->map_ready)
		return;
	/* Not in the kernel: it holds every MAIL without TLS (fail closed). */
	msg_warn("pgsql:%s: change %s (%s): the kernel's policy map: %s: "
		 "every MAIL without TLS is held and judged by the agent",
		 pg->path, seq, sender, strerror(-rc));
	tg_stab_put(&ag->stab, TG_SENDERS_INCOMPLETE, 1);
	ag->ij.policy_incomplete = ag->metrics.src.senders_incomplete = 1;
	ag->ij.incomplete_why = tg_senders_unfit;
}

/*
 * The rows of sql, one at a time, into pol; *max gets the highest
 * sequence number seen (column 3, when there is one). 0, or -1.
 */
static int tg_pg_stream(struct tg_agent *ag, struct tg_policy *pol,
			const char *sql, unsigned long long *max)
{
	struct tg_pgsql *pg = ag->pg;
	unsigned long long s;
	ExecStatusType st;
	PGresult *r;
	int rc = 0, live;

	if (!PQsendQuery(pg->conn, sql) || !PQsetSingleRowMode(pg->conn)) {
		tg_pg_error(pg, sql);
		return -1;
	}
	while ((r = tg_pg_result(pg))) {
		st = PQresultStatus(r);
		if (st == PGRES_SINGLE_TUPLE && PQnfields(r) >= 2) {
			live = PQnfields(r) < 4 || PQgetvalue(r, 0, 2)[0] == 't';
			s = PQnfields(r) >= 4 ?
				    strtoull(PQgetvalue(r, 0, 3), NULL, 10) : 0;
			tg_pg_apply(ag, pol, PQgetvalue(r, 0, 0),
				    PQgetvalue(r, 0, 1), live,
				    PQnfields(r) >= 4 ? PQgetvalue(r, 0, 3) :
							"(first sync)");
			if (s > *max)
				*max = s;
			ag->pg->changes++;
		} else if (st != PGRES_TUPLES_OK && !rc) {
			tg_pg_error(pg, sql);
			rc = -1;
		}
		PQclear(r);
	}
	return pg->late ? -1 : rc;
}

/* Every live row into a new policy; then into force (or into *pol). */
static int tg_pg_full(struct tg_agent *ag, struct tg_policy *into,
		      const char *id)
{
	struct tg_pgsql *pg = ag->pg;
	struct tg_policy dbx_old = pg->dbx;
	unsigned long long seq = 0, unused = 0;
	char sql[512], val[32];
	int map_ready = pg->map_ready, rc;
	PGresult *r;
	size_t i;

	memset(into, 0, sizeof(*into));
	memset(&pg->dbx, 0, sizeof(pg->dbx));
	if (tg_policy_set_exempt(into, ag->opt.exempt, ag->opt.nexempt) < 0)
		goto fail_mem;
	r = tg_pg_exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
		       PGRES_COMMAND_OK);
	if (!r)
		goto fail;
	PQclear(r);
	snprintf(sql, sizeof(sql), "SELECT coalesce(max(seq), 0) FROM %s",
		 pg->table);
	if (tg_pg_value(pg, sql, val, sizeof(val)) < 0)
		goto fail;
	seq = strtoull(val, NULL, 10);
	/* Only the policy: the map follows it as a whole, later. */
	pg->map_ready = 0;
	pg->bulk = 1;
	snprintf(sql, sizeof(sql), "SELECT sender, kind FROM %s WHERE live",
		 pg->table);
	rc = tg_pg_stream(ag, into, sql, &unused);
	pg->map_ready = map_ready;
	if (pg->bulk < 0) {
		pg->bulk = 0;
		goto fail_mem;
	}
	pg->bulk = 0;
	if (rc < 0)
		goto fail;
	tg_policy_finish(&pg->dbx);
	for (i = 0; i < pg->dbx.n; i++)
		if (tg_policy_exempt_insert(into, pg->dbx.keys[i]) < 0)
			goto fail_mem;
	r = tg_pg_exec(pg, "COMMIT", PGRES_COMMAND_OK);
	if (!r)
		goto fail;
	PQclear(r);
	tg_policy_finish(into);
	pg->seq = seq;
	snprintf(pg->source_id, sizeof(pg->source_id), "%s", id);
	tg_policy_free(&dbx_old);
	return 0;
fail_mem:
	snprintf(pg->err, sizeof(pg->err), "out of memory");
fail:
	pg->map_ready = map_ready;
	tg_policy_free(into);
	tg_policy_free(&pg->dbx);
	pg->dbx = dbx_old;
	if (pg->conn && !pg->late &&
	    PQtransactionStatus(pg->conn) != PQTRANS_IDLE)
		PQclear(tg_pg_exec(pg, "ROLLBACK", PGRES_COMMAND_OK));
	return -1;
}

/* A full sync while the agent runs: the new policy replaces the old. */
static int tg_pg_replace(struct tg_agent *ag, const char *id)
{
	struct tg_policy *next = ag->policy == &ag->policies[0] ?
					 &ag->policies[1] : &ag->policies[0];
	int rc;

	if (tg_pg_full(ag, next, id) < 0)
		return -1;
	/* At start-up the map is filled later, from the policy. */
	rc = ag->pg->map_ready ? tg_sync_senders(ag, ag->policy, next) : 0;
	if (rc < 0) {
		snprintf(ag->pg->err, sizeof(ag->pg->err), "cannot update the "
			 "kernel policy: %s", strerror(-rc));
		tg_policy_free(next);
		return -1;
	}
	tg_policy_free((struct tg_policy *)ag->policy);
	ag->policy = next;
	malloc_trim(0);
	return 0;
}

static void tg_pg_snap_flush(struct tg_pgsql *pg, const struct tg_policy *pol)
{
	char err[TG_SETTING_MAX + 128];

	if (!pg->snap_dirty || tg_mono() < pg->snap_written + 1)
		return;
	pg->snap_written = tg_mono();
	pg->snap_dirty = 0;
	if (tg_pgsql_snap_write(pg, pol, err, sizeof(err)) < 0)
		msg_warn("pgsql:%s: cannot write the snapshot: %s", pg->path,
			 err);
}

/*
 * A sync with the database (connected): the changes since pg->seq, or
 * every live row (no policy yet, or the database is another one, or it
 * pruned tombstones this agent has not seen). 0, or -1 with pg->err set.
 */
static int tg_pg_sync(struct tg_agent *ag)
{
	struct tg_pgsql *pg = ag->pg;
	struct timespec t0, t1;
	unsigned long long max, before = pg->changes;
	char sql[512], id[64], horizon[32];
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	snprintf(sql, sizeof(sql), "SELECT id::text FROM %s",
		 pg->source_table);
	if (tg_pg_value(pg, sql, id, sizeof(id)) < 0)
		return -1;
	snprintf(sql, sizeof(sql), "SELECT horizon FROM %s", pg->source_table);
	if (tg_pg_value(pg, sql, horizon, sizeof(horizon)) < 0)
		return -1;
	if (pg->have == TG_PG_NONE || strcmp(id, pg->source_id) ||
	    pg->seq < strtoull(horizon, NULL, 10)) {
		if (pg->have != TG_PG_NONE)
			msg_info("pgsql:%s: database %s, tombstones pruned up "
				 "to %s (ours: %s, %llu): reading every sender",
				 pg->path, id, horizon, pg->source_id, pg->seq);
		if (tg_pg_replace(ag, id) < 0)
			return -1;
		pg->changes++;
	} else {
		max = pg->seq;
		snprintf(sql, sizeof(sql), "SELECT sender, kind, live, seq "
			 "FROM %s WHERE seq > %llu ORDER BY seq", pg->table,
			 pg->seq);
		rc = tg_pg_stream(ag, (struct tg_policy *)ag->policy, sql, &max);
		pg->seq = max;	/* what was applied stays applied */
		if (rc < 0)
			return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pg->last_sync_seconds = (double)(t1.tv_sec - t0.tv_sec) +
				(double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	pg->synced = time(NULL);
	pg->syncs++;
	pg->next_resync = tg_mono() + pg->resync;
	if (pg->stale || pg->have != TG_PG_DATABASE)
		msg_info("pgsql:%s: synced with the database: %zu senders, "
			 "%zu exempt, sequence %llu (%.3f s)", pg->path,
			 ag->policy->n, ag->policy->nexempt, pg->seq,
			 pg->last_sync_seconds);
	pg->stale = 0;
	pg->have = TG_PG_DATABASE;
	pg->backoff = 0;
	if (pg->changes != before || pg->snap_written == 0)
		pg->snap_dirty = 1;
	return 0;
}

/* The database is gone: the policy stays in force, marked stale. */
static void tg_pg_lost(struct tg_agent *ag)
{
	struct tg_pgsql *pg = ag->pg;

	tg_pg_disconnect(pg);
	pg->failures++;
	if (!pg->stale) {
		pg->stale = 1;
		pg->stale_since = time(NULL);
		if (pg->have == TG_PG_NONE)
			msg_warn("pgsql:%s: %s; no snapshot (%s): failing "
				 "closed: every MAIL without TLS is held and "
				 "deferred", pg->path, pg->err, pg->snapshot);
		else
			msg_warn("pgsql:%s: %s; the %s policy stays in force "
				 "(%zu senders, sequence %llu), stale; retrying",
				 pg->path, pg->err, pg->have == TG_PG_SNAPSHOT ?
				 "snapshot's" : "last synced", ag->policy->n,
				 pg->seq);
	}
	pg->backoff = pg->backoff ? pg->backoff * 2 : 1;
	if (pg->backoff > TG_PG_BACKOFF_MAX)
		pg->backoff = TG_PG_BACKOFF_MAX;
	pg->next_try = tg_mono() + pg->backoff;
}

/* Connect (when not), then sync; the connection in the epoll set. */
static void tg_pg_try(struct tg_agent *ag)
{
	struct tg_pgsql *pg = ag->pg;

	if (!pg->conn && tg_pg_connect(pg) < 0) {
		tg_pg_lost(ag);
		return;
	}
	if (tg_pg_sync(ag) < 0) {
		tg_pg_lost(ag);
		return;
	}
	if (pg->epfd >= 0 && pg->fd >= 0 &&
	    tg_epoll_add(pg->epfd, pg->fd, TG_EP_PGSQL) < 0 && errno != EEXIST)
		msg_warn("pgsql:%s: epoll: %s", pg->path, strerror(errno));
	tg_pg_snap_flush(pg, ag->policy);
}

void tg_pgsql_setup(struct tg_agent *ag)
{
	struct tg_pgsql *pg = calloc(1, sizeof(*pg));
	char err[TG_SETTING_MAX + 256];
	int rc;

	if (!pg)
		msg_fatal("out of memory");
	ag->pg = pg;
	pg->fd = pg->timer_fd = pg->epfd = -1;
	if (tg_pgsql_config(pg, ag->opt.senders + strlen(TG_PGSQL_PREFIX),
			    err, sizeof(err)) < 0)
		msg_fatal("senders_file %s: %s", ag->opt.senders, err);
	rc = tg_pgsql_snap_read(pg, &ag->policies[0], err, sizeof(err));
	if (rc < 0)
		msg_warn("pgsql:%s: snapshot not used: %s", pg->path, err);
	if (rc == 0) {
		struct tg_policy *pol = &ag->policies[0];
		size_t i;

		if (tg_policy_set_exempt(pol, ag->opt.exempt,
					 ag->opt.nexempt) < 0)
			msg_fatal("out of memory");
		for (i = 0; i < pg->dbx.n; i++)
			if (tg_policy_exempt_insert(pol, pg->dbx.keys[i]) < 0)
				msg_fatal("out of memory");
		pg->have = TG_PG_SNAPSHOT;
	} else if (tg_policy_set_exempt(&ag->policies[0], ag->opt.exempt,
					ag->opt.nexempt) < 0)
		msg_fatal("out of memory");
	ag->policy = &ag->policies[0];
	tg_pg_try(ag);
	if (pg->have == TG_PG_SNAPSHOT)
		msg_warn("pgsql:%s: the database is unreachable: enforcing the "
			 "snapshot %s (%zu senders, sequence %llu, of %lld)",
			 pg->path, pg->snapshot, ag->policy->n, pg->seq,
			 (long long)pg->synced);
}

void tg_pgsql_start(struct tg_agent *ag)
{
	struct itimerspec its = { { 1, 0 }, { 1, 0 } };
	struct tg_pgsql *pg = ag->pg;

	pg->map_ready = 1;
	pg->epfd = ag->epfd;
	if (pg->have == TG_PG_NONE) {
		if (tg_stab_put(&ag->stab, TG_SENDERS_INCOMPLETE, 1) < 0)
			msg_fatal("cannot fail closed: the kernel's policy map: "
				  "%s", strerror(errno));
		ag->ij.policy_incomplete = 1;
		ag->metrics.src.senders_incomplete = 1;
		ag->ij.incomplete_why = tg_pgsql_nopolicy;
	}
	pg->timer_fd = timerfd_create(CLOCK_MONOTONIC,
				      TFD_CLOEXEC | TFD_NONBLOCK);
	if (pg->timer_fd < 0 || timerfd_settime(pg->timer_fd, 0, &its, NULL) ||
	    tg_epoll_add(ag->epfd, pg->timer_fd, TG_EP_PGSQL | 1))
		msg_fatal("timerfd: %s", strerror(errno));
	if (pg->fd >= 0 && tg_epoll_add(ag->epfd, pg->fd, TG_EP_PGSQL) < 0)
		msg_fatal("epoll: %s", strerror(errno));
}

void tg_pgsql_event(struct tg_agent *ag, __u32 idx)
{
	struct tg_pgsql *pg = ag->pg;
	int notified = 0;
	PGnotify *n;
	__u64 ticks;

	if (idx == 1) {
		if (read(pg->timer_fd, &ticks, sizeof(ticks)) < 0)
			return;
		if (!pg->conn && tg_mono() >= pg->next_try)
			tg_pg_try(ag);
		else if (pg->conn && tg_mono() >= pg->next_resync)
			tg_pg_try(ag);
		tg_pg_snap_flush(pg, ag->policy);
		return;
	}
	if (!pg->conn)
		return;
	if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) != CONNECTION_OK) {
		tg_pg_error(pg, "connection lost");
		tg_pg_lost(ag);
		return;
	}
	while ((n = PQnotifies(pg->conn))) {
		notified = 1;
		PQfreemem(n);
	}
	if (notified)
		tg_pg_try(ag);
}

int tg_pgsql_reload(struct tg_agent *ag, char *err, size_t errlen)
{
	struct tg_pgsql *pg = ag->pg;

	tg_mta_read(ag, 0);
	tg_pg_try(ag);
	if (!pg->conn) {
		snprintf(err, errlen, "pgsql:%s: %s; keeping the senders in "
			 "force", pg->path, pg->err);
		return -1;
	}
	return 0;
}

void tg_pgsql_close(struct tg_agent *ag)
{
	struct tg_pgsql *pg = ag->pg;

	if (!pg)
		return;
	pg->snap_written = 0;
	tg_pg_snap_flush(pg, ag->policy);
	tg_pg_disconnect(pg);
	if (pg->timer_fd >= 0)
		close(pg->timer_fd);
	tg_policy_free(&pg->dbx);
	free(pg);
	ag->pg = NULL;
}
