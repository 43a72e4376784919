// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_config - tlsguardd's settings (see tg_config.h)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

#include "tg_config.h"
#include "tg_ctl.h"
#include "tg_hostport.h"
#include "tg_policy.h"

struct tg_setting {
	const char *name;
	const char *def;	/* the default, as it would be written */
	int (*set)(struct tg_opts *o, const char *v, char *err, size_t len);
	void (*get)(const struct tg_opts *o, char *out, size_t len);
};

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

/* A path: absolute, or empty where "none" is allowed. */
static int tg_abs_path(char *dst, const char *v, int may_be_empty, char *err,
		   size_t len)
{
	if (!*v && may_be_empty) {
		*dst = 0;
		return 0;
	}
	if (*v != '/')
		return tg_bad(err, len, "bad value \"%.80s\": expected an "
			      "absolute path", v);
	return tg_copy(dst, TG_SETTING_MAX, v, err, len);
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

/* Split a list value at commas and white space; calls fn per element. */
static int tg_list(const char *v, int (*fn)(void *ctx, const char *elem,
					    char *err, size_t len),
		   void *ctx, char *err, size_t len)
{
	char elem[TG_SETTING_MAX];
	size_t n;

	while (*v) {
		n = strcspn(v, ", \t");
		if (n >= sizeof(elem))
			return tg_bad(err, len, "list element too long");
		if (n) {
			memcpy(elem, v, n);
			elem[n] = 0;
			if (fn(ctx, elem, err, len) < 0)
				return -1;
		}
		v += n;
		v += strspn(v, ", \t");
	}
	return 0;
}

struct tg_port_list {
	__u16 *ports;
	unsigned *n;
	unsigned other;		/* ports in the other list */
};

static int tg_port_elem(void *ctx, const char *e, char *err, size_t len)
{
	struct tg_port_list *pl = ctx;
	unsigned long port;

	if (tg_uint(e, 1, 65535, &port, err, len) < 0)
		return -1;
	if (*pl->n + pl->other >= TG_PORTS_MAX)
		return tg_bad(err, len, "at most %d ports in all",
			      TG_PORTS_MAX);
	pl->ports[(*pl->n)++] = (__u16)port;
	return 0;
}

static int tg_set_ports(struct tg_opts *o, const char *v, int tls, char *err,
			size_t len)
{
	struct tg_port_list pl = {
		.ports = tls ? o->tls_ports : o->ports,
		.n = tls ? &o->ntls_ports : &o->nports,
		.other = tls ? o->nports : o->ntls_ports,
	};

	*pl.n = 0;
	return tg_list(v, tg_port_elem, &pl, err, len);
}

static void tg_get_ports(const __u16 *ports, unsigned n, char *out,
			 size_t len)
{
	size_t used = 0;
	unsigned i;

	*out = 0;
	for (i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%u",
					 i ? ", " : "", ports[i]);
}

static int tg_bool(const char *v, int *out, char *err, size_t len)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
	    !strcmp(v, "1"))
		*out = 1;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") ||
		 !strcmp(v, "0"))
		*out = 0;
	else
		return tg_bad(err, len, "bad value \"%.80s\": expected yes "
			      "or no", v);
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

/* Absolute, or relative to the cgroup2 mount (see tg_cgroup_open()). */
static int tg_set_cgroup(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_copy(o->cgroup, sizeof(o->cgroup), v, e, l);
}

static void tg_get_cgroup(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->cgroup);
}

static int tg_set_senders(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_abs_path(o->senders, v, 1, e, l);
}

static void tg_get_senders(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->senders);
}

static int tg_set_smtp_ports(struct tg_opts *o, const char *v, char *e,
			     size_t l)
{
	return tg_set_ports(o, v, 0, e, l);
}

static void tg_get_smtp_ports(const struct tg_opts *o, char *out, size_t len)
{
	tg_get_ports(o->ports, o->nports, out, len);
}

static int tg_set_smtps_ports(struct tg_opts *o, const char *v, char *e,
			      size_t l)
{
	return tg_set_ports(o, v, 1, e, l);
}

static void tg_get_smtps_ports(const struct tg_opts *o, char *out, size_t len)
{
	tg_get_ports(o->tls_ports, o->ntls_ports, out, len);
}

static int tg_set_slots(struct tg_opts *o, const char *v, char *e, size_t l)
{
	unsigned long n;

	if (tg_uint(v, 1, TG_SLOTS_MAX, &n, e, l) < 0)
		return -1;
	o->slots = (unsigned)n;
	return 0;
}

static void tg_get_slots(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%u", o->slots);
}

