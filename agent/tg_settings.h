/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_settings - the table of tlsguard.conf's settings
 * SYNOPSIS
 *	#include "tg_settings.h"
 *
 *	extern const struct tg_setting tg_settings[];
 *	extern const size_t tg_nsettings;
 *	int	tg_facility_code(const char *name);
 *	const char *tg_facility_name(int code);
 * DESCRIPTION
 *	Every setting is one row of tg_settings[]: its name, its type, its
 *	default as it would be written, where it lives in struct tg_opts,
 *	and its bounds, as Postfix's mail_conf.h tables describe main.cf
 *	(smtp_params.c). The rows are in tlsguard.conf(5)'s order, which
 *	--print-config keeps; they hold no code: tg_config.c reads and
 *	writes a value by its row's type.
 *
 *	tg_facility_code() returns the syslog facility (LOG_MAIL, ...) of
 *	a name (case ignored), -1 for none; tg_facility_name() the name of
 *	a facility, NULL for none.
 */
#ifndef TG_SETTINGS_H
#define TG_SETTINGS_H

#include <stddef.h>

enum tg_type {
	TG_T_STR,	/* any text */
	TG_T_PATH,	/* an absolute path; TG_F_EMPTY: or "" for none;
			 * max, if not 0: at most max bytes */
	TG_T_UINT,	/* min to max; TG_F_POW2: a power of two */
	TG_T_BOOL,	/* yes or no */
	TG_T_PORTS,	/* a list of ports; TG_F_TLS: the implicit TLS list */
	TG_T_EXEMPT,	/* user@domain, @domain, SRS0=, SRS1= */
	TG_T_MX,	/* no, system, IP or IP:PORT */
	TG_T_LOOPBACK,	/* "" or a loopback IP:PORT */
	TG_T_FACILITY,	/* a syslog facility by name */
	TG_T_NAME,	/* printable, no blank, '[' or ':' */
	TG_T_CODE,	/* a reply code from min to max */
	TG_T_DSN,	/* an enhanced status code of class min */
	TG_T_TEXT,	/* a reply text; TG_F_VERSION: "$tls_version" */
	TG_T_ROUTES,	/* warn or refuse */
	TG_T_DELIMS,	/* postfix, none, or delimiter bytes */
};

#define TG_F_EMPTY	0x01
#define TG_F_POW2	0x02
#define TG_F_TLS	0x04
#define TG_F_VERSION	0x08

struct tg_setting {
	const char *name;
	enum tg_type type;
	const char *def;	/* the default, as it would be written */
	size_t off;		/* of the value in struct tg_opts */
	size_t size;		/* of the value */
	unsigned long min, max;
	unsigned flags;		/* TG_F_* */
};

extern const struct tg_setting tg_settings[];
extern const size_t tg_nsettings;

int tg_facility_code(const char *name);
const char *tg_facility_name(int code);

#endif /* TG_SETTINGS_H */
