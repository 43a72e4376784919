/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_hostport - IP:PORT and domain names as administrators write them
 * SYNOPSIS
 *	#include "tg_hostport.h"
 *
 *	int	tg_hostport_split(const char *s, struct tg_hostport_text *t,
 *				  unsigned flags);
 *	int	tg_hostport_parse(const char *s, struct tg_hostport *hp,
 *				  unsigned flags);
 *	int	tg_port_parse(const char *s, unsigned *port);
 *	int	tg_hostport_loopback(const struct tg_hostport *hp);
 *	socklen_t tg_sockaddr(int family, const __u8 *addr, unsigned port,
 *			      struct sockaddr_storage *ss);
 *	void	tg_addr_port_str(char *buf, size_t len, int family,
 *				 const __u8 *addr, unsigned port);
 *	int	tg_domain_valid(const char *s, unsigned flags);
 *	char	*tg_strip(char *s);
 * DESCRIPTION
 *	The one grammar of a host and port in tlsguard's settings, its
 *	command lines and tlsguardctl probe: "HOST", "HOST:PORT",
 *	"[HOST]" and "[HOST]:PORT", where an IPv6 address with a port is
 *	always in brackets.
 *
 *	tg_hostport_split() cuts s into t->host and t->port (NULL when
 *	there is none; the text after the colon, not checked, otherwise)
 *	and sets t->bracketed. With TG_HP_BARE_V6 in flags, an IPv6
 *	literal without brackets is a host without a port. It returns 0,
 *	or one of TG_HP_EBRACKET (no "]", or "[]"), TG_HP_EAFTER (more than
 *	":PORT" after "]"), TG_HP_ECOLONS (more than one colon outside
 *	brackets) and TG_HP_ELONG (a host longer than TG_HOST_MAX - 1).
 *
 *	tg_hostport_parse() reads an address: IPv4 without brackets, IPv6
 *	in them, and a port when one is given (TG_HP_NEED_PORT in flags:
 *	one must be). hp->port is 0 when none was given. It returns 0 or -1.
 *
 *	tg_port_parse() reads a port, 1 to 65535 in decimal digits; 0 or -1.
 *	tg_hostport_loopback() says whether hp is in 127.0.0.0/8 or ::1.
 *
 *	tg_sockaddr() fills ss for an IPv4 (4 bytes at addr) or IPv6
 *	address and returns its length. tg_addr_port_str() writes
 *	"a.b.c.d:port" or "[v6]:port".
 *
 *	tg_domain_valid() checks a domain name: labels of letters, digits
 *	and '-', none empty. TG_DOMAIN_UTF8 also takes bytes of UTF-8
 *	(SMTPUTF8 addresses in a senders file). TG_DOMAIN_DNS also takes
 *	'_' and one trailing dot, and DNS's limits: 63 bytes a label, 253
 *	in all (the names tlsguardctl probe looks up).
 *
 *	tg_strip() drops blanks, CR and LF at both ends of a value of a
 *	file line, in place, and returns where it now starts.
 */
#ifndef TG_HOSTPORT_H
#define TG_HOSTPORT_H

#include <stddef.h>
#include <sys/socket.h>
#include <linux/types.h>

#define TG_HOST_MAX	1025	/* NS_MAXDNAME */

#define TG_HP_NEED_PORT	0x01
#define TG_HP_BARE_V6	0x02

enum {
	TG_HP_EBRACKET = 1,
	TG_HP_EAFTER,
	TG_HP_ECOLONS,
	TG_HP_ELONG,
};

#define TG_DOMAIN_UTF8	0x01
#define TG_DOMAIN_DNS	0x02

struct tg_hostport_text {
	char host[TG_HOST_MAX];
	const char *port;	/* into the string split; NULL: none */
	int bracketed;
};

struct tg_hostport {
	int family;		/* AF_INET or AF_INET6 */
	__u8 addr[16];
	unsigned port;		/* 0: none given */
};

int tg_hostport_split(const char *s, struct tg_hostport_text *t,
		      unsigned flags);
int tg_hostport_parse(const char *s, struct tg_hostport *hp, unsigned flags);
int tg_port_parse(const char *s, unsigned *port);
int tg_hostport_loopback(const struct tg_hostport *hp);
socklen_t tg_sockaddr(int family, const __u8 *addr, unsigned port,
		      struct sockaddr_storage *ss);
void tg_addr_port_str(char *buf, size_t len, int family, const __u8 *addr,
		      unsigned port);
int tg_domain_valid(const char *s, unsigned flags);
char *tg_strip(char *s);

#endif /* TG_HOSTPORT_H */