static int tg_set_max_flows(struct tg_opts *o, const char *v, char *e,
			    size_t l)
{
	unsigned long n;

	if (tg_uint(v, 1, TG_FLOWS_MAX, &n, e, l) < 0)
		return -1;
	o->max_flows = (unsigned)n;
	return 0;
}

static void tg_get_max_flows(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%u", o->max_flows);
}

static int tg_set_max_senders(struct tg_opts *o, const char *v, char *e,
			      size_t l)
{
	unsigned long n;

	if (tg_uint(v, 2, TG_SENDERS_MAX, &n, e, l) < 0)
		return -1;
	o->max_senders = (unsigned)n;
	return 0;
}

static void tg_get_max_senders(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%u", o->max_senders);
}

static int tg_set_ringbuf(struct tg_opts *o, const char *v, char *e, size_t l)
{
	unsigned long n;

	if (tg_uint(v, 4096, 1UL << 30, &n, e, l) < 0)
		return -1;
	if (n & (n - 1))
		return tg_bad(e, l, "bad value \"%.80s\": expected a power of "
			      "two", v);
	o->ringbuf = (unsigned)n;
	return 0;
}

static void tg_get_ringbuf(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%u", o->ringbuf);
}

static int tg_set_socket(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_abs_path(o->socket, v, 0, e, l);
}

static void tg_get_socket(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->socket);
}

static int tg_set_mx_check(struct tg_opts *o, const char *v, char *e,
			   size_t l)
{
	o->resolver[0] = 0;
	if (!strcmp(v, "no") || !*v) {
		o->mx_check = 0;
		return 0;
	}
	o->mx_check = 1;
	if (!strcmp(v, "system"))
		return 0;
	if (tg_addr_port(v, 0, NULL, e, l) < 0) {
		snprintf(e, l, "bad value \"%.80s\": expected no, system, IP "
			 "or IP:PORT", v);
		return -1;
	}
	return tg_copy(o->resolver, sizeof(o->resolver), v, e, l);
}

static void tg_get_mx_check(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", !o->mx_check ? "no" :
				 o->resolver[0] ? o->resolver : "system");
}

static int tg_set_audit(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_abs_path(o->audit, v, 1, e, l);
}

static void tg_get_audit(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->audit);
}

static int tg_set_pin(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_bool(v, &o->pin, e, l);
}

static void tg_get_pin(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->pin ? "yes" : "no");
}

static int tg_exempt_elem(void *ctx, const char *e, char *err, size_t len)
{
	struct tg_opts *o = ctx;

	if (o->nexempt == TG_EXEMPT_MAX)
		return tg_bad(err, len, "more than %d entries",
			      TG_EXEMPT_MAX);
	if (tg_policy_exempt_key(e, &o->exempt[o->nexempt]) < 0)
		return tg_bad(err, len, "bad entry \"%.80s\": expected "
			      "user@domain, @domain, SRS0= or SRS1=", e);
	o->nexempt++;
	return 0;
}

static int tg_set_exempt(struct tg_opts *o, const char *v, char *e, size_t l)
{
	o->nexempt = 0;
	if (tg_list(v, tg_exempt_elem, o, e, l) < 0)
		return -1;
	return tg_copy(o->exempt_text, sizeof(o->exempt_text), v, e, l);
}

static void tg_get_exempt(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->exempt_text);
}

static int tg_set_metrics(struct tg_opts *o, const char *v, char *e,
			  size_t l)
{
	int loopback = 0;

	if (*v && tg_addr_port(v, 1, &loopback, e, l) < 0)
		return -1;
	if (*v && !loopback)
		return tg_bad(e, l, "\"%.80s\" is not a loopback address: "
			      "the metrics are for this host only", v);
	return tg_copy(o->metrics, sizeof(o->metrics), v, e, l);
}

static void tg_get_metrics(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->metrics);
}

static int tg_set_syslog(struct tg_opts *o, const char *v, char *e, size_t l)
{
	return tg_bool(v, &o->syslog, e, l);
}

static void tg_get_syslog(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->syslog ? "yes" : "no");
}

