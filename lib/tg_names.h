/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_names - the names tlsguard prints for its states and versions
 * SYNOPSIS
 *	#include "tg_names.h"
 *
 *	const char *tg_tls_version_name(__u16 version);
 *	const char *tg_state_name(__u32 state);
 *	const char *tg_why_name(__u32 why);
 *	void	tg_flow_name(const struct tg_flow *f, char *buf, size_t len);
 *	void	tg_printable(const char *in, size_t inlen, char *out,
 *			     size_t len);
 * DESCRIPTION
 *	One spelling of each name, for the log, the control channel, the
 *	metrics and the audit trail alike.
 *
 *	tg_tls_version_name() names a TLS version as OpenSSL does
 *	("TLSv1.2"), "-" for none. tg_state_name() names a flow state
 *	(TG_FS_*) as tlsguardctl flows and the metrics' state label print
 *	it ("plain", "held", ...), "?" for an unknown one. tg_why_name()
 *	says in words why the kernel failed a flow closed (TG_WHY_*).
 *
 *	tg_flow_name() writes "host[addr]:port" of a flow's remote end.
 *	tg_printable() copies at most inlen bytes of a string the kernel
 *	copied from the wire, with every byte that is not printable ASCII
 *	replaced by '?', and "-" for an empty one.
 */
#ifndef TG_NAMES_H
#define TG_NAMES_H

#include <stddef.h>
#include <linux/types.h>

struct tg_flow;

const char *tg_tls_version_name(__u16 version);
const char *tg_state_name(__u32 state);
const char *tg_why_name(__u32 why);
void tg_flow_name(const struct tg_flow *f, char *buf, size_t len);
void tg_printable(const char *in, size_t inlen, char *out, size_t len);

#endif /* TG_NAMES_H */
