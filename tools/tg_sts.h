/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_sts - a domain's MTA-STS policy (RFC 8461), for tlsguardctl probe
 * SYNOPSIS
 *	#include "tg_sts.h"
 *
 *	void	tg_sts_lookup(struct tg_sts *s, struct __res_state *res,
 *			      const char *domain, const char *ca_file,
 *			      int timeout);
 *	int	tg_sts_policy(struct tg_sts *s, char *answer);
 *	const char *tg_sts_match(const struct tg_sts *s, const char *host);
 * DESCRIPTION
 *	tg_sts_lookup() asks res for the TXT records at _mta-sts.DOMAIN;
 *	when one of them is an STSv1 record, it fetches the policy from
 *	https://mta-sts.DOMAIN/.well-known/mta-sts.txt (the address looked
 *	up with res too) over TLS 1.2 or higher, with the certificate
 *	verified for mta-sts.DOMAIN against the system's CAs, or those of
 *	ca_file when it is not NULL; no redirect is followed (RFC 8461
 *	3.3). It parses version, mode, mx and max_age into s. Every step
 *	is bounded by timeout seconds. What went wrong is left in s as a
 *	sentence (s->problem); nothing is printed.
 *
 *	tg_sts_policy() reads an HTTP answer (status line, header, body;
 *	NUL-terminated, changed in place) as tg_sts_lookup() does: 200 or
 *	nothing, then the policy's "key: value" lines (CRLF or LF); it
 *	returns 0 for a valid policy, else -1 with s->problem saying why
 *	(s->url names the policy there).
 *
 *	tg_sts_match() returns the policy's mx pattern that host matches
 *	(RFC 8461 4.1: an exact name, or "*." and one more label on the
 *	left), or NULL when none does.
 *
 *	Control bytes and non-ASCII in what the server sends are replaced
 *	with '?' before they are kept.
 */
#ifndef TG_STS_H
#define TG_STS_H

#include <arpa/nameser.h>
#include <resolv.h>

#define TG_STS_MX	16	/* mx patterns kept */

enum tg_sts_state {
	TG_STS_NONE,		/* no STSv1 TXT record */
	TG_STS_DNS_ERROR,	/* the TXT lookup failed */
	TG_STS_FETCH_ERROR,	/* a record, but no valid policy */
	TG_STS_POLICY,		/* a record and a valid policy */
};

struct tg_sts {
	enum tg_sts_state state;
	char record[256];	/* the STSv1 TXT record */
	char id[64];
	char url[NS_MAXDNAME + 64];
	char problem[2 * NS_MAXDNAME + 512];	/* why there is no policy */
	char mode[16];		/* enforce, testing, none */
	long max_age;
	int nmx;
	char mx[TG_STS_MX][NS_MAXDNAME];
};

void tg_sts_lookup(struct tg_sts *s, struct __res_state *res,
		   const char *domain, const char *ca_file, int timeout);
int tg_sts_policy(struct tg_sts *s, char *answer);
const char *tg_sts_match(const struct tg_sts *s, const char *host);

#endif /* TG_STS_H */
