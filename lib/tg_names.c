// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_names - names of states and versions (see tg_names.h)
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>

#include "tlsguard.h"
#include "tg_names.h"

const char *tg_tls_version_name(__u16 v)
{
	switch (v) {
	case 0:
		return "-";
	case TG_TLS_SSL3:
		return "SSLv3";
	case TG_TLS_1_0:
		return "TLSv1.0";
	case TG_TLS_1_1:
		return "TLSv1.1";
	case TG_TLS_1_2:
		return "TLSv1.2";
	case TG_TLS_1_3:
		return "TLSv1.3";
	}
	return "an unknown version";
}

const char *tg_state_name(__u32 state)
{
	static const char *const names[] = {
		[TG_FS_PLAIN] = "plain",	   [TG_FS_TLS] = "tls",
		[TG_FS_DIVERTED] = "held",	   [TG_FS_FAILED] = "failed",
		[TG_FS_HANDSHAKE] = "handshake", [TG_FS_WEAK] = "weak-tls",
		[TG_FS_TLS_FAILED] = "tls-failed",
	};

	if (state < sizeof(names) / sizeof(*names) && names[state])
		return names[state];
	return "?";
}

const char *tg_why_name(__u32 why)
{
	switch (why) {
	case TG_WHY_NO_TLS:
		return "guaranteed sender without TLS";
	case TG_WHY_BAD_MAIL:
		return "MAIL command not vouched for";
	case TG_WHY_WEAK_TLS:
		return "guaranteed sender over TLS below 1.2";
	case TG_WHY_UNSEEN_TLS:
		return "TLS below 1.2, or a handshake tlsguard could not "
		       "read, that no uprobe can judge";
	case TG_WHY_DESYNC:
		return "a line the host or the MTA may read otherwise: "
		       "tlsguard lost count of the conversation";
	case TG_WHY_UNWATCHED:
		return "no room in the sockhash";
	}
	return "no injection slot free, or replies pending";
}

void tg_flow_name(const struct tg_flow *f, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN] = "?";

	inet_ntop(f->family == AF_INET6 ? AF_INET6 : AF_INET, f->raddr, addr,
		  sizeof(addr));
	snprintf(buf, len, "%s[%s]:%u", addr, addr, f->rport);
}

void tg_printable(const char *in, size_t inlen, char *out, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < inlen && in[i] && n + 1 < len; i++)
		out[n++] = (in[i] > ' ' && in[i] < 0x7f) ? in[i] : '?';
	if (n == 0 && len > 1)
		out[n++] = '-';
	out[n] = 0;
}