static const struct {
	const char *name;
	int code;
} tg_facilities[] = {
	{ "mail", LOG_MAIL },	  { "daemon", LOG_DAEMON },
	{ "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
	{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
	{ "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 },
	{ "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
};

static int tg_set_facility(struct tg_opts *o, const char *v, char *e,
			   size_t l)
{
	size_t i;

	for (i = 0; i < sizeof(tg_facilities) / sizeof(tg_facilities[0]); i++)
		if (!strcasecmp(v, tg_facilities[i].name)) {
			o->syslog_facility = tg_facilities[i].code;
			return 0;
		}
	return tg_bad(e, l, "bad value \"%.80s\": expected mail, daemon or "
		      "local0 to local7", v);
}

static void tg_get_facility(const struct tg_opts *o, char *out, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(tg_facilities) / sizeof(tg_facilities[0]); i++)
		if (o->syslog_facility == tg_facilities[i].code)
			snprintf(out, len, "%s", tg_facilities[i].name);
}

static int tg_set_syslog_name(struct tg_opts *o, const char *v, char *e,
			      size_t l)
{
	const char *s;

	for (s = v; *s; s++)
		if (*s <= ' ' || *s > '~' || *s == '[' || *s == ':')
			break;
	if (!*v || *s)
		return tg_bad(e, l, "bad value \"%.80s\": expected a name of "
			      "printable characters without blanks, '[' or "
			      "':'", v);
	return tg_copy(o->syslog_name, sizeof(o->syslog_name), v, e, l);
}

static void tg_get_syslog_name(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->syslog_name);
}

static int tg_set_syslog_socket(struct tg_opts *o, const char *v, char *e,
				size_t l)
{
	return tg_abs_path(o->syslog_socket, v, 0, e, l);
}

static void tg_get_syslog_socket(const struct tg_opts *o, char *out,
				 size_t len)
{
	snprintf(out, len, "%s", o->syslog_socket);
}

/* A reply code of the class wanted ('5' or '4'). */
static int tg_code(char *dst, const char *v, char class, char *e, size_t l)
{
	if (strlen(v) != 3 || v[0] != class || v[1] < '0' || v[1] > '5' ||
	    v[2] < '0' || v[2] > '9')
		return tg_bad(e, l, "bad value \"%.80s\": expected a reply "
			      "code %cXX", v, class);
	memcpy(dst, v, 4);
	return 0;
}

/* An RFC 3463 enhanced status code of the class wanted: C.NNN.NNN */
static int tg_dsn(char *dst, const char *v, char class, char *e, size_t l)
{
	const char *s = v + 2;
	int part, digits;

	if (v[0] != class || v[1] != '.')
		goto bad;
	for (part = 0; part < 2; part++) {
		for (digits = 0; *s >= '0' && *s <= '9'; s++)
			digits++;
		if (digits < 1 || digits > 3 || *s != (part ? 0 : '.'))
			goto bad;
		s += !part;
	}
	snprintf(dst, 12, "%s", v);
	return 0;
bad:
	return tg_bad(e, l, "bad value \"%.80s\": expected an enhanced "
		      "status code %c.X.Y", v, class);
}

static int tg_set_reject_code(struct tg_opts *o, const char *v, char *e,
			      size_t l)
{
	return tg_code(o->reject_code, v, '5', e, l);
}

static void tg_get_reject_code(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->reject_code);
}

static int tg_set_reject_dsn(struct tg_opts *o, const char *v, char *e,
			     size_t l)
{
	return tg_dsn(o->reject_dsn, v, '5', e, l);
}

static void tg_get_reject_dsn(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->reject_dsn);
}

static int tg_set_defer_code(struct tg_opts *o, const char *v, char *e,
			     size_t l)
{
	return tg_code(o->defer_code, v, '4', e, l);
}

static void tg_get_defer_code(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->defer_code);
}

static int tg_set_defer_dsn(struct tg_opts *o, const char *v, char *e,
			    size_t l)
{
	return tg_dsn(o->defer_dsn, v, '4', e, l);
}

static void tg_get_defer_dsn(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->defer_dsn);
}

/*
 * Reply text: it goes to the MTA as the host's words and from there into
 * the bounce, so printable ASCII only, and short enough for one line.
 * In weak_tls_text, "$tls_version" is the one variable.
 */
static int tg_text(char *dst, size_t dstlen, const char *v, int weak,
		   char *e, size_t l)
{
	const char *s;

	if (!*v || strlen(v) > 200)
		return tg_bad(e, l, "expected a text of 1 to 200 characters");
	for (s = v; *s; s++) {
		if (*s < ' ' || *s > '~')
			return tg_bad(e, l, "byte %#x at offset %zu: expected "
				      "printable ASCII", (unsigned char)*s,
				      (size_t)(s - v));
		if (*s == '$' && !(weak && !strncmp(s, "$tls_version", 12)))
			return tg_bad(e, l, "unknown variable at \"%.20s\"%s",
				      s, weak ? " (only $tls_version)" :
						" (none is known here)");
	}
	return tg_copy(dst, dstlen, v, e, l);
}

static int tg_set_notls_text(struct tg_opts *o, const char *v, char *e,
			     size_t l)
{
	return tg_text(o->replies.notls_text, sizeof(o->replies.notls_text), v,
		       0, e, l);
}

static void tg_get_notls_text(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->replies.notls_text);
}

