/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_probe - would a guaranteed sender's mail reach this destination?
 * SYNOPSIS
 *	#include "tg_probe.h"
 *
 *	int	tg_probe_main(int argc, char **argv);
 * DESCRIPTION
 *	tlsguardctl probe DOMAIN|HOST:PORT|IP|[IP][:PORT] [--resolver
 *	IP|IP:PORT|[IPv6]:PORT] [--timeout SECONDS] [--json]
 *	[--postfix-config DIR | --no-postfix-config] [--ca-file FILE]
 *
 *	What a mail provider asks a user to do before setting up a
 *	permanent forward, done by tlsguardctl: look up the MX hosts of
 *	DOMAIN (the domain's own A and AAAA records when it has no MX, as
 *	SMTP does), and for each address connect (port 25 unless given),
 *	read the greeting, send EHLO, and, when STARTTLS is offered, take
 *	the OpenSSL handshake as far as the server goes: every version the
 *	local OpenSSL can speak, TLS 1.0 included, at security level 0, so
 *	that a weak host is seen and named rather than just failed. A
 *	literal address, [IP] or [HOST], or HOST:PORT probes that one host
 *	without an MX lookup.
 *
 *	Printed per host, as aligned "key: value" lines: STARTTLS offered,
 *	TLS version and cipher, the certificate's subject, issuer and
 *	validity (and whether it verifies against the system's CAs for the
 *	host name; tlsguard does not require that, like Postfix at "may"),
 *	the TLSA records at _PORT._tcp.HOST (DANE) with whether the answer
 *	was DNSSEC-authenticated (the AD bit of the resolver's answer),
 *	and the verdict for a guaranteed sender: "would be delivered" (TLS
 *	1.2 or higher), "would bounce: ..." with tlsguard's reply text, or
 *	"would be deferred: ..." when the host cannot be reached.
 *
 *	The overall verdict follows tlsguardd's rule for several MX hosts
 *	(tg_mx): a held MAIL at one host is answered 450 while another MX
 *	host takes TLS 1.2 or higher, so the MTA goes on to that host and
 *	the mail is delivered; when no host does, it bounces.
 *
 *	DANE (RFC 7672): where a host's TLSA records, the MX answer that
 *	named it (none for a host probed without an MX lookup) and its
 *	address answers are all DNSSEC-validated, the DANE-TA(2) and
 *	DANE-EE(3) records are matched by OpenSSL against the chain the host
 *	presents (DANE-EE without name checks; DANE-TA against the host name
 *	and the next-hop domain). "verified" keeps the verdict and says that
 *	a man in the middle can neither read nor change the mail; "FAILED"
 *	(no match, no TLS, no TLSA answer) makes it "would be deferred", as
 *	an MTA that uses DANE defers and goes on to the next host. Records
 *	that are not validated change nothing.
 *
 *	MTA-STS (RFC 8461, tg_sts.h): for a domain whose mail goes to its MX
 *	hosts, the policy's mode and mx patterns, and per host whether it
 *	matches one with a valid certificate. Reported, not judged.
 *
 *	The route (tg_route.h): for a DOMAIN, when a Postfix configuration
 *	can be read (--postfix-config DIR, else /etc/postfix if it has a
 *	main.cf; --no-postfix-config: none), the nexthop of transport_maps
 *	or relayhost replaces the domain, as Postfix would route its mail.
 *
 *	--resolver names the DNS server to ask (IPv4 or IPv6, port 53 unless
 *	given) instead of those of /etc/resolv.conf; --timeout bounds each
 *	DNS query and each step of each session (default 10 seconds);
 *	--json prints one JSON object instead of the text; --ca-file
 *	replaces the system's CAs in certificate checks.
 * DIAGNOSTICS
 *	Exit status 0 when every host takes mail over TLS 1.2 or higher, 1
 *	when some host would bounce or defer a guaranteed sender's mail
 *	(the overall verdict says whether another host delivers it), 2 on a
 *	usage error, when the lookup fails (no such domain, no answer), or
 *	when the Postfix configuration cannot be read or sends the domain
 *	over a transport that is not SMTP: one line "tlsguardctl: fatal:
 *	probe: ..." naming what was wrong.
 *	Needs no privilege and no running tlsguardd.
 */
#ifndef TG_PROBE_H
#define TG_PROBE_H

int tg_probe_main(int argc, char **argv);

#endif /* TG_PROBE_H */
