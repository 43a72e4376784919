// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_config - tlsguardd's settings (see tg_config.h)
 * DESCRIPTION
 *	tg_setting_set() and tg_setting_get() read and write a value by
 *	the type of its row of tg_settings[] (tg_settings.h): the rows hold
 *	no code.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tg_config.h"
#include "tg_ctl.h"
#include "tg_hostport.h"
#include "tg_metrics.h"
#include "tg_policy.h"
#include "tg_resp.h"
#include "tg_settings.h"

static int tg_bad(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int tg_bad(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

static int tg_copy(char *dst, size_t dstlen, const char *v, char *err,
		   size_t len)
{
	if (strlen(v) >= dstlen)
		return tg_bad(err, len, "value longer than %zu bytes",
			      dstlen - 1);
	snprintf(dst, dstlen, "%s", v);
	return 0;
}

static int tg_uint(const char *v, unsigned long min, unsigned long max,
		   unsigned long *out, char *err, size_t len)
{
	char *end;

	errno = 0;
	*out = strtoul(v, &end, 10);
	if (errno || !*v || *end || *v == '-' || *v == '+' || *out < min ||
	    *out > max)
		return tg_bad(err, len, "bad value \"%.80s\": expected a "
			      "number from %lu to %lu", v, min, max);
	return 0;
}

/*
 * A list value: elements split at commas and white space, each checked
 * and stored by the row's type. The list replaces the one before.
 */
static int tg_list(struct tg_opts *o, const struct tg_setting *st,
		   const char *v, char *err, size_t len)
{
	int tls = (st->flags & TG_F_TLS) != 0;
	__u16 *ports = tls ? o->tls_ports : o->ports;
	unsigned *n = tls ? &o->ntls_ports : &o->nports;
	unsigned other = tls ? o->nports : o->ntls_ports;
	char elem[TG_SETTING_MAX];
	unsigned long port;
	size_t k;

	if (st->type == TG_T_PORTS)
		*n = 0;
	else
		o->nexempt = 0;
	for (; *v; v += strspn(v, ", \t")) {
		k = strcspn(v, ", \t");
		if (k >= sizeof(elem))
			return tg_bad(err, len, "list element too long");
		if (!k)
			continue;
		memcpy(elem, v, k);
		elem[k] = 0;
		v += k;
		if (st->type == TG_T_EXEMPT) {
			__u64 keys[2];
			int nk = tg_policy_exempt_keys(elem, keys);

			if (nk < 0)
				return tg_bad(err, len,
					      "bad entry \"%.80s\": "
					      "expected user@domain, @domain, "
					      "SRS0= or SRS1=",
					      elem);
			/* an internationalized domain: both its forms */
			if (o->nexempt + (size_t)nk > st->max)
				return tg_bad(err, len, "more than %lu entries",
					      st->max);
			memcpy(&o->exempt[o->nexempt], keys,
			       (size_t)nk * sizeof(keys[0]));
			o->nexempt += (size_t)nk;
			continue;
		}
		if (tg_uint(elem, st->min, st->max, &port, err, len) < 0)
			return -1;
		if (*n + other >= TG_PORTS_MAX)
			return tg_bad(err, len, "at most %d ports in all",
				      TG_PORTS_MAX);
		ports[(*n)++] = (__u16)port;
	}
	return 0;
}

/* "IP" or "IP:PORT", "[IPv6]" or "[IPv6]:PORT"; *loopback if it is one. */
static int tg_addr_port(const char *v, int need_port, int *loopback,
			char *err, size_t len)
{
	struct tg_hostport hp;

	if (tg_hostport_parse(v, &hp, need_port ? TG_HP_NEED_PORT : 0) < 0)
		return tg_bad(err, len, "bad value \"%.80s\": expected %s", v,
			      need_port ? "IP:PORT or [IPv6]:PORT" :
					  "IP, IP:PORT or [IPv6]:PORT");
	if (loopback)
		*loopback = tg_hostport_loopback(&hp);
	return 0;
}

/*
 * Reply text: it goes to the MTA as the host's words and from there into
 * the bounce, so printable ASCII only, and short enough for one line.
 * With TG_F_VERSION, "$tls_version" is the one variable.
 */
static int tg_text_ok(const struct tg_setting *st, const char *v, char *e,
		      size_t l)
{
	int weak = (st->flags & TG_F_VERSION) != 0;
	const char *s;

	if (strlen(v) < st->min || strlen(v) > st->max)
		return tg_bad(e, l, "expected a text of %lu to %lu characters",
			      st->min, st->max);
	for (s = v; *s; s++) {
		if (*s < ' ' || *s > '~')
			return tg_bad(e, l, "byte %#x at offset %zu: expected "
				      "printable ASCII", (unsigned char)*s,
				      (size_t)(s - v));
		if (*s == '$' && !(weak && !strncmp(s, TG_WEAK_VAR,
						    strlen(TG_WEAK_VAR))))
			return tg_bad(e, l, "unknown variable at \"%.20s\"%s",
				      s, weak ? " (only $tls_version)" :
						" (none is known here)");
	}
	return 0;
}

/* One value of one setting, checked by its type, into o. */
static int tg_setting_set(struct tg_opts *o, const struct tg_setting *st,
			  const char *v, char *e, size_t l)
{
	char *str = (char *)o + st->off;
	unsigned *num = (unsigned *)str;
	int *flag = (int *)str;
	unsigned long n;
	const char *s;

	switch (st->type) {
	case TG_T_STR:
		break;
	case TG_T_PATH:
		if ((st->flags & TG_F_EMPTY) && !strcmp(v, "none"))
			v = "";
		if (!*v && (st->flags & TG_F_EMPTY))
			break;
		if (*v != '/')
			return tg_bad(e, l, "bad value \"%.80s\": expected an "
				      "absolute path", v);
		if (st->max && strlen(v) > st->max)
			return tg_bad(e, l, "bad value \"%.80s\": longer than "
				      "%lu bytes", v, st->max);
		break;
	case TG_T_UINT:
	case TG_T_CODE:
		if (st->type == TG_T_CODE &&
		    (strlen(v) != 3 || v[0] < '0' || v[0] > '9' ||
		     v[1] < '0' || v[1] > '9' || v[2] < '0' || v[2] > '9' ||
		     strtoul(v, NULL, 10) < st->min ||
		     strtoul(v, NULL, 10) > st->max))
			return tg_bad(e, l, "bad value \"%.80s\": expected a "
				      "reply code %luXX", v, st->min / 100);
		if (tg_uint(v, st->min, st->max, &n, e, l) < 0)
			return -1;
		if ((st->flags & TG_F_POW2) && (n & (n - 1)))
			return tg_bad(e, l, "bad value \"%.80s\": expected a "
				      "power of two", v);
		*num = (unsigned)n;
		return 0;
	case TG_T_BOOL:
		if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
		    !strcmp(v, "1"))
			*flag = 1;
		else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") ||
			 !strcmp(v, "0"))
			*flag = 0;
		else
			return tg_bad(e, l, "bad value \"%.80s\": expected "
				      "yes or no", v);
		return 0;
	case TG_T_PORTS:
		return tg_list(o, st, v, e, l);
	case TG_T_EXEMPT:
		if (tg_list(o, st, v, e, l) < 0)
			return -1;
		break;
	case TG_T_MX:
		o->mx_check = strcmp(v, "no") != 0 && *v;
		if (!o->mx_check || !strcmp(v, "system"))
			v = "";
		else if (tg_addr_port(v, 0, NULL, e, l) < 0)
			return tg_bad(e, l, "bad value \"%.80s\": expected no, "
				      "system, IP or IP:PORT", v);
		break;
	case TG_T_LOOPBACK:	/* loopback unless metrics_remote: tg_metrics */
		if (*v && tg_addr_port(v, 1, NULL, e, l) < 0)
			return -1;
		break;
	case TG_T_FACILITY:
		if ((*flag = tg_facility_code(v)) >= 0)
			return 0;
		return tg_bad(e, l, "bad value \"%.80s\": expected mail, "
			      "daemon or local0 to local7", v);
	case TG_T_NAME:
		for (s = v; *s; s++)
			if (*s <= ' ' || *s > '~' || *s == '[' || *s == ':')
				break;
		if (!*v || *s)
			return tg_bad(e, l, "bad value \"%.80s\": expected a "
				      "name of printable characters without "
				      "blanks, '[' or ':'", v);
		break;
	case TG_T_DSN:
		if (!tg_dsn_valid(v, (char)('0' + st->min)))
			return tg_bad(e, l, "bad value \"%.80s\": expected an "
				      "enhanced status code %lu.X.Y", v,
				      st->min);
		break;
	case TG_T_TEXT:
		if (tg_text_ok(st, v, e, l) < 0)
			return -1;
		break;
	case TG_T_ROUTES:
		if (strcmp(v, "warn") && strcmp(v, "refuse"))
			return tg_bad(e, l,
				      "bad value \"%.80s\": expected "
				      "warn or refuse",
				      v);
		break;
	case TG_T_DELIMS:
		if (strcmp(v, "postfix") && strcmp(v, "none")) {
			for (s = v; *s; s++)
				if (*s <= ' ' || *s >= 0x7f ||
				    strchr("@\"<>\\", *s))
					break;
			if (!*v || *s)
				return tg_bad(e, l,
					      "bad value \"%.80s\": "
					      "expected postfix, none, or the "
					      "delimiter characters (e.g. +-)",
					      v);
		}
		break;
	}
	/* The text types: the value as given. */
	return tg_copy(str, st->size, v, e, l);
}

