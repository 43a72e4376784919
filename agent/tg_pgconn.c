// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pgconn - the PostgreSQL source's connection (see tg_pgsql.h)
 * SYNOPSIS
 *	#include "tg_pgsql.h"
 *
 *	time_t	tg_mono(void);
 *	int	tg_pg_connect(struct tg_pgsql *pg);
 *	void	tg_pg_disconnect(struct tg_pgsql *pg);
 *	void	tg_pg_error(struct tg_pgsql *pg, const char *what);
 *	PGresult *tg_pg_result(struct tg_pgsql *pg);
 *	PGresult *tg_pg_exec(struct tg_pgsql *pg, const char *sql,
 *			     ExecStatusType want);
 *	int	tg_pg_value(struct tg_pgsql *pg, const char *sql, char *out,
 *			    size_t len);
 * DESCRIPTION
 *	tg_pg_connect() connects with pg->conninfo (plus defaults it may
 *	override: connect_timeout 5 s, TCP keepalives, tcp_user_timeout,
 *	statement_timeout) and LISTENs on pg->channel; 0, or -1 with
 *	pg->err set. The server's notices are logged. tg_pg_disconnect()
 *	closes it and takes its socket out of the epoll set.
 *
 *	tg_pg_result() is the next result of the query sent (NULL after
 *	the last), waiting at most query_timeout seconds for the server;
 *	tg_pg_exec() runs a query that returns at most one row and checks
 *	its status; tg_pg_value() gives the first column of the first row
 *	as text ("" for none). On a timeout or a failed read pg->late is
 *	set: the connection is no longer usable, and the caller drops it.
 *	tg_pg_error() puts libpq's message, on one line, in pg->err.
 *	tg_mono() is the monotonic clock in seconds.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <libpq-fe.h>

#include "tg_log.h"
#include "tg_pgsql.h"

time_t tg_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* libpq's message, on one line. */
void tg_pg_error(struct tg_pgsql *pg, const char *what)
{
	const char *m = pg->conn ? PQerrorMessage(pg->conn) : "out of memory";
	char *nl;

	snprintf(pg->err, sizeof(pg->err), "%s: %s", what, m);
	while ((nl = strpbrk(pg->err, "\n\t")))
		*nl = *(nl + 1) ? ' ' : 0;
}

void tg_pg_disconnect(struct tg_pgsql *pg)
{
	if (pg->fd >= 0 && pg->epfd >= 0)
		epoll_ctl(pg->epfd, EPOLL_CTL_DEL, pg->fd, NULL);
	pg->fd = -1;
	if (pg->conn)
		PQfinish(pg->conn);
	pg->conn = NULL;
	pg->late = 0;
}

/*
 * The next result of the query sent, NULL after the last. The server has
 * query_timeout seconds to answer (a server that accepts TCP but does not
 * answer, stopped or wedged, would otherwise hold the agent's loop): past
 * that, or when the connection fails, NULL with pg->late set and pg->err
 * saying why.
 */
PGresult *tg_pg_result(struct tg_pgsql *pg)
{
	struct pollfd p = { .fd = PQsocket(pg->conn), .events = POLLIN };
	time_t end = tg_mono() + pg->query_timeout;

	while (!pg->late && PQisBusy(pg->conn)) {
		if (end <= tg_mono() ||
		    poll(&p, 1, (int)(end - tg_mono()) * 1000) == 0) {
			snprintf(pg->err, sizeof(pg->err), "no answer from the "
				 "database within %u s (query_timeout)",
				 pg->query_timeout);
			pg->late = 1;
		} else if (!PQconsumeInput(pg->conn)) {
			tg_pg_error(pg, "connection lost");
			pg->late = 1;
		}
	}
	return pg->late ? NULL : PQgetResult(pg->conn);
}

/* A query that returns at most one row; NULL on failure (pg->err set). */
PGresult *tg_pg_exec(struct tg_pgsql *pg, const char *sql,
			    ExecStatusType want)
{
	PGresult *r = NULL, *more;

	if (PQsendQuery(pg->conn, sql))
		r = tg_pg_result(pg);
	while (r && (more = tg_pg_result(pg)))
		PQclear(more);
	if (r && !pg->late && PQresultStatus(r) == want)
		return r;
	if (!pg->late)
		tg_pg_error(pg, sql);
	PQclear(r);
	return NULL;
}

/* The server's notices (its shutdown, for one) go to the log. */
static void tg_pg_notice(void *arg, const char *message)
{
	struct tg_pgsql *pg = arg;

	msg_info("pgsql:%s: the server says: %.*s", pg->path,
		 (int)strcspn(message, "\n"), message);
}

int tg_pg_connect(struct tg_pgsql *pg)
{
	static const char *const keys[] = {
		"connect_timeout", "tcp_user_timeout", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "options",
		"application_name", "dbname", NULL
	};
	const char *vals[] = { "5", "10000", "10", "5", "3",
			       "-c statement_timeout=30000", "tlsguardd",
			       pg->conninfo, NULL };
	char sql[128];
	PGresult *r;

	pg->conn = PQconnectdbParams(keys, vals, 1);
	if (!pg->conn || PQstatus(pg->conn) != CONNECTION_OK) {
		tg_pg_error(pg, "cannot connect");
		tg_pg_disconnect(pg);
		return -1;
	}
	PQsetNoticeProcessor(pg->conn, tg_pg_notice, pg);
	snprintf(sql, sizeof(sql), "LISTEN %s", pg->channel);
	r = tg_pg_exec(pg, sql, PGRES_COMMAND_OK);
	if (!r) {
		tg_pg_disconnect(pg);
		return -1;
	}
	PQclear(r);
	pg->fd = PQsocket(pg->conn);
	return 0;
}

/* The first column of a one-row query as text ("" when NULL). */
int tg_pg_value(struct tg_pgsql *pg, const char *sql, char *out,
		       size_t len)
{
	PGresult *r = tg_pg_exec(pg, sql, PGRES_TUPLES_OK);

	if (!r)
		return -1;
	snprintf(out, len, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return 0;
}
