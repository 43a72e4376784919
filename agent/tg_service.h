/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_service - tlsguardd as a system service: readiness, privileges
 * SYNOPSIS
 *	#include "tg_service.h"
 *
 *	void	tg_notify(const char *state);
 *	int	tg_drop_caps(char *err, size_t errlen);
 * DESCRIPTION
 *	tg_notify() tells the service manager the daemon's state
 *	("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...") over the
 *	datagram socket named by $NOTIFY_SOCKET (systemd's Type=notify; a
 *	name starting with '@' is in the abstract namespace). Without
 *	$NOTIFY_SOCKET it does nothing. It never blocks.
 *
 *	tg_drop_caps() is called once everything is attached. It keeps only
 *	the capabilities the running daemon uses (TG_CAPS_KEPT: bpf() on its
 *	maps, uprobes on TLS libraries that appear later, SOCK_DESTROY,
 *	reading /proc/PID/maps of the MTA's processes) in the permitted and
 *	effective sets, empties the inheritable set, drops the rest from the
 *	bounding set when it holds CAP_SETPCAP (a systemd unit that bounds
 *	the service already need not grant it), and sets
 *	no_new_privs, so that nothing the daemon could be tricked into
 *	running would hold more. It returns -1 with the reason in err.
 */
#ifndef TG_SERVICE_H
#define TG_SERVICE_H

#include <stddef.h>
#include <linux/capability.h>

#ifndef CAP_PERFMON
#define CAP_PERFMON	38
#endif
#ifndef CAP_BPF
#define CAP_BPF		39
#endif

#define TG_CAPS_KEPT                                                        \
	((1ULL << CAP_BPF) | (1ULL << CAP_PERFMON) | (1ULL << CAP_NET_ADMIN) | \
	 (1ULL << CAP_SYS_PTRACE))

void tg_notify(const char *state);
int tg_drop_caps(char *err, size_t errlen);

#endif /* TG_SERVICE_H */
