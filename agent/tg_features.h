/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_features - does this kernel have what tlsguard's BPF side needs
 * SYNOPSIS
 *	#include "tg_features.h"
 *
 *	void	tg_features_check(void);
 * DESCRIPTION
 *	tg_features_check() probes the running kernel, before tlsguard's
 *	BPF object is loaded, for each program type, map type and helper
 *	that object uses, and for the kernel's own BTF (CO-RE). The first
 *	one missing ends the agent with one line naming it, the running
 *	kernel and the Linux version that brought it, instead of a
 *	verifier log that says the same thing obscurely.
 *
 *	The probes load tiny programs and create tiny maps (libbpf's
 *	libbpf_probe_bpf_*()); they attach nothing.
 * DIAGNOSTICS
 *	msg_fatal() on a missing feature. A probe that cannot run at all
 *	(no bpf() syscall, no privilege) is fatal too, with errno's text.
 */
#ifndef TG_FEATURES_H
#define TG_FEATURES_H

void tg_features_check(void);

#endif /* TG_FEATURES_H */
