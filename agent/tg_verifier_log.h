/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_verifier_log - read what the kernel's BPF verifier wrote
 * SYNOPSIS
 *	#include "tg_verifier_log.h"
 *
 *	int	tg_verifier_parse(const char *log, struct tg_vstats *out);
 *	char	*tg_verifier_error(const char *log, char *out, size_t len);
 *	char	*tg_verifier_reason(const char *log,
 *				    const struct tg_vstats *st, int brief,
 *				    char *out, size_t len);
 *	char	*tg_verifier_commas(unsigned long long n, char *out,
 *				    size_t len);
 * DESCRIPTION
 *	These functions read a verifier log as text and nothing else: no
 *	libbpf, no bpf() call, so that unit tests feed them logs captured
 *	on real kernels. tg_verifier.h drives the loads that produce them.
 *
 *	tg_verifier_parse() fills out from the statistics the verifier
 *	writes at the end of every log (log_level 4, BPF_LOG_STATS, or any
 *	level since Linux 5.2):
 *
 *	    processed N insns (limit M) max_states_per_insn X
 *	    total_states Y peak_states Z mark_read W
 *
 *	and from the line it writes when a program is too complex:
 *
 *	    BPF program is too large. Processed N insn
 *
 *	A figure that is not in the log is -1. Fields are found by name,
 *	so that a kernel that adds or drops one (mark_read) still parses.
 *	It returns 0 when either line was found, -1 when neither was (an
 *	empty log, a log cut short, or a load that failed before the
 *	verifier ran).
 *
 *	tg_verifier_error() copies into out the verifier's last error
 *	line: the last non-empty line that is not one of its statistics
 *	("verification time", "stack depth", "processed"). Bytes other
 *	than printable ASCII become '?', and the line is cut to fit. It
 *	returns out, or NULL when there is no such line (a program the
 *	verifier accepted at log_level 4 writes statistics only).
 *
 *	tg_verifier_reason() writes into out why the verifier refused a
 *	program, for a person: when brief is 0, the text that follows
 *	"PROGRAM: " in tlsguardd's fatal line,
 *
 *	    too complex for this kernel's verifier: 1,000,001 instructions
 *	    processed (limit 1,000,000)
 *	    refused by this kernel's verifier: R2 !read_ok
 *
 *	and when brief is not 0, the short form of --check-verifier's
 *	result column (after "refused: "): "too complex (limit 1,000,000)"
 *	or the error line alone. A program is too complex when the log
 *	says so or when it processed more instructions than its limit. It
 *	returns out.
 *
 *	tg_verifier_commas() writes n in out with thousands separators
 *	("1,000,000") and returns out.
 * SEE ALSO
 *	tg_verifier.h, the loads; the kernel's kernel/bpf/verifier.c,
 *	print_verification_stats().
 */
#ifndef TG_VERIFIER_LOG_H
#define TG_VERIFIER_LOG_H

#include <stddef.h>

#define TG_VLINE_MAX	512	/* longer than any statistics line */

struct tg_vstats {
	long long processed;		/* instructions processed */
	long long limit;		/* the verifier's instruction limit */
	long long max_states_per_insn;
	long long total_states;		/* states explored in all */
	long long peak_states;		/* states alive at once, at most */
	int too_large;			/* "BPF program is too large" */
};

int tg_verifier_parse(const char *log, struct tg_vstats *out);
char *tg_verifier_error(const char *log, char *out, size_t len);
char *tg_verifier_reason(const char *log, const struct tg_vstats *st,
			 int brief, char *out, size_t len);
char *tg_verifier_commas(unsigned long long n, char *out, size_t len);

#endif /* TG_VERIFIER_LOG_H */