/* One setting's value as tlsguard.conf would have it. */
static void tg_setting_get(const struct tg_opts *o,
			   const struct tg_setting *st, char *out, size_t len)
{
	const char *str = (const char *)o + st->off;
	const unsigned *num = (const unsigned *)str;
	const int *flag = (const int *)str;
	const __u16 *ports = (const __u16 *)str;
	unsigned i, n;
	size_t used = 0;

	*out = 0;
	switch (st->type) {
	case TG_T_UINT:
	case TG_T_CODE:
		snprintf(out, len, "%u", *num);
		return;
	case TG_T_BOOL:
		snprintf(out, len, "%s", *flag ? "yes" : "no");
		return;
	case TG_T_PORTS:
		n = (st->flags & TG_F_TLS) ? o->ntls_ports : o->nports;
		for (i = 0; i < n && used < len; i++)
			used += (size_t)snprintf(out + used, len - used, "%s%u",
						 i ? ", " : "", ports[i]);
		return;
	case TG_T_MX:
		snprintf(out, len, "%s", !o->mx_check ? "no" :
					 *str ? str : "system");
		return;
	case TG_T_FACILITY:
		snprintf(out, len, "%s", tg_facility_name(*flag) ?
						 tg_facility_name(*flag) : "");
		return;
	default:
		snprintf(out, len, "%s", str);
	}
}

