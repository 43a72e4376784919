/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_pgsql - the senders from PostgreSQL: live, with a local snapshot
 * SYNOPSIS
 *	#include "tg_agent.h"
 *
 *	tg_pgsql.c	int	tg_pgsql_source(const char *senders);
 *			void	tg_pgsql_setup(struct tg_agent *ag);
 *			void	tg_pgsql_start(struct tg_agent *ag);
 *			void	tg_pgsql_event(struct tg_agent *ag, __u32 idx);
 *			int	tg_pgsql_reload(struct tg_agent *ag, char *err,
 *						size_t errlen);
 *			void	tg_pgsql_close(struct tg_agent *ag);
 *	tg_pgconn.c	the connection and its queries (its header)
 *	tg_pgsnap.c	int	tg_pgsql_config(struct tg_pgsql *pg,
 *						const char *path, char *err,
 *						size_t errlen);
 *			int	tg_pgsql_snap_read(struct tg_pgsql *pg,
 *						   struct tg_policy *pol,
 *						   char *err, size_t errlen);
 *			int	tg_pgsql_snap_write(struct tg_pgsql *pg,
 *						    const struct tg_policy *pol,
 *						    char *err, size_t errlen);
 *			void	tg_policy_digest(const struct tg_policy *pol,
 *						 char hex[65]);
 *			void	tg_pgsql_status(const struct tg_agent *ag,
 *						FILE *out, int json);
 *			size_t	tg_pgsql_page(const void *ag, char *buf,
 *					      size_t len);
 * DESCRIPTION
 *	senders_file = pgsql:FILE makes PostgreSQL the source of the
 *	guaranteed and exempt senders (dist/pgsql/schema.sql). FILE, which
 *	only its owner may read (it holds the credentials), has lines
 *	"name = value": conninfo (a libpq connection string; required),
 *	changes_table (default tlsguard.sender_changes), source_table
 *	(tlsguard.source), channel (tlsguard_senders), snapshot
 *	(/var/lib/tlsguard/senders.snapshot), resync_interval (seconds,
 *	default 60) and query_timeout (seconds the server has to answer
 *	each query, default 10: past it the connection is dropped and
 *	retried). tg_pgsql_source() says whether a senders_file value
 *	names such a source; tg_pgsql_config() reads FILE: 0, or -1 with
 *	"FILE:LINE: ..." (or "FILE: ...") in err.
 *
 *	The table of changes holds one row per sender ever written: its
 *	canonical form, its kind, whether it is live, and the sequence
 *	number of its last change (a deleted sender is a tombstone). The
 *	database's triggers give sequence numbers in commit order and
 *	NOTIFY the channel on every change.
 *
 *	tg_pgsql_setup() (start-up, before the map is filled) reads FILE,
 *	then the snapshot, then connects: LISTEN, then the changes since
 *	the snapshot's sequence number (or every live row when there is no
 *	snapshot, when the database is another one, or when tombstones the
 *	agent has not seen were pruned), into ag->policies[0]. The database
 *	unreachable: the snapshot is in force, marked stale; no snapshot
 *	either: the policy is empty and, once tg_pgsql_start() runs (after
 *	the map is made), incomplete (TG_SENDERS_INCOMPLETE): the kernel
 *	holds every MAIL without TLS and the agent defers it (451) until a
 *	sync succeeds. A FILE that cannot be read is fatal.
 *
 *	tg_pgsql_start() registers the connection and a one-second timer
 *	on the event loop (TG_EP_PGSQL; idx 0: the socket, 1: the timer).
 *	tg_pgsql_event() serves them: a notification applies the changes
 *	since the last sequence number to the policy and the kernel map; a
 *	lost connection leaves the policy in force, marked stale, and is
 *	retried after 1, 2, 4 ... 30 seconds; every resync_interval the
 *	changes are read even without a notification. After each sync that
 *	changed the policy the snapshot is written again (at most once a
 *	second): tg_pgsql_snap_write(), a temporary file, fsync, rename;
 *	tg_pgsql_snap_read() reads it back (0; 1 when there is none; -1
 *	with the reason in err).
 *
 *	tg_pgsql_reload() (SIGHUP, tlsguardctl reload) reads the MTA's
 *	settings again and syncs now (by sequence number: a read of every
 *	row would hold two policies at once); 0, or -1 with the reason in
 *	err and the policy kept. Every row is read again when the
 *	database's identity changes (UPDATE tlsguard.source SET id =
 *	gen_random_uuid() makes every host do it).
 *
 *	tg_policy_digest() is the SHA-256, in hex, of a policy in force:
 *	its sorted guaranteed keys, then its exempt keys (not its IDN mark,
 *	which stays set on a host that once had such an entry), so that two
 *	hosts that enforce the same entries show the same digest whatever
 *	the order or spelling of the entries, or their history.
 *	tg_pgsql_status() prints the source's part of tlsguardctl status
 *	(json: members to add to the object); tg_pgsql_page() writes its
 *	metrics families into buf and returns their length.
 * DIAGNOSTICS
 *	Every failure names FILE and the cause (libpq's message, the row's
 *	sequence number and text); losing and regaining the database, and
 *	running on the snapshot, are logged once each.
 */
