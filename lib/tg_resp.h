/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_resp - the replies tlsguardd gives for the remote host, as typed
 *	values
 * SYNOPSIS
 *	#include "tg_resp.h"
 *
 *	void	tg_replies_defaults(struct tg_replies *rs);
 *	void	tg_resp_held(struct tg_resp *r, const struct tg_replies *rs,
 *			     int temporary, const char *weak_version);
 *	size_t	tg_resp_line(const struct tg_resp *r, char *buf, size_t len);
 * DESCRIPTION
 *	A reply is its kind (what it decides), its code, its RFC 3463
 *	enhanced status and its text, as Postfix's SMTP_RESP carries a
 *	reply: the log, the audit trail and the metrics read the kind and
 *	the code, and the text is only for people (it is the
 *	administrator's to change, in tlsguard.conf).
 *
 *	The kinds: TG_RK_PROTOCOL, a reply that decides nothing (250 to
 *	RSET, 503 to RCPT of a refused MAIL, ...); TG_RK_HELD_NO_TLS and
 *	TG_RK_HELD_WEAK_TLS, a guaranteed sender's mail refused because
 *	the host offers no TLS, or negotiated TLS below 1.2 (reject_code,
 *	550 by default: the MTA bounces it); TG_RK_DEFER_MX, the same mail
 *	deferred because another MX host of the domain takes TLS 1.2 or
 *	higher (defer_code, 450); TG_RK_AGAIN, a MAIL that cannot be judged
 *	now (451, also a MAIL tlsguard cannot read: it waits, 4.5.4);
 *	TG_RK_REFUSED, no longer given (such a MAIL was refused with 501),
 *	kept so that the metric of that name stays.
 *
 *	tg_replies_defaults() fills rs with tlsguard.conf's defaults,
 *	which tlsguardctl probe quotes too.
 *
 *	tg_resp_held() makes the reply to a held MAIL under the settings
 *	rs: the reject, or with temporary the defer; the text is
 *	weak_tls_text with "$tls_version" replaced by weak_version when
 *	weak_version is not NULL (the host negotiated that version), else
 *	notls_text.
 *
 *	tg_resp_line() writes "CODE DSN TEXT\r\n" (without DSN when there
 *	is none) and returns its length without the NUL.
 */
#ifndef TG_RESP_H
#define TG_RESP_H

#include <stddef.h>

#define TG_RESP_TEXT	256	/* bytes of a reply's text */
#define TG_RESP_LINE	(TG_RESP_TEXT + 32)

#define TG_NOTLS_TEXT	"TLS is required, but was not offered by host"
#define TG_WEAK_TEXT	"TLS 1.2 or higher is required, but host " \
			"negotiated $tls_version"
#define TG_WEAK_VAR	"$tls_version"

enum tg_resp_kind {
	TG_RK_PROTOCOL,
	TG_RK_HELD_NO_TLS,
	TG_RK_HELD_WEAK_TLS,
	TG_RK_DEFER_MX,
	TG_RK_AGAIN,
	TG_RK_REFUSED,
	TG_RK_MAX
};

struct tg_resp {
	int kind;		/* enum tg_resp_kind */
	unsigned code;		/* 550 */
	char dsn[12];		/* "5.7.10", "" for none */
	char text[TG_RESP_TEXT];
};

/* The replies tlsguardd gives for the host to a held MAIL. */
struct tg_replies {
	unsigned reject_code;	/* 550 */
	char reject_dsn[12];	/* "5.7.10" */
	unsigned defer_code;	/* 450, with --mx-check */
	char defer_dsn[12];
	char notls_text[TG_RESP_TEXT];
	char weak_text[TG_RESP_TEXT];	/* "$tls_version": the version */
};

void tg_replies_defaults(struct tg_replies *rs);
void tg_resp_held(struct tg_resp *r, const struct tg_replies *rs,
		  int temporary, const char *weak_version);
size_t tg_resp_line(const struct tg_resp *r, char *buf, size_t len);

#endif /* TG_RESP_H */
