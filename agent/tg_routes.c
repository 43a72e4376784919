// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_routes - the MTA's routes (see tg_routes.h)
 * DESCRIPTION
 *	Postfix's settings are read through postconf(1) and postmap(1) of
 *	the instance (-c DIR), as Postfix itself would expand them ($name,
 *	compatibility defaults, master.cf overrides): a copy of main.cf's
 *	grammar here would disagree with it sooner or later.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_routes.h"
#include "tg_sys.h"

#define TG_POSTCONF	"/usr/sbin/postconf"
#define TG_POSTMAP	"/usr/sbin/postmap"
#define TG_OUT_MAX	(256 * 1024) /* bytes of a tool's output read */
#define TG_SERVICES_MAX 64

/* An smtp service of master.cf, with its overrides. */
struct tg_service {
	char name[64];
	int wrapper;	     /* -1: main.cf's; else -o smtp_tls_wrappermode */
	char relayhost[256]; /* -o relayhost, "" for none */
};

struct tg_rd {
	struct tg_routes *rt;
	const char *dir;
	const __u16 *ports, *tls_ports;
	unsigned nports, ntls_ports;
	int wrapper; /* main.cf's smtp_tls_wrappermode */
	struct tg_service svc[TG_SERVICES_MAX];
	unsigned nsvc;
};

/* The value of "name = value" lines of postconf's output, or NULL. */
static const char *tg_param(char *out, const char *name, char *val, size_t len)
{
	size_t n = strlen(name);
	char *line, *eol;

	for (line = out; line && *line; line = eol ? eol + 1 : NULL) {
		eol = strchr(line, '\n');
		if (strncmp(line, name, n) == 0 &&
		    strncmp(line + n, " =", 2) == 0) {
			const char *v = line + n + 2;
			size_t k = eol ? (size_t)(eol - v) : strlen(v);

			while (k && (*v == ' ' || *v == '\t')) {
				v++;
				k--;
			}
			if (k >= len)
				k = len - 1;
			memcpy(val, v, k);
			val[k] = 0;
			return val;
		}
	}
	return NULL;
}

static int tg_yes(const char *v)
{
	return !strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
	       !strcmp(v, "1");
}

int tg_nexthop_port(const char *dest, unsigned *port)
{
	static const struct {
		const char *name;
		unsigned port;
	} known[] = { { "smtp", 25 },
		      { "submission", 587 },
		      { "smtps", 465 },
		      { "submissions", 465 } };
	const char *p = NULL, *end;
	struct servent *se;
	char *stop;
	unsigned long v;
	size_t i;

	if (dest[0] == '[') {
		end = strchr(dest, ']');
		if (!end)
			return -1;
		if (end[1] == ':')
			p = end + 2;
		else if (end[1])
			return -1;
	} else {
		p = strrchr(dest, ':');
		if (p)
			p++;
	}
	if (!p) {
		*port = 25; /* Postfix's smtp service: port 25 */
		return 0;
	}
	if (!*p)
		return -1;
	errno = 0;
	v = strtoul(p, &stop, 10);
	if (!errno && !*stop && v > 0 && v < 65536) {
		*port = (unsigned)v;
		return 0;
	}
	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcasecmp(p, known[i].name)) {
			*port = known[i].port;
			return 0;
		}
	se = getservbyname(p, "tcp");
	if (!se)
		return -1;
	*port = ntohs((unsigned short)se->s_port);
	return 0;
}

static int tg_in(const __u16 *list, unsigned n, unsigned port)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (list[i] == port)
			return 1;
	return 0;
}

static struct tg_service *tg_service(struct tg_rd *rd, const char *name)
{
	unsigned i;

	for (i = 0; i < rd->nsvc; i++)
		if (!strcmp(rd->svc[i].name, name))
			return &rd->svc[i];
	return NULL;
}

/* One next hop (a list of destinations) of one setting. */
static void tg_route_add(struct tg_rd *rd, const char *setting,
			 const char *nexthop, int wrapper)
{
	struct tg_routes *rt = rd->rt;
	char dest[256];
	const char *s = nexthop;
	struct tg_route *r;
	unsigned port;
	size_t k;

	/* Postfix 3.5 and later: a list of destinations */
	for (; *s; s += strspn(s, ", \t")) {
		k = strcspn(s, ", \t");
		if (!k)
			continue;
		if (k >= sizeof(dest))
			k = sizeof(dest) - 1;
		memcpy(dest, s, k);
		dest[k] = 0;
		s += k;
		if (tg_nexthop_port(dest, &port) < 0)
			port = 0; /* unknown: not guarded */
		if (rt->n == TG_ROUTES_MAX) {
			rt->dropped++;
			continue;
		}
		r = &rt->r[rt->n++];
		snprintf(r->setting, sizeof(r->setting), "%s", setting);
		snprintf(r->value, sizeof(r->value), "%s", dest);
		r->port = port;
		r->wrapper = wrapper;
		r->guarded =
			port &&
			(wrapper ? tg_in(rd->tls_ports, rd->ntls_ports, port) :
				   tg_in(rd->ports, rd->nports, port));
		rt->unguarded += !r->guarded;
	}
}