void tg_config_defaults(struct tg_opts *o)
{
	char err[256];
	size_t i;

	memset(o, 0, sizeof(*o));
	for (i = 0; i < tg_nsettings; i++)
		if (tg_setting_set(o, &tg_settings[i], tg_settings[i].def, err,
				   sizeof(err)) < 0)
			abort();	/* a default that does not parse */
}

int tg_config_set(struct tg_opts *o, const char *name, const char *value,
		  char *err, size_t errlen)
{
	size_t i;

	if (strcmp(name, "pin") == 0) {
		if (strcasecmp(value, "yes") && strcasecmp(value, "true") &&
		    strcmp(value, "1"))
			return tg_bad(err, errlen, "\"%.20s\" is not possible: "
				      "the kernel keeps enforcing whenever "
				      "tlsguardd is not running, and only "
				      "tlsguardctl detach removes it (remove "
				      "this line; see tlsguard.conf(5))", value);
		snprintf(o->pin_note, sizeof(o->pin_note), "%s", TG_PIN_NOTE);
		return 0;
	}

	for (i = 0; i < tg_nsettings; i++)
		if (strcmp(name, tg_settings[i].name) == 0)
			return tg_setting_set(o, &tg_settings[i], value, err,
					      errlen);
	snprintf(err, errlen, "unknown setting \"%.64s\" (see "
		 "tlsguard.conf(5))", name);
	return -2;
}

/* One logical line, started at lineno. */
static int tg_config_line(struct tg_opts *o, const char *path,
			  unsigned lineno, char *line, char *err,
			  size_t errlen)
{
	char *eq = strchr(line, '='), *name, *value, why[600];
	int rc;

	if (!eq) {
		snprintf(err, errlen, "%s:%u: expected \"name = value\", found "
			 "\"%.60s\"", path, lineno, tg_strip(line));
		return -1;
	}
	*eq = 0;
	name = tg_strip(line);
	value = tg_strip(eq + 1);
	if (!*name || strpbrk(name, " \t")) {
		snprintf(err, errlen, "%s:%u: bad setting name \"%.60s\"", path,
			 lineno, name);
		return -1;
	}
	rc = tg_config_set(o, name, value, why, sizeof(why));
	if (rc == 0 && strcmp(name, "pin") == 0)
		snprintf(o->pin_note, sizeof(o->pin_note), "%.80s:%u: pin: %s",
			 path, lineno, TG_PIN_NOTE);
	if (rc == 0 && strcmp(name, "metrics_address") == 0)
		o->metrics_line = lineno;
	if (rc == -2)
		snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
	else if (rc < 0)
		snprintf(err, errlen, "%s:%u: %s: %s", path, lineno, name, why);
	return rc < 0 ? -1 : 0;
}

