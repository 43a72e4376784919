/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_routes - the MTA's routes, and those tlsguard does not guard
 * SYNOPSIS
 *	#include "tg_routes.h"
 *
 *	int	tg_routes_read(struct tg_routes *rt, const char *confdir,
 *			       const __u16 *ports, unsigned nports,
 *			       const __u16 *tls_ports, unsigned ntls_ports);
 *	size_t	tg_routes_print(const struct tg_routes *rt, char *out,
 *				size_t len);
 *	int	tg_nexthop_port(const char *dest, unsigned *port);
 * DESCRIPTION
 *	tlsguard guards the ports it is given (smtp_ports: SMTP with
 *	STARTTLS; smtps_ports: implicit TLS). An MTA that sends mail to
 *	another port (a relayhost on 587, a transport to [host]:2525) or in
 *	wrapper mode to a port tlsguard reads as STARTTLS carries that mail
 *	past tlsguard: a guaranteed sender's mail leaves unchecked. These
 *	routes are read from the MTA's own settings, so that they are
 *	reported (or refused) rather than silently unguarded.
 *
 *	tg_routes_read() reads the Postfix instance whose configuration
 *	directory is confdir with Postfix's own tools (postconf -c,
 *	postmap -c -s), never by parsing main.cf itself:
 * .IP \(bu
 *	relayhost, default_transport, relay_transport;
 * .IP \(bu
 *	every entry of transport_maps, sender_dependent_relayhost_maps and
 *	sender_dependent_default_transport_maps whose table can be listed:
 *	types hash, btree, lmdb, cdb, texthash, inline and static (also
 *	behind proxy:); other types (regexp, pcre, sql, ldap, socketmap,
 *	...) compute their answers per key and cannot be listed: they are
 *	named in rt->unread;
 * .IP \(bu
 *	master.cf: the services whose command is smtp, with their
 *	-o relayhost and -o smtp_tls_wrappermode overrides (postconf -P),
 *	and main.cf's smtp_tls_wrappermode;
 * .IP \(bu
 *	recipient_delimiter, into rt->delims.
 * .PP
 *	A route is one next hop of one setting: its port (25 when it names
 *	none: an MX lookup, or "[host]"), and whether the smtp service that
 *	takes it runs in wrapper mode. It is guarded when its port is in
 *	tls_ports (wrapper mode) or in ports (otherwise). Transports whose
 *	command is not smtp (lmtp, pipe, error, local, virtual, discard) do
 *	not leave by SMTP and are not routes here.
 *
 *	It returns 0 with rt filled (rt->read set), or -1 with the reason in
 *	rt->why (no main.cf there, postconf missing or failing).
 *
 *	tg_routes_print() writes one line per route, "SETTING = VALUE:
 *	port N (STARTTLS|implicit TLS): guarded|NOT GUARDED", then the
 *	tables not read; it returns the length written.
 *
 *	tg_nexthop_port() reads the port of a next hop as Postfix writes
 *	one ("[host]:port", "host:port", "[host]", "host", a service name
 *	for the port); 0, or -1 when it cannot.
 * BUGS
 *	Only Postfix is read. Exim's routers and transports and OpenSMTPD's
 *	smtpd.conf are not: with those MTAs the routes are the
 *	administrator's to check. A Postfix setting that depends on the
 *	recipient through a table that cannot be listed is named, not read.
 */
#ifndef TG_ROUTES_H
#define TG_ROUTES_H

#include <stddef.h>
#include <linux/types.h>

#define TG_ROUTES_MAX 64

struct tg_route {
	char setting[160]; /* where it is set, e.g. "relayhost" */
	char value[256];   /* the next hop as written */
	unsigned port;
	int wrapper; /* implicit TLS: smtp_tls_wrappermode */
	int guarded;
};

struct tg_routes {
	int read;	 /* the settings were read */
	char dir[256];	 /* the configuration directory */
	char why[256];	 /* why not */
	char delims[64]; /* recipient_delimiter */
	unsigned n;
	unsigned unguarded;
	unsigned dropped; /* routes beyond TG_ROUTES_MAX */
	struct tg_route r[TG_ROUTES_MAX];
	char unread[512]; /* tables that cannot be listed */
};

int tg_routes_read(struct tg_routes *rt, const char *confdir,
		   const __u16 *ports, unsigned nports, const __u16 *tls_ports,
		   unsigned ntls_ports);
size_t tg_routes_print(const struct tg_routes *rt, char *out, size_t len);
int tg_nexthop_port(const char *dest, unsigned *port);

#endif /* TG_ROUTES_H */