static int tg_set_weak_text(struct tg_opts *o, const char *v, char *e,
			    size_t l)
{
	return tg_text(o->replies.weak_text, sizeof(o->replies.weak_text), v, 1,
		       e, l);
}

static void tg_get_weak_text(const struct tg_opts *o, char *out, size_t len)
{
	snprintf(out, len, "%s", o->replies.weak_text);
}

static const struct tg_setting tg_settings[] = {
	{ "cgroup", "", tg_set_cgroup, tg_get_cgroup },
	{ "senders_file", "", tg_set_senders, tg_get_senders },
	{ "exempt", "", tg_set_exempt, tg_get_exempt },
	{ "smtp_ports", "", tg_set_smtp_ports, tg_get_smtp_ports },
	{ "smtps_ports", "", tg_set_smtps_ports, tg_get_smtps_ports },
	{ "slots", "256", tg_set_slots, tg_get_slots },
	{ "max_flows", "65536", tg_set_max_flows, tg_get_max_flows },
	{ "max_senders", "1048576", tg_set_max_senders, tg_get_max_senders },
	{ "ringbuf_size", "1048576", tg_set_ringbuf, tg_get_ringbuf },
	{ "mx_check", "no", tg_set_mx_check, tg_get_mx_check },
	{ "pin", "no", tg_set_pin, tg_get_pin },
	{ "audit_file", "", tg_set_audit, tg_get_audit },
	{ "control_socket", TG_CTL_DEFAULT, tg_set_socket, tg_get_socket },
	{ "metrics_address", "", tg_set_metrics, tg_get_metrics },
	{ "syslog", "no", tg_set_syslog, tg_get_syslog },
	{ "syslog_facility", "mail", tg_set_facility, tg_get_facility },
	{ "syslog_name", "tlsguardd", tg_set_syslog_name, tg_get_syslog_name },
	{ "syslog_socket", "/dev/log", tg_set_syslog_socket,
	  tg_get_syslog_socket },
	{ "reject_code", "550", tg_set_reject_code, tg_get_reject_code },
	{ "reject_dsn", "5.7.10", tg_set_reject_dsn, tg_get_reject_dsn },
	{ "defer_code", "450", tg_set_defer_code, tg_get_defer_code },
	{ "defer_dsn", "4.7.10", tg_set_defer_dsn, tg_get_defer_dsn },
	{ "notls_text", TG_NOTLS_TEXT, tg_set_notls_text, tg_get_notls_text },
	{ "weak_tls_text", TG_WEAK_TEXT, tg_set_weak_text, tg_get_weak_text },
};

#define TG_NSETTINGS (sizeof(tg_settings) / sizeof(tg_settings[0]))

void tg_config_defaults(struct tg_opts *o)
{
	char err[256];
	size_t i;

	memset(o, 0, sizeof(*o));
	for (i = 0; i < TG_NSETTINGS; i++)
		if (tg_settings[i].set(o, tg_settings[i].def, err,
				       sizeof(err)) < 0)
			abort();	/* a default that does not parse */
}

int tg_config_set(struct tg_opts *o, const char *name, const char *value,
		  char *err, size_t errlen)
{
	size_t i;

	for (i = 0; i < TG_NSETTINGS; i++)
		if (strcmp(name, tg_settings[i].name) == 0)
			return tg_settings[i].set(o, value, err, errlen);
	snprintf(err, errlen, "unknown setting \"%.64s\" (see "
		 "tlsguard.conf(5))", name);
	return -2;
}

/* Strip white space at both ends, in place. */
static char *tg_strip(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
			   end[-1] == '\n' || end[-1] == '\r'))
		*--end = 0;
	return s;
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
	if (rc == -2)
		snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
	else if (rc < 0)
		snprintf(err, errlen, "%s:%u: %s: %s", path, lineno, name, why);
	return rc < 0 ? -1 : 0;
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
	struct tg_replies *r = &o->replies;

	/* Derived first: a caller that needs no cgroup still gets them. */
	if (o->nports == 0 && o->ntls_ports == 0)
		o->ports[o->nports++] = 25;
	r->reject_code = (unsigned)atoi(o->reject_code);
	snprintf(r->reject_dsn, sizeof(r->reject_dsn), "%s", o->reject_dsn);
	r->defer_code = (unsigned)atoi(o->defer_code);
	snprintf(r->defer_dsn, sizeof(r->defer_dsn), "%s", o->defer_dsn);
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
	for (i = 0; i < TG_NSETTINGS && used < len; i++) {
		tg_settings[i].get(o, val, sizeof(val));
		if (changed_only) {
			tg_settings[i].get(&defaults, def, sizeof(def));
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