/*
 * "transport:nexthop" (or "transport", or ":nexthop" for the default
 * transport) of one setting. Only smtp services leave by SMTP.
 */
static void tg_transport(struct tg_rd *rd, const char *setting,
			 const char *value, const char *def_transport)
{
	char transport[64];
	const char *colon = strchr(value, ':');
	size_t k = colon ? (size_t)(colon - value) : strlen(value);
	struct tg_service *svc;
	int wrapper;

	if (k == 0 && def_transport) {
		value = def_transport;
		colon = strchr(value, ':');
		k = colon ? (size_t)(colon - value) : strlen(value);
	}
	if (k == 0 || k >= sizeof(transport))
		return;
	memcpy(transport, value, k);
	transport[k] = 0;
	svc = tg_service(rd, transport);
	if (!svc)
		return; /* not an smtp service */
	wrapper = svc->wrapper >= 0 ? svc->wrapper : rd->wrapper;
	if (colon && colon[1])
		tg_route_add(rd, setting, colon + 1, wrapper);
	else if (!svc->relayhost[0] && wrapper)
		/* an MX lookup in wrapper mode: port 25 in TLS */
		tg_route_add(rd, setting, "mx-lookup", wrapper);
}

static void tg_unread(struct tg_routes *rt, const char *setting,
		      const char *map)
{
	size_t n = strlen(rt->unread);

	snprintf(rt->unread + n, sizeof(rt->unread) - n, "%s%.60s %.120s",
		 n ? "; " : "", setting, map);
}

/*
 * Every entry of one table (type:name) of setting; kind 'r' for
 * next hops (relayhost maps), 't' for transports.
 */
static void tg_table(struct tg_rd *rd, const char *setting, const char *map,
		     int kind, const char *def_transport)
{
	static const char *const listable[] = { "hash", "btree",    "lmdb",
						"cdb",	"texthash", "inline",
						"dbm",	"sdbm" };
	char type[32], label[200], key[128];
	const char *m = map, *colon;
	char *out, *line, *eol, *tab, *argv[6];
	size_t i, k;

	if (!strncmp(m, "proxy:", 6))
		m += 6;
	colon = strchr(m, ':');
	k = colon ? (size_t)(colon - m) : 0;
	if (!k || k >= sizeof(type)) {
		tg_unread(rd->rt, setting, map);
		return;
	}
	memcpy(type, m, k);
	type[k] = 0;
	if (!strcmp(type, "static")) {
		/* static:VALUE answers VALUE for every key */
		snprintf(label, sizeof(label), "%.50s %.140s", setting, map);
		if (kind == 'r')
			tg_route_add(rd, label, colon + 1, rd->wrapper);
		else
			tg_transport(rd, label, colon + 1, def_transport);
		return;
	}
	for (i = 0; i < sizeof(listable) / sizeof(listable[0]); i++)
		if (!strcmp(type, listable[i]))
			break;
	if (i == sizeof(listable) / sizeof(listable[0])) {
		tg_unread(rd->rt, setting, map);
		return;
	}
	argv[0] = TG_POSTMAP;
	argv[1] = "-c";
	argv[2] = (char *)rd->dir;
	argv[3] = "-s";
	argv[4] = (char *)m;
	argv[5] = NULL;
	out = tg_capture(argv, TG_OUT_MAX);
	if (!out) {
		tg_unread(rd->rt, setting, map);
		return;
	}
	for (line = out; *line; line = eol ? eol + 1 : line + strlen(line)) {
		eol = strchr(line, '\n');
		if (eol)
			*eol = 0;
		tab = strpbrk(line, " \t");
		if (!tab)
			continue;
		k = (size_t)(tab - line);
		if (k >= sizeof(key))
			k = sizeof(key) - 1;
		memcpy(key, line, k);
		key[k] = 0;
		tab += strspn(tab, " \t");
		snprintf(label, sizeof(label), "%.50s %.80s: %.60s", setting,
			 map, key);
		if (kind == 'r') {
			if (strcasecmp(tab, "DUNNO"))
				tg_route_add(rd, label, tab, rd->wrapper);
		} else {
			tg_transport(rd, label, tab, def_transport);
		}
		if (!eol)
			break;
	}
	free(out);
}

