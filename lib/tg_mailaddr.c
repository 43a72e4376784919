// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mailaddr - addresses of MAIL and RCPT lines (see tg_mailaddr.h)
 */
#include <string.h>

#include "tg_smtp.h"
#include "tg_mailaddr.h"

/* The sub-address delimiters (include/tg_smtp.h); tg_delims_set(). */
__u64 tg_delims[2] = { TG_DELIMS_PLUS, 0 };

int tg_delims_set(const char *set)
{
	__u64 d[2] = { 0, 0 };
	const unsigned char *c;

	for (c = (const unsigned char *)set; *c; c++) {
		if (*c <= ' ' || *c >= 0x7f || *c == '@' || *c == '"' ||
		    *c == '<' || *c == '>' || *c == '\\')
			return -1;
		d[*c >> 6] |= 1ULL << (*c & 63);
	}
	tg_delims[0] = d[0];
	tg_delims[1] = d[1];
	return 0;
}

int tg_line_addr(const char *line, size_t len, __u64 *verb, char *addr,
		 size_t addrlen)
{
	struct tg_cmd p;
	__u32 start, n;
	int ev;

	ev = tg_path(line, len > TG_LINE_MAX + 2 ? TG_LINE_MAX + 2 : (__u32)len,
		     &p, &start, &n);
	*verb = p.verb;
	if (ev != TG_CMD_MAIL || start > len || n > len - start)
		n = 0;
	if (n >= addrlen)
		n = addrlen - 1;
	memcpy(addr, line + start, n);
	addr[n] = 0;
	return ev;
}

int tg_addr_domain(const char *addr, char *out, size_t outlen)
{
	const char *at = strrchr(addr, '@');
	size_t n = 0;

	if (at)
		for (at++; *at && n + 1 < outlen; at++)
			out[n++] = (char)tg_lower((unsigned char)*at);
	out[n] = 0;
	return n > 0;
}
