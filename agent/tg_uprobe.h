/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_uprobe - attach the TLS library uprobes to every libssl and
 *	libgnutls the guarded processes use
 * SYNOPSIS
 *	#include "tg_uprobe.h"
 *
 *	int	tg_uprobe_copies(struct tg_uprobes *u, const char *dir,
 *				 char *err, size_t errlen);
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
 *
 *	tg_uprobe_copies() (before the first scan) makes the scans probe
 *	copies of the system's libraries in dir instead of the system's
 *	files (tls_library_copies): copied at the first scan, and again
 *	when a system file changes (tg_tlscopy.h). Only processes that map
 *	a copy trap then: the MTA, started with the copies bound over the
 *	system's files in its own mount namespace. A library that a process
 *	of the cgroup maps is found as that process sees it
 *	(/proc/PID/map_files, or after tg_drop_caps() /proc/PID/root), so a
 *	copy bound in another namespace is probed as itself; a process that
 *	is gone before it is seen so is skipped. It returns 0, or -1 with
 *	the reason in err when dir cannot hold the copies (tg_tlscopy_dir()).
 * DIAGNOSTICS
 *	A library that cannot be probed is a warning, once. So is, with
 *	copies, a process of the cgroup that maps a file other than a copy
 *	(it is probed all the same, and every process that maps it pays).
 */
#ifndef TG_UPROBE_H
#define TG_UPROBE_H

#include <sys/types.h>

#include <limits.h>
#include <time.h>

#define TG_UPROBE_LIBS_MAX	16
#define TG_UPROBE_PER_LIB	8
#define TG_UPROBE_SYSLIBS	10	/* the system's files tg_uprobe knows */

struct tlsguard;
struct bpf_link;

struct tg_uprobes {
	unsigned nlibs;
	int full_warned;
	struct {
		dev_t dev;
		ino_t ino;
		int ok;
		int copy;	/* one of the copies in copies */
		int warned;	/* not a copy, and said so */
		struct bpf_link *links[TG_UPROBE_PER_LIB];
	} libs[TG_UPROBE_LIBS_MAX];
	char copies[PATH_MAX];	/* tls_library_copies: "" for none */
	struct {		/* each system file as it was last copied */
		dev_t dev;
		ino_t ino;
		time_t mtime;
		off_t size;
	} sys[TG_UPROBE_SYSLIBS];
};

int tg_uprobe_copies(struct tg_uprobes *u, const char *dir, char *err,
		     size_t errlen);

void tg_uprobe_scan(struct tg_uprobes *u, struct tlsguard *skel,
		    const char *cgroup_dir);
void tg_uprobe_detach(struct tg_uprobes *u);

#endif /* TG_UPROBE_H */
