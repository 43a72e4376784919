/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_verifier - measure each BPF program as this kernel verifies it,
 *	and say which one it refused and why
 * SYNOPSIS
 *	#include "tg_verifier.h"
 *
 *	int	tg_verifier_arm(struct tg_verifier *v, struct bpf_object *obj,
 *				int verbose);
 *	void	tg_verifier_done(struct tg_verifier *v,
 *				 struct bpf_object *obj, int err);
 *	void	tg_verifier_report(const struct tg_verifier *v);
 *	void	tg_verifier_fatal(const struct tg_verifier *v);
 *	void	tg_verifier_free(struct tg_verifier *v);
 *
 *	int	tg_verifier_check(const struct tg_vcheck_ops *ops,
 *				  unsigned long long budget, FILE *out);
 * DESCRIPTION
 *	The verifier's cost of a program differs between kernels, even
 *	between two builds of one version, by several times: a program
 *	well within the limit on one machine can be refused on another.
 *	So every load is measured, on the kernel it runs on.
 *
 *	tg_verifier_arm() is called between opening obj and loading it. It
 *	gives every program of obj that is to be loaded a log buffer of its
 *	own and log_level 4 (BPF_LOG_STATS: the verifier's error, if any,
 *	and its statistics), or 1|4 (every instruction it explored too)
 *	when verbose is 2 or more. With verbose 0, libbpf's messages are
 *	held back until tg_verifier_done(), so that a refused program is
 *	explained in one line rather than libbpf's three. It returns 0, or
 *	-ENOMEM.
 *
 *	tg_verifier_done() is called after the load, with what the load
 *	returned. For each program it takes the number of instructions the
 *	verifier processed (bpf_prog_info.verified_insns when the program
 *	was loaded, the log's figure when it was not), and the states it
 *	explored in all and at peak, from the log. On a failed load it
 *	finds the program the verifier refused. It prints the refused
 *	program's log to stderr when verbose is 1, every program's when it
 *	is 2 or more; libbpf's held messages are printed unless a refused
 *	program explains the failure. Then it frees the log buffers.
 *
 *	tg_verifier_report() prints, when verbose is set, one line per
 *	loaded program: its name, the instructions processed against the
 *	limit, the states explored in all and at peak.
 *
 *	tg_verifier_fatal() ends the program after a failed load with one
 *	line: "PROGRAM: too complex for this kernel's verifier: N
 *	instructions processed (limit M)", "PROGRAM: refused by this
 *	kernel's verifier: ERROR", or, when the verifier refused nothing
 *	(a map, BTF or permission error), "cannot load the BPF object
 *	NAME: ERRNO".
 *
 *	tg_verifier_free() releases what tg_verifier_arm() allocated; v can
 *	be armed again after it.
 *
 *	tg_verifier_check() loads the object on the running kernel twice,
 *	with each value of the load-time constant ops->open takes (the audit
 *	trail off, then on, which changes what the verifier explores), and
 *	attaches nothing. A refused program is left out of the next load of
 *	the same variant, so that every other program is measured too. It
 *	prints to out the kernel's release, then one row per program and
 *	variant, then "N passed, M failed":
 *
 *	    kernel 6.18.44-fc-v1272
 *	    program               audit      insns  total_states  ...
 *	    tg_sockops            off          321            20  ...
 *
 *	The columns are program, audit (off or on), insns (instructions
 *	processed), total_states, peak_states ("-" when unknown) and
 *	result: "ok", "over budget" (more than budget instructions) or
 *	"refused: REASON". A row passes when it is ok. It returns 0 when
 *	every row passed, 1 otherwise.
 * DIAGNOSTICS
 *	A load that fails for a reason other than the verifier's ends
 *	tg_verifier_check() with msg_fatal(), as tg_verifier_fatal().
 * BUGS
 *	One load at a time: libbpf's print function, which this module
 *	replaces while it holds messages back, is global.
 * SEE ALSO
 *	tg_verifier_log.h, how the log is read.
 */
#ifndef TG_VERIFIER_H
#define TG_VERIFIER_H

#include <stdio.h>

#include "tg_verifier_log.h"

struct bpf_object;

#define TG_VREASON_MAX	320

struct tg_vprog {
	char name[64];
	char *log;			/* the verifier's, until done */
	size_t log_size;
	int skipped;			/* not to be loaded (autoload off) */
	int loaded;			/* the kernel took it */
	int overflow;			/* its log filled its buffer */
	long long insns;		/* processed; -1 when unknown */
	struct tg_vstats st;
};

struct tg_verifier {
	struct tg_vprog *progs;		/* in object order */
	size_t n;
	int verbose;
	int err;			/* what the load returned */
	const struct tg_vprog *refused;	/* the one the verifier refused */
	char reason[TG_VREASON_MAX];	/* why, in full */
	char brief[TG_VREASON_MAX];	/* why, for a table */
	char obj_name[64];
};

/* The object for one variant of a check, opened and not yet loaded. */
struct tg_vcheck_ops {
	struct bpf_object *(*open)(void *ctx, int audit_on);
	void (*close)(void *ctx);
	void *ctx;
	int verbose;
};

int tg_verifier_arm(struct tg_verifier *v, struct bpf_object *obj,
		    int verbose);
void tg_verifier_done(struct tg_verifier *v, struct bpf_object *obj, int err);
void tg_verifier_report(const struct tg_verifier *v);
void tg_verifier_fatal(const struct tg_verifier *v)
	__attribute__((noreturn));
void tg_verifier_free(struct tg_verifier *v);
int tg_verifier_check(const struct tg_vcheck_ops *ops,
		      unsigned long long budget, FILE *out);

#endif /* TG_VERIFIER_H */