/* A list of tables: "type:name" split at commas and blanks, {} kept. */
static void tg_tables(struct tg_rd *rd, const char *setting, const char *v,
		      int kind, const char *def_transport)
{
	char map[512];
	size_t k;
	int depth;

	while (*v) {
		v += strspn(v, ", \t");
		for (k = 0, depth = 0; v[k]; k++) {
			if (v[k] == '{')
				depth++;
			else if (v[k] == '}' && depth)
				depth--;
			else if (!depth && strchr(", \t", v[k]))
				break;
		}
		if (!k)
			break;
		if (k < sizeof(map)) {
			memcpy(map, v, k);
			map[k] = 0;
			tg_table(rd, setting, map, kind, def_transport);
		}
		v += k;
	}
}

/* master.cf: the smtp services (postconf -M) and their -o (postconf -P). */
static int tg_services(struct tg_rd *rd)
{
	char *argv[5], *out, *line, *eol, name[64], type[16], cmd[64];
	char *slash, *slash2, *eq, val[256];
	struct tg_service *svc;

	argv[0] = TG_POSTCONF;
	argv[1] = "-c";
	argv[2] = (char *)rd->dir;
	argv[3] = "-M";
	argv[4] = NULL;
	out = tg_capture(argv, TG_OUT_MAX);
	if (!out)
		return -1;
	for (line = out; *line; line = eol + 1) {
		eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line) - 1;
		/* service type private unpriv chroot wakeup maxproc command */
		if (sscanf(line, "%63s %15s %*s %*s %*s %*s %*s %63s", name,
			   type, cmd) == 3 &&
		    !strcmp(type, "unix") && !strcmp(cmd, "smtp") &&
		    rd->nsvc < TG_SERVICES_MAX) {
			svc = &rd->svc[rd->nsvc++];
			snprintf(svc->name, sizeof(svc->name), "%s", name);
			svc->wrapper = -1;
			svc->relayhost[0] = 0;
		}
		if (!eol[0] || !eol[1])
			break;
	}
	free(out);
	argv[3] = "-P";
	out = tg_capture(argv, TG_OUT_MAX);
	if (!out)
		return 0; /* no -o at all */
	for (line = out; *line; line = eol + 1) {
		eol = strchr(line, '\n');
		if (eol)
			*eol = 0;
		/* service/type/parameter = value */
		slash = strchr(line, '/');
		slash2 = slash ? strchr(slash + 1, '/') : NULL;
		eq = slash2 ? strstr(slash2, " = ") : NULL;
		if (eq) {
			*slash = *slash2 = *eq = 0;
			snprintf(val, sizeof(val), "%s", eq + 3);
			svc = tg_service(rd, line);
			if (svc && !strcmp(slash + 1, "unix") &&
			    !strcmp(slash2 + 1, "smtp_tls_wrappermode"))
				svc->wrapper = tg_yes(val);
			else if (svc && !strcmp(slash + 1, "unix") &&
				 !strcmp(slash2 + 1, "relayhost"))
				snprintf(svc->relayhost, sizeof(svc->relayhost),
					 "%s", val);
		}
		if (!eol)
			break;
	}
	free(out);
	return 0;
}

