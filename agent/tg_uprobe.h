/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_uprobe - attach the TLS library uprobes to every libssl and
 *	libgnutls the guarded processes use
 * SYNOPSIS
 *	#include "tg_uprobe.h"
 *
 *	void	tg_uprobe_scan(struct tg_uprobes *u, struct tlsguard *skel,
 *			       const char *cgroup_dir);
 *	void	tg_uprobe_detach(struct tg_uprobes *u);
 * DESCRIPTION
 *	tg_uprobe_scan() finds the TLS library files to probe: the system's
 *	own (libssl.so.3, libssl.so.1.1 and libgnutls.so.30 in the library
 *	directories), so that processes the MTA starts later are covered
 *	from their first call, and every libssl or libgnutls that a process
 *	in cgroup_dir or below has mapped (from /proc/PID/maps), for MTAs
 *	that bring their own. Each distinct file (by device and inode) is
 *	probed once. libssl: SSL_set_fd, SSL_connect, SSL_write,
 *	SSL_write_ex, SSL_read and SSL_read_ex; GnuTLS:
 *	gnutls_transport_set_ptr, _set_ptr2 and _set_int2, gnutls_handshake,
 *	gnutls_record_send2 (which gnutls_record_send calls) and
 *	gnutls_record_recv. The probes fire in every process that maps the
 *	file; the BPF programs keep only the guarded cgroup's. It is called
 *	at start and again from time to time.
 * DIAGNOSTICS
 *	A library that cannot be probed is a warning, once.
 */
#ifndef TG_UPROBE_H
#define TG_UPROBE_H

#include <sys/types.h>

#define TG_UPROBE_LIBS_MAX	16
#define TG_UPROBE_PER_LIB	8

struct tlsguard;
struct bpf_link;

struct tg_uprobes {
	unsigned nlibs;
	struct {
		dev_t dev;
		ino_t ino;
		int ok;
		struct bpf_link *links[TG_UPROBE_PER_LIB];
	} libs[TG_UPROBE_LIBS_MAX];
};

void tg_uprobe_scan(struct tg_uprobes *u, struct tlsguard *skel,
		    const char *cgroup_dir);
void tg_uprobe_detach(struct tg_uprobes *u);

#endif /* TG_UPROBE_H */
