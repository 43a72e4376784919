// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_settings - the table of tlsguard.conf's settings (see tg_settings.h)
 */
#include <stddef.h>
#include <strings.h>
#include <syslog.h>

#include "tg_config.h"
#include "tg_ctl.h"
#include "tg_resp.h"
#include "tg_settings.h"

#define TG_ROW(name, type, def, field, min, max, flags)                   \
	{ name, type, def, offsetof(struct tg_opts, field),               \
	  sizeof(((struct tg_opts *)0)->field), min, max, flags }

/* tlsguard.conf(5)'s order, which --print-config keeps. */
const struct tg_setting tg_settings[] = {
	TG_ROW("cgroup", TG_T_STR, "", cgroup, 0, 0, 0),
	TG_ROW("senders_file", TG_T_PATH, "", senders, 0, 0, TG_F_EMPTY),
	TG_ROW("exempt", TG_T_EXEMPT, "", exempt_text, 0, TG_EXEMPT_MAX, 0),
	TG_ROW("address_delimiters", TG_T_DELIMS, "postfix", delimiters, 0, 0,
	       0),
	TG_ROW("postfix_config", TG_T_PATH, "/etc/postfix", postfix_config, 0,
	       0, TG_F_EMPTY),
	TG_ROW("unguarded_routes", TG_T_ROUTES, "warn", unguarded_routes, 0, 0,
	       0),
	TG_ROW("smtp_ports", TG_T_PORTS, "", ports, 1, 65535, 0),
	TG_ROW("smtps_ports", TG_T_PORTS, "", tls_ports, 1, 65535, TG_F_TLS),
	TG_ROW("slots", TG_T_UINT, "256", slots, 1, TG_SLOTS_MAX, 0),
	TG_ROW("max_flows", TG_T_UINT, "65536", max_flows, 1, TG_FLOWS_MAX, 0),
	TG_ROW("max_senders", TG_T_UINT, "1048576", max_senders, 2,
	       TG_SENDERS_MAX, 0),
	TG_ROW("ringbuf_size", TG_T_UINT, "1048576", ringbuf, 4096, 1UL << 30,
	       TG_F_POW2),
	TG_ROW("mx_check", TG_T_MX, "no", resolver, 0, 0, 0),
	TG_ROW("pin_dir", TG_T_PATH, TG_PIN_DEFAULT, pin_dir, 0,
	       TG_PIN_DIR_MAX, 0),
	TG_ROW("audit_file", TG_T_PATH, "", audit, 0, 0, TG_F_EMPTY),
	TG_ROW("tls_library_copies", TG_T_PATH, "", tls_copies, 0, 0,
	       TG_F_EMPTY),
	TG_ROW("control_socket", TG_T_PATH, TG_CTL_DEFAULT, socket, 0, 0, 0),
	TG_ROW("metrics_address", TG_T_LOOPBACK, "", metrics, 0, 0, 0),
	TG_ROW("metrics_remote", TG_T_BOOL, "no", metrics_remote, 0, 0, 0),
	TG_ROW("syslog", TG_T_BOOL, "no", syslog, 0, 0, 0),
	TG_ROW("syslog_facility", TG_T_FACILITY, "mail", syslog_facility, 0, 0,
	       0),
	TG_ROW("syslog_name", TG_T_NAME, "tlsguardd", syslog_name, 0, 0, 0),
	TG_ROW("syslog_socket", TG_T_PATH, "/dev/log", syslog_socket, 0, 0, 0),
	TG_ROW("reject_code", TG_T_CODE, "550", replies.reject_code, 500, 559,
	       0),
	TG_ROW("reject_dsn", TG_T_DSN, "5.7.10", replies.reject_dsn, 5, 5, 0),
	TG_ROW("defer_code", TG_T_CODE, "450", replies.defer_code, 400, 459, 0),
	TG_ROW("defer_dsn", TG_T_DSN, "4.7.10", replies.defer_dsn, 4, 4, 0),
	TG_ROW("notls_text", TG_T_TEXT, TG_NOTLS_TEXT, replies.notls_text, 1,
	       200, 0),
	TG_ROW("weak_tls_text", TG_T_TEXT, TG_WEAK_TEXT, replies.weak_text, 1,
	       200, TG_F_VERSION),
};

const size_t tg_nsettings = sizeof(tg_settings) / sizeof(tg_settings[0]);

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

#define TG_NFACILITIES (sizeof(tg_facilities) / sizeof(tg_facilities[0]))

/* See tg_settings.h. */
int tg_facility_code(const char *name)
{
	size_t i;

	for (i = 0; i < TG_NFACILITIES; i++)
		if (!strcasecmp(name, tg_facilities[i].name))
			return tg_facilities[i].code;
	return -1;
}

/* See tg_settings.h. */
const char *tg_facility_name(int code)
{
	size_t i;

	for (i = 0; i < TG_NFACILITIES; i++)
		if (code == tg_facilities[i].code)
			return tg_facilities[i].name;
	return NULL;
}
