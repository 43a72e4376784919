// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_resp - typed replies (see tg_resp.h)
 */
#include <stdio.h>
#include <string.h>

#include "tg_resp.h"

void tg_replies_defaults(struct tg_replies *rs)
{
	memset(rs, 0, sizeof(*rs));
	rs->reject_code = 550;
	snprintf(rs->reject_dsn, sizeof(rs->reject_dsn), "5.7.10");
	rs->defer_code = 450;
	snprintf(rs->defer_dsn, sizeof(rs->defer_dsn), "4.7.10");
	snprintf(rs->notls_text, sizeof(rs->notls_text), "%s", TG_NOTLS_TEXT);
	snprintf(rs->weak_text, sizeof(rs->weak_text), "%s", TG_WEAK_TEXT);
}

void tg_resp_held(struct tg_resp *r, const struct tg_replies *rs,
		  int temporary, const char *weak_version)
{
	const char *text = weak_version ? rs->weak_text : rs->notls_text;
	const char *var = weak_version ? strstr(text, TG_WEAK_VAR) : NULL;

	r->kind = temporary ? TG_RK_DEFER_MX :
		  weak_version ? TG_RK_HELD_WEAK_TLS : TG_RK_HELD_NO_TLS;
	r->code = temporary ? rs->defer_code : rs->reject_code;
	snprintf(r->dsn, sizeof(r->dsn), "%s",
		 temporary ? rs->defer_dsn : rs->reject_dsn);
	if (var)
		snprintf(r->text, sizeof(r->text), "%.*s%s%s",
			 (int)(var - text), text, weak_version,
			 var + strlen(TG_WEAK_VAR));
	else
		snprintf(r->text, sizeof(r->text), "%s", text);
}

size_t tg_resp_line(const struct tg_resp *r, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%03u%s%s %s\r\n", r->code,
			 r->dsn[0] ? " " : "", r->dsn, r->text);

	if (n < 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}

int tg_dsn_valid(const char *dsn, char class)
{
	const char *s = dsn + 2;
	int part, digits;

	if (dsn[0] != class || dsn[1] != '.')
		return 0;
	for (part = 0; part < 2; part++) {
		for (digits = 0; *s >= '0' && *s <= '9'; s++)
			digits++;
		if (digits < 1 || digits > 3 || *s != (part ? 0 : '.'))
			return 0;
		s += !part;
	}
	return 1;
}