/*
 * metrics_address is loopback, or metrics_remote is set (it may come
 * later in the file): named by its file and line.
 */
static int tg_config_metrics(const struct tg_opts *o, char *err,
			     size_t errlen)
{
	char why[512];

	if (!o->metrics[0] ||
	    tg_metrics_check(o->metrics, o->metrics_remote, why,
			     sizeof(why)) == 0)
		return 0;
	snprintf(err, errlen, "%s:%u: metrics_address: \"%.80s\" is not a "
		 "loopback address: the page has no access control; "
		 "metrics_remote = yes serves it there", o->config,
		 o->metrics_line, o->metrics);
	return -1;
}

int tg_config_read(struct tg_opts *o, const char *path, char *err,
		   size_t errlen)
{
	char logical[TG_SETTING_MAX + 128] = "", *line = NULL;
	unsigned lineno = 0, start = 0;
	size_t cap = 0, have = 0;
	ssize_t got;
	int rc = 0;
	FILE *fp;

	fp = fopen(path, "r");
	if (!fp) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (tg_copy(o->config, sizeof(o->config), path, err, errlen) < 0) {
		fclose(fp);
		return -1;
	}
	while ((got = getline(&line, &cap, fp)) >= 0) {
		char *s = line;
		size_t n;

		lineno++;
		if (memchr(line, 0, (size_t)got)) {
			snprintf(err, errlen, "%s:%u: NUL byte in line", path,
				 lineno);
			rc = -1;
			break;
		}
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '#' || *s == '\n' || *s == '\r' || *s == 0)
			continue;
		if (s != line) {
			/* A continuation line. */
			if (!have) {
				snprintf(err, errlen, "%s:%u: continuation "
					 "line without a setting before it",
					 path, lineno);
				rc = -1;
				break;
			}
			s = tg_strip(s);
			n = strlen(s);
			if (have + 1 + n >= sizeof(logical))
				goto too_long;
			logical[have++] = ' ';
			memcpy(logical + have, s, n + 1);
			have += n;
			continue;
		}
		if (have && (rc = tg_config_line(o, path, start, logical, err,
						 errlen)) < 0)
			break;
		s = tg_strip(s);
		n = strlen(s);
		if (n >= sizeof(logical))
			goto too_long;
		memcpy(logical, s, n + 1);
		have = n;
		start = lineno;
	}
	if (rc == 0 && ferror(fp)) {
		snprintf(err, errlen, "%s: read error", path);
		rc = -1;
	}
	if (rc == 0 && have)
		rc = tg_config_line(o, path, start, logical, err, errlen);
	if (rc == 0)
		rc = tg_config_metrics(o, err, errlen);
	free(line);
	fclose(fp);
	return rc;
too_long:
	snprintf(err, errlen, "%s:%u: setting longer than %d bytes", path,
		 lineno, TG_SETTING_MAX);
	free(line);
	fclose(fp);
	return -1;
}

int tg_config_finish(struct tg_opts *o, char *err, size_t errlen)
{
	/* Derived first: a caller that needs no cgroup still gets them. */
	if (o->nports == 0 && o->ntls_ports == 0)
		o->ports[o->nports++] = 25;
	if (!o->cgroup[0])
		return tg_bad(err, errlen, "--cgroup DIR is required (or "
			      "\"cgroup\" in the configuration file; see "
			      "--help)");
	if (!o->senders[0])
		return tg_bad(err, errlen, "--senders FILE is required (or "
			      "\"senders_file\" in the configuration file; see "
			      "--help)");
	return 0;
}

size_t tg_config_print(const struct tg_opts *o, int changed_only, char *out,
		       size_t len)
{
	char val[TG_SETTING_MAX + 64], def[TG_SETTING_MAX + 64];
	static struct tg_opts defaults;
	size_t used = 0, i;
	int n;

	tg_config_defaults(&defaults);
	defaults.ports[defaults.nports++] = 25;	/* as tg_config_finish() */
	for (i = 0; i < tg_nsettings && used < len; i++) {
		tg_setting_get(o, &tg_settings[i], val, sizeof(val));
		if (changed_only) {
			tg_setting_get(&defaults, &tg_settings[i], def,
				       sizeof(def));
			if (!strcmp(val, def))
				continue;
		}
		n = snprintf(out + used, len - used, "%s =%s%s\n",
			     tg_settings[i].name, *val ? " " : "", val);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	return used;
}
