// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_hostport - IP:PORT and domain names (see tg_hostport.h)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "tg_hostport.h"

int tg_hostport_split(const char *s, struct tg_hostport_text *t,
		      unsigned flags)
{
	const char *colon, *end;
	__u8 buf[16];
	size_t n;

	t->port = NULL;
	t->bracketed = *s == '[';
	if (t->bracketed) {
		end = strchr(s, ']');
		if (!end || end == s + 1)
			return TG_HP_EBRACKET;
		if (end[1] == ':')
			t->port = end + 2;
		else if (end[1])
			return TG_HP_EAFTER;
		s++;
		n = (size_t)(end - s);
	} else if ((colon = strchr(s, ':')) && strchr(colon + 1, ':')) {
		if (!(flags & TG_HP_BARE_V6) || inet_pton(AF_INET6, s, buf) != 1)
			return TG_HP_ECOLONS;
		n = strlen(s);
	} else if (colon) {
		t->port = colon + 1;
		n = (size_t)(colon - s);
	} else {
		n = strlen(s);
	}
	if (n >= sizeof(t->host))
		return TG_HP_ELONG;
	memcpy(t->host, s, n);
	t->host[n] = 0;
	return 0;
}

int tg_port_parse(const char *s, unsigned *port)
{
	unsigned long v = 0;
	const char *p;

	for (p = s; *p >= '0' && *p <= '9' && v <= 65535; p++)
		v = v * 10 + (unsigned long)(*p - '0');
	if (p == s || *p || v == 0 || v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

int tg_hostport_parse(const char *s, struct tg_hostport *hp, unsigned flags)
{
	struct tg_hostport_text t;

	memset(hp, 0, sizeof(*hp));
	if (tg_hostport_split(s, &t, 0))
		return -1;
	hp->family = t.bracketed ? AF_INET6 : AF_INET;
	if (inet_pton(hp->family, t.host, hp->addr) != 1)
		return -1;
	if (t.port)
		return tg_port_parse(t.port, &hp->port);
	return (flags & TG_HP_NEED_PORT) ? -1 : 0;
}

int tg_hostport_loopback(const struct tg_hostport *hp)
{
	if (hp->family == AF_INET6)
		return memcmp(hp->addr, &in6addr_loopback, 16) == 0;
	return hp->addr[0] == 127;
}

socklen_t tg_sockaddr(int family, const __u8 *addr, unsigned port,
		      struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((__u16)port);
		memcpy(&sin6->sin6_addr, addr, 16);
		return sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((__u16)port);
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
}

void tg_addr_port_str(char *buf, size_t len, int family, const __u8 *addr,
		      unsigned port)
{
	char a[INET6_ADDRSTRLEN] = "?";

	inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, a, sizeof(a));
	snprintf(buf, len, family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, port);
}

int tg_domain_valid(const char *s, unsigned flags)
{
	size_t n = strlen(s), label = 0, i;
	int dns = (flags & TG_DOMAIN_DNS) != 0;

	if (n == 0 || (dns && n > 253 + (s[n - 1] == '.')))
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' ||
		      (dns && c == '_') ||
		      ((flags & TG_DOMAIN_UTF8) && c >= 0x80)))
			return 0;
		if (++label > 63 && dns)
			return 0;
	}
	/* a trailing dot: the root, for a DNS name only */
	return dns || label > 0;
}

char *tg_strip(char *s)
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
