/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_route - where Postfix sends a domain's mail, for tlsguardctl probe
 * SYNOPSIS
 *	#include "tg_route.h"
 *
 *	int	tg_route_lookup(struct tg_route *r, const char *config_dir,
 *				const char *domain);
 * DESCRIPTION
 *	tg_route_lookup() reads the Postfix configuration in config_dir
 *	with Postfix's own tools (postconf -c DIR -x -h, postmap -c DIR
 *	-q), as trivial-rewrite(8) routes mail for a remote domain: the
 *	tables of transport_maps, for the keys DOMAIN, then each parent
 *	".PARENT" (transport(5)), then "*", each key asked of every table
 *	in order; the first hit decides. Its nexthop, or relayhost when it
 *	gives none (or there is no hit), or else the domain itself, is
 *	where the mail goes. A nexthop is "[HOST]:PORT" or "[HOST]" (no MX
 *	lookup) or "HOST:PORT" or "HOST" (the MX hosts of HOST); only the
 *	first of a list is taken.
 *
 *	It fills r: r->how says in one sentence which setting decided,
 *	r->transport names the transport ("smtp" unless a table says
 *	otherwise), and r->host, r->port (0: 25) and r->bracketed the
 *	nexthop; r->routed is 0 when the mail goes to the domain's own MX
 *	hosts. r->tls_level and r->dns_level are smtp_tls_security_level
 *	and smtp_dns_support_level, and r->dane says whether they make
 *	Postfix's smtp client use DANE ("dane" or "dane-only" with
 *	"dnssec"). It returns 0, or -1 with r->how saying what failed (a
 *	postconf or postmap error, a nexthop it cannot read).
 *
 *	Other settings that can move mail (sender-dependent relay hosts,
 *	relay_transport, default_transport) are not read.
 */
#ifndef TG_ROUTE_H
#define TG_ROUTE_H

#include <arpa/nameser.h>

#define TG_ROUTE_TEXT	(2 * NS_MAXDNAME + 256)

struct tg_route {
	char how[TG_ROUTE_TEXT];
	char transport[64];
	char host[NS_MAXDNAME];
	unsigned port;
	int bracketed;
	int routed;
	char tls_level[32];
	char dns_level[32];
	int dane;
};

int tg_route_lookup(struct tg_route *r, const char *config_dir,
		    const char *domain);

#endif /* TG_ROUTE_H */