#ifndef TG_PGSQL_H
#define TG_PGSQL_H

#include <stdio.h>
#include <time.h>
#include <linux/types.h>

#include "tg_config.h"
#include "tg_policy.h"

#define TG_PGSQL_PREFIX		"pgsql:"
#define TG_PGSQL_SNAPSHOT	"/var/lib/tlsguard/senders.snapshot"

struct tg_agent;

/* What the policy in force came from. */
enum tg_pgsql_have {
	TG_PG_NONE,		/* nothing: failing closed */
	TG_PG_SNAPSHOT,		/* the snapshot, no sync since start */
	TG_PG_DATABASE,		/* a sync with the database */
};

struct tg_pgsql {
	char path[TG_SETTING_MAX];	/* FILE */
	char conninfo[TG_SETTING_MAX];
	char table[128];		/* changes_table */
	char source_table[128];
	char channel[64];
	char snapshot[TG_SETTING_MAX];
	unsigned resync;		/* resync_interval, seconds */
	unsigned query_timeout;		/* seconds the server has to answer */
	int late;			/* it did not: the connection is lost */
	void *conn;			/* PGconn *; NULL: not connected */
	int fd;				/* its socket, in the epoll set; -1 */
	int timer_fd;
	int epfd;
	int map_ready;			/* the kernel map follows the policy */
	enum tg_pgsql_have have;
	int stale;			/* the database is unreachable */
	char source_id[64];		/* of the database synced with */
	unsigned long long seq;		/* last change applied */
	time_t synced;			/* last sync, wall clock */
	time_t stale_since;
	time_t next_try;		/* monotonic seconds */
	unsigned backoff;
	time_t next_resync;
	int snap_dirty;
	time_t snap_written;		/* monotonic seconds */
	unsigned long long syncs, failures, changes;
	double last_sync_seconds;	/* how long the last sync took */
	int bulk;			/* a first sync: append, sort later */
	struct tg_policy dbx;		/* the database's exempt keys */
	char err[512];			/* the last failure */
};

/* What the agent says of a MAIL it defers while there is no policy. */
extern const char tg_pgsql_nopolicy[];

int tg_pgsql_source(const char *senders);
void tg_pgsql_setup(struct tg_agent *ag);
void tg_pgsql_start(struct tg_agent *ag);
void tg_pgsql_event(struct tg_agent *ag, __u32 idx);
int tg_pgsql_reload(struct tg_agent *ag, char *err, size_t errlen);
void tg_pgsql_close(struct tg_agent *ag);

int tg_pgsql_config(struct tg_pgsql *pg, const char *path, char *err,
		    size_t errlen);
int tg_pgsql_snap_read(struct tg_pgsql *pg, struct tg_policy *pol, char *err,
		       size_t errlen);
int tg_pgsql_snap_write(struct tg_pgsql *pg, const struct tg_policy *pol,
			char *err, size_t errlen);
void tg_policy_digest(const struct tg_policy *pol, char hex[65]);
void tg_pgsql_status(const struct tg_agent *ag, FILE *out, int json);
size_t tg_pgsql_page(const void *ag, char *buf, size_t len);

/* tg_pgconn.c: the connection (libpq's types, for the two files above) */
#ifdef LIBPQ_FE_H
time_t tg_mono(void);
int tg_pg_connect(struct tg_pgsql *pg);
void tg_pg_disconnect(struct tg_pgsql *pg);
void tg_pg_error(struct tg_pgsql *pg, const char *what);
PGresult *tg_pg_result(struct tg_pgsql *pg);
PGresult *tg_pg_exec(struct tg_pgsql *pg, const char *sql,
		     ExecStatusType want);
int tg_pg_value(struct tg_pgsql *pg, const char *sql, char *out, size_t len);
#endif

#endif /* TG_PGSQL_H */
