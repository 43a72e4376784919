/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_ctl - the control channel between tlsguardctl and tlsguardd
 * DESCRIPTION
 *	A UNIX stream socket, mode 0600 in a directory of mode 0700, so that
 *	only root can use it. A request is one line ("status"). The reply's
 *	first line is "ok" or "error: TEXT"; the rest, if any, is the
 *	answer; the daemon closes the connection after it. An answer has no
 *	size limit (flows at a full table): the client reads to the end.
 *	TG_CTL_REPLY_MAX bounds only the answers made in a fixed buffer
 *	(sender changes, config).
 *
 *	TG_PIN_DEFAULT is where tlsguardd pins what the kernel keeps
 *	enforcing without it (pin_dir), and where tlsguardctl detach looks
 *	when no tlsguardd answers; TG_PIN_DIR_MAX bounds the name, so that
 *	the pin paths under it fit in a path buffer of 256 bytes.
 */
#ifndef TG_CTL_H
#define TG_CTL_H

#define TG_CTL_DEFAULT	"/run/tlsguard/tlsguardd.sock"
#define TG_PIN_DEFAULT	"/sys/fs/bpf/tlsguard"
#define TG_PIN_DIR_MAX	200
#define TG_CTL_REQ_MAX	1024
#define TG_CTL_REPLY_MAX 65536

#endif /* TG_CTL_H */
