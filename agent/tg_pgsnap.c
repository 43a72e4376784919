// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_pgsnap - the PostgreSQL source's file, snapshot, status and
 *	metrics (see tg_pgsql.h)
 * DESCRIPTION
 *	The snapshot is binary, little-endian, of this machine only: a
 *	header (magic, sequence number, source id, time of the sync, counts,
 *	IDN mark), the guaranteed keys, the database's exempt keys, then the
 *	SHA-256 of all that, so that a torn or altered file is refused
 *	rather than enforced.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "tg_agent.h"
#include "tg_hostport.h"
#include "tg_json.h"
#include "tg_log.h"
#include "tg_pgsql.h"

#define TG_SNAP_MAGIC	"tlsguard-pgsql-snapshot-1"

struct tg_snap_head {
	char magic[32];
	__u64 seq;
	__u64 synced;
	__u64 n;
	__u64 nexempt;
	__u32 idn;
	__u32 pad;
	char source_id[64];
};

int tg_pgsql_source(const char *senders)
{
	return !strncmp(senders, TG_PGSQL_PREFIX, strlen(TG_PGSQL_PREFIX));
}

static int tg_pg_ident(const char *v)
{
	if (!*v)
		return 0;
	for (; *v; v++)
		if (!(*v == '_' || *v == '.' || (*v >= 'a' && *v <= 'z') ||
		      (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9')))
			return 0;
	return 1;
}

int tg_pgsql_config(struct tg_pgsql *pg, const char *path, char *err,
		    size_t errlen)
{
	char *line = NULL, *name, *val, *eq;
	unsigned lineno = 0;
	size_t cap = 0;
	struct stat st;
	FILE *fp;
	int rc = -1;

	snprintf(pg->path, sizeof(pg->path), "%s", path);
	snprintf(pg->table, sizeof(pg->table), "tlsguard.sender_changes");
	snprintf(pg->source_table, sizeof(pg->source_table),
		 "tlsguard.source");
	snprintf(pg->channel, sizeof(pg->channel), "tlsguard_senders");
	snprintf(pg->snapshot, sizeof(pg->snapshot), "%s", TG_PGSQL_SNAPSHOT);
	pg->resync = 60;
	pg->query_timeout = 10;
	fp = fopen(path, "r");
	if (!fp || fstat(fileno(fp), &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if ((st.st_mode & 077) || st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: mode %04o, owner uid %u: the file "
			 "holds the database credentials and must be readable "
			 "by its owner (uid %u) only (chmod 600)", path,
			 (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
			 (unsigned)geteuid());
		goto out;
	}
	while (getline(&line, &cap, fp) >= 0) {
		lineno++;
		name = tg_strip(line);
		if (!*name || *name == '#')
			continue;
		eq = strchr(name, '=');
		if (!eq) {
			snprintf(err, errlen, "%s:%u: expected \"name = value\"",
				 path, lineno);
			goto out;
		}
		*eq = 0;
		name = tg_strip(name);
		val = tg_strip(eq + 1);
		if (!strcmp(name, "conninfo"))
			snprintf(pg->conninfo, sizeof(pg->conninfo), "%s", val);
		else if (!strcmp(name, "snapshot") && *val == '/')
			snprintf(pg->snapshot, sizeof(pg->snapshot), "%s", val);
		else if (!strcmp(name, "changes_table") && tg_pg_ident(val) &&
			 strlen(val) < sizeof(pg->table))
			strcpy(pg->table, val);
		else if (!strcmp(name, "source_table") && tg_pg_ident(val) &&
			 strlen(val) < sizeof(pg->source_table))
			strcpy(pg->source_table, val);
		else if (!strcmp(name, "channel") && tg_pg_ident(val) &&
			 strlen(val) < sizeof(pg->channel))
			strcpy(pg->channel, val);
		else if (!strcmp(name, "resync_interval") && atoi(val) >= 1 &&
			 atoi(val) <= 86400)
			pg->resync = (unsigned)atoi(val);
		else if (!strcmp(name, "query_timeout") && atoi(val) >= 1 &&
			 atoi(val) <= 3600)
			pg->query_timeout = (unsigned)atoi(val);
		else {
			snprintf(err, errlen, "%s:%u: %s \"%.80s\": unknown "
				 "name or bad value (conninfo, changes_table, "
				 "source_table, channel, snapshot, "
				 "resync_interval, query_timeout)", path, lineno,
				 name, val);
			goto out;
		}
	}
	if (!pg->conninfo[0]) {
		snprintf(err, errlen, "%s: no conninfo", path);
		goto out;
	}
	rc = 0;
out:
	free(line);
	if (fp)
		fclose(fp);
	return rc;
}

/* The keys of an array, little-endian, into both the file and the hash. */
static int tg_snap_put(FILE *fp, EVP_MD_CTX *md, const void *p, size_t len)
{
	EVP_DigestUpdate(md, p, len);
	return fwrite(p, 1, len, fp) == len ? 0 : -1;
}

/* The snapshot's directory, made (mode 0700) when it is missing. */
static int tg_pg_mkdir(const char *path)
{
	char dir[TG_SETTING_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return -1;
	*slash = 0;
	return mkdir(dir, 0700);
}

int tg_pgsql_snap_write(struct tg_pgsql *pg, const struct tg_policy *pol,
			char *err, size_t errlen)
{
	struct tg_snap_head h = { .seq = pg->seq, .synced = (__u64)pg->synced,
				  .n = pol->n, .nexempt = pg->dbx.n,
				  .idn = (__u32)pol->idn };
	unsigned char sum[EVP_MAX_MD_SIZE];
	char tmp[TG_SETTING_MAX + 16];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned sumlen = 0;
	FILE *fp = NULL;
	int fd, rc = -1;

	memcpy(h.magic, TG_SNAP_MAGIC, sizeof(TG_SNAP_MAGIC));
	snprintf(h.source_id, sizeof(h.source_id), "%s", pg->source_id);
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", pg->snapshot);
	fd = md ? mkstemp(tmp) : -1;
	if (fd < 0 && errno == ENOENT && tg_pg_mkdir(pg->snapshot) == 0) {
		snprintf(tmp, sizeof(tmp), "%s.XXXXXX", pg->snapshot);
		fd = mkstemp(tmp);
	}
	if (fd < 0 || !(fp = fdopen(fd, "w"))) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	if (tg_snap_put(fp, md, &h, sizeof(h)) < 0 ||
	    tg_snap_put(fp, md, pol->keys, pol->n * sizeof(__u64)) < 0 ||
	    tg_snap_put(fp, md, pg->dbx.keys, pg->dbx.n * sizeof(__u64)) < 0 ||
	    !EVP_DigestFinal_ex(md, sum, &sumlen) ||
	    fwrite(sum, 1, sumlen, fp) != sumlen || fflush(fp) ||
	    fsync(fileno(fp)) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, pg->snapshot) < 0) {
		snprintf(err, errlen, "%s: %s", pg->snapshot, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fp)
		fclose(fp);
	if (rc < 0 && fd >= 0)
		unlink(tmp);
	EVP_MD_CTX_free(md);
	return rc;
}

static int tg_snap_get(FILE *fp, EVP_MD_CTX *md, void *p, size_t len)
{
	if (fread(p, 1, len, fp) != len)
		return -1;
	EVP_DigestUpdate(md, p, len);
	return 0;
}

int tg_pgsql_snap_read(struct tg_pgsql *pg, struct tg_policy *pol, char *err,
		       size_t errlen)
{
	unsigned char sum[EVP_MAX_MD_SIZE], want[EVP_MAX_MD_SIZE];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct tg_snap_head h;
	struct stat st;
	unsigned sumlen = 0;
	int rc = -1;
	FILE *fp;

	memset(pol, 0, sizeof(*pol));
	fp = md ? fopen(pg->snapshot, "r") : NULL;
	if (!fp) {
		EVP_MD_CTX_free(md);
		if (errno == ENOENT)
			return 1;
		snprintf(err, errlen, "%s: %s", pg->snapshot, strerror(errno));
		return -1;
	}
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	if (fstat(fileno(fp), &st) < 0 || tg_snap_get(fp, md, &h, sizeof(h)) ||
	    memcmp(h.magic, TG_SNAP_MAGIC, sizeof(TG_SNAP_MAGIC)) ||
	    h.n > (__u64)st.st_size / 8 || h.nexempt > (__u64)st.st_size / 8) {
		snprintf(err, errlen, "%s: not a snapshot of this version",
			 pg->snapshot);
		goto out;
	}
	pol->keys = malloc((h.n ? h.n : 1) * sizeof(__u64));
	pg->dbx.keys = malloc((h.nexempt ? h.nexempt : 1) * sizeof(__u64));
	if (!pol->keys || !pg->dbx.keys) {
		snprintf(err, errlen, "%s: out of memory", pg->snapshot);
		goto out;
	}
	pol->n = pol->cap = h.n;
	pg->dbx.n = pg->dbx.cap = h.nexempt;
	if (tg_snap_get(fp, md, pol->keys, h.n * sizeof(__u64)) ||
	    tg_snap_get(fp, md, pg->dbx.keys, h.nexempt * sizeof(__u64)) ||
	    !EVP_DigestFinal_ex(md, sum, &sumlen) ||
	    fread(want, 1, sumlen, fp) != sumlen ||
	    memcmp(sum, want, sumlen) || fgetc(fp) != EOF) {
		snprintf(err, errlen, "%s: damaged (its checksum does not "
			 "match)", pg->snapshot);
		goto out;
	}
	pol->idn = (int)h.idn;
	pg->seq = h.seq;
	pg->synced = (time_t)h.synced;
	h.source_id[sizeof(h.source_id) - 1] = 0;
	snprintf(pg->source_id, sizeof(pg->source_id), "%s", h.source_id);
	rc = 0;
out:
	if (rc < 0) {
		tg_policy_free(pol);
		tg_policy_free(&pg->dbx);
	}
	fclose(fp);
	EVP_MD_CTX_free(md);
	return rc;
}

void tg_policy_digest(const struct tg_policy *pol, char hex[65])
{
	static const char mark[] = "tlsguard-policy-1";
	unsigned char sum[EVP_MAX_MD_SIZE];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned len = 0, i;
	__u64 n = pol->n;

	hex[0] = 0;
	if (!md)
		return;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, mark, sizeof(mark));
	EVP_DigestUpdate(md, &n, sizeof(n));
	EVP_DigestUpdate(md, pol->keys, pol->n * sizeof(__u64));
	EVP_DigestUpdate(md, pol->exempt, pol->nexempt * sizeof(__u64));
	EVP_DigestFinal_ex(md, sum, &len);
	EVP_MD_CTX_free(md);
	for (i = 0; i < len && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", sum[i]);
}

static const char *tg_pg_state(const struct tg_pgsql *pg)
{
	if (pg->have == TG_PG_NONE)
		return "failing closed";
	return pg->stale ? "stale" : "live";
}

void tg_pgsql_status(const struct tg_agent *ag, FILE *out, int json)
{
	const struct tg_pgsql *pg = ag->pg;
	char digest[65];

	tg_policy_digest(ag->policy, digest);
	if (json) {
		fputs(",\"policy\":{\"source\":", out);
		tg_json_str(out, pg ? "pgsql" : "file");
		fputs(",\"path\":", out);
		tg_json_str(out, pg ? pg->path : ag->opt.senders);
		fprintf(out, ",\"entries\":%zu,\"exempt\":%zu,\"digest\":"
			"\"%s\"", ag->policy->n, ag->policy->nexempt, digest);
		if (pg) {
			fprintf(out, ",\"state\":\"%s\",\"from\":\"%s\","
				"\"stale\":%s,\"sequence\":%llu,"
				"\"last_sync\":%lld,\"last_sync_seconds\":%.3f,"
				"\"error\":",
				tg_pg_state(pg), pg->have == TG_PG_DATABASE ?
				"database" : pg->have == TG_PG_SNAPSHOT ?
				"snapshot" : "none",
				pg->stale ? "true" : "false", pg->seq,
				(long long)pg->synced, pg->last_sync_seconds);
			tg_json_str(out, pg->stale ? pg->err : "");
		}
		fputs("}", out);
		return;
	}
	if (!pg) {
		fprintf(out, "policy:          file %s, %zu senders, "
			"digest %s\n", ag->opt.senders, ag->policy->n, digest);
		return;
	}
	fprintf(out, "policy:          pgsql:%s, %s, %zu senders "
		"(%zu exempt), digest %s\n", pg->path, tg_pg_state(pg),
		ag->policy->n, ag->policy->nexempt, digest);
	if (pg->have == TG_PG_NONE)
		fprintf(out, "policy state:    no policy: the database is "
			"unreachable (%s) and there is no snapshot (%s); every "
			"MAIL without TLS is held and deferred\n", pg->err,
			pg->snapshot);
	else
		fprintf(out, "policy state:    %s, sequence %llu, last sync "
			"%lld (%lld s ago)%s%s\n", pg->have == TG_PG_SNAPSHOT ?
			"enforcing the snapshot" : "synced with the database",
			pg->seq, (long long)pg->synced,
			(long long)(time(NULL) - pg->synced),
			pg->stale ? "; stale: " : "", pg->stale ? pg->err : "");
}

size_t tg_pgsql_page(const void *arg, char *buf, size_t len)
{
	const struct tg_agent *ag = arg;
	const struct tg_pgsql *pg = ag->pg;
	char digest[65];
	int n;

	tg_policy_digest(ag->policy, digest);
	n = snprintf(buf, len,
		"# HELP tlsguard_policy_entries Guaranteed senders in the "
		"policy in force.\n# TYPE tlsguard_policy_entries gauge\n"
		"tlsguard_policy_entries %zu\n"
		"# HELP tlsguard_policy_incomplete 1 when every MAIL without "
		"TLS is held (the senders do not fit, or there are none yet).\n"
		"# TYPE tlsguard_policy_incomplete gauge\n"
		"tlsguard_policy_incomplete %d\n"
		"# HELP tlsguard_policy_info The policy's source and digest "
		"(SHA-256 of the entries in force).\n"
		"# TYPE tlsguard_policy_info gauge\n"
		"tlsguard_policy_info{source=\"%s\",digest=\"%s\"} 1\n"
		"# HELP tlsguard_policy_stale 1 when the policy source cannot "
		"be read and the last one is in force (or none: failing "
		"closed).\n# TYPE tlsguard_policy_stale gauge\n"
		"tlsguard_policy_stale %d\n"
		"# HELP tlsguard_policy_last_sync_timestamp_seconds When the "
		"policy was last read from its source.\n"
		"# TYPE tlsguard_policy_last_sync_timestamp_seconds gauge\n"
		"tlsguard_policy_last_sync_timestamp_seconds %lld\n"
		"# HELP tlsguard_policy_sequence The source's last change "
		"applied.\n# TYPE tlsguard_policy_sequence gauge\n"
		"tlsguard_policy_sequence %llu\n"
		"# HELP tlsguard_policy_from_snapshot 1 when the policy in "
		"force is the local snapshot, not yet synced.\n"
		"# TYPE tlsguard_policy_from_snapshot gauge\n"
		"tlsguard_policy_from_snapshot %d\n"
		"# HELP tlsguard_policy_sync_failures_total Failed "
		"connections and syncs with the policy source.\n"
		"# TYPE tlsguard_policy_sync_failures_total counter\n"
		"tlsguard_policy_sync_failures_total %llu\n",
		ag->policy->n, ag->metrics.src.senders_incomplete,
		pg ? "pgsql" : "file", digest,
		pg ? (pg->stale || pg->have == TG_PG_NONE) : 0,
		pg ? (long long)pg->synced : 0LL, pg ? pg->seq : 0ULL,
		pg ? pg->have == TG_PG_SNAPSHOT : 0,
		pg ? pg->failures : 0ULL);
	return n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
}