int tg_routes_read(struct tg_routes *rt, const char *confdir,
		   const __u16 *ports, unsigned nports, const __u16 *tls_ports,
		   unsigned ntls_ports)
{
	static struct tg_rd rd;
	char path[512], label[128], *out, *argv[14];
	char relayhost[1024], def_tr[256], relay_tr[256], tmaps[1024];
	char sdrh[1024], sddt[1024], wrap[16];
	unsigned i;

	memset(rt, 0, sizeof(*rt));
	memset(&rd, 0, sizeof(rd));
	snprintf(rt->dir, sizeof(rt->dir), "%s", confdir);
	snprintf(path, sizeof(path), "%s/main.cf", confdir);
	if (access(path, R_OK) < 0) {
		snprintf(rt->why, sizeof(rt->why), "%.200s: %s", path,
			 strerror(errno));
		return -1;
	}
	rd.rt = rt;
	rd.dir = confdir;
	rd.ports = ports;
	rd.nports = nports;
	rd.tls_ports = tls_ports;
	rd.ntls_ports = ntls_ports;
	argv[0] = TG_POSTCONF;
	argv[1] = "-c";
	argv[2] = (char *)confdir;
	argv[3] = "-x";
	argv[4] = "relayhost";
	argv[5] = "default_transport";
	argv[6] = "relay_transport";
	argv[7] = "transport_maps";
	argv[8] = "sender_dependent_relayhost_maps";
	argv[9] = "sender_dependent_default_transport_maps";
	argv[10] = "recipient_delimiter";
	argv[11] = "smtp_tls_wrappermode";
	argv[12] = NULL;
	out = tg_capture(argv, TG_OUT_MAX);
	if (!out) {
		snprintf(rt->why, sizeof(rt->why),
			 "%s -c %s failed (is "
			 "Postfix installed?)",
			 TG_POSTCONF, confdir);
		return -1;
	}
	if (!tg_param(out, "relayhost", relayhost, sizeof(relayhost)) ||
	    !tg_param(out, "default_transport", def_tr, sizeof(def_tr)) ||
	    !tg_param(out, "relay_transport", relay_tr, sizeof(relay_tr)) ||
	    !tg_param(out, "transport_maps", tmaps, sizeof(tmaps)) ||
	    !tg_param(out, "sender_dependent_relayhost_maps", sdrh,
		      sizeof(sdrh)) ||
	    !tg_param(out, "sender_dependent_default_transport_maps", sddt,
		      sizeof(sddt)) ||
	    !tg_param(out, "recipient_delimiter", rt->delims,
		      sizeof(rt->delims)) ||
	    !tg_param(out, "smtp_tls_wrappermode", wrap, sizeof(wrap))) {
		free(out);
		snprintf(rt->why, sizeof(rt->why),
			 "%s -c %s: unexpected "
			 "output",
			 TG_POSTCONF, confdir);
		return -1;
	}
	free(out);
	rd.wrapper = tg_yes(wrap);
	if (tg_services(&rd) < 0) {
		snprintf(rt->why, sizeof(rt->why), "%s -c %s -M failed",
			 TG_POSTCONF, confdir);
		return -1;
	}
	/* relayhost: taken by default_transport's service */
	if (relayhost[0]) {
		struct tg_service *svc = NULL;
		char tr[64];
		size_t k = strcspn(def_tr, ":");

		if (k < sizeof(tr)) {
			memcpy(tr, def_tr, k);
			tr[k] = 0;
			svc = tg_service(&rd, tr);
		}
		tg_route_add(&rd, "relayhost", relayhost,
			     svc && svc->wrapper >= 0 ? svc->wrapper :
							rd.wrapper);
	}
	tg_transport(&rd, "default_transport", def_tr, NULL);
	tg_transport(&rd, "relay_transport", relay_tr, NULL);
	tg_tables(&rd, "transport_maps", tmaps, 't', def_tr);
	tg_tables(&rd, "sender_dependent_relayhost_maps", sdrh, 'r', NULL);
	tg_tables(&rd, "sender_dependent_default_transport_maps", sddt, 't',
		  def_tr);
	for (i = 0; i < rd.nsvc; i++) {
		struct tg_service *svc = &rd.svc[i];

		if (!svc->relayhost[0])
			continue;
		snprintf(label, sizeof(label), "master.cf %s -o relayhost",
			 svc->name);
		tg_route_add(&rd, label, svc->relayhost,
			     svc->wrapper >= 0 ? svc->wrapper : rd.wrapper);
	}
	rt->read = 1;
	return 0;
}

size_t tg_routes_print(const struct tg_routes *rt, char *out, size_t len)
{
	size_t used = 0;
	unsigned i;
	int n;

	if (!len)
		return 0;
	out[0] = 0;
	for (i = 0; i < rt->n && used < len; i++) {
		const struct tg_route *r = &rt->r[i];

		n = snprintf(out + used, len - used,
			     "  %s = %s: port %u (%s): %s\n", r->setting,
			     r->value, r->port,
			     r->wrapper ? "implicit TLS" : "STARTTLS",
			     r->guarded ? "guarded" : "NOT GUARDED");
		if (n < 0 || (size_t)n >= len - used)
			return used;
		used += (size_t)n;
	}
	if (rt->unread[0] && used < len) {
		n = snprintf(out + used, len - used, "  not read: %s\n",
			     rt->unread);
		if (n > 0 && (size_t)n < len - used)
			used += (size_t)n;
	}
	return used;
}
