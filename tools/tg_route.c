// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_route - where Postfix sends a domain's mail (see tg_route.h)
 * DESCRIPTION
 *	Postfix's own postconf and postmap read the configuration and the
 *	tables, so every table type Postfix has (hash, texthash, inline,
 *	lmdb, pcre, ...) and every $name expansion reads as Postfix reads
 *	it. They run without a shell, with their arguments as given.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_route.h"

#define TG_POSTCONF	"/usr/sbin/postconf"
#define TG_POSTMAP	"/usr/sbin/postmap"
#define TG_RUN_OUT	4096
#define TG_TABLES	16

extern char **environ;

/*
 * Run argv; its exit status (-1 if it could not run), stdout into out
 * and the first line of a "fatal:" on stderr into err.
 */
static int tg_run(char *const argv[], char *out, size_t len, char *err,
		  size_t elen)
{
	posix_spawn_file_actions_t fa;
	int po[2], pe[2], status;
	size_t got = 0, egot = 0;
	char ebuf[TG_RUN_OUT];
	const char *fatal;
	ssize_t n;
	pid_t pid;

	out[0] = err[0] = 0;
	if (pipe2(po, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(pe, O_CLOEXEC) < 0) {
		close(po[0]);
		close(po[1]);
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, po[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
	errno = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(po[1]);
	close(pe[1]);
	if (errno) {
		snprintf(err, elen, "cannot run %s: %s", argv[0],
			 strerror(errno));
		close(po[0]);
		close(pe[0]);
		return -1;
	}
	/* stdout first: what these tools say on stderr fits a pipe */
	while (got + 1 < len && (n = read(po[0], out + got,
					  len - got - 1)) > 0)
		got += (size_t)n;
	out[got] = 0;
	while (egot + 1 < sizeof(ebuf) &&
	       (n = read(pe[0], ebuf + egot, sizeof(ebuf) - egot - 1)) > 0)
		egot += (size_t)n;
	ebuf[egot] = 0;
	close(po[0]);
	close(pe[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	fatal = strstr(ebuf, "fatal: ");
	if (fatal)
		snprintf(err, elen, "%s: %.*s", argv[0],
			 (int)strcspn(fatal, "\n"), fatal);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Cut s at its first newline; s. */
static char *tg_line(char *s)
{
	s[strcspn(s, "\n")] = 0;
	return s;
}

/*
 * The tables of a transport_maps value: split at commas and blanks
 * outside braces (inline:{ k=v, k=v } holds both).
 */
static int tg_tables(char *v, char *tab[], int max)
{
	int n = 0, depth = 0;
	char *p = v, *start = NULL;

	for (;; p++) {
		int sep = !*p || (!depth && (*p == ',' || *p == ' ' ||
					     *p == '\t'));

		if (!sep && !start)
			start = p;
		if (*p == '{')
			depth++;
		else if (*p == '}' && depth)
			depth--;
		if (sep && start) {
			int end = !*p;

			*p = 0;
			if (n < max)
				tab[n++] = start;
			start = NULL;
			if (end)
				break;
		} else if (!*p) {
			break;
		}
	}
	return n;
}

/*
 * A nexthop ("[host]:port", "[host]", "host:port", "host"; the first of
 * a list) into r; 0 or -1.
 */
static int tg_nexthop(struct tg_route *r, const char *nh)
{
	char buf[NS_MAXDNAME + 16], *host = buf, *port = NULL, *e;
	unsigned long v;

	snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(nh, ", \t"), nh);
	r->bracketed = 0;
	r->port = 0;
	if (*host == '[') {
		e = strchr(host, ']');
		if (!e || e == host + 1)
			return -1;
		*e = 0;
		host++;
		r->bracketed = 1;
		if (e[1] == ':')
			port = e + 2;
		else if (e[1])
			return -1;
	} else if ((e = strrchr(host, ':'))) {
		*e = 0;
		port = e + 1;
	}
	if (!*host)
		return -1;
	if (port) {
		if (strcmp(port, "smtp") == 0) {
			v = 25;
		} else {
			errno = 0;
			v = strtoul(port, &e, 10);
			if (!*port || *e || errno || v < 1 || v > 65535)
				return -1;
		}
		r->port = (unsigned)v;
	}
	if (strlen(host) >= sizeof(r->host))
		return -1;
	memcpy(r->host, host, strlen(host) + 1);
	return 0;
}

int tg_route_lookup(struct tg_route *r, const char *dir, const char *domain)
{
	char conf[TG_RUN_OUT], val[TG_RUN_OUT], err[300];
	char *relayhost, *maps, *tab[TG_TABLES], key[NS_MAXDNAME + 2];
	char found_in[TG_ROUTE_TEXT] = "", found_key[NS_MAXDNAME + 2] = "";
	const char *d = domain, *nh = "";
	int ntab, i, rc;

	memset(r, 0, sizeof(*r));
	snprintf(r->transport, sizeof(r->transport), "smtp");
	{
		char *argv[] = { TG_POSTCONF, "-c", (char *)dir, "-x", "-h",
				 "relayhost", "transport_maps",
				 "smtp_tls_security_level",
				 "smtp_dns_support_level", NULL };

		rc = tg_run(argv, conf, sizeof(conf), err, sizeof(err));
		if (rc != 0) {
			snprintf(r->how, sizeof(r->how), "%s", err[0] ? err :
				 "postconf -c DIR failed");
			return -1;
		}
	}
	{
		char *line[4], *p = conf;

		/* one value a line, in the order asked */
		for (i = 0; i < 4; i++) {
			line[i] = p;
			p += strcspn(p, "\n");
			if (*p)
				*p++ = 0;
		}
		relayhost = line[0];
		maps = line[1];
		snprintf(r->tls_level, sizeof(r->tls_level), "%.*s",
			 (int)sizeof(r->tls_level) - 1, line[2]);
		snprintf(r->dns_level, sizeof(r->dns_level), "%.*s",
			 (int)sizeof(r->dns_level) - 1, line[3]);
		r->dane = (strcmp(r->tls_level, "dane") == 0 ||
			   strcmp(r->tls_level, "dane-only") == 0) &&
			  strcmp(r->dns_level, "dnssec") == 0;
	}
	ntab = tg_tables(maps, tab, TG_TABLES);

	/* DOMAIN, .PARENT ..., *: each key of every table, in order */
	for (;;) {
		if (d)
			snprintf(key, sizeof(key), "%s", d);
		else
			snprintf(key, sizeof(key), "*");
		for (i = 0; i < ntab; i++) {
			char *argv[] = { TG_POSTMAP, "-c", (char *)dir, "-q",
					 key, tab[i], NULL };

			rc = tg_run(argv, val, sizeof(val), err, sizeof(err));
			if (rc == 0) {
				snprintf(found_in, sizeof(found_in), "%s",
					 tab[i]);
				snprintf(found_key, sizeof(found_key), "%s",
					 key);
				break;
			}
			if (rc != 1 || err[0]) {
				snprintf(r->how, sizeof(r->how), "%s",
					 err[0] ? err : "postmap -q failed");
				return -1;
			}
		}
		if (found_in[0] || !d)
			break;
		d = strchr(d + (*d == '.'), '.');
	}
	if (found_in[0]) {
		char *colon;

		tg_line(val);
		colon = strchr(val, ':');
		if (colon) {
			*colon = 0;
			nh = colon + 1;
		}
		if (val[0])
			snprintf(r->transport, sizeof(r->transport), "%.*s",
				 (int)sizeof(r->transport) - 1, val);
	}
	if (!*nh && *relayhost)
		nh = relayhost;
	if (*nh) {
		if (tg_nexthop(r, nh) < 0) {
			snprintf(r->how, sizeof(r->how), "cannot read the "
				 "nexthop \"%s\" (%s)", nh, nh == relayhost ?
				 "relayhost" : found_in);
			return -1;
		}
		r->routed = 1;
	} else {
		snprintf(r->host, sizeof(r->host), "%s", domain);
	}
	if (found_in[0])
		snprintf(r->how, sizeof(r->how), "transport_maps %s: %s -> "
			 "%s:%s%s", found_in, found_key, r->transport,
			 nh == relayhost ? "" : nh, nh == relayhost && *nh ?
			 " (no nexthop: relayhost applies)" : "");
	if (nh == relayhost && *nh) {
		size_t off = strlen(r->how);

		snprintf(r->how + off, sizeof(r->how) - off, "%srelayhost = "
			 "%s", off ? "; " : "", relayhost);
	} else if (!found_in[0]) {
		snprintf(r->how, sizeof(r->how), "the MX hosts of %s (no "
			 "relayhost, no transport_maps entry)", domain);
	}
	return 0;
}
